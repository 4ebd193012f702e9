package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// mqttGroup is the runs of one scenario against one server set-up.
type mqttGroup struct {
	scenario, label string
	runs            []*MQTTResult
}

// SummarizeMQTT reads MQTTResults (JSON lines, as `fleetgate bench -mode
// mqtt -json` prints them) and writes Markdown: one row per scenario and
// server set-up (the median of its runs), the price of each set-up over
// the first one of its scenario (per connect and per message), and the
// memory of the runs that held their devices.
func SummarizeMQTT(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bench: mqtt summary: %w", err)
	}
	defer f.Close()
	var groups []*mqttGroup
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var r MQTTResult
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			return fmt.Errorf("bench: mqtt summary: %s line %d: %w", path, line, err)
		}
		if r.MQTTVersion == "" {
			continue // another mode's result
		}
		i := slices.IndexFunc(groups, func(g *mqttGroup) bool { return g.scenario == r.Scenario && g.label == r.Label })
		if i < 0 {
			groups = append(groups, &mqttGroup{scenario: r.Scenario, label: r.Label})
			i = len(groups) - 1
		}
		groups[i].runs = append(groups[i].runs, &r)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("bench: mqtt summary: %s: %w", path, err)
	}
	if len(groups) == 0 {
		return fmt.Errorf("bench: mqtt summary: %s holds no mqtt run", path)
	}
	var b strings.Builder
	b.WriteString("| scenario | server | runs | devices | connects/s | connect p50 / p99 | QoS | messages/s | PUBACK p50 / p99 | server CPU µs/connect | server CPU µs/message | errors |\n")
	b.WriteString("| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |\n")
	for _, g := range groups {
		first := g.runs[0]
		pubLat, qos, mps := "-", "-", "-"
		perConnect := g.optMedian(func(r *MQTTResult) *float64 { return r.ServerCPUPerConnectUS })
		if first.MessagesPerDevice > 0 {
			perConnect = "-" // a publishing run's few connects measure little
			qos = fmt.Sprint(first.QoS)
			mps = fmt.Sprintf("%.0f", g.median(func(r *MQTTResult) float64 { return r.MessagesPerS }))
		}
		if first.PublishLatency != nil {
			pubLat = fmt.Sprintf("%s / %s", fmtUS(int64(g.median(func(r *MQTTResult) float64 { return pubP(r, 50) }))),
				fmtUS(int64(g.median(func(r *MQTTResult) float64 { return pubP(r, 99) }))))
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %.0f | %s / %s | %s | %s | %s | %s | %s | %s |\n",
			orDefault(g.scenario, "-"), orDefault(g.label, "-"), len(g.runs), first.Devices,
			g.median(func(r *MQTTResult) float64 { return r.ConnectsPerS }),
			fmtUS(int64(g.median(func(r *MQTTResult) float64 { return float64(r.ConnectLatency.P50) }))),
			fmtUS(int64(g.median(func(r *MQTTResult) float64 { return float64(r.ConnectLatency.P99) }))),
			qos, mps, pubLat,
			perConnect, g.optMedian(func(r *MQTTResult) *float64 { return r.ServerCPUPerMessageUS }),
			g.errors())
	}

	// The price of each set-up over the scenario's first one.
	var price strings.Builder
	for _, g := range groups {
		base := groups[slices.IndexFunc(groups, func(o *mqttGroup) bool { return o.scenario == g.scenario })]
		if base == g {
			continue
		}
		fig, name := "server_cpu_us_per_connect", "µs per connect"
		get := func(r *MQTTResult) *float64 { return r.ServerCPUPerConnectUS }
		if g.runs[0].MessagesPerDevice > 0 {
			fig, name = "server_cpu_us_per_message", "µs per message"
			get = func(r *MQTTResult) *float64 { return r.ServerCPUPerMessageUS }
		}
		bv, bok := base.optMedianValue(get)
		gv, gok := g.optMedianValue(get)
		if !bok || !gok {
			continue
		}
		ratio := "-"
		if bv > 0 {
			ratio = fmt.Sprintf("%.2f×", gv/bv)
		}
		fmt.Fprintf(&price, "| %s | %s (%s) | %.1f | %.1f | %+.1f | %s | %s vs %s |\n",
			orDefault(g.scenario, "-"), name, fig, bv, gv, gv-bv, ratio, orDefault(g.label, "-"), orDefault(base.label, "-"))
	}
	if price.Len() > 0 {
		b.WriteString("\nServer CPU (all the server processes of the set-up, from /proc/PID/stat), medians:\n\n")
		b.WriteString("| scenario | figure | baseline (first set-up) | this set-up | difference | ratio | set-ups |\n")
		b.WriteString("| --- | --- | --: | --: | --: | --: | --- |\n")
		b.WriteString(price.String())
	}

	// Memory of the runs that held their devices.
	var mem strings.Builder
	for _, g := range groups {
		r := g.runs[len(g.runs)/2]
		if r.HoldS == 0 || len(r.ServerPIDs) == 0 {
			continue
		}
		var procs []string
		for i := range r.ServerPIDs {
			procs = append(procs, fmt.Sprintf("%s %.0f MiB (peak %.0f MiB)", r.ServerProcs[i], mib(r.ServerRSSBytes[i]), mib(r.ServerPeakRSSBytes[i])))
		}
		fmt.Fprintf(&mem, "| %s | %s | %d | %d | %.2f s | %.0f | %d | %s |\n", orDefault(g.scenario, "-"), orDefault(g.label, "-"),
			r.Devices, r.Connected, r.ConnectS, r.ConnectsPerS, r.StillConnected, strings.Join(procs, "; "))
	}
	if mem.Len() > 0 {
		b.WriteString("\nHeld fleets (one run each: the middle one):\n\n")
		b.WriteString("| scenario | server | devices | connected | time until all connected | connects/s | still connected after the hold | RSS with the fleet connected (peak) |\n")
		b.WriteString("| --- | --- | --: | --: | --: | --: | --: | --- |\n")
		b.WriteString(mem.String())
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// pubP is a publish latency percentile (50 or 99) of r, 0 without one.
func pubP(r *MQTTResult, p int) float64 {
	if r.PublishLatency == nil {
		return 0
	}
	if p == 50 {
		return float64(r.PublishLatency.P50)
	}
	return float64(r.PublishLatency.P99)
}

// median is the median of f over the group's runs.
func (g *mqttGroup) median(f func(*MQTTResult) float64) float64 {
	v := make([]float64, len(g.runs))
	for i, r := range g.runs {
		v[i] = f(r)
	}
	return medianOf(v)
}

// optMedianValue is the median of an optional figure over the runs that
// have it.
func (g *mqttGroup) optMedianValue(f func(*MQTTResult) *float64) (float64, bool) {
	var v []float64
	for _, r := range g.runs {
		if p := f(r); p != nil {
			v = append(v, *p)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	return medianOf(v), true
}

func (g *mqttGroup) optMedian(f func(*MQTTResult) *float64) string {
	v, ok := g.optMedianValue(f)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// errors sums the group's errors by kind ("0" for none).
func (g *mqttGroup) errors() string {
	sum := map[string]int64{}
	for _, r := range g.runs {
		for k, n := range r.Errors {
			sum[k] += n
		}
	}
	if len(sum) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(sum)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, sum[k]))
	}
	return strings.Join(parts, " ")
}

// medianOf is the median of v (the mean of the middle two for an even
// count); v is sorted in place.
func medianOf(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
