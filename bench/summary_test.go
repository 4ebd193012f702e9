package bench

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeRun is a measured run of server at clients requests in flight with
// the given server CPU per request: 2 s long, the server's core 80% busy,
// the client's 50%.
func fakeRun(server, tls string, mode Mode, clients int, cpuUS float64) *Result {
	const durationS = 2.0
	rps := 0.8 * 1e6 / cpuUS
	req := int64(rps * durationS)
	cpu := cpuUS
	serverS := cpuUS * float64(req) / 1e6
	clientS := 0.5 * durationS
	return &Result{Label: server, TLS: tls, Mode: mode, Concurrency: clients, Requests: req, DurationS: durationS,
		Throughput: rps, Latency: Latency{P50: int64(cpuUS * 4), P99: int64(cpuUS * 10)},
		ServerCPUPerReqUS: &cpu, ServerCPUS: &serverS,
		ClientCPUS: clientS, ClientCPUPerReqUS: clientS * 1e6 / float64(req), Errors: map[string]int64{}}
}

// withClientBusy sets the share of the client's core that r kept busy.
func withClientBusy(r *Result, busy float64) *Result {
	r.ClientCPUS = busy * r.DurationS
	r.ClientCoreCPUS = nil
	return r
}

// withRPS sets r's throughput (and its request count to match).
func withRPS(r *Result, rps float64) *Result {
	r.Throughput = rps
	return r
}

func withP99(r *Result, p99 int64) *Result {
	r.Latency.P99 = p99
	return r
}

func writeRuns(t *testing.T, runs ...*Result) string {
	t.Helper()
	var b bytes.Buffer
	for _, r := range runs {
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "runs.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSummarize(t *testing.T) {
	var runs []*Result
	for _, v := range []float64{400, 500, 450} { // median 450
		runs = append(runs, fakeRun("fleetgate", "1.3", ModeFresh, 16, v))
	}
	for _, v := range []float64{1000, 1200, 900} { // median 1000
		runs = append(runs, fakeRun("nginx", "1.3", ModeFresh, 16, v))
	}
	runs = append(runs,
		fakeRun("stdlib", "1.3", ModeFresh, 16, 600),
		fakeRun("fleetgate", "1.3", ModeFresh, 4, 500),
		withClientBusy(fakeRun("stdlib", "1.3", ModeFresh, 4, 600), 0.95),
		fakeRun("haproxy", "1.3", ModeKeepalive, 16, 50),
		fakeRun("fleetgate", "1.3", ModeKeepalive, 16, 100),
		fakeRun("haproxy", "1.3", ModeKeepalive, 4, 50),
		fakeRun("fleetgate", "1.3", ModeKeepalive, 4, 30),
		fakeRun("fleetgate", "1.2", ModeFresh, 16, 480),
	)
	dir := t.TempDir()
	in := writeRuns(t, runs...)
	var out bytes.Buffer
	o := SummaryOptions{Input: in, FloorUS: 300, Markdown: filepath.Join(dir, "s.md"), PNG: filepath.Join(dir, "s.png")}
	if err := Summarize(o, &out); err != nil {
		t.Fatal(err)
	}
	md := out.String()
	for _, want := range []string{
		"### TLS 1.3 fresh",
		// clients, server, req/s, p50, p99, CPU (range), × floor, server core, client CPU, client core
		"| 16 | fleetgate | 1778 | 1.80ms | 4.50ms | 450 (400–500) | 1.50× | 80% | 281 | 50% | 3 | 0 |",
		"| 16 | nginx | 800 | 4.00ms | 10.00ms | 1000 (900–1200) | 3.33× | 80% | 625 | 50% | 3 | 0 |",
		"| 4 | stdlib | 1333 | 2.40ms | 6.00ms | 600 (600–600) | 2.00× | 80% | 375 | 95% **the client was the limit** | 1 | 0 |",
		"| 16 | haproxy | 16000 | 200µs | 500µs | 50 (50–50) | – | 80% |",
		"![req/s against concurrency, TLS 1.3 fresh](s-rps-tls1.3-fresh.png)",
		"![server CPU per request](s.png)",
		"| target | 4 clients | 16 clients |",
		"| TLS 1.3 fresh: server CPU/request ≤ 0.50× nginx | – | 0.45× (met); paired 0.42× |",                                                     // 400/1000, 500/1200, 450/900
		"| TLS 1.3 fresh: server CPU/request ≤ 0.75× stdlib (net/http) | 0.83× (**missed** by 11.1%); paired 0.83× | 0.75× (met); paired 0.67× |", // one stdlib run: 400/600
		"| TLS 1.3 fresh: server CPU/request ≤ 1.40× the crypto floor | 1.67× (**missed** by 19.0%) | 1.50× (**missed** by 7.1%) |",
		// at 4 clients stdlib's client was the limit (1600/1333 = 1.2×); at 16, 1778/1333 = 1.33×
		"| TLS 1.3 fresh: req/s ≥ 1.10× stdlib from 16 clients, ≥ 1.00× below | 1.20× (not judged: the client was the limit) | 1.33× (met) |",
		"| TLS 1.3 fresh: p99 ≤ 1.00× stdlib | 0.83× (not judged: the client was the limit) | 0.75× (met) |",
		"| TLS 1.3 keepalive: server CPU/request ≤ 1.00× haproxy (aim 0.70×) | 0.60× (met, and the 0.70× aim); paired 0.60× | 2.00× (**missed** by 100.0%); paired 2.00× |",
		"| TLS 1.2 fresh: server CPU/request ≤ 0.50× nginx | – | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "TLS 1.2 fresh: server CPU/request ≤ 1.40× the crypto floor") {
		t.Errorf("the crypto floor (a TLS 1.3 figure) is applied to TLS 1.2:\n%s", md)
	}
	// Scenarios: TLS 1.3 before 1.2, fresh before keepalive; concurrency
	// ascending; servers in the fixed order.
	if i, j, k := strings.Index(md, "### TLS 1.3 fresh"), strings.Index(md, "### TLS 1.3 keepalive"), strings.Index(md, "### TLS 1.2 fresh"); !(i < j && j < k) {
		t.Errorf("scenario order: %d %d %d\n%s", i, j, k, md)
	}
	if strings.Index(md, "| 4 | fleetgate | ") > strings.Index(md, "| 16 | fleetgate | ") {
		t.Errorf("concurrency order:\n%s", md)
	}
	if strings.Index(md, "| 16 | nginx") > strings.Index(md, "| 16 | stdlib") {
		t.Errorf("server order:\n%s", md)
	}
	file, err := os.ReadFile(o.Markdown)
	if err != nil || string(file) != md {
		t.Errorf("Markdown file differs from the output (%v)", err)
	}
	for _, name := range []string{"s.png", "s-rps-tls1.3-fresh.png", "s-rps-tls1.3-keepalive.png", "s-rps-tls1.2-fresh.png"} {
		checkPNG(t, filepath.Join(dir, name))
	}
}

// checkPNG fails unless path is a PNG of a drawing: a sensible size and
// more than a background and one ink.
func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("%s is %v", path, b)
	}
	if n := colours(img); n < 4 {
		t.Errorf("%s has %d colours: an empty drawing", path, n)
	}
}

// colours counts the distinct colours of img (up to 1000).
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= 1000 {
				return len(seen)
			}
		}
	}
	return len(seen)
}

func TestTargets(t *testing.T) {
	fresh := Scenario{TLS: "1.3", Mode: ModeFresh}
	const rpsRow = "TLS 1.3 fresh: req/s ≥ 1.10× stdlib from 16 clients, ≥ 1.00× below"
	const p99Row = "TLS 1.3 fresh: p99 ≤ 1.00× stdlib"
	const cpuRow = "TLS 1.3 fresh: server CPU/request ≤ 0.75× stdlib (net/http)"
	tests := []struct {
		name    string
		runs    []*Result
		row     string
		clients int
		want    targetVerdict
		ratio   float64
	}{
		{"req/s 1.05× at 4 clients meets 1.0×", []*Result{
			withRPS(fakeRun("fleetgate", "1.3", ModeFresh, 4, 500), 1050), withRPS(fakeRun("stdlib", "1.3", ModeFresh, 4, 500), 1000),
		}, rpsRow, 4, met, 1.05},
		{"req/s 1.05× at 16 clients misses 1.1×", []*Result{
			withRPS(fakeRun("fleetgate", "1.3", ModeFresh, 16, 500), 1050), withRPS(fakeRun("stdlib", "1.3", ModeFresh, 16, 500), 1000),
		}, rpsRow, 16, missed, 1.05},
		{"req/s 1.1× at 64 clients meets 1.1×", []*Result{
			withRPS(fakeRun("fleetgate", "1.3", ModeFresh, 64, 500), 1100), withRPS(fakeRun("stdlib", "1.3", ModeFresh, 64, 500), 1000),
		}, rpsRow, 64, met, 1.1},
		{"req/s below, fleetgate's client was the limit", []*Result{
			withClientBusy(withRPS(fakeRun("fleetgate", "1.3", ModeFresh, 16, 500), 900), 0.91), withRPS(fakeRun("stdlib", "1.3", ModeFresh, 16, 500), 1000),
		}, rpsRow, 16, clientLimited, 0.9},
		{"90% busy is not over the limit", []*Result{
			withClientBusy(withRPS(fakeRun("fleetgate", "1.3", ModeFresh, 16, 500), 900), 0.9), withRPS(fakeRun("stdlib", "1.3", ModeFresh, 16, 500), 1000),
		}, rpsRow, 16, missed, 0.9},
		{"p99 worse, stdlib's client was the limit", []*Result{
			withP99(fakeRun("fleetgate", "1.3", ModeFresh, 16, 500), 2000), withClientBusy(withP99(fakeRun("stdlib", "1.3", ModeFresh, 16, 500), 1000), 0.99),
		}, p99Row, 16, clientLimited, 2},
		{"p99 worse", []*Result{
			withP99(fakeRun("fleetgate", "1.3", ModeFresh, 16, 500), 2000), withP99(fakeRun("stdlib", "1.3", ModeFresh, 16, 500), 1000),
		}, p99Row, 16, missed, 2},
		{"CPU is judged even when the client was the limit", []*Result{
			withClientBusy(fakeRun("fleetgate", "1.3", ModeFresh, 16, 450), 0.99), fakeRun("stdlib", "1.3", ModeFresh, 16, 600),
		}, cpuRow, 16, met, 0.75},
		{"no stdlib run", []*Result{
			fakeRun("fleetgate", "1.3", ModeFresh, 16, 450), fakeRun("nginx", "1.3", ModeFresh, 16, 600),
		}, cpuRow, 16, notMeasured, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(tt.runs, 300)
			if !containsScenario(s, fresh) {
				t.Fatalf("no %s scenario", fresh)
			}
			var row *targetRow
			for _, r := range s.targets() {
				if r.Name == tt.row {
					row = &r
				}
			}
			if row == nil {
				t.Fatalf("no target %q in %+v", tt.row, s.targets())
			}
			c := row.Cells[tt.clients]
			if c.Verdict != tt.want {
				t.Errorf("verdict %v (%s), want %v", c.Verdict, c, tt.want)
			}
			if math.IsNaN(tt.ratio) != math.IsNaN(c.Ratio) || (!math.IsNaN(tt.ratio) && math.Abs(c.Ratio-tt.ratio) > 1e-9) {
				t.Errorf("ratio %v, want %v", c.Ratio, tt.ratio)
			}
		})
	}
}

func containsScenario(s *Summary, sc Scenario) bool {
	for _, x := range s.Scenarios {
		if x == sc {
			return true
		}
	}
	return false
}

func TestTargetCellString(t *testing.T) {
	tests := []struct {
		name string
		cell targetCell
		want string
	}{
		{"met", targetCell{Ratio: 0.45, Limit: 0.5, Verdict: met}, "0.45× (met)"},
		{"missed at most", targetCell{Ratio: 0.6, Limit: 0.5, Verdict: missed}, "0.60× (**missed** by 20.0%)"},
		{"missed at least", targetCell{Ratio: 0.99, Limit: 1.1, AtLeast: true, Verdict: missed}, "0.99× (**missed** by 10.0%)"},
		{"met, aim not yet", targetCell{Ratio: 0.9, Limit: 1, Aim: 0.7, Verdict: met}, "0.90× (met; the 0.70× aim not yet)"},
		{"met with aim", targetCell{Ratio: 0.7, Limit: 1, Aim: 0.7, Verdict: met}, "0.70× (met, and the 0.70× aim)"},
		{"client limited", targetCell{Ratio: 0.8, Limit: 1.1, AtLeast: true, Verdict: clientLimited}, "0.80× (not judged: the client was the limit)"},
		{"not measured", targetCell{Ratio: math.NaN()}, "–"},
		{"with the paired ratio", targetCell{Ratio: 0.78, Limit: 0.75, Paired: 0.71, Verdict: missed}, "0.78× (**missed** by 4.0%); paired 0.71×"},
		{"paired not known", targetCell{Ratio: 0.45, Limit: 0.5, Paired: math.NaN(), Verdict: met}, "0.45× (met)"},
		{"not measured, paired ignored", targetCell{Ratio: math.NaN(), Paired: 0.5}, "–"},
		{"with the interval", targetCell{Ratio: 0.52, Limit: 0.5, Paired: 0.49, Low: 0.47, High: 0.56, Verdict: missed},
			"0.52× (**missed** by 4.0%); paired 0.49×; 95% interval 0.47–0.56×"},
		{"interval not known", targetCell{Ratio: 0.45, Limit: 0.5, Paired: math.NaN(), Low: math.NaN(), High: math.NaN(), Verdict: met}, "0.45× (met)"},
		{"not measured, interval ignored", targetCell{Ratio: math.NaN(), Low: 0.4, High: 0.5}, "–"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cell.String(); got != tt.want {
				t.Errorf("%q, want %q", got, tt.want)
			}
		})
	}
}

func TestCoreBusy(t *testing.T) {
	core := 1.8
	server := 0.65
	tests := []struct {
		name           string
		r              Result
		client, server float64
	}{
		{"client alone", Result{DurationS: 2, ClientCPUS: 1}, 0.5, math.NaN()},
		{"client and origin", Result{DurationS: 2, ClientCPUS: 1, ClientCoreCPUS: &core, ServerCPUS: &server}, 0.9, 0.325},
		// JSON from before client_cpu_s: from the CPU per request.
		{"old JSON", Result{DurationS: 2, Requests: 1000, ClientCPUPerReqUS: 1500}, 0.75, math.NaN()},
		{"no duration", Result{ClientCPUS: 1, ServerCPUS: &server}, math.NaN(), math.NaN()},
	}
	same := func(a, b float64) bool { return math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) < 1e-9 }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.ClientCoreBusy(); !same(got, tt.client) {
				t.Errorf("ClientCoreBusy = %v, want %v", got, tt.client)
			}
			if got := tt.r.ServerCoreBusy(); !same(got, tt.server) {
				t.Errorf("ServerCoreBusy = %v, want %v", got, tt.server)
			}
		})
	}
}

func TestChartRenders(t *testing.T) {
	var runs []*Result
	for _, n := range []int{4, 16, 64} {
		for i, server := range []string{"fleetgate", "nginx", "haproxy", "stdlib"} {
			for _, mode := range []Mode{ModeFresh, ModeKeepalive} {
				r := fakeRun(server, "1.3", mode, n, float64(400+100*i)/float64(1+4*boolInt(mode == ModeKeepalive)))
				if n == 64 && server == "nginx" {
					withClientBusy(r, 0.97) // drawn with a ring
				}
				runs = append(runs, r)
			}
		}
	}
	s := summarize(runs, 300)
	dir := t.TempDir()
	cpu := filepath.Join(dir, "cpu.png")
	if err := s.writeCPUChart(cpu); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, cpu)
	rps := filepath.Join(dir, "rps.png")
	if err := s.writeRPSChart(rps, Scenario{TLS: "1.3", Mode: ModeFresh}); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, rps)
	// Nothing to draw is an error, not an empty picture.
	if err := (&Summary{}).writeCPUChart(filepath.Join(dir, "none.png")); err == nil {
		t.Error("an empty summary drew a chart")
	}
	if err := s.writeCPUChart(filepath.Join(dir, "no-such-dir", "cpu.png")); err == nil || !strings.HasPrefix(err.Error(), "bench: chart") {
		t.Errorf("unwritable path: %v", err)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestSummarizeErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "no runs"},
		{"not JSON", "{\n", "runs.jsonl:1"},
		{"no label", `{"mode":"fresh"}` + "\n", "without a label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "runs.jsonl")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			err := Summarize(SummaryOptions{Input: path, FloorUS: 1}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if err := Summarize(SummaryOptions{Input: filepath.Join(dir, "missing"), FloorUS: 1}, &bytes.Buffer{}); err == nil {
		t.Error("missing file: no error")
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

// TestRatioInterval: the interval of a ratio of medians comes from paired
// draws of the runs, holds the ratio, narrows as the runs agree, is the
// same each time, and is not given from too few runs.
func TestRatioInterval(t *testing.T) {
	// Exactly proportional runs: every draw gives 0.5.
	a, b := []float64{100, 200, 300, 400, 500}, []float64{200, 400, 600, 800, 1000}
	if lo, hi := ratioInterval(a, b, nil); lo != 0.5 || hi != 0.5 {
		t.Errorf("proportional runs: interval %v–%v, want 0.5–0.5", lo, hi)
	}
	// Noisy runs: the interval holds the ratio of the medians, and is
	// wider than that of runs half as noisy around the same figures.
	noisy := func(spread float64) (fg, other []float64) {
		for i := range 40 {
			d := spread * float64(i%7-3) / 3 // the machine's drift, both runs of a pair
			e := spread * float64(i%5-2) / 4 // noise of one run
			fg = append(fg, 520*(1+d+e))
			other = append(other, 1000*(1+d-e))
		}
		return fg, other
	}
	fg, other := noisy(0.2)
	lo, hi := ratioInterval(fg, other, nil)
	r := median(fg) / median(other)
	if !(lo < r && r < hi) {
		t.Errorf("interval %.3f–%.3f does not hold the ratio %.3f", lo, hi, r)
	}
	fg2, other2 := noisy(0.1)
	lo2, hi2 := ratioInterval(fg2, other2, nil)
	if !(hi2-lo2 < hi-lo) {
		t.Errorf("half the noise: interval %.3f–%.3f, not narrower than %.3f–%.3f", lo2, hi2, lo, hi)
	}
	if lo3, hi3 := ratioInterval(fg, other, nil); lo3 != lo || hi3 != hi {
		t.Errorf("the same runs gave %v–%v, then %v–%v", lo, hi, lo3, hi3)
	}
	// Pairs with a side not measured are left out; too few pairs: no interval.
	if lo, hi := ratioInterval([]float64{1, 2, math.NaN(), 4, 5}, []float64{2, 4, 6, 8, 0}, nil); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Errorf("three pairs: interval %v–%v, want none", lo, hi)
	}
}

// TestRatioIntervalBatches: pooled runs are drawn batch by batch (one
// batch per full run of the comparison), so that runs which share their
// minutes of the machine widen the interval as the few draws they are; a
// single batch draws exactly as unmarked runs do.
func TestRatioIntervalBatches(t *testing.T) {
	// Four full runs of five pairs each: each run's pairs agree with each
	// other (ratio 0.90, 0.96, 1.04 or 1.10, a little noise), the runs do not.
	var fg, other []float64
	var batch []string
	for k, r := range []float64{0.90, 0.96, 1.04, 1.10} {
		for i := range 5 {
			base := 30 + 3*float64(i)
			fg = append(fg, base*r*(1+0.01*float64(i%3-1)))
			other = append(other, base)
			batch = append(batch, fmt.Sprintf("run%d", k))
		}
	}
	lo, hi := ratioInterval(fg, other, nil)
	blo, bhi := ratioInterval(fg, other, batch)
	if !(bhi-blo > hi-lo) {
		t.Errorf("batched interval %.3f–%.3f not wider than the pairs' %.3f–%.3f", blo, bhi, lo, hi)
	}
	r := median(fg) / median(other)
	if !(blo < r && r < bhi) {
		t.Errorf("batched interval %.3f–%.3f does not hold the ratio %.3f", blo, bhi, r)
	}
	// One batch, named or not: the same draws.
	same := make([]string, len(fg))
	for i := range same {
		same[i] = "2026-12-06-a"
	}
	if slo, shi := ratioInterval(fg, other, same); slo != lo || shi != hi {
		t.Errorf("one batch: %v–%v, unmarked %v–%v", slo, shi, lo, hi)
	}
	// Proportional runs stay a zero-width interval, batches or not.
	a, b := []float64{1, 2, 3, 4, 5, 6}, []float64{2, 4, 6, 8, 10, 12}
	if lo, hi := ratioInterval(a, b, []string{"x", "x", "y", "y", "z", "z"}); lo != 0.5 || hi != 0.5 {
		t.Errorf("proportional runs in batches: %v–%v, want 0.5–0.5", lo, hi)
	}
	// A pair left out leaves its batch's others in.
	a[0] = math.NaN()
	if lo, hi := ratioInterval(a, b, []string{"x", "x", "y", "y", "z", "z"}); lo != 0.5 || hi != 0.5 {
		t.Errorf("a pair left out: %v–%v, want 0.5–0.5", lo, hi)
	}
}

// TestSummarizeBatches: the batch each run carries (make bench-pool's
// stamp) reaches its cell beside its CPU figure, so that the targets'
// interval draws whole runs.
func TestSummarizeBatches(t *testing.T) {
	cpu := func(v float64) *float64 { return &v }
	var runs []*Result
	for i, b := range []string{"a", "a", "b", "b", "b"} {
		for _, label := range []string{"fleetgate", "haproxy"} {
			runs = append(runs, &Result{Label: label, TLS: "1.3", Mode: ModeKeepalive, Concurrency: 16,
				ServerCPUPerReqUS: cpu(float64(30 + i)), Batch: b,
				Started: time.Date(2026, 12, 6, 20, 0, 2*i, 0, time.UTC)})
		}
	}
	runs[2].ServerCPUPerReqUS = nil // a run whose CPU was not read: no batch either
	s := summarize(runs, 0)
	c := s.cell(Scenario{TLS: "1.3", Mode: ModeKeepalive}, 16, "fleetgate")
	if want := []string{"a", "b", "b", "b"}; !slices.Equal(c.Batches, want) || len(c.CPURuns) != len(want) {
		t.Errorf("batches %v for runs %v, want %v", c.Batches, c.CPURuns, want)
	}
}

// TestPairedRatio: the paired ratio pairs each server's runs in the order
// they started (the comparison interleaves them), so a slow minute that
// slowed both servers' i-th runs cancels out; the verdict stays on the
// ratio of the medians.
func TestPairedRatio(t *testing.T) {
	at := func(r *Result, sec int) *Result {
		r.Started = time.Date(2026, 12, 5, 20, 0, sec, 0, time.UTC)
		return r
	}
	// Listed out of order; by start: pairs 300/400, 900/1000, 500/800
	// (0.75, 0.9, 0.625: median 0.75), medians 500 over 800 (0.625).
	runs := []*Result{
		at(fakeRun("fleetgate", "1.3", ModeFresh, 16, 900), 20), at(fakeRun("stdlib", "1.3", ModeFresh, 16, 1000), 30),
		at(fakeRun("stdlib", "1.3", ModeFresh, 16, 800), 50), at(fakeRun("fleetgate", "1.3", ModeFresh, 16, 300), 0),
		at(fakeRun("fleetgate", "1.3", ModeFresh, 16, 500), 40), at(fakeRun("stdlib", "1.3", ModeFresh, 16, 400), 10),
	}
	s := summarize(runs, 300)
	for _, r := range s.targets() {
		if r.Name != "TLS 1.3 fresh: server CPU/request ≤ 0.75× stdlib (net/http)" {
			continue
		}
		c := r.Cells[16]
		if math.Abs(c.Paired-0.75) > 1e-9 || math.Abs(c.Ratio-0.625) > 1e-9 || c.Verdict != met {
			t.Errorf("paired %v ratio %v verdict %v; want paired 0.75, ratio 0.625, met", c.Paired, c.Ratio, c.Verdict)
		}
		return
	}
	t.Fatal("no CPU target against stdlib")
}
