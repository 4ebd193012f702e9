package gateway

// One bound on the connections to an origin, max_conns_per_origin, over
// every pool that holds them: each event loop's (loopclient.go) and the
// workers' pooled client (fasthttp's HostClient). A connection holds a slot
// from before it is dialed until it is closed.
//
// When every slot is taken, a request waits, as behind HAProxy's server
// maxconn, for at most the origin's connect timeout, then is answered 503:
//   - on a loop with connections of its own to that origin, for the next of
//     them the origin answers on (loopPool.queue), or for a slot another
//     pool gives up: the workers' client's idle connections close for it,
//     and then, every reclaimEvery while it waits, one idle connection of
//     another loop (loopPool.reclaim);
//   - on a worker, in the pooled client's own queue (MaxConnWaitTimeout),
//     for the next of its connections to come back, or in its dial
//     (acquire) for a slot another pool gives up: an idle connection
//     anywhere closes for it, and a loop's connection closes after its
//     answer rather than wait idle.

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"
)

// originClient is an application's origin: the workers' pooled client and
// the bound that all of the origin's pools share.
type originClient struct {
	*fasthttp.HostClient
	slots *originSlots
}

// originSlots counts an origin's open connections against its bound.
type originSlots struct {
	max int // max_conns_per_origin

	mu      sync.Mutex
	open    int           // connections open or being dialed
	waiters []*slotWaiter // workers' dials waiting for a slot, oldest first
	// promised is the connections closing for a waiting dial (promise):
	// their slots go to the dials once they are closed.
	promised int
	pools    []*loopPool // the loops' pools, asked for their idle connections

	want atomic.Int32 // waiters not promised a slot, read on the loops without mu
}

// slotWaiter is one dial waiting for a slot: release hands it one.
type slotWaiter struct {
	since time.Time
	ready chan struct{}
}

// reclaimEvery is how often the oldest waiting dial asks the pools again
// for their idle connections: a connection that went idle since the last
// ask (the pooled client does not say when one comes back) gives way.
const reclaimEvery = 20 * time.Millisecond

// newOriginSlots bounds an origin's connections at max (fasthttp's
// default for a client without a bound, when max is not above 0).
func newOriginSlots(max int) *originSlots {
	if max <= 0 {
		max = fasthttp.DefaultMaxConnsPerHost
	}
	return &originSlots{max: max}
}

// tryAcquire takes a slot if one is free and no dial waits for one: a
// loop's pool grows only then.
func (s *originSlots) tryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeLocked()
}

// takeLocked takes a free slot unless a dial waits for one, which goes
// first (under mu).
func (s *originSlots) takeLocked() bool {
	if !s.freeLocked() {
		return false
	}
	s.open++
	return true
}

// freeLocked reports whether a slot is free and no dial waits for one
// (under mu).
func (s *originSlots) freeLocked() bool {
	return s.open < s.max && len(s.waiters) == 0
}

// full reports whether a new connection would find no slot: every one is
// taken, or a dial waits for one.
func (s *originSlots) full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.freeLocked()
}

// acquire takes a slot for a worker's dial, waiting up to timeout for
// one, meanwhile closing idle connections of the origin's pools (hc's and
// the loops') so that their slots come to it. It reports false when none
// came in time.
func (s *originSlots) acquire(hc *fasthttp.HostClient, timeout time.Duration) bool {
	s.mu.Lock()
	if s.takeLocked() {
		s.mu.Unlock()
		return true
	}
	w := &slotWaiter{since: time.Now(), ready: make(chan struct{}, 1)}
	s.waiters = append(s.waiters, w)
	s.counted()
	s.mu.Unlock()

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(reclaimEvery)
	defer tick.Stop()
	s.reclaim(hc)
	for {
		select {
		case <-w.ready:
			return true
		case <-tick.C:
			if s.first(w) {
				s.reclaim(hc) // one ask at a time, however many wait
			}
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			i := slices.Index(s.waiters, w)
			if i < 0 {
				return true // handed a slot as the time ran out
			}
			s.waiters = slices.Delete(s.waiters, i, i+1)
			s.counted()
			return false
		}
	}
}

// release gives a closed connection's slot to the oldest waiting dial, or
// back to the count. promised: the connection closed for a waiting dial
// (promise).
func (s *originSlots) release(promised bool) {
	s.mu.Lock()
	if promised && s.promised > 0 {
		s.promised--
	}
	if len(s.waiters) > 0 {
		w := s.waiters[0]
		s.waiters = s.waiters[1:]
		s.counted()
		s.mu.Unlock()
		w.ready <- struct{}{}
		return
	}
	s.open--
	s.counted()
	s.mu.Unlock()
}

// counted keeps want in step (under mu).
func (s *originSlots) counted() {
	s.want.Store(int32(len(s.waiters) - s.promised))
}

// first reports whether w is the oldest waiting dial.
func (s *originSlots) first(w *slotWaiter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters) > 0 && s.waiters[0] == w
}

// waiting reports whether a worker's dial waits for a slot that no
// closing connection has promised it (any goroutine; no lock).
func (s *originSlots) waiting() bool { return s.want.Load() > 0 }

// promise records that a connection closes for a waiting dial, when one
// waits with no slot promised and began to wait before before (any time,
// when before is zero): the caller then closes it, and its release says
// promised.
func (s *originSlots) promise(before time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiters) <= s.promised {
		return false
	}
	if !before.IsZero() && !s.waiters[s.promised].since.Before(before) {
		return false
	}
	s.promised++
	s.counted()
	return true
}

// reclaim closes the idle connections of the origin's pools while a dial
// waits: the workers' client's, and, on each loop, the loop's.
func (s *originSlots) reclaim(hc *fasthttp.HostClient) {
	hc.CloseIdleConnections()
	for _, p := range s.loopPools() {
		_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			p.giveUpIdle()
			return nil
		}))
	}
}

// closeOneIdleBesides closes one idle connection of the origin's loop
// pools other than p, for exchanges waiting in p (loopPool.reclaim; never
// on a loop: it waits for each pool's answer, a little).
func (s *originSlots) closeOneIdleBesides(p *loopPool) {
	for _, o := range s.loopPools() {
		if o == p {
			continue
		}
		closed := make(chan bool, 1)
		if o.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			closed <- o.closeOneIdle()
			return nil
		})) != nil {
			continue
		}
		select {
		case ok := <-closed:
			if ok {
				return
			}
		case <-time.After(reclaimEvery):
			// A loop that is stopping runs no more tasks: ask the next.
		}
	}
}

// loopPools is a copy of the origin's loop pools, to ask without holding mu.
func (s *originSlots) loopPools() []*loopPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*loopPool(nil), s.pools...)
}

// enlist adds a loop's pool to those reclaim asks; drop takes it out.
func (s *originSlots) enlist(p *loopPool) {
	s.mu.Lock()
	s.pools = append(s.pools, p)
	s.mu.Unlock()
}

func (s *originSlots) drop(p *loopPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pools = slices.DeleteFunc(s.pools, func(o *loopPool) bool { return o == p })
}
