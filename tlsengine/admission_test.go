package tlsengine

import (
	"sync"
	"testing"
)

// TestAdmissionQueueBound: at most queue handshakes are admitted; a place is
// freed by leave; concurrent callers never overshoot.
func TestAdmissionQueueBound(t *testing.T) {
	a := newAdmission(2, 50)
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a.enter() {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if admitted != 50 || a.stats().InFlight != 50 {
		t.Fatalf("admitted %d, in flight %d, want 50", admitted, a.stats().InFlight)
	}
	a.leave()
	if !a.enter() || a.enter() {
		t.Fatal("leave did not free exactly one place")
	}
}

// TestSlotAccounting: slots are counted while held and given back once.
func TestSlotAccounting(t *testing.T) {
	a := newAdmission(2, 10)
	abort := make(chan struct{})
	s1, s2, s3 := slot{a: a}, slot{a: a}, slot{a: a}
	first := s1.acquire(abort)
	again := s1.acquire(abort) // a slot already held: no second slot taken
	if !first || !again || !s2.acquire(abort) {
		t.Fatal("acquire failed with free slots")
	}
	if got := a.stats().CPUBusy; got != 2 {
		t.Fatalf("busy %d, want 2 (a second acquire by the holder is free)", got)
	}
	close(abort)
	if s3.acquire(abort) {
		t.Fatal("acquired beyond Workers")
	}
	s1.release()
	s1.release()
	if got := a.stats().CPUBusy; got != 1 {
		t.Fatalf("busy %d after release, want 1", got)
	}
	s3.acquireNow()
	s2.release()
	s3.release()
	if st := a.stats(); st.CPUBusy != 0 || st.Workers != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestStatsNamesEveryReason: every reason has a stable name and a counter.
func TestStatsNamesEveryReason(t *testing.T) {
	a := newAdmission(1, 1)
	for r := range numReasons {
		a.counts[r].Add(uint64(r) + 1)
	}
	st := a.stats()
	seen := map[string]bool{}
	for r := range numReasons {
		name := r.String()
		if name == "" || seen[name] {
			t.Fatalf("reason %d: name %q empty or duplicate", r, name)
		}
		seen[name] = true
		if st.Handshakes[name] != uint64(r)+1 {
			t.Errorf("%s = %d", name, st.Handshakes[name])
		}
	}
}
