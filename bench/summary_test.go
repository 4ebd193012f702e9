package bench

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRun is a measured run of server with the given server CPU per request.
func fakeRun(server, tls string, mode Mode, cpuUS float64) *Result {
	cpu := cpuUS
	return &Result{Label: server, TLS: tls, Mode: mode, Requests: 1000, Throughput: 1e6 / cpuUS,
		Latency: Latency{P99: int64(cpuUS * 10)}, ServerCPUPerReqUS: &cpu, Errors: map[string]int64{}}
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
		runs = append(runs, fakeRun("fleetgate", "1.3", ModeFresh, v))
	}
	for _, v := range []float64{1000, 1200, 900} { // median 1000
		runs = append(runs, fakeRun("nginx", "1.3", ModeFresh, v))
	}
	runs = append(runs,
		fakeRun("stdlib", "1.3", ModeFresh, 600),
		fakeRun("haproxy", "1.3", ModeKeepalive, 50),
		fakeRun("fleetgate", "1.3", ModeKeepalive, 100),
		fakeRun("fleetgate", "1.2", ModeFresh, 480),
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
		"| TLS 1.3 fresh | fleetgate | 450 (400–500) | 1.50× |",
		"| TLS 1.3 fresh | nginx | 1000 (900–1200) | 3.33× |",
		"TLS 1.3 fresh: fleetgate ≤ 0.50× nginx: 0.45× (met)",
		"TLS 1.3 fresh: fleetgate ≤ 0.65× stdlib: 0.75× (**missed** by 15.4%)",
		"TLS 1.3 fresh: fleetgate ≤ 1.40× the crypto floor: 1.50× (**missed** by 7.1%)",
		"TLS 1.3 keepalive: fleetgate ≤ 0.70× haproxy: 2.00× (**missed** by 185.7%)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	// Scenarios: TLS 1.3 before 1.2, fresh before keepalive; servers in the
	// fixed order.
	if i, j, k := strings.Index(md, "| TLS 1.3 fresh | fleetgate"), strings.Index(md, "| TLS 1.3 keepalive"), strings.Index(md, "| TLS 1.2 fresh"); !(i < j && j < k) {
		t.Errorf("scenario order: %d %d %d\n%s", i, j, k, md)
	}
	if strings.Index(md, "| TLS 1.3 fresh | nginx") > strings.Index(md, "| TLS 1.3 fresh | stdlib") {
		t.Errorf("server order:\n%s", md)
	}
	file, err := os.ReadFile(o.Markdown)
	if err != nil || string(file) != md {
		t.Errorf("Markdown file differs from the output (%v)", err)
	}
	f, err := os.Open(o.PNG)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart: %v", err)
	}
	if b := img.Bounds(); b.Dx() != chartW || b.Dy() != chartH {
		t.Errorf("chart is %v", b)
	}
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
	if niceStep(130) != 200 || niceStep(0.7) != 1 || niceStep(45) != 50 {
		t.Errorf("niceStep: %v %v %v", niceStep(130), niceStep(0.7), niceStep(45))
	}
}
