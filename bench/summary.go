package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ClientLimit is the share of the load client's core above which a run's
// throughput and latency say more about the client than about the server:
// the report marks such a row "the client was the limit" and does not judge
// throughput or latency targets on it.
const ClientLimit = 0.9

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
	// PNG, when set, receives a bar chart of the server CPU per request, and
	// the files beside it named STEM-rps-tlsV-MODE.png (STEM is PNG without
	// ".png") one chart each of req/s against concurrency per TLS version and
	// mode. The Markdown links them by base name: keep them beside it.
	PNG string
}

// Cell is the summary of the runs of one server in one scenario at one
// concurrency. Every figure is the median over the runs; NaN when no run
// measured it.
type Cell struct {
	Server      string
	TLS         string
	Mode        Mode
	Concurrency int
	Runs        int
	// CPU is server CPU µs per request: median, min and max over the runs.
	CPU, CPUMin, CPUMax float64
	// CPURuns is the server CPU µs per request of each run, in the order
	// the runs started: the comparison interleaves the servers run by run,
	// so the i-th runs of two servers were measured side by side.
	CPURuns []float64
	// Batches is the Batch of each run of CPURuns, for the interval.
	Batches    []string
	Throughput float64 // requests/s
	P50, P99   float64 // latency, µs
	// ServerBusy is the server's CPU seconds over the wall seconds of the
	// measured phase: 1 is its core never idle.
	ServerBusy float64
	// ClientCPU is the load client's own CPU µs per request.
	ClientCPU float64
	// ClientBusy is the share of the client's core that was busy: the
	// client's CPU seconds (plus those of the other processes on its core,
	// when measured) over the wall seconds.
	ClientBusy float64
	Errors     int64 // over all runs
	Requests   int64 // over all runs
}

// ClientLimited reports whether the client's core was more than
// ClientLimit busy: then the client, not the server, was the limit.
func (c *Cell) ClientLimited() bool { return c.ClientBusy > ClientLimit }

// Scenario is a TLS version and a mode.
type Scenario struct {
	TLS  string
	Mode Mode
}

// String is "TLS 1.3 fresh".
func (s Scenario) String() string { return "TLS " + s.TLS + " " + string(s.Mode) }

// CellKey names a Cell: a scenario, a concurrency and a server.
type CellKey struct {
	Scenario
	Concurrency int
	Server      string
}

// Summary is the comparison's result: one Cell per scenario, concurrency
// and server.
type Summary struct {
	Scenarios []Scenario // TLS 1.3 first, fresh before keepalive
	Levels    []int      // the concurrencies measured, ascending
	Servers   []string   // fleetgate, nginx, haproxy, stdlib, then others
	Cells     map[CellKey]*Cell
	FloorUS   float64
}

// serverOrder puts the known servers first, in this order.
var serverOrder = []string{"fleetgate", "nginx", "haproxy", "stdlib"}

// Summarize reads the runs of a comparison and writes its Markdown to w:
// per scenario, a table of every server at every concurrency (throughput,
// p50 and p99 latency, server CPU per request and how busy the server's and
// the client's cores were), then the performance targets with their ratios
// and verdicts; and the charts to o.PNG and beside it.
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
	s.writeMarkdown(&md, o.PNG)
	if _, err := io.WriteString(w, md.String()); err != nil {
		return err
	}
	if o.Markdown != "" {
		if err := os.WriteFile(o.Markdown, []byte(md.String()), 0o644); err != nil {
			return fmt.Errorf("bench: summary: %w", err)
		}
	}
	if o.PNG != "" {
		if err := s.writeCPUChart(o.PNG); err != nil {
			return err
		}
		for _, sc := range s.Scenarios {
			if err := s.writeRPSChart(rpsChartPath(o.PNG, sc), sc); err != nil {
				return err
			}
		}
	}
	return nil
}

// rpsChartPath is where the req/s chart of sc goes, beside png.
func rpsChartPath(png string, sc Scenario) string {
	return fmt.Sprintf("%s-rps-tls%s-%s.png", strings.TrimSuffix(png, ".png"), sc.TLS, sc.Mode)
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

// summarize groups runs by scenario, concurrency and server.
func summarize(runs []*Result, floorUS float64) *Summary {
	s := &Summary{Cells: map[CellKey]*Cell{}, FloorUS: floorUS}
	groups := map[CellKey][]*Result{}
	for _, r := range runs {
		sc := Scenario{TLS: r.TLS, Mode: r.Mode}
		if !slices.Contains(s.Scenarios, sc) {
			s.Scenarios = append(s.Scenarios, sc)
		}
		if !slices.Contains(s.Levels, r.Concurrency) {
			s.Levels = append(s.Levels, r.Concurrency)
		}
		if !slices.Contains(s.Servers, r.Label) {
			s.Servers = append(s.Servers, r.Label)
		}
		k := CellKey{sc, r.Concurrency, r.Label}
		groups[k] = append(groups[k], r)
	}
	slices.SortStableFunc(s.Scenarios, func(a, b Scenario) int {
		if a.TLS != b.TLS {
			return strings.Compare(b.TLS, a.TLS) // 1.3 first
		}
		return strings.Compare(string(a.Mode), string(b.Mode)) // fresh, keepalive
	})
	slices.Sort(s.Levels)
	rank := func(name string) int {
		if i := slices.Index(serverOrder, name); i >= 0 {
			return i
		}
		return len(serverOrder)
	}
	slices.SortStableFunc(s.Servers, func(a, b string) int { return rank(a) - rank(b) })
	for k, rs := range groups {
		slices.SortStableFunc(rs, func(a, b *Result) int { return a.Started.Compare(b.Started) })
		c := &Cell{Server: k.Server, TLS: k.TLS, Mode: k.Mode, Concurrency: k.Concurrency, Runs: len(rs)}
		var cpu, thr, p50, p99, sbusy, ccpu, cbusy []float64
		for _, r := range rs {
			if r.ServerCPUPerReqUS != nil {
				cpu = append(cpu, *r.ServerCPUPerReqUS)
				c.Batches = append(c.Batches, r.Batch)
			}
			if v := r.ServerCoreBusy(); !math.IsNaN(v) {
				sbusy = append(sbusy, v)
			}
			if v := r.ClientCoreBusy(); !math.IsNaN(v) {
				cbusy = append(cbusy, v)
			}
			thr = append(thr, r.Throughput)
			p50 = append(p50, float64(r.Latency.P50))
			p99 = append(p99, float64(r.Latency.P99))
			ccpu = append(ccpu, r.ClientCPUPerReqUS)
			c.Errors += r.ErrorTotal
			c.Requests += r.Requests
		}
		c.CPU, c.CPUMin, c.CPUMax, c.CPURuns = median(cpu), minOf(cpu), maxOf(cpu), cpu
		c.Throughput, c.P50, c.P99 = median(thr), median(p50), median(p99)
		c.ServerBusy, c.ClientCPU, c.ClientBusy = median(sbusy), median(ccpu), median(cbusy)
		s.Cells[k] = c
	}
	return s
}

// cell returns the cell of server in sc at concurrency n, or nil.
func (s *Summary) cell(sc Scenario, n int, server string) *Cell {
	return s.Cells[CellKey{sc, n, server}]
}

func (s *Summary) writeMarkdown(w io.Writer, png string) {
	fmt.Fprintf(w, "Medians over the runs, at each concurrency (clients: requests in flight). "+
		"Server core busy: the server's CPU seconds over the wall seconds of the run (100%%: its core never idle). "+
		"Client core busy: the same for the load client's core (the client, plus the origin when it was measured, which shares that core). "+
		"Over %.0f%%, the client was the limit: that row's req/s and latency say more about the client than about the server.\n",
		ClientLimit*100)
	for _, sc := range s.Scenarios {
		fmt.Fprintf(w, "\n### %s\n\n", sc)
		fmt.Fprintf(w, "| clients | server | req/s | p50 | p99 | server CPU µs/request (min–max) | × crypto floor | server core busy | client CPU µs/request | client core busy | runs | errors |\n")
		fmt.Fprintf(w, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
		for _, n := range s.Levels {
			for _, server := range s.Servers {
				c := s.cell(sc, n, server)
				if c == nil {
					continue
				}
				floor := "–"
				if sc.Mode == ModeFresh && s.FloorUS > 0 && !math.IsNaN(c.CPU) {
					floor = fmt.Sprintf("%.2f×", c.CPU/s.FloorUS)
				}
				client := percent(c.ClientBusy)
				if c.ClientLimited() {
					client += " **the client was the limit**"
				}
				fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s (%s–%s) | %s | %s | %s | %s | %d | %d |\n",
					n, server, num(c.Throughput), fmtUSf(c.P50), fmtUSf(c.P99), num(c.CPU), num(c.CPUMin), num(c.CPUMax),
					floor, percent(c.ServerBusy), num(c.ClientCPU), client, c.Runs, c.Errors)
			}
		}
		if png != "" {
			fmt.Fprintf(w, "\n![req/s against concurrency, %s](%s)\n", sc, filepath.Base(rpsChartPath(png, sc)))
		}
	}
	fmt.Fprintf(w, "\nCrypto floor (one fresh TLS 1.3 mTLS request, server side, `fleetgate bench -floor`): %.1f µs of CPU.\n", s.FloorUS)
	if png != "" {
		fmt.Fprintf(w, "\n![server CPU per request](%s)\n", filepath.Base(png))
	}
	s.writeTargets(w)
}

// percent is "65%", or "n/a" for NaN.
func percent(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", v*100)
}

// fmtUSf is fmtUS of a float, "n/a" for NaN.
func fmtUSf(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmtUS(int64(v))
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
