package gateway

// The timers a keep-alive request no longer resets (clock.go): the idle
// timeout still runs from the end of the last request, and origin_timeout
// from the request waiting, however recently the timer was set for an
// earlier one.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestIdleTimeoutFromLastRequest: a connection that sends a request every
// 0.4 s stays open for far longer than its idle_timeout of 1 s, and is
// closed once 1 s has passed after its last answer, within a few seconds.
func TestIdleTimeoutFromLastRequest(t *testing.T) {
	const idle = time.Second
	h := newHarness(t, func(p *cfgParams) { p.IdleTimeout = idle.String() })
	c := h.dial(t, hApp, h.pki.sensor1)
	var last time.Time // when the last request was sent: its answer came later
	for i := 0; i < 8; i++ {
		last = time.Now()
		c.send(request("GET", hApp, "/"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK {
			t.Fatalf("request %d, %v after the first: status %d", i, time.Duration(i)*idle*2/5, r.StatusCode)
		}
		if i < 7 {
			time.Sleep(idle * 2 / 5)
		}
	}
	// expectEOF waits up to 5 s: the close must come in that window, and
	// not before the idle timeout has run from the last answer.
	c.expectEOF()
	if d := time.Since(last); d < idle {
		t.Fatalf("closed %v after the last request was sent; idle_timeout is %v", d, idle)
	}
}

// TestOriginTimeoutAfterEarlierRequest: a request the origin never answers
// gets its 504 origin_timeout after it was sent, on the loop's origin
// connection whose timer was last set for the requests before it (and
// would have fired half-way through this one's wait).
func TestOriginTimeoutAfterEarlierRequest(t *testing.T) {
	const originTimeout = time.Second
	peer := startPeerOrigin(t)
	mux := http.NewServeMux()
	mux.Handle("/peer", peer.srv.Config.Handler)
	stalled := make(chan struct{})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.RemoteAddr) // never flushed before the gateway gives up
		select {
		case <-stalled:
		case <-r.Context().Done():
		}
	})
	o := httptest.NewServer(mux)
	t.Cleanup(o.Close)
	t.Cleanup(func() { close(stalled) })
	h := newHarness(t, func(p *cfgParams) { p.Origin, p.OriginTimeout = o.URL, originTimeout.String() })
	c := h.dial(t, hApp, h.pki.sensor1)
	onLoopPeer(t, c) // the loop's own connection now carries the requests, its timer set
	time.Sleep(originTimeout / 2)
	start := time.Now()
	c.send(request("GET", hApp, "/stall"))
	r := c.read("GET")
	d := time.Since(start)
	if r.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504: %s", r.StatusCode, r.body)
	}
	if d < originTimeout || d > originTimeout*5/2 {
		t.Fatalf("504 after %v; origin_timeout is %v", d, originTimeout)
	}
}

// TestCoarseClock: the coarse clock starts at mono, never runs ahead of
// it, advances every tick while it runs, and stops when told.
func TestCoarseClock(t *testing.T) {
	c := newCoarseClock()
	start := c.load()
	if now := mono(); start > now || now-start > time.Second {
		t.Fatalf("a new clock reads %v, mono %v", start, now)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { c.run(stop); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for c.load() < start+2*coarseTick {
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s the clock has advanced %v; it ticks every %v", c.load()-start, coarseTick)
		}
		time.Sleep(coarseTick / 4)
	}
	if got, now := c.load(), mono(); got > now {
		t.Fatalf("the clock reads %v, ahead of mono %v", got, now)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the clock did not stop")
	}
}

// TestCoarseClockSince: an activity noted while the clock's goroutine ran
// late (its reading half a second old) is never counted as longer ago than
// it can have been, and a gap once seen keeps counting.
func TestCoarseClockSince(t *testing.T) {
	c := newCoarseClock()
	now := mono()
	if got := c.since(now, c.load()); got > 0 {
		t.Errorf("just noted: %v since", got)
	}
	c.now.Store(int64(now - 500*time.Millisecond)) // the goroutine is late
	last := c.load()                               // noted now, with the stale reading
	if got := c.since(now, last); got > 0 {
		t.Errorf("noted during a late tick: counted %v since; it may have been now", got)
	}
	if got := c.since(now+time.Second, last); got > time.Second {
		t.Errorf("a second later: counted %v since; at most a second can have passed", got)
	}
	// The late tick comes: the gap is remembered for readings taken in it.
	stop := make(chan struct{})
	go c.run(stop)
	testkit.WaitFor(t, "a tick", 5*time.Second, func() bool { return c.load() > now })
	close(stop)
	if gap := time.Duration(c.gap.Load()); gap < 500*time.Millisecond {
		t.Errorf("gap %v after a tick half a second late", gap)
	}
	if got, n := c.since(mono(), last), mono(); got > n-now {
		t.Errorf("counted %v since a reading that may have been taken %v ago", got, n-now)
	}
}
