package gateway

import (
	"sync/atomic"
	"time"
)

// Reading the clock.
//
// A reading costs about 60 ns here (time.Now reads the wall clock and the
// monotonic one), and a keep-alive request served on the event loop used
// to take a dozen: the header's deadline, the request's start, the
// policies' time, the origin's read deadline and answer, the connection's
// age, and the timers a request reset. As nginx does with its cached time,
// updated once per turn of its event loop, the loop reads the clock once
// per event: an exchange keeps that reading for the phases the event runs
// (exchange.clock), and the idle and origin timers are not reset per
// request but moved lazily, firing early and waiting on for the rest
// (conn.armIdle, loopOrigin.send), as the relays' idle timers do.

// epoch anchors mono.
var epoch = time.Now()

// mono is a monotonic reading of the clock, as the time since epoch:
// immune to steps of the wall clock, and one clock read where time.Now
// takes two.
func mono() time.Duration { return time.Since(epoch) }

// monoOf puts t, a reading of time.Now, on mono's scale without reading the
// clock again.
func monoOf(t time.Time) time.Duration { return t.Sub(epoch) }

// timeAt is the server's time given now, a reading of time.Now just taken:
// now itself, unless the server runs on another clock (Options.Now, which
// tests set).
func (s *Server) timeAt(now time.Time) time.Time {
	if s.opts.Now == nil {
		return now
	}
	return s.now()
}

// coarseTick is how often a coarseClock advances.
const coarseTick = 100 * time.Millisecond

// coarseClock is mono as read at its last tick, for what is noted per event
// but read rarely: a relay notes its last activity twice per relayed round
// trip, about 1% of an echo's CPU as clock reads, and reads it only when its
// idle timer fires. A reading is behind mono by at most a tick, plus however
// late the ticking goroutine ran: the clock keeps the longest gap between
// its ticks, so that a timeout counted from a reading never ends early.
type coarseClock struct {
	now atomic.Int64
	gap atomic.Int64 // the longest time between two ticks so far (only run writes it)
}

// newCoarseClock starts at mono now.
func newCoarseClock() *coarseClock {
	c := &coarseClock{}
	c.now.Store(int64(mono()))
	c.gap.Store(int64(coarseTick))
	return c
}

// load is the reading of the last tick.
func (c *coarseClock) load() time.Duration { return time.Duration(c.now.Load()) }

// run advances the clock every coarseTick until stop is closed.
func (c *coarseClock) run(stop <-chan struct{}) {
	every(coarseTick, stop, func() {
		now := mono()
		if gap := now - c.load(); gap > time.Duration(c.gap.Load()) {
			c.gap.Store(int64(gap))
		}
		c.now.Store(int64(now))
	})
}

// since is how long it has been, at mono reading now, since the activity
// that a reading of the clock (last) noted, counted short rather than
// long: last may be behind its activity by the gap between two ticks (the
// longest so far, or the one still running), so that much is taken off.
// A timeout that waits until since reaches it never ends early, and ends
// late by at most that gap (a tick, on a machine that runs the clock on
// time).
func (c *coarseClock) since(now, last time.Duration) time.Duration {
	behind := max(time.Duration(c.gap.Load()), now-c.load())
	return now - last - behind
}

// every runs f every d until stop is closed.
func every(d time.Duration, stop <-chan struct{}, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}
