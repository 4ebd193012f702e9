package main

import (
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fleetgate/fleetgate/bench"
)

// TestServeReturnsStormMemory: after a storm of fresh handshakes, the real
// binary, left quiet (memory_release_after = "500ms" by default), returns
// the heap the storm left unused: it says so in its log, and its resident
// size falls.
func TestServeReturnsStormMemory(t *testing.T) {
	f := newFleet(t)
	p := f.serve(t)
	c := f.client(t, "pki", "sensor-0001")
	c.Transport.(*http.Transport).DisableKeepAlives = true // a handshake per request
	const line = "returned unused heap to the system"
	before := p.stderr.Count(line)

	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 150 {
				resp, err := c.Get("https://devices.fleet.test/storm")
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of 1200 requests of the storm failed", n)
	}
	if n := p.stderr.Count(line); n != before {
		t.Fatalf("the heap was returned during the storm (%d lines), while it allocated", n-before)
	}
	storm := rss(t, p.cmd.Process.Pid)
	p.waitLog(t, line, before+1)
	quiet := rss(t, p.cmd.Process.Pid)
	t.Logf("resident: %d KiB after the storm, %d KiB once quiet", storm>>10, quiet>>10)
	// A race-enabled build keeps shadow memory for the heap it returns.
	if !slices.Contains(buildFlags, "-race") && quiet > storm-8<<20 {
		t.Errorf("resident size %d KiB after the storm, %d KiB after the release: want at least 8 MiB less", storm>>10, quiet>>10)
	}
}

func rss(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := bench.ProcRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
