package fuzz

// Execution counting for fuzzing runs. `go test -fuzz` under-reports
// executions on a busy machine (its status line shows 0/sec while the
// worker runs; golang/go#51484), so with FLEETGATE_FUZZ_STATS=<file> every
// fuzz worker appends "target pid elapsed execs settle-misses=N" to that
// file about once a second; the last line of a run is its total.

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

var (
	statsPath  = os.Getenv("FLEETGATE_FUZZ_STATS")
	statsMu    sync.Mutex
	statsStart time.Time
	statsLast  time.Time
	statsCount atomic.Int64
	// settleMisses counts feedRaw waits that ran out: the engine did not
	// visibly consume a complete record within settleTimeout. Not a
	// failure, but many of them mean the targets run slowly and shallowly.
	settleMisses atomic.Int64
)

// countExec counts one execution of target; a no-op unless
// FLEETGATE_FUZZ_STATS is set.
func countExec(target string) {
	if statsPath == "" {
		return
	}
	n := statsCount.Add(1)
	statsMu.Lock()
	defer statsMu.Unlock()
	now := time.Now()
	if statsStart.IsZero() {
		statsStart, statsLast = now, now
	}
	if now.Sub(statsLast) < time.Second {
		return
	}
	statsLast = now
	if f, err := os.OpenFile(statsPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "%s %d %.1f %d settle-misses=%d\n", target, os.Getpid(), now.Sub(statsStart).Seconds(), n, settleMisses.Load())
		_ = f.Close()
	}
}
