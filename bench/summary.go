package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// SummaryOptions configure Summarize.
type SummaryOptions struct {
	// Input is a file of Result JSON lines (`fleetgate bench -json`), one
	// per measured run; each run's Label names its server.
	Input string
	// FloorUS is the crypto floor in µs of CPU (MeasureFloor's SumUS); 0
	// measures it now, in this process.
	FloorUS float64
	// Markdown, when set, also receives the Markdown written to w.
	Markdown string
	// PNG, when set, receives a bar chart of the same numbers.
	PNG string
}

// Cell is the summary of the runs of one server in one scenario.
type Cell struct {
	Server string
	TLS    string
	Mode   Mode
	Runs   int
	// CPU is server CPU µs per request: median, min and max over the runs.
	CPU, CPUMin, CPUMax float64
	Throughput          float64 // median requests/s
	P99                 float64 // median p99 latency, µs
	Errors              int64   // over all runs
	Requests            int64   // over all runs
}

// Scenario is a TLS version and a mode.
type Scenario struct {
	TLS  string
	Mode Mode
}

// String is "TLS 1.3 fresh".
func (s Scenario) String() string { return "TLS " + s.TLS + " " + string(s.Mode) }

// Summary is the comparison's result: one Cell per server and scenario.
type Summary struct {
	Scenarios []Scenario
	Servers   []string
	Cells     map[Scenario]map[string]*Cell
	FloorUS   float64
}

// serverOrder puts the known servers first, in this order.
var serverOrder = []string{"fleetgate", "nginx", "haproxy", "stdlib"}

// Summarize reads the runs of a comparison and writes its Markdown table
// (median and range of server CPU µs per request, throughput, p99) and the
// performance targets with their ratios to w, and the chart to o.PNG.
func Summarize(o SummaryOptions, w io.Writer) error {
	runs, err := readResults(o.Input)
	if err != nil {
		return err
	}
	if o.FloorUS <= 0 {
		fl, err := MeasureFloor()
		if err != nil {
			return err
		}
		o.FloorUS = fl.SumUS
	}
	s := summarize(runs, o.FloorUS)
	var md strings.Builder
	s.writeMarkdown(&md)
	if _, err := io.WriteString(w, md.String()); err != nil {
		return err
	}
	if o.Markdown != "" {
		if err := os.WriteFile(o.Markdown, []byte(md.String()), 0o644); err != nil {
			return fmt.Errorf("bench: summary: %w", err)
		}
	}
	if o.PNG != "" {
		if err := s.writePNG(o.PNG); err != nil {
			return err
		}
	}
	return nil
}

func readResults(path string) ([]*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bench: summary: %w", err)
	}
	defer f.Close()
	var out []*Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			return nil, fmt.Errorf("bench: summary: %s:%d: %w", path, line, err)
		}
		if r.Label == "" {
			return nil, fmt.Errorf("bench: summary: %s:%d: a run without a label (the server's name)", path, line)
		}
		out = append(out, &r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: summary: %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: summary: %s: no runs", path)
	}
	return out, nil
}

// summarize groups runs by scenario and server.
func summarize(runs []*Result, floorUS float64) *Summary {
	s := &Summary{Cells: map[Scenario]map[string]*Cell{}, FloorUS: floorUS}
	type key struct {
		sc     Scenario
		server string
	}
	groups := map[key][]*Result{}
	for _, r := range runs {
		sc := Scenario{TLS: r.TLS, Mode: r.Mode}
		if !slices.Contains(s.Scenarios, sc) {
			s.Scenarios = append(s.Scenarios, sc)
		}
		if !slices.Contains(s.Servers, r.Label) {
			s.Servers = append(s.Servers, r.Label)
		}
		groups[key{sc, r.Label}] = append(groups[key{sc, r.Label}], r)
	}
	slices.SortStableFunc(s.Scenarios, func(a, b Scenario) int {
		if a.TLS != b.TLS {
			return strings.Compare(b.TLS, a.TLS) // 1.3 first
		}
		return strings.Compare(string(a.Mode), string(b.Mode)) // fresh, keepalive
	})
	rank := func(name string) int {
		if i := slices.Index(serverOrder, name); i >= 0 {
			return i
		}
		return len(serverOrder)
	}
	slices.SortStableFunc(s.Servers, func(a, b string) int { return rank(a) - rank(b) })
	for k, rs := range groups {
		c := &Cell{Server: k.server, TLS: k.sc.TLS, Mode: k.sc.Mode, Runs: len(rs)}
		var cpu, thr, p99 []float64
		for _, r := range rs {
			if r.ServerCPUPerReqUS != nil {
				cpu = append(cpu, *r.ServerCPUPerReqUS)
			}
			thr = append(thr, r.Throughput)
			p99 = append(p99, float64(r.Latency.P99))
			c.Errors += r.ErrorTotal
			c.Requests += r.Requests
		}
		c.CPU, c.CPUMin, c.CPUMax = median(cpu), minOf(cpu), maxOf(cpu)
		c.Throughput, c.P99 = median(thr), median(p99)
		if s.Cells[k.sc] == nil {
			s.Cells[k.sc] = map[string]*Cell{}
		}
		s.Cells[k.sc][k.server] = c
	}
	return s
}

// cell returns the cell of server in sc, or nil.
func (s *Summary) cell(sc Scenario, server string) *Cell {
	return s.Cells[sc][server]
}

func (s *Summary) writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "| scenario | server | server CPU µs/request, median (min–max) | × crypto floor | throughput req/s (median) | p99 (median) | runs | errors |\n")
	fmt.Fprintf(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, sc := range s.Scenarios {
		for _, server := range s.Servers {
			c := s.cell(sc, server)
			if c == nil {
				continue
			}
			floor := "–"
			if sc.Mode == ModeFresh && s.FloorUS > 0 && !math.IsNaN(c.CPU) {
				floor = fmt.Sprintf("%.2f×", c.CPU/s.FloorUS)
			}
			fmt.Fprintf(w, "| %s | %s | %s (%s–%s) | %s | %.0f | %s | %d | %d |\n",
				sc, server, num(c.CPU), num(c.CPUMin), num(c.CPUMax), floor, c.Throughput, fmtUS(int64(c.P99)), c.Runs, c.Errors)
		}
	}
	fmt.Fprintf(w, "\nCrypto floor (one fresh TLS 1.3 mTLS request, server side, `fleetgate bench -floor`): %.1f µs of CPU.\n", s.FloorUS)
	fmt.Fprintf(w, "\n**Targets** (fleetgate's median server CPU per request over the other's):\n\n")
	for _, t := range s.targets() {
		fmt.Fprintf(w, "- %s\n", t)
	}
}

// targets evaluates the project's CPU targets on the scenarios measured.
func (s *Summary) targets() []string {
	var out []string
	ratio := func(sc Scenario, other string, limit float64) {
		fg := s.cell(sc, "fleetgate")
		var denom float64
		name := other
		if other == "floor" {
			denom, name = s.FloorUS, "the crypto floor"
		} else if c := s.cell(sc, other); c != nil {
			denom = c.CPU
		}
		if fg == nil || denom <= 0 || math.IsNaN(denom) || math.IsNaN(fg.CPU) {
			out = append(out, fmt.Sprintf("%s: fleetgate ≤ %.2f× %s: not measured", sc, limit, name))
			return
		}
		r := fg.CPU / denom
		verdict := "met"
		if r > limit {
			verdict = fmt.Sprintf("**missed** by %.1f%%", (r/limit-1)*100)
		}
		out = append(out, fmt.Sprintf("%s: fleetgate ≤ %.2f× %s: %.2f× (%s)", sc, limit, name, r, verdict))
	}
	fresh13 := Scenario{TLS: "1.3", Mode: ModeFresh}
	ratio(fresh13, "nginx", 0.5)
	ratio(fresh13, "stdlib", 0.65)
	ratio(fresh13, "floor", 1.4)
	for _, sc := range s.Scenarios {
		if sc.Mode == ModeKeepalive {
			ratio(sc, "haproxy", 0.7)
		}
	}
	return out
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", v)
}

// median of vs; NaN when empty.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minOf(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	return slices.Min(vs)
}

func maxOf(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	return slices.Max(vs)
}
