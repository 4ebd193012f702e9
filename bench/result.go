package bench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is the report of one run. Its JSON form is what `fleetgate bench
// -json` prints and what the comparison harness reads.
type Result struct {
	Label       string `json:"label,omitempty"`
	Target      string `json:"target"`
	SNI         string `json:"sni"`
	Host        string `json:"host"`
	Mode        Mode   `json:"mode"`
	TLS         string `json:"tls"`
	Group       string `json:"group"`
	Path        string `json:"path"`
	BodySize    int    `json:"body_size"`
	Concurrency int    `json:"concurrency"`
	Devices     int    `json:"devices"`

	// Requests counts the measured requests answered with a 2xx status.
	Requests int64 `json:"requests"`
	// Errors counts the failed ones by kind: dial, handshake, tls_alert,
	// write, read, closed (a kept-alive connection the server had closed),
	// timeout, group_mismatch (the server chose another key exchange than
	// Options.Group), status_NNN.
	Errors     map[string]int64 `json:"errors"`
	ErrorTotal int64            `json:"error_total"`
	// Handshakes counts the TLS handshakes of the measured phase.
	Handshakes int64 `json:"handshakes"`

	WarmupS    float64 `json:"warmup_s"`
	DurationS  float64 `json:"duration_s"`
	Throughput float64 `json:"throughput_rps"` // Requests / DurationS
	// Latency of the successful requests in microseconds, dial included in
	// fresh mode.
	Latency Latency `json:"latency_us"`

	// ServerCPUS and ServerCPUPerReqUS are set when PIDs were given: the CPU
	// time of those processes over the measured phase, in seconds and in
	// microseconds per successful request.
	ServerPIDs        []int    `json:"server_pids,omitempty"`
	ServerCPUS        *float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPerReqUS *float64 `json:"server_cpu_us_per_req,omitempty"`
	// ClientCPUPerReqUS is this process's own CPU per successful request.
	ClientCPUPerReqUS float64 `json:"client_cpu_us_per_req"`
	// ClientCPUS is this process's own CPU time over the measured phase, in
	// seconds: divided by DurationS, how busy the client kept its core.
	ClientCPUS float64 `json:"client_cpu_s"`
	// ClientCoreCPUS is set when Options.ClientCorePIDs were given: the
	// client's CPU time plus theirs over the measured phase, in seconds (the
	// work done on the client's core).
	ClientCorePIDs []int    `json:"client_core_pids,omitempty"`
	ClientCoreCPUS *float64 `json:"client_core_cpu_s,omitempty"`

	// TCP is set in ModeTCP, where a "request" above is one echoed
	// message (Requests, Throughput and Latency are about messages).
	TCP *TCPStats `json:"tcp,omitempty"`

	Started time.Time `json:"started"`
	// Batch names the full run of the comparison this run was part of:
	// make bench-pool sets it to the run's stamp, so that the interval of
	// a pooled ratio draws whole runs (ratioInterval). Empty otherwise.
	Batch string `json:"batch,omitempty"`
}

// Latency holds percentiles in microseconds.
type Latency struct {
	P50  int64   `json:"p50"`
	P90  int64   `json:"p90"`
	P99  int64   `json:"p99"`
	P999 int64   `json:"p99_9"`
	Max  int64   `json:"max"`
	Mean float64 `json:"mean"`
}

// newHistogram records latencies from 1 µs to 5 minutes with 3 significant
// digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3)
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		P50:  h.ValueAtQuantile(50),
		P90:  h.ValueAtQuantile(90),
		P99:  h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9),
		Max:  h.Max(),
		Mean: h.Mean(),
	}
}

// WriteJSON writes r as one line of JSON.
func (r *Result) WriteJSON(w io.Writer) error { return writeJSONLine(w, r) }

// TCPStats are ModeTCP's own figures.
type TCPStats struct {
	MessageSize     int `json:"message_size"`
	MessagesPerConn int `json:"messages_per_conn"`
	// Messages were echoed in full and intact; MessagesPerS is Messages /
	// DurationS.
	Messages     int64   `json:"messages"`
	MessagesPerS float64 `json:"messages_per_s"`
	// Connects counts the measured connections whose TCP connect and mTLS
	// handshake succeeded; ConnectsPerS is Connects / DurationS.
	Connects     int64   `json:"connects"`
	ConnectsPerS float64 `json:"connects_per_s"`
	// ConnectLatency is the time from dial to the end of the client's
	// handshake, in microseconds.
	ConnectLatency Latency `json:"connect_latency_us"`
	// ServerCPUPerMessageUS and ServerCPUPerConnectUS divide the server's
	// CPU time over the run (set when PIDs were given) by Messages and by
	// Connects. Each includes the other's share: a run of many messages per
	// connection measures messages, a run of one message per connection
	// measures connects.
	ServerCPUPerMessageUS *float64 `json:"server_cpu_us_per_message,omitempty"`
	ServerCPUPerConnectUS *float64 `json:"server_cpu_us_per_connect,omitempty"`
}

// WriteText writes r for a person.
func (r *Result) WriteText(w io.Writer) error {
	if r.TCP != nil {
		return r.writeTCPText(w)
	}
	var b strings.Builder
	label := ""
	if r.Label != "" {
		label = " [" + r.Label + "]"
	}
	fmt.Fprintf(&b, "fleetgate bench%s: %s (SNI %s, Host %s), mode %s, TLS %s, %s, %d workers, %d devices\n",
		label, r.Target, r.SNI, r.Host, r.Mode, r.TLS, r.Group, r.Concurrency, r.Devices)
	fmt.Fprintf(&b, "  requests     %d ok, %d errors in %.2fs (after %.1fs of warm-up); %d TLS handshakes\n",
		r.Requests, r.ErrorTotal, r.DurationS, r.WarmupS, r.Handshakes)
	if r.ErrorTotal > 0 {
		fmt.Fprintf(&b, "  errors      ")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, " %s=%d", k, r.Errors[k])
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  throughput   %.1f requests/s\n", r.Throughput)
	l := r.Latency
	fmt.Fprintf(&b, "  latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s)\n",
		fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max), fmtUS(int64(l.Mean)))
	if r.ServerCPUPerReqUS != nil {
		fmt.Fprintf(&b, "  server CPU   %.1f µs/request (%.2fs over PIDs %v)\n", *r.ServerCPUPerReqUS, *r.ServerCPUS, r.ServerPIDs)
	}
	fmt.Fprintf(&b, "  client CPU   %.1f µs/request (%.2fs, core %.0f%% busy)\n", r.ClientCPUPerReqUS, r.ClientCPUS, 100*r.ClientCoreBusy())
	_, err := io.WriteString(w, b.String())
	return err
}

// ClientCoreBusy is the share of the measured phase's wall time that the
// client's core spent working: ClientCoreCPUS (or ClientCPUS alone when no
// other process was measured) over DurationS. NaN without a duration.
func (r *Result) ClientCoreBusy() float64 {
	cpu := r.ClientCPUS
	if r.ClientCoreCPUS != nil {
		cpu = *r.ClientCoreCPUS
	} else if cpu == 0 && r.ClientCPUPerReqUS > 0 {
		// JSON written before client_cpu_s existed.
		cpu = r.ClientCPUPerReqUS * float64(r.Requests) / 1e6
	}
	if r.DurationS <= 0 {
		return math.NaN()
	}
	return cpu / r.DurationS
}

// ServerCoreBusy is the servers' CPU time over the measured phase's wall
// time (ServerCPUS / DurationS): 1 is one core fully busy. NaN without
// server PIDs or a duration.
func (r *Result) ServerCoreBusy() float64 {
	if r.ServerCPUS == nil || r.DurationS <= 0 {
		return math.NaN()
	}
	return *r.ServerCPUS / r.DurationS
}

// fmtUS formats microseconds with a readable unit.
func fmtUS(us int64) string {
	switch {
	case us >= 1_000_000:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	case us >= 1000:
		return fmt.Sprintf("%.2fms", float64(us)/1e3)
	}
	return fmt.Sprintf("%dµs", us)
}
