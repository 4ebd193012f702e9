package tlsengine

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// fakeClock is a settable clock for the handshake rate's token bucket.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// allowed counts how many of n calls to allow succeed.
func allowed(a *admission, n int) int {
	k := 0
	for range n {
		if a.allow() {
			k++
		}
	}
	return k
}

// TestAdmissionRate: the bucket starts full, refills at the rate, never
// holds more than the burst, and 0 means unlimited.
func TestAdmissionRate(t *testing.T) {
	clk := newFakeClock()
	a := newAdmission(1, 10)
	a.now = clk.now
	if got := allowed(a, 1000); got != 1000 {
		t.Fatalf("no rate set: %d of 1000 allowed", got)
	}

	a.setRate(10, 5)
	if got := allowed(a, 20); got != 5 {
		t.Fatalf("a full bucket of 5 allowed %d", got)
	}
	clk.advance(100 * time.Millisecond) // one token at 10/s
	if got := allowed(a, 20); got != 1 {
		t.Fatalf("after 100ms at 10/s: %d allowed, want 1", got)
	}
	clk.advance(time.Hour) // refills to the burst, not beyond
	if got := allowed(a, 100); got != 5 {
		t.Fatalf("after an hour: %d allowed, want the burst of 5", got)
	}
	if r, b := a.rate(); r != 10 || b != 5 {
		t.Fatalf("rate() = %d, %d", r, b)
	}

	// Burst 0 is the rate.
	a.setRate(0, 0)
	a.setRate(8, 0)
	if got := allowed(a, 100); got != 8 {
		t.Fatalf("burst 0 at 8/s: %d allowed, want 8", got)
	}

	// A retune keeps the (empty) bucket: no fresh burst on reload…
	a.setRate(20, 40)
	if got := allowed(a, 100); got != 0 {
		t.Fatalf("right after a retune: %d allowed, want 0 (the bucket was empty)", got)
	}
	// …and refills at the new rate.
	clk.advance(500 * time.Millisecond)
	if got := allowed(a, 100); got != 10 {
		t.Fatalf("500ms at 20/s: %d allowed, want 10", got)
	}
	// A smaller burst caps what the bucket holds.
	clk.advance(time.Hour)
	a.setRate(20, 3)
	if got := allowed(a, 100); got != 3 {
		t.Fatalf("burst lowered to 3: %d allowed", got)
	}

	a.setRate(0, 7) // unlimited again
	if r, b := a.rate(); r != 0 || b != 0 {
		t.Fatalf("unlimited rate() = %d, %d", r, b)
	}
	if got := allowed(a, 1000); got != 1000 {
		t.Fatalf("rate removed: %d of 1000 allowed", got)
	}
}

// TestAdmissionRateConcurrent: callers racing for a bucket never take more
// tokens than it holds.
func TestAdmissionRateConcurrent(t *testing.T) {
	clk := newFakeClock()
	a := newAdmission(1, 10)
	a.now = clk.now
	a.setRate(100, 50)
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Add(int64(allowed(a, 100)))
		}()
	}
	wg.Wait()
	if n.Load() != 50 {
		t.Fatalf("%d allowed from a bucket of 50", n.Load())
	}
}

// TestOpenShedsOverRate: over the handshake rate, Open refuses a real
// connection at once with ErrRate (counted "rate", observed, no queue place
// kept); the clock refilling the bucket, or SetHandshakeRate(0, 0), lets
// devices in again.
func TestOpenShedsOverRate(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	cfg.HandshakeRate, cfg.HandshakeBurst = 1, 2
	obs := &teObserver{}
	cfg.Observer = obs
	eng, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	eng.adm.now = clk.now // before any connection: no race with the loops
	if st := eng.Stats(); st.HandshakeRate != 1 || st.HandshakeBurst != 2 {
		t.Fatalf("stats rate %d burst %d", st.HandshakeRate, st.HandshakeBurst)
	}
	s := startServerEngine(t, eng, false)
	device := func() error {
		c, err := s.dial(t, f.client(teDevices, &f.deviceTLS))
		if err == nil {
			c.Close()
		}
		return err
	}
	for i := range 2 {
		if err := device(); err != nil {
			t.Fatalf("device %d within the burst: %v", i, err)
		}
	}
	start := time.Now()
	if err := device(); err == nil {
		t.Fatal("a third device within the same instant was admitted")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the shed device waited %v, want an immediate close", d)
	}
	counted(t, eng, ReasonRate, 1)
	if st := eng.Stats(); st.Handshakes[ReasonShed] != 0 {
		t.Errorf("counted as queue shed too: %v", st.Handshakes)
	}
	testkit.WaitFor(t, "no handshake in flight", 10*time.Second, func() bool { return eng.Stats().InFlight == 0 })
	var rated int
	for _, ev := range obs.all() {
		if ev.Reason == ReasonRate {
			rated++
			if ev.Conn != nil || ev.Site != nil {
				t.Errorf("rate event carries a connection: %+v", ev)
			}
		}
	}
	if rated != 1 {
		t.Errorf("%d rate events observed, want 1", rated)
	}

	clk.advance(time.Second) // one token back
	if err := device(); err != nil {
		t.Fatalf("after the bucket refilled: %v", err)
	}
	if err := device(); err == nil {
		t.Fatal("a second device on one refilled token was admitted")
	}
	counted(t, eng, ReasonRate, 2)

	eng.SetHandshakeRate(0, 0)
	for i := range 5 {
		if err := device(); err != nil {
			t.Fatalf("device %d with the rate removed: %v", i, err)
		}
	}
	if st := eng.Stats(); st.Handshakes[ReasonRate] != 2 || st.HandshakeRate != 0 {
		t.Errorf("after removing the rate: %+v", st)
	}
}

// TestOpenRateErrors: ErrRate is its own error, not the queue's.
func TestOpenRateErrors(t *testing.T) {
	if errors.Is(ErrRate, ErrShed) || errors.Is(ErrShed, ErrRate) {
		t.Fatal("ErrRate and ErrShed must be told apart")
	}
	f := fixture(t)
	cfg := f.config(t)
	cfg.HandshakeRate = -1
	if _, err := NewEngine(cfg); err == nil {
		t.Fatal("a negative HandshakeRate was accepted")
	}
}
