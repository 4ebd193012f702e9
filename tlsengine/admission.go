package tlsengine

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// admission holds the engine's two bounds (DESIGN decision 1) and its
// counters.
//
//   - inflight: handshakes admitted and not yet finished, at most queue. A
//     connection over the bound is refused at Open (load shedding): better one
//     fast refusal than every handshake in the queue timing out.
//   - cpu: a semaphore of workers slots. A handshake holds a slot only while
//     crypto/tls computes; waiting for the client's bytes gives it back, so a
//     stalled client never holds a slot.
//
// Beside them, an optional token bucket bounds the handshakes started per
// second (a reconnect storm): a connection over the rate is refused at Open,
// like one over the queue.
type admission struct {
	queue    int64
	inflight atomic.Int64
	// limiter is the handshake rate's token bucket; nil when the rate is
	// unlimited. setRate replaces or retunes it (a reload).
	limiter atomic.Pointer[rate.Limiter]
	// now is the limiter's clock: time.Now, or a test's.
	now      func() time.Time
	cpu      chan struct{}
	cpuNanos atomic.Int64 // total time slots were held
	counts   [numReasons]atomic.Uint64
}

func newAdmission(workers, queue int) *admission {
	return &admission{queue: int64(queue), cpu: make(chan struct{}, workers), now: time.Now}
}

// enter admits one handshake, or reports false when the queue is full.
func (a *admission) enter() bool {
	if a.inflight.Add(1) > a.queue {
		a.inflight.Add(-1)
		return false
	}
	return true
}

// allow takes one token from the handshake rate's bucket, or reports false
// when it is empty. With no rate set it always allows.
func (a *admission) allow() bool {
	l := a.limiter.Load()
	return l == nil || l.AllowN(a.now(), 1)
}

// setRate bounds the handshakes started to perSecond a second with a bucket
// of burst (0: perSecond); perSecond <= 0 removes the bound. A change keeps
// the tokens the bucket holds (at most the new burst), so a reload during a
// storm does not hand out a fresh burst.
func (a *admission) setRate(perSecond, burst int) {
	if perSecond <= 0 {
		a.limiter.Store(nil)
		return
	}
	if burst <= 0 {
		burst = perSecond
	}
	if l := a.limiter.Load(); l != nil {
		now := a.now()
		l.SetLimitAt(now, rate.Limit(perSecond))
		l.SetBurstAt(now, burst)
		return
	}
	// A new bucket starts full: the burst is what may start at once after
	// a quiet period, and before this there was no bound at all.
	a.limiter.Store(rate.NewLimiter(rate.Limit(perSecond), burst))
}

// rate reports the bound setRate set: handshakes a second and the bucket
// size, 0 and 0 when unlimited.
func (a *admission) rate() (perSecond, burst int) {
	l := a.limiter.Load()
	if l == nil {
		return 0, 0
	}
	return int(l.Limit()), l.Burst()
}

// leave ends an admitted handshake.
func (a *admission) leave() { a.inflight.Add(-1) }

// slot is one handshake's hold on a CPU slot. It is used only by the
// handshake's own goroutine.
type slot struct {
	a     *admission
	held  bool
	since time.Time
}

// acquire takes a CPU slot, or gives up when abort is closed.
func (s *slot) acquire(abort <-chan struct{}) bool {
	if s.held {
		return true
	}
	select {
	case s.a.cpu <- struct{}{}:
	case <-abort:
		return false
	}
	s.held, s.since = true, time.Now()
	return true
}

// acquireNow takes a CPU slot, waiting as long as it takes.
func (s *slot) acquireNow() {
	if !s.held {
		s.a.cpu <- struct{}{}
		s.held, s.since = true, time.Now()
	}
}

// release gives the slot back if held.
func (s *slot) release() {
	if s.held {
		s.a.cpuNanos.Add(int64(time.Since(s.since)))
		s.held = false
		<-s.a.cpu
	}
}

// Stats is a snapshot of the engine's load and counters.
type Stats struct {
	// InFlight is the number of handshakes admitted and not yet finished.
	InFlight int
	// Queue is the bound on InFlight (Config.Queue).
	Queue int
	// CPUBusy is the number of CPU slots held right now.
	CPUBusy int
	// Workers is the number of CPU slots (Config.Workers).
	Workers int
	// HandshakeRate and HandshakeBurst are the bound on handshakes started
	// per second and its bucket size (Config.HandshakeRate, SetHandshakeRate);
	// 0 and 0 when unlimited.
	HandshakeRate, HandshakeBurst int
	// CPUTime is the total time handshakes have held CPU slots: the server's
	// share of handshake work, including the chain verdict. It is wall time,
	// so it also counts any time the holder was descheduled.
	CPUTime time.Duration
	// Handshakes counts finished handshakes by reason ("ok", "shed",
	// "timeout", …); every reason is present, zero or not.
	Handshakes map[string]uint64
}

func (a *admission) stats() Stats {
	st := Stats{
		InFlight:   int(a.inflight.Load()),
		Queue:      int(a.queue),
		CPUBusy:    len(a.cpu),
		Workers:    cap(a.cpu),
		CPUTime:    time.Duration(a.cpuNanos.Load()),
		Handshakes: make(map[string]uint64, numReasons),
	}
	st.HandshakeRate, st.HandshakeBurst = a.rate()
	for r := range numReasons {
		st.Handshakes[r.String()] = a.counts[r].Load()
	}
	return st
}
