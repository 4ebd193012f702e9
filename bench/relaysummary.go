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

// relayServerOrder puts the relay comparison's servers first, in this order.
var relayServerOrder = []string{"fleetgate", "nginx", "haproxy", "gorelay"}

// relayRuns are the runs of a relay comparison, by server (Label) and
// scenario.
type relayRuns struct {
	servers []string
	// echo holds the ModeTCP runs by scenario, then server, each server's
	// in the order they started.
	echo      map[relayScenario]map[string][]*Result
	scenarios []relayScenario
	// hold holds the idle measurements by server.
	hold map[string][]*IdleResult
}

// relayScenario is a message size and a number of messages per connection
// (1: a run about connects).
type relayScenario struct {
	TLS             string
	MessageSize     int
	MessagesPerConn int
}

func (s relayScenario) connect() bool { return s.MessagesPerConn == 1 }

// String names the scenario and its figure.
func (s relayScenario) String() string {
	if s.connect() {
		return fmt.Sprintf("TLS %s connect (1 × %s echoed), CPU µs per connect", s.TLS, sizeName(s.MessageSize))
	}
	return fmt.Sprintf("TLS %s echo %s (%d per connection), CPU µs per message", s.TLS, sizeName(s.MessageSize), s.MessagesPerConn)
}

// sizeName is "64 B" or "4 KiB".
func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// SummarizeRelay reads the JSON lines of a relay comparison (ModeTCP
// Results and IdleResults of relayed connections, each labelled with its
// server) and writes its Markdown tables to w: the median server CPU per
// echoed message and per connect with its range over the runs, the memory
// per idle relayed connection, then throughput, latency and errors.
func SummarizeRelay(input string, w io.Writer) error {
	runs, err := readRelayRuns(input)
	if err != nil {
		return err
	}
	var b strings.Builder
	runs.writeMarkdown(&b)
	_, err = io.WriteString(w, b.String())
	return err
}

// readRelayRuns reads a relay comparison's file: a line with an "n" field
// is an IdleResult, any other a Result of ModeTCP.
func readRelayRuns(path string) (*relayRuns, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bench: relay summary: %w", err)
	}
	defer f.Close()
	out := &relayRuns{echo: map[relayScenario]map[string][]*Result{}, hold: map[string][]*IdleResult{}}
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := []byte(strings.TrimSpace(sc.Text()))
		if len(text) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, line)
		var probe struct {
			Label string `json:"label"`
			N     *int   `json:"n"`
		}
		if err := json.Unmarshal(text, &probe); err != nil {
			return nil, fmt.Errorf("bench: relay summary: %s: %w", where, err)
		}
		if probe.Label == "" {
			return nil, fmt.Errorf("bench: relay summary: %s: a run without a label (the server's name)", where)
		}
		if !seen[probe.Label] {
			seen[probe.Label] = true
			out.servers = append(out.servers, probe.Label)
		}
		if probe.N != nil {
			var r IdleResult
			if err := json.Unmarshal(text, &r); err != nil {
				return nil, fmt.Errorf("bench: relay summary: %s: %w", where, err)
			}
			out.hold[r.Label] = append(out.hold[r.Label], &r)
			continue
		}
		var r Result
		if err := json.Unmarshal(text, &r); err != nil {
			return nil, fmt.Errorf("bench: relay summary: %s: %w", where, err)
		}
		if r.TCP == nil {
			return nil, fmt.Errorf("bench: relay summary: %s: a %s run, not a tcp one", where, r.Mode)
		}
		s := relayScenario{TLS: r.TLS, MessageSize: r.TCP.MessageSize, MessagesPerConn: r.TCP.MessagesPerConn}
		if out.echo[s] == nil {
			out.echo[s] = map[string][]*Result{}
			out.scenarios = append(out.scenarios, s)
		}
		out.echo[s][r.Label] = append(out.echo[s][r.Label], &r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: relay summary: %s: %w", path, err)
	}
	if len(out.servers) == 0 {
		return nil, fmt.Errorf("bench: relay summary: %s: no runs", path)
	}
	slices.SortStableFunc(out.servers, func(a, b string) int { return orderOf(a) - orderOf(b) })
	// Each server's runs in the order they started, for pairedRatio.
	for _, byServer := range out.echo {
		for _, rs := range byServer {
			slices.SortStableFunc(rs, func(a, b *Result) int { return a.Started.Compare(b.Started) })
		}
	}
	// Connect scenarios last, then by TLS version and message size.
	slices.SortStableFunc(out.scenarios, func(a, b relayScenario) int {
		switch {
		case a.connect() != b.connect():
			if a.connect() {
				return 1
			}
			return -1
		case a.TLS != b.TLS:
			return strings.Compare(b.TLS, a.TLS) // 1.3 first
		}
		return a.MessageSize - b.MessageSize
	})
	return out, nil
}

// orderOf is a server's place in relayServerOrder (unknown servers last).
func orderOf(server string) int {
	if i := slices.Index(relayServerOrder, server); i >= 0 {
		return i
	}
	return len(relayServerOrder)
}

// figure is a scenario's CPU figure of one run: per connect in a connect
// scenario, per message otherwise (NaN when the run has no server CPU).
func (s relayScenario) figure(r *Result) float64 {
	v := r.TCP.ServerCPUPerMessageUS
	if s.connect() {
		v = r.TCP.ServerCPUPerConnectUS
	}
	if v == nil {
		return math.NaN()
	}
	return *v
}

func (rr *relayRuns) writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "| server CPU (median, range over the runs) | %s |\n", strings.Join(rr.servers, " | "))
	fmt.Fprintf(w, "| --- |%s\n", strings.Repeat(" ---: |", len(rr.servers)))
	for _, s := range rr.scenarios {
		row := []string{s.String()}
		for _, srv := range rr.servers {
			var vs []float64
			for _, r := range rr.echo[s][srv] {
				if v := s.figure(r); !math.IsNaN(v) {
					vs = append(vs, v)
				}
			}
			row = append(row, rangeText(vs))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	if len(rr.hold) > 0 {
		row := []string{"idle relayed connection, RSS bytes per connection (connections open)"}
		for _, srv := range rr.servers {
			cell := "n/a"
			for i, h := range rr.hold[srv] {
				c := fmt.Sprintf("%.0f (%d of %d)", h.BytesPerConn, h.Open, h.N)
				if i == 0 {
					cell = c
				} else {
					cell += "; " + c
				}
			}
			row = append(row, cell)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	rr.writeTargets(w)
	if len(rr.scenarios) == 0 {
		return
	}
	fmt.Fprintf(w, "\nMedians over the runs (the client's view; on a shared machine these move with the load):\n\n")
	fmt.Fprintf(w, "| scenario | server | runs | messages/s | message p50 / p99 µs | connects/s | connect p50 / p99 µs | errors |\n")
	fmt.Fprintf(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, s := range rr.scenarios {
		for _, srv := range rr.servers {
			runs := rr.echo[s][srv]
			if len(runs) == 0 {
				continue
			}
			var mps, p50, p99, cps, c50, c99 []float64
			errs := map[string]int64{}
			for _, r := range runs {
				mps = append(mps, r.TCP.MessagesPerS)
				p50 = append(p50, float64(r.Latency.P50))
				p99 = append(p99, float64(r.Latency.P99))
				cps = append(cps, r.TCP.ConnectsPerS)
				c50 = append(c50, float64(r.TCP.ConnectLatency.P50))
				c99 = append(c99, float64(r.TCP.ConnectLatency.P99))
				for k, n := range r.Errors {
					errs[k] += n
				}
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s / %s | %s | %s / %s | %s |\n",
				shortScenario(s), srv, len(runs), num(median(mps)), num(median(p50)), num(median(p99)),
				num(median(cps)), num(median(c50)), num(median(c99)), errorsText(errs))
		}
	}
}

// shortScenario is "TLS 1.3 echo 64 B" or "TLS 1.3 connect".
func shortScenario(s relayScenario) string {
	if s.connect() {
		return "TLS " + s.TLS + " connect"
	}
	return "TLS " + s.TLS + " echo " + sizeName(s.MessageSize)
}

// rangeText is "12.3 (11.9–13.0)", or the median alone for one run.
func rangeText(vs []float64) string {
	if len(vs) == 0 {
		return "n/a"
	}
	if len(vs) == 1 {
		return num1(vs[0])
	}
	return fmt.Sprintf("%s (%s–%s)", num1(median(vs)), num1(minOf(vs)), num1(maxOf(vs)))
}

// num1 has one decimal below 100, none above.
func num1(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// errorsText is "0" or "read=2 timeout=1".
func errorsText(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, errs[k])
	}
	return strings.Join(parts, " ")
}

// The relay's targets: server CPU per 64 B echoed message ≤ 0.8× HAProxy
// `mode tcp`; RSS per idle relayed connection below HAProxy's and ≤ 0.5×
// the Go io.Copy relay's.
const (
	targetRelayEchoSize    = 64
	targetRelayEchoHAProxy = 0.8
	targetRelayIdleGoRelay = 0.5
)

// writeTargets writes the relay targets with fleetgate's ratio and verdict.
func (rr *relayRuns) writeTargets(w io.Writer) {
	var lines []string
	for _, s := range rr.scenarios {
		if s.connect() || s.MessageSize != targetRelayEchoSize {
			continue
		}
		fg, hp := rr.medianFigure(s, "fleetgate"), rr.medianFigure(s, "haproxy")
		fgRuns, batches := rr.runFigures(s, "fleetgate")
		hpRuns, _ := rr.runFigures(s, "haproxy")
		c := targetCell{Ratio: fg / hp, Paired: pairedRatio(fgRuns, hpRuns), Limit: targetRelayEchoHAProxy}
		c.Low, c.High = ratioInterval(fgRuns, hpRuns, batches)
		lines = append(lines, fmt.Sprintf("%s: fleetgate ≤ %.2f× haproxy: %s", shortScenario(s), targetRelayEchoHAProxy,
			judge(c, func(r float64) bool { return r <= targetRelayEchoHAProxy })))
	}
	if len(rr.hold) > 0 {
		fg, hp, gr := rr.medianIdle("fleetgate"), rr.medianIdle("haproxy"), rr.medianIdle("gorelay")
		lines = append(lines,
			"RSS per idle relayed connection: fleetgate below haproxy: "+
				judge(targetCell{Ratio: fg / hp, Paired: math.NaN(), Limit: 1}, func(r float64) bool { return r < 1 }),
			fmt.Sprintf("RSS per idle relayed connection: fleetgate ≤ %.2f× gorelay (Go io.Copy): ", targetRelayIdleGoRelay)+
				judge(targetCell{Ratio: fg / gr, Paired: math.NaN(), Limit: targetRelayIdleGoRelay}, func(r float64) bool { return r <= targetRelayIdleGoRelay }))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n**Targets** (fleetgate's median over the other relay's; \"paired\": the median of the runs' own ratios, each fleetgate run over the other's run beside it; \"95%% interval\": of the ratio, from %d bootstrap draws of the full runs pooled and of the pairs of runs within each; both shown, not judged):\n\n", bootstrapResamples)
	for _, l := range lines {
		fmt.Fprintf(w, "- %s\n", l)
	}
}

// judge is c's text once its verdict is set by ok (whether its Ratio meets
// its Limit), with the paired ratio and the interval beside it when known:
// "not measured" when the ratio is not a number (a side not measured).
func judge(c targetCell, ok func(float64) bool) string {
	switch ratio := c.Ratio; {
	case math.IsNaN(ratio) || math.IsInf(ratio, 0) || ratio <= 0:
		return "not measured"
	case ok(ratio):
		c.Verdict = met
	default:
		c.Verdict = missed
	}
	return c.String()
}

// medianFigure is the median of s's CPU figure over server's runs (NaN:
// none).
func (rr *relayRuns) medianFigure(s relayScenario, server string) float64 {
	var vs []float64
	for _, r := range rr.echo[s][server] {
		if v := s.figure(r); !math.IsNaN(v) {
			vs = append(vs, v)
		}
	}
	return median(vs)
}

// runFigures is s's CPU figure of each of server's runs, in the order they
// started (readRelayRuns sorts them; the relays' runs are interleaved), for
// pairedRatio, and the Batch of each, for ratioInterval.
func (rr *relayRuns) runFigures(s relayScenario, server string) (figures []float64, batches []string) {
	for _, r := range rr.echo[s][server] {
		figures, batches = append(figures, s.figure(r)), append(batches, r.Batch)
	}
	return figures, batches
}

// medianIdle is the median RSS bytes per idle relayed connection of server
// (NaN: not measured).
func (rr *relayRuns) medianIdle(server string) float64 {
	var vs []float64
	for _, h := range rr.hold[server] {
		vs = append(vs, h.BytesPerConn)
	}
	return median(vs)
}
