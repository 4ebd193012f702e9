package bench

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// The performance targets of the HTTP comparison, fleetgate's median over
// another server's, at each concurrency measured:
//   - fresh: server CPU per request ≤ 0.5× nginx and ≤ 0.75× Go net/http
//     (stdlib), and (TLS 1.3) ≤ 1.4× the crypto floor;
//   - fresh: req/s ≥ 1.1× net/http from 16 clients, ≥ 1.0× below, and p99
//     latency no worse than net/http's, unless the client was the limit;
//   - keep-alive: server CPU per request ≤ 1.0× HAProxy, aiming at 0.7×.
const (
	targetFreshCPUNginx   = 0.5
	targetFreshCPUStdlib  = 0.75
	targetFreshCPUFloor   = 1.4
	targetFreshRPSStdlib  = 1.1
	targetFreshRPSFewest  = 1.0 // below targetRPSFromClients
	targetRPSFromClients  = 16
	targetFreshP99Stdlib  = 1.0
	targetKeepaliveCPU    = 1.0
	targetKeepaliveCPUAim = 0.7
)

// targetVerdict is a target's outcome at one concurrency.
type targetVerdict int

const (
	notMeasured targetVerdict = iota
	met
	missed
	// clientLimited: a throughput or latency target where the client's core
	// was over ClientLimit busy in fleetgate's run or the other's: the
	// ratio is shown, not judged.
	clientLimited
)

// targetCell is a target's outcome at one concurrency.
type targetCell struct {
	Ratio float64 // fleetgate over the other
	// Paired is the median of the runs' own ratios, fleetgate's i-th run
	// over the other's i-th (measured side by side), NaN when not computed:
	// shown beside Ratio, which the verdict stays on. On a shared machine
	// whose speed drifts from minute to minute, it is the steadier figure.
	Paired float64
	// Low and High bound a 95% interval of Ratio (ratioInterval), shown
	// when High > 0: how far the machine's noise alone could move it.
	Low, High float64
	Limit     float64 // the bound at this concurrency
	Aim       float64 // a stricter aim, 0 if none
	AtLeast   bool    // Ratio must be ≥ Limit (throughput); else ≤ (CPU, latency)
	Verdict   targetVerdict
}

// String is "0.45× (met)", "1.20× (**missed** by 20.0%)", "–" …, with
// "; paired 0.43×" after it when Paired is known and "; 95% interval
// 0.41–0.49×" when the interval is.
func (c targetCell) String() string {
	s := c.verdictText()
	if c.Verdict == notMeasured {
		return s
	}
	if !math.IsNaN(c.Paired) && c.Paired > 0 {
		s += fmt.Sprintf("; paired %.2f×", c.Paired)
	}
	if !math.IsNaN(c.Low) && !math.IsNaN(c.High) && c.High > 0 {
		s += fmt.Sprintf("; 95%% interval %.2f–%.2f×", c.Low, c.High)
	}
	return s
}

// verdictText is String without the paired ratio.
func (c targetCell) verdictText() string {
	r := fmt.Sprintf("%.2f×", c.Ratio)
	switch c.Verdict {
	case met:
		if c.Aim > 0 {
			if c.Ratio <= c.Aim {
				return fmt.Sprintf("%s (met, and the %.2f× aim)", r, c.Aim)
			}
			return fmt.Sprintf("%s (met; the %.2f× aim not yet)", r, c.Aim)
		}
		return r + " (met)"
	case missed:
		by := c.Ratio/c.Limit - 1
		if c.AtLeast {
			by = 1 - c.Ratio/c.Limit
		}
		return fmt.Sprintf("%s (**missed** by %.1f%%)", r, by*100)
	case clientLimited:
		return r + " (not judged: the client was the limit)"
	}
	return "–"
}

// targetRow is one target over the concurrencies measured.
type targetRow struct {
	Name  string
	Cells map[int]targetCell
}

// targetSpec describes a target: a figure of fleetgate's Cell over the same
// figure of Other's (or over the crypto floor when Other is empty).
type targetSpec struct {
	name    string
	other   string
	figure  func(*Cell) float64
	limit   func(clients int) float64
	aim     float64
	atLeast bool
	// clientBound: not judged where a client was the limit (throughput and
	// latency; CPU per request depends far less on the client's speed: only
	// through the wake-ups of a server left idle part of the time).
	clientBound bool
	// runs, when set, gives the figure of each run, for the paired ratio
	// and the interval.
	runs func(*Cell) []float64
}

func cellCPU(c *Cell) float64       { return c.CPU }
func cellCPURuns(c *Cell) []float64 { return c.CPURuns }
func cellRPS(c *Cell) float64       { return c.Throughput }
func cellP99(c *Cell) float64       { return c.P99 }

func constant(v float64) func(int) float64 { return func(int) float64 { return v } }

// targets evaluates the targets on the scenarios measured.
func (s *Summary) targets() []targetRow {
	var rows []targetRow
	for _, sc := range s.Scenarios {
		var specs []targetSpec
		switch sc.Mode {
		case ModeFresh:
			specs = append(specs,
				targetSpec{name: fmt.Sprintf("server CPU/request ≤ %.2f× nginx", targetFreshCPUNginx),
					other: "nginx", figure: cellCPU, runs: cellCPURuns, limit: constant(targetFreshCPUNginx)},
				targetSpec{name: fmt.Sprintf("server CPU/request ≤ %.2f× stdlib (net/http)", targetFreshCPUStdlib),
					other: "stdlib", figure: cellCPU, runs: cellCPURuns, limit: constant(targetFreshCPUStdlib)})
			if sc.TLS == "1.3" {
				specs = append(specs, targetSpec{name: fmt.Sprintf("server CPU/request ≤ %.2f× the crypto floor", targetFreshCPUFloor),
					figure: cellCPU, limit: constant(targetFreshCPUFloor)})
			}
			specs = append(specs,
				targetSpec{name: fmt.Sprintf("req/s ≥ %.2f× stdlib from %d clients, ≥ %.2f× below", targetFreshRPSStdlib, targetRPSFromClients, targetFreshRPSFewest),
					other: "stdlib", figure: cellRPS, atLeast: true, clientBound: true,
					limit: func(n int) float64 {
						if n >= targetRPSFromClients {
							return targetFreshRPSStdlib
						}
						return targetFreshRPSFewest
					}},
				targetSpec{name: fmt.Sprintf("p99 ≤ %.2f× stdlib", targetFreshP99Stdlib),
					other: "stdlib", figure: cellP99, limit: constant(targetFreshP99Stdlib), clientBound: true})
		case ModeKeepalive:
			specs = append(specs, targetSpec{name: fmt.Sprintf("server CPU/request ≤ %.2f× haproxy (aim %.2f×)", targetKeepaliveCPU, targetKeepaliveCPUAim),
				other: "haproxy", figure: cellCPU, runs: cellCPURuns, limit: constant(targetKeepaliveCPU), aim: targetKeepaliveCPUAim})
		}
		for _, t := range specs {
			rows = append(rows, s.evaluate(sc, t))
		}
	}
	return rows
}

// evaluate computes one target at every concurrency of the summary.
func (s *Summary) evaluate(sc Scenario, t targetSpec) targetRow {
	row := targetRow{Name: sc.String() + ": " + t.name, Cells: map[int]targetCell{}}
	for _, n := range s.Levels {
		c := targetCell{Limit: t.limit(n), Aim: t.aim, AtLeast: t.atLeast, Ratio: math.NaN(), Paired: math.NaN()}
		fg := s.cell(sc, n, "fleetgate")
		var other *Cell
		denom := s.FloorUS
		if t.other != "" {
			other = s.cell(sc, n, t.other)
			denom = math.NaN()
			if other != nil {
				denom = t.figure(other)
			}
		}
		if fg != nil && other != nil && t.runs != nil {
			c.Paired = pairedRatio(t.runs(fg), t.runs(other))
			c.Low, c.High = ratioInterval(t.runs(fg), t.runs(other), fg.Batches)
		}
		if fg != nil && denom > 0 && !math.IsNaN(t.figure(fg)) {
			c.Ratio = t.figure(fg) / denom
			switch {
			case t.clientBound && (fg.ClientLimited() || (other != nil && other.ClientLimited())):
				c.Verdict = clientLimited
			case t.atLeast && c.Ratio >= c.Limit, !t.atLeast && c.Ratio <= c.Limit:
				c.Verdict = met
			default:
				c.Verdict = missed
			}
		}
		row.Cells[n] = c
	}
	return row
}

// pairedRatio is the median of a[i]/b[i] over the runs both have (NaN
// when none): each pair was measured side by side.
func pairedRatio(a, b []float64) float64 {
	pa, pb, _ := runPairs(a, b)
	rs := make([]float64, len(pa))
	for i := range pa {
		rs[i] = pa[i] / pb[i]
	}
	return median(rs)
}

// runPairs is the runs both a and b have, in pairs a[i], b[i], leaving out
// a pair where either side was not measured (NaN) or b is not positive;
// idx is the i of each pair kept.
func runPairs(a, b []float64) (pa, pb []float64, idx []int) {
	for i := 0; i < len(a) && i < len(b); i++ {
		if b[i] > 0 && !math.IsNaN(a[i]) {
			pa, pb, idx = append(pa, a[i]), append(pb, b[i]), append(idx, i)
		}
	}
	return pa, pb, idx
}

// The interval of a ratio of medians: bootstrapResamples draws, reported
// only from minBootstrapPairs pairs of runs on.
const (
	bootstrapResamples = 2000
	minBootstrapPairs  = 5
)

// ratioInterval is a 95% interval of median(a)/median(b), the ratio a
// verdict rests on, by a paired bootstrap in two stages. The runs come in
// batches, one per full run of the comparison (batch[i] is a[i]'s; all one
// batch when batch is nil, as in a single run's report): each draw takes
// as many batches as there are, with replacement, and from each batch
// taken as many of its pairs as it has, with replacement, a[i] with b[i]
// (measured side by side, so that the machine's drift moved both). The
// bounds are the 2.5th and 97.5th percentiles of the ratios of the draws'
// medians. A target whose line is inside it is met or missed by the noise
// of the runs alone. Drawing whole batches first is what carries the
// minutes of the machine each full run had to itself into the interval:
// the pairs of one batch are not independent draws. NaN, NaN with fewer
// than minBootstrapPairs pairs. The draws are seeded: the same runs give
// the same interval every time they are summarized.
func ratioInterval(a, b []float64, batch []string) (low, high float64) {
	pa, pb, idx := runPairs(a, b)
	n := len(pa)
	if n < minBootstrapPairs {
		return math.NaN(), math.NaN()
	}
	// The pairs of each batch, the batches in the order they first appear.
	var groups [][]int
	group := map[string]int{}
	for j, i := range idx {
		key := ""
		if i < len(batch) {
			key = batch[i]
		}
		g, ok := group[key]
		if !ok {
			g = len(groups)
			group[key] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], j)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	da, db := make([]float64, 0, n), make([]float64, 0, n)
	ratios := make([]float64, bootstrapResamples)
	for k := range ratios {
		da, db = da[:0], db[:0]
		for range groups {
			g := groups[0] // one batch: no draw, as a single run's report
			if len(groups) > 1 {
				g = groups[rng.IntN(len(groups))]
			}
			for range g {
				j := g[rng.IntN(len(g))]
				da, db = append(da, pa[j]), append(db, pb[j])
			}
		}
		ratios[k] = median(da) / median(db)
	}
	slices.Sort(ratios)
	return ratios[bootstrapResamples*25/1000], ratios[bootstrapResamples*975/1000-1]
}

// writeTargets writes the targets as a table: one row per target, one
// column per concurrency.
func (s *Summary) writeTargets(w io.Writer) {
	fmt.Fprintf(w, "\n**Targets** (fleetgate's median over the other's, at each concurrency; a throughput or latency target is not judged where either run's client core was over %.0f%% busy; \"paired\": the median of the runs' own ratios, each fleetgate run over the other's run beside it; \"95%% interval\": of the ratio, from %d bootstrap draws of the full runs pooled and of the pairs of runs within each, so that a line inside it is met or missed by the runs' noise alone; both shown, not judged):\n\n", ClientLimit*100, bootstrapResamples)
	head := []string{"target"}
	for _, n := range s.Levels {
		head = append(head, fmt.Sprintf("%d clients", n))
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat(" --- |", len(head)))
	for _, r := range s.targets() {
		cells := []string{r.Name}
		for _, n := range s.Levels {
			cells = append(cells, r.Cells[n].String())
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}
