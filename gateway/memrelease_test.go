package gateway

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

const mib = 1 << 20

// heapScript feeds a memRelease a heap state per read, each at its own
// time, and counts the releases.
type heapScript struct {
	mu       sync.Mutex
	steps    []heapStep
	next     int
	clock    time.Time
	releases []int // the step read last before each release
	done     chan struct{}
}

// heapStep is one read: the heap's state, read after the clock advanced
// by after.
type heapStep struct {
	after time.Duration
	h     heapState
}

func newHeapScript(steps ...heapStep) *heapScript {
	return &heapScript{steps: steps, clock: time.Unix(1e9, 0), done: make(chan struct{})}
}

func (s *heapScript) read() heapState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == len(s.steps) {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
		return s.steps[len(s.steps)-1].h
	}
	st := s.steps[s.next]
	s.next++
	s.clock = s.clock.Add(st.after)
	return st.h
}

func (s *heapScript) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

func (s *heapScript) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releases = append(s.releases, s.next-1)
}

// play runs a memRelease over the script, interval 1 ms (0: off), until
// every step was read, and returns the steps after which it released.
func (s *heapScript) play(t *testing.T, interval time.Duration) []int {
	t.Helper()
	m := &memRelease{log: slog.New(slog.DiscardHandler), read: s.read, release: s.release, now: s.now, offPoll: time.Millisecond}
	m.setInterval(interval)
	stop := make(chan struct{})
	ended := make(chan struct{})
	go func() { m.run(stop); close(ended) }()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the release did not read every step within 10s")
	}
	close(stop)
	<-ended
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releases
}

// storm is a heap after a storm: 50 MiB live, 120 MiB of objects (70 MiB
// of them garbage), allocs cumulative.
func storm(allocs uint64) heapState {
	return heapState{allocs: allocs, live: 50 * mib, objects: 120 * mib}
}

// TestMemReleaseAfterQuiet: a storm's heap is returned in the first quiet
// interval after it, once; not while it allocates, and not again while
// there is nothing left to return.
func TestMemReleaseAfterQuiet(t *testing.T) {
	s := newHeapScript(
		heapStep{0, heapState{}},                     // 0: start
		heapStep{time.Second, storm(100 * mib)},      // 1: 100 MiB in a second: busy
		heapStep{time.Second, storm(200 * mib)},      // 2: busy
		heapStep{time.Second, storm(200*mib + 4096)}, // 3: quiet, 70 MiB unused: release
		heapStep{50 * time.Millisecond, heapState{allocs: 200*mib + 8192, live: 50 * mib, objects: 50 * mib}},    // 4: read after the release
		heapStep{time.Second, heapState{allocs: 200*mib + 9000, live: 50 * mib, objects: 50 * mib, unused: mib}}, // 5: quiet, nothing to return
		heapStep{time.Second, heapState{allocs: 200*mib + 9100, live: 50 * mib, objects: 50 * mib, unused: mib}}, // 6
	)
	if got := s.play(t, time.Millisecond); len(got) != 1 || got[0] != 3 {
		t.Fatalf("released after steps %v, want [3]", got)
	}
}

// TestMemReleaseNotWorthIt: a quiet heap with little unused room (under
// 16 MiB, or under a quarter of the live heap) is left as it is.
func TestMemReleaseNotWorthIt(t *testing.T) {
	s := newHeapScript(
		heapStep{0, heapState{}},
		heapStep{time.Second, heapState{allocs: 1000, live: 10 * mib, objects: 12 * mib, free: 13 * mib}},   // 15 MiB unused
		heapStep{time.Second, heapState{allocs: 2000, live: 200 * mib, objects: 220 * mib, free: 29 * mib}}, // 49 MiB < 200/4
		heapStep{time.Second, heapState{allocs: 3000, live: 200 * mib, objects: 200 * mib}},
	)
	if got := s.play(t, time.Millisecond); len(got) != 0 {
		t.Fatalf("released after steps %v, want none", got)
	}
}

// TestMemReleaseOncePerGap: a second storm within a minute of a release
// keeps its unused heap until the minute is over.
func TestMemReleaseOncePerGap(t *testing.T) {
	after := heapState{allocs: 100*mib + 2000, live: 50 * mib, objects: 50 * mib}
	s := newHeapScript(
		heapStep{0, heapState{}},
		heapStep{time.Second, storm(100*mib + 1000)},    // 1: busy
		heapStep{time.Second, storm(100*mib + 1500)},    // 2: quiet: release
		heapStep{0, after},                              // 3: after it
		heapStep{time.Second, storm(300 * mib)},         // 4: a second storm
		heapStep{time.Second, storm(300*mib + 10)},      // 5: quiet, 2 s after the release: kept
		heapStep{50 * time.Second, storm(300*mib + 20)}, // 6: 52 s after: kept
		heapStep{10 * time.Second, storm(300*mib + 30)}, // 7: 62 s after: release
		heapStep{0, after},
		heapStep{time.Second, after},
	)
	if got := s.play(t, time.Millisecond); len(got) != 2 || got[0] != 2 || got[1] != 7 {
		t.Fatalf("released after steps %v, want [2 7]", got)
	}
}

// TestMemReleaseOff: memory_release_after = "0s" never releases, however
// much lies unused.
func TestMemReleaseOff(t *testing.T) {
	s := newHeapScript(
		heapStep{0, heapState{}},
		heapStep{time.Second, storm(100 * mib)},
		heapStep{time.Second, storm(100 * mib)},
		heapStep{time.Second, storm(100 * mib)},
	)
	if got := s.play(t, 0); len(got) != 0 {
		t.Fatalf("released after steps %v, want none with the release off", got)
	}
}

// TestReadHeap: the runtime's metrics are read, and after a collection
// that returned everything, what the heap holds in objects is its live
// part and no free span is kept. (The room left beside live objects in
// their spans is not checked: in a test binary it is the other tests'
// fragmentation, tens of MiB after a long run.)
func TestReadHeap(t *testing.T) {
	m := newMemRelease(time.Second, slog.New(slog.DiscardHandler))
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, 64<<10))
	}
	garbage := make([][]byte, 0, 512)
	for range 512 {
		garbage = append(garbage, make([]byte, 64<<10)) // 32 MiB
	}
	before := m.read()
	if before.allocs < 36*mib || before.objects < 32*mib {
		t.Fatalf("read %+v after 36 MiB allocated, 32 MiB of it in reach", before)
	}
	garbage = nil
	_ = garbage
	debug.FreeOSMemory()
	after := m.read()
	runtime.KeepAlive(keep)
	if after.live < 4*mib || after.allocs < before.allocs {
		t.Fatalf("read %+v after the collection: want the 4 MiB kept live, allocs not below %d", after, before.allocs)
	}
	// A little slack: goroutines of earlier tests may still allocate.
	if after.objects > after.live+8*mib || after.free > 8*mib {
		t.Fatalf("after FreeOSMemory: %+v: want the objects no more than the live heap and no free span kept (8 MiB of slack each)", after)
	}
	if after.objects+24*mib > before.objects {
		t.Fatalf("after FreeOSMemory: objects %d, before %d: want the 32 MiB of garbage gone", after.objects, before.objects)
	}
}
