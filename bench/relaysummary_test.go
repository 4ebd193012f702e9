package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeTCPRun is a ModeTCP result of server with cpu µs per message (or per
// connect when perConn is 1).
func fakeTCPRun(server string, size, perConn int, cpu float64) *Result {
	c := cpu
	s := &TCPStats{MessageSize: size, MessagesPerConn: perConn, Messages: 1000, MessagesPerS: 500, Connects: 10, ConnectsPerS: 5}
	if perConn == 1 {
		s.ServerCPUPerConnectUS = &c
	} else {
		s.ServerCPUPerMessageUS = &c
	}
	return &Result{Label: server, Mode: ModeTCP, TLS: "1.3", TCP: s, Errors: map[string]int64{}, Latency: Latency{P50: 80, P99: 400}}
}

// summarizeRelayText is SummarizeRelay's Markdown of the runs in jsonl.
func summarizeRelayText(t *testing.T, jsonl string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.jsonl")
	if err := os.WriteFile(path, []byte(jsonl), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := SummarizeRelay(path, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestSummarizeRelay(t *testing.T) {
	var b strings.Builder
	for _, r := range []*Result{
		fakeTCPRun("gorelay", 64, 1000, 30), fakeTCPRun("fleetgate", 64, 1000, 12), fakeTCPRun("fleetgate", 64, 1000, 14),
		fakeTCPRun("fleetgate", 64, 1000, 13), fakeTCPRun("fleetgate", 4096, 1000, 25), fakeTCPRun("fleetgate", 64, 1, 900),
		fakeTCPRun("haproxy", 64, 1000, 9),
	} {
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
	}
	hold := &IdleResult{Label: "fleetgate", N: 9000, Open: 8990, Echo: 64, BytesPerConn: 10240, Errors: map[string]int64{}}
	if err := hold.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	md := summarizeRelayText(t, b.String())
	for _, want := range []string{
		"| server CPU (median, range over the runs) | fleetgate | haproxy | gorelay |", // known servers in order
		"| TLS 1.3 echo 64 B (1000 per connection), CPU µs per message | 13.0 (12.0–14.0) | 9.0 | 30.0 |",
		"| TLS 1.3 echo 4 KiB (1000 per connection), CPU µs per message | 25.0 | n/a | n/a |",
		"| TLS 1.3 connect (1 × 64 B echoed), CPU µs per connect | 900 | n/a | n/a |",
		"| idle relayed connection, RSS bytes per connection (connections open) | 10240 (8990 of 9000) | n/a | n/a |",
		"| TLS 1.3 echo 64 B | fleetgate | 3 | 500 | 80 / 400 | 5 | 0 / 0 | 0 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	// The echo rows come before the connect row.
	if strings.Index(md, "connect (1 ×") < strings.Index(md, "echo 4 KiB") {
		t.Errorf("connect scenario before an echo one:\n%s", md)
	}
}

func TestSummarizeRelayErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "no runs"},
		{"no label", `{"mode":"tcp","tcp":{}}` + "\n", "without a label"},
		{"http run", `{"label":"nginx","mode":"fresh"}` + "\n", "not a tcp one"},
		{"not JSON", "{\n", ":1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".jsonl")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := SummarizeRelay(path, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one naming %q", err, tt.want)
			}
		})
	}
	if err := SummarizeRelay(filepath.Join(dir, "missing"), &strings.Builder{}); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestSummarizeRelayTargets(t *testing.T) {
	var b strings.Builder
	for _, r := range []*Result{
		fakeTCPRun("fleetgate", 64, 1000, 20), fakeTCPRun("haproxy", 64, 1000, 28.5), fakeTCPRun("gorelay", 64, 1000, 30),
		fakeTCPRun("fleetgate", 4096, 1000, 40), fakeTCPRun("haproxy", 4096, 1000, 10), // no target at 4 KiB
	} {
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*IdleResult{
		{Label: "fleetgate", N: 1000, Open: 1000, BytesPerConn: 30000},
		{Label: "haproxy", N: 1000, Open: 1000, BytesPerConn: 28000},
		{Label: "gorelay", N: 1000, Open: 1000, BytesPerConn: 63000},
	} {
		h.Errors = map[string]int64{}
		if err := h.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
	}
	md := summarizeRelayText(t, b.String())
	for _, want := range []string{
		"- TLS 1.3 echo 64 B: fleetgate ≤ 0.80× haproxy: 0.70× (met); paired 0.70×\n", // one run each: 20/28.5
		"- RSS per idle relayed connection: fleetgate below haproxy: 1.07× (**missed** by 7.1%)\n",
		"- RSS per idle relayed connection: fleetgate ≤ 0.50× gorelay (Go io.Copy): 0.48× (met)\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "echo 4 KiB: fleetgate ≤") {
		t.Errorf("a target on the 4 KiB echo:\n%s", md)
	}
	// A relay not measured is said so, not judged.
	b.Reset()
	if err := fakeTCPRun("fleetgate", 64, 1000, 20).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if md := summarizeRelayText(t, b.String()); !strings.Contains(md, "- TLS 1.3 echo 64 B: fleetgate ≤ 0.80× haproxy: not measured") {
		t.Errorf("summary lacks the relay not measured:\n%s", md)
	}
}

// TestSummarizeRelayBatches: pooled relay runs carry their full run's
// stamp (Batch), and the echo target's interval draws whole runs.
func TestSummarizeRelayBatches(t *testing.T) {
	var b strings.Builder
	var fg, hp []float64
	var batches []string
	at := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	for k, ratio := range []float64{0.72, 0.78, 0.86} {
		for i := range 5 {
			f, h := 28*ratio+0.2*float64(i), 28+0.3*float64(i)
			for _, r := range []*Result{fakeTCPRun("fleetgate", 64, 1000, f), fakeTCPRun("haproxy", 64, 1000, h)} {
				r.Batch = fmt.Sprintf("stamp%d", k)
				r.Started = at
				at = at.Add(time.Second)
				if err := r.WriteJSON(&b); err != nil {
					t.Fatal(err)
				}
			}
			fg, hp, batches = append(fg, f), append(hp, h), append(batches, fmt.Sprintf("stamp%d", k))
		}
	}
	md := summarizeRelayText(t, b.String())
	lo, hi := ratioInterval(fg, hp, batches)
	plo, phi := ratioInterval(fg, hp, nil)
	if !(hi-lo > phi-plo) {
		t.Fatalf("batched interval %.3f–%.3f not wider than the pairs' %.3f–%.3f", lo, hi, plo, phi)
	}
	if want := fmt.Sprintf("; 95%% interval %.2f–%.2f×\n", lo, hi); !strings.Contains(md, want) {
		t.Errorf("summary lacks %q:\n%s", want, md)
	}
}
