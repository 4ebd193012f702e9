package gateway

import (
	"log/slog"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync/atomic"
	"time"
)

// Returning a connection storm's memory.
//
// Go's collector keeps the heap it has freed, up to its goal (twice the
// live heap at the default pacing), for the allocations to come. A device
// fleet allocates in storms: thousands of handshakes when devices
// reconnect, then long-lived connections that allocate next to nothing. The
// storm's garbage would stay resident for as long as the fleet idles, about
// as much again as the connections' own state. So when the process has
// allocated (almost) nothing for a while and holds much more heap than it
// uses, the gateway collects and returns the unused memory to the
// operating system at once (debug.FreeOSMemory). A process that keeps
// allocating never gets there: its unused heap is about to be reused.

// Thresholds of the memory release.
const (
	// quietAllocRate is the allocation rate, in bytes a second, under which
	// the process counts as quiet: idle relayed connections and a trickle of
	// requests stay under it, a single handshake a second does too, a
	// storm does not.
	quietAllocRate = 1 << 20
	// minReleasable is the least unused heap worth a collection: below it,
	// a release is not worth the collector's pass over the live heap.
	minReleasable = 16 << 20
	// releasableShare is the least unused heap, as a fraction of the live
	// heap (1/releasableShare), worth a release.
	releasableShare = 4
	// minReleaseGap is the least time between two releases: a load that
	// pauses often pays for at most one collection of the whole heap per
	// gap.
	minReleaseGap = time.Minute
)

// heapSamples are the runtime metrics the release reads.
var heapSamples = []string{
	"/gc/heap/allocs:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// heapState is one reading of heapSamples.
type heapState struct {
	allocs, live, objects, unused, free uint64
}

// readHeap reads the heap's state from the runtime.
func readHeap(s []rtmetrics.Sample) heapState {
	rtmetrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != rtmetrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return heapState{allocs: v(0), live: v(1), objects: v(2), unused: v(3), free: v(4)}
}

// releasable is the resident heap the process does not use: free spans,
// the unused room of spans in use, and objects that are garbage (everything
// above the live heap the last collection marked).
func (h heapState) releasable() uint64 {
	held := h.objects + h.unused + h.free
	if held <= h.live {
		return 0
	}
	return held - h.live
}

// worthRelease reports whether h, after a quiet interval, holds enough
// unused heap to collect and return.
func (h heapState) worthRelease() bool {
	r := h.releasable()
	return r >= minReleasable && r >= h.live/releasableShare
}

// memRelease watches the heap once per interval and returns its unused
// part to the system (release) when the interval was quiet and the heap
// worth it.
type memRelease struct {
	// interval is memory_release_after (a time.Duration; 0: off). A reload
	// stores the new one; the watch reads it every round.
	interval atomic.Int64
	log      *slog.Logger
	// read, release and now are the runtime's metrics, debug.FreeOSMemory
	// and time.Now; tests replace them.
	read    func() heapState
	release func()
	now     func() time.Time
	// offPoll is how often a switched-off release looks whether a reload
	// has switched it on.
	offPoll time.Duration
}

// newMemRelease is the gateway's release, every interval (0: off).
func newMemRelease(interval time.Duration, log *slog.Logger) *memRelease {
	samples := make([]rtmetrics.Sample, len(heapSamples))
	for i, name := range heapSamples {
		samples[i].Name = name
	}
	m := &memRelease{log: log, read: func() heapState { return readHeap(samples) },
		release: debug.FreeOSMemory, now: time.Now, offPoll: time.Second}
	m.setInterval(interval)
	return m
}

// setInterval applies memory_release_after (0: off) from the next round on.
func (m *memRelease) setInterval(d time.Duration) { m.interval.Store(int64(d)) }

// run watches until stop closes. One run at a time: newMemRelease's read
// shares its samples.
func (m *memRelease) run(stop <-chan struct{}) {
	t := time.NewTimer(m.offPoll)
	defer t.Stop()
	prev, prevAt := m.read(), m.now()
	var last time.Time // the last release
	for {
		d := time.Duration(m.interval.Load())
		if d <= 0 {
			d = m.offPoll
		}
		t.Reset(d)
		select {
		case <-stop:
			return
		case <-t.C:
		}
		cur, at := m.read(), m.now()
		quiet := float64(cur.allocs-prev.allocs) < quietAllocRate*at.Sub(prevAt).Seconds()
		prev, prevAt = cur, at
		if m.interval.Load() <= 0 || !quiet || !cur.worthRelease() || (!last.IsZero() && at.Sub(last) < minReleaseGap) {
			continue
		}
		m.release()
		last = m.now()
		prev, prevAt = m.read(), last
		// unused_after_bytes is what stays: the room beside live objects in
		// the spans that still hold one.
		m.log.Info("returned unused heap to the system after a quiet interval",
			"unused_bytes", cur.releasable(), "live_bytes", prev.live,
			"unused_after_bytes", prev.releasable(), "took_ms", ms(last.Sub(at)))
	}
}
