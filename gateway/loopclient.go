package gateway

// The event loop's own origin connections, for requests served on the loop
// (loopserve.go). As a tcp relay's, they are dialed off the loop and
// enrolled on it (EventLoop().Enroll); each loop keeps an idle pool per
// origin client. A request is written with one direct write; the answer is
// gathered from the socket's OnTraffic until it is complete in memory
// (responseEnd: Content-Length, chunked, or the origin's close), then parsed
// by fasthttp and handed back to the exchange on the loop. A closed idle
// connection shows as its OnClose on the loop: no look at the socket before
// each request. The pools of an origin, the loops' and the workers', share
// its max_conns_per_origin (originslots.go); at the bound a request waits
// in its loop's pool for the next of its connections.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/loopwrite"
)

const (
	// loopResponseMax is the longest answer the loop gathers in memory: a
	// longer one streams from a worker. Below the engine's cork limit, so
	// the answer leaves in one direct write.
	loopResponseMax = 32 << 10
	// loopIdleMax is how long an origin connection may sit idle in a loop's
	// pool before it is closed rather than used (the pooled client's too).
	loopIdleMax = 30 * time.Second
)

// loopPoolKey names a loop's pool: one origin client's, on one loop.
type loopPoolKey struct {
	hc   *originClient
	loop gnet.EventLoop
}

// loopPool is the idle origin connections of one origin client on one loop.
type loopPool struct {
	srv  *Server
	hc   *originClient
	loop gnet.EventLoop
	idle []*loopOrigin // loop only
	// queue is the exchanges waiting for one of the pool's busy connections
	// while the origin's connections are all taken, oldest first (loop
	// only).
	queue   []*queued
	open    atomic.Int32 // connections open or being dialed
	dialing atomic.Bool
	connect time.Duration // origin_connect_timeout, as the pooled client's dial
	// retired is set once the newest configuration no longer uses the
	// origin client: the pool keeps no connection (retireLoopPools).
	retired atomic.Bool
}

// queued is an exchange waiting in a loop's pool for a connection.
type queued struct {
	x     *exchange
	since time.Time
	timer *time.Timer // the wait's end: the origin's connect timeout
}

// loopOrigin is one origin connection of a loop's pool.
type loopOrigin struct {
	pool      *loopPool
	gc        gnet.Conn
	x         *exchange // the exchange waiting for its answer; nil when idle
	buf       []byte    // the answer so far
	head      bool      // the request was HEAD: the answer has no body
	hlen      int       // the answer's header length once read into the exchange's response; 0 before
	blen      int       // its body's framing (frameBody): a length, bodyChunked, bodyUntilClose or bodyNone
	started   time.Time
	deadline  time.Time // origin_timeout from the last byte
	idleSince time.Time
	// timer ends the wait for the answer at deadline. It is set by the
	// first request and then left running (timerSet) rather than reset
	// per request: it fires at the latest deadline it was set for, and
	// expire sets it again for the rest of the current one.
	timer    *time.Timer
	timerSet bool
	done     bool // closed
	// unsure: what follows the answer on the connection cannot be known
	// (answerUnsure: mixed framing, or a bodiless answer that may have a
	// body behind it), so it is closed after this answer instead of
	// carrying another request, maybe another device's.
	unsure bool
	// promised: closed for a worker's dial waiting for a slot (yield).
	promised bool
	// fds counts the socket's descriptors still open: Enroll's own (until
	// its goroutine ends), the loop's, and a worker's when an answer is
	// handed off. The socket, and so its slot, is free when none is.
	fds atomic.Int32
}

// loopPool returns the pool of hc's connections on loop, or nil when the
// newest configuration no longer uses hc (a connection still on an older
// snapshot): its requests go to the pooled client on a worker, and no loop
// keeps connections for a retired origin.
func (s *Server) loopPool(hc *originClient, loop gnet.EventLoop) *loopPool {
	k := loopPoolKey{hc, loop}
	if p, ok := s.loopPools.Load(k); ok {
		return p.(*loopPool)
	}
	snap := s.snap.Load()
	if !snap.usesOrigin(hc) {
		return nil
	}
	connect := snap.originConnect(hc)
	if connect <= 0 {
		connect = 10 * time.Second
	}
	v, loaded := s.loopPools.LoadOrStore(k, &loopPool{srv: s, hc: hc, loop: loop, connect: connect})
	p := v.(*loopPool)
	if !loaded {
		hc.slots.enlist(p)
	}
	// A reload that swapped the snapshot between the look above and the
	// store has already swept the pools: look again.
	if !loaded && !s.snap.Load().usesOrigin(hc) {
		p.retire()
		return nil
	}
	return p
}

// usesOrigin reports whether an application of the snapshot sends its
// requests through hc.
func (s *snapshot) usesOrigin(hc *originClient) bool {
	return s.originConnect(hc) > 0
}

// originConnect is the origin_connect_timeout of the applications whose
// origin client is hc (a client serves one timeout: it is part of the key
// that shares clients); 0 when no application uses hc.
func (s *snapshot) originConnect(hc *originClient) time.Duration {
	for _, a := range s.apps {
		if a.origin == hc {
			return a.originConnect
		}
	}
	return 0
}

// retireLoopPools closes, after a reload, the loops' idle connections to
// the origins the new snapshot no longer uses (an unchanged origin keeps
// its client, and its pools); a connection still carrying a request closes
// once its answer is in.
func (s *Server) retireLoopPools(snap *snapshot) {
	s.loopPools.Range(func(k, v any) bool {
		if p := v.(*loopPool); !snap.usesOrigin(p.hc) {
			p.retire()
		}
		return true
	})
}

// retire takes the pool out of the server's map, closes its idle
// connections on its loop, and gives the exchanges waiting in it to the
// workers' pooled client.
func (p *loopPool) retire() {
	p.retired.Store(true)
	p.srv.loopPools.CompareAndDelete(loopPoolKey{p.hc, p.loop}, p)
	p.hc.slots.drop(p)
	_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		for _, lo := range p.idle {
			_ = lo.gc.Close()
		}
		p.idle = nil
		p.toWorkers()
		return nil
	}))
}

// take returns an idle connection, or nil (on the loop).
func (p *loopPool) take(now time.Time) *loopOrigin {
	for len(p.idle) > 0 {
		lo := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(lo.idleSince) < loopIdleMax {
			return lo
		}
		_ = lo.gc.Close()
	}
	return nil
}

// grow dials one more connection off the loop. It reports true when a
// connection is on its way (dialed now, or already), false when the
// origin's connections are all taken (max_conns_per_origin) or a worker's
// dial waits for one.
func (p *loopPool) grow() bool {
	if !p.dialing.CompareAndSwap(false, true) {
		return true
	}
	if !p.hc.slots.tryAcquire() {
		p.dialing.Store(false)
		return false
	}
	p.open.Add(1)
	p.srv.workers.Go(func() {
		opened := false
		defer func() {
			p.dialing.Store(false)
			if opened {
				// Requests still waiting in the pool: one more
				// connection for them, if a slot is free, now that this
				// dial is done.
				_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
					p.settle()
					return nil
				}))
			}
		}()
		// The pooled client's dialer (its DNS cache) and connect timeout.
		nc, err := fasthttp.DialTimeout(p.hc.Addr, p.connect)
		if err != nil {
			p.dialFailed()
			return
		}
		lo := &loopOrigin{pool: p}
		lo.fds.Store(2) // Enroll's and the loop's
		ch, err := p.loop.Enroll(gnet.NewContext(context.Background(), lo), nc)
		if err != nil {
			_ = nc.Close()
			p.dialFailed()
			return
		}
		// Enroll's goroutine closes its own descriptor of the socket (the
		// loop has a duplicate) before the channel closes.
		var res gnet.RegisteredResult
		for open := true; open; {
			select {
			case r, ok := <-ch:
				if ok {
					res = r
				}
				open = ok
			case <-p.srv.runDone:
				return
			}
		}
		if res.Err != nil {
			p.dialFailed() // never opened on the loop
			return
		}
		lo.fdClosed()
		opened = true
	})
	return true
}

// dialFailed counts a connection the pool did not get: its slot is free,
// and the exchanges waiting in the pool go to the workers' pooled client,
// which dials for them and answers as it does when the origin is down,
// rather than the pool dialing again and again for them (any goroutine).
func (p *loopPool) dialFailed() {
	p.open.Add(-1)
	p.free(false, p.toWorkers)
}

// fdClosed counts one of the socket's descriptors closed; the last frees
// its slot (any goroutine).
func (lo *loopOrigin) fdClosed() {
	if lo.lastFD() {
		lo.pool.free(lo.promised, lo.pool.settle)
	}
}

// lastFD counts one of the socket's descriptors closed and reports whether
// it was the last.
func (lo *loopOrigin) lastFD() bool { return lo.fds.Add(-1) == 0 }

// free gives a closed socket's slot back (promised: to a waiting dial),
// then the exchanges waiting in the pool find another way (then: settle,
// or toWorkers), in a task on the loop (any goroutine).
func (p *loopPool) free(promised bool, then func()) {
	task := gnet.RunnableFunc(func(context.Context) error {
		p.hc.slots.release(promised)
		then()
		return nil
	})
	if p.loop.Execute(context.Background(), task) != nil {
		p.hc.slots.release(promised) // the engine is stopping: nothing waits any more
	}
}

// opened is the enrolled socket's OnOpen: the connection goes to the
// request waiting longest for one, or joins the idle pool.
func (lo *loopOrigin) opened(gc gnet.Conn) ([]byte, gnet.Action) {
	lo.gc = gc
	if lo.pool.retired.Load() {
		return nil, gnet.Close // dialed for an origin a reload took away
	}
	lo.pool.reuse(lo, time.Now())
	return nil, gnet.None
}

// reuse gives lo, a connection free for a request, to the request waiting
// longest for one of the origin's connections: an exchange waiting in the
// pool is sent on it; for a worker's dial, lo closes and its slot goes to
// the dial. With no one waiting, lo joins the idle pool.
func (p *loopPool) reuse(lo *loopOrigin, now time.Time) {
	var head time.Time // when the oldest exchange waiting here came; zero: none
	if len(p.queue) > 0 {
		head = p.queue[0].since
	}
	if p.hc.slots.waiting() && lo.yield(head) {
		return
	}
	if len(p.queue) > 0 {
		// Out of the queue, the exchange is out of reach of its timer's
		// task, even one already fired.
		q := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		q.timer.Stop()
		if err := lo.send(q.x, now); err != nil {
			p.toWorker(q.x) // send closed lo
		}
		return
	}
	lo.idleSince = now
	p.idle = append(p.idle, lo)
}

// close closes lo, which carries no request (on the loop). Its slot is
// free once the socket is closed (closed).
func (lo *loopOrigin) close() {
	lo.done = true
	_ = lo.gc.Close()
}

// yield closes lo, which carries no request, for a worker's dial waiting
// for a slot, if one waits with none promised, and began to wait before
// before (any time, when before is zero) (on the loop).
func (lo *loopOrigin) yield(before time.Time) bool {
	if !lo.pool.hc.slots.promise(before) {
		return false
	}
	lo.promised = true
	lo.close()
	return true
}

// giveUpIdle closes the pool's idle connections for the workers' dials
// waiting for a slot (on the loop).
func (p *loopPool) giveUpIdle() {
	for len(p.idle) > 0 && p.idle[len(p.idle)-1].yield(time.Time{}) {
		p.idle = p.idle[:len(p.idle)-1]
	}
}

// wait queues x until a connection of the pool is free for it (the one
// being dialed, or one of its busy ones), the origin's connections being
// all taken, for at most the connect timeout (on the loop). The workers'
// idle connections give way meanwhile, so that the pool can grow.
func (p *loopPool) wait(x *exchange, now time.Time) {
	q := &queued{x: x, since: now}
	q.timer = time.AfterFunc(p.connect, func() {
		_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			p.expireWait(q)
			return nil
		}))
	})
	p.queue = append(p.queue, q)
	if len(p.queue) == 1 {
		p.srv.workers.Go(func() { p.reclaim(0) })
	}
}

// reclaim finds slots for the exchanges waiting in p (never on a loop): it
// closes the workers' client's idle connections and has p settle them;
// and, every reclaimEvery while any still wait and p dials none, does it
// again with one idle connection of another loop closed too, as a worker's
// dial waiting for a slot would have it closed.
func (p *loopPool) reclaim(round int) {
	p.hc.CloseIdleConnections()
	if round > 0 && !p.dialing.Load() {
		p.hc.slots.closeOneIdleBesides(p)
	}
	_ = p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		p.settle()
		if len(p.queue) > 0 {
			time.AfterFunc(reclaimEvery, func() { p.reclaim(round + 1) })
		}
		return nil
	}))
}

// closeOneIdle closes the pool's longest idle connection, if it has one,
// for another loop's exchanges waiting for a slot (on the loop). Unlike
// yield, it promises the slot to no one: the pool that asks next takes it.
func (p *loopPool) closeOneIdle() bool {
	if len(p.idle) == 0 {
		return false
	}
	lo := p.idle[0]
	p.idle = p.idle[1:]
	lo.close()
	return true
}

// expireWait fails a queued exchange whose wait is over, as the pooled
// client does: 503, no free connections (on the loop).
func (p *loopPool) expireWait(q *queued) {
	i := slices.Index(p.queue, q)
	if i < 0 {
		return // served, or given to a worker, before its time was up
	}
	p.queue = slices.Delete(p.queue, i, i+1)
	x := q.x
	x.originErr, x.answered = fasthttp.ErrNoFreeConns, true
	now := time.Now()
	x.originDur = now.Sub(q.since)
	x.c.resumeOnLoop(x, now)
}

// settle finds the exchanges waiting in the pool another way when the
// pool may have lost what they wait for (on the loop): a connection is
// dialed if the origin has a slot free; with none, and no connection of
// the pool's own left to wait for, they go to the workers' client.
func (p *loopPool) settle() {
	if len(p.queue) == 0 {
		return
	}
	if p.retired.Load() {
		p.toWorkers()
		return
	}
	now := time.Now()
	if lo := p.take(now); lo != nil {
		p.reuse(lo, now)
		return
	}
	if !p.grow() && p.open.Load() == 0 {
		p.toWorkers()
	}
}

// toWorkers gives every exchange waiting in the pool to a worker, whose
// pooled client waits on for a connection (on the loop).
func (p *loopPool) toWorkers() {
	for _, q := range p.queue {
		q.timer.Stop()
		p.toWorker(q.x)
	}
	p.queue = nil
}

// toWorker goes on with a suspended exchange on a worker, with the pooled
// client.
func (p *loopPool) toWorker(x *exchange) {
	x.c.leaveLoop()
	x.c.srv.workers.Go(func() { x.c.workFrom(x, nil, nil) })
}

// sendOnLoop writes the request on one of the loop's origin connections
// and suspends the exchange until the answer is in. Without an idle
// connection it suspends to a worker (and the pool grows).
func (x *exchange) sendOnLoop() outcome {
	x.wantWorker = true
	p := x.c.pool
	if p == nil || p.hc != x.app.origin || p.retired.Load() {
		p = x.c.srv.loopPool(x.app.origin, x.c.gc.EventLoop())
		x.c.pool = p
	}
	if p == nil {
		return suspend // a retired origin: the pooled client carries it
	}
	now := x.clock()
	lo := p.take(now)
	if lo == nil {
		if p.grow() && !p.hc.slots.full() {
			return suspend // the pooled client, while the pool grows
		}
		// The origin's connections are all taken: x waits in the pool for
		// the one being dialed or the next of the pool's own to come free,
		// while the workers' idle ones give way (wait). Sent to the pooled
		// client instead, it would wait there for the same slots, and the
		// loop would never win one back from the workers' idle
		// connections; with none to wait for, settle sends it there.
		x.wantWorker = false
		p.wait(x, now)
		return suspend
	}
	if err := lo.send(x, now); err != nil {
		return suspend // nothing was answered: the worker's client sends it
	}
	x.wantWorker = false
	return suspend
}

// send writes x's request on lo and makes lo wait for the answer. On a
// write error lo is closed, and nothing was sent.
func (lo *loopOrigin) send(x *exchange, now time.Time) error {
	x.req.URI().DisablePathNormalizing = true
	rb := reqBufPool.Get().(*reqBuf)
	rb.buf.Reset()
	rb.w.Reset(&rb.buf)
	err := x.req.Write(rb.w)
	if err == nil {
		err = rb.w.Flush()
	}
	if err == nil {
		var out []byte
		if x.forwardedSet {
			out = rb.buf.Bytes()
		} else {
			rb.buf.Grow(forwardedLen(x.fwd)) // kept for the next request
			out, err = insertForwarded(rb.buf.Bytes(), x.fwd)
		}
		if err == nil {
			_, err = loopwrite.Write(lo.gc, out) // gnet copies what the socket does not take
		}
	}
	rb.w.Reset(nil)
	reqBufPool.Put(rb)
	if err != nil {
		_ = lo.gc.Close()
		return err
	}
	x.lo = lo
	lo.x, lo.head, lo.started = x, x.req.Header.IsHead(), now
	lo.buf, lo.hlen, lo.unsure = lo.buf[:0], 0, false
	if t := x.app.origin.ReadTimeout; t > 0 {
		lo.deadline = now.Add(t)
		switch {
		case lo.timer == nil:
			lo.timer = time.AfterFunc(t, lo.expire)
		case !lo.timerSet:
			lo.timer.Reset(t)
		}
		lo.timerSet = true
	}
	return nil
}

// insertForwarded puts the gateway's own header fields (appendForwarded)
// into msg, a request as fasthttp wrote it, at the end of its header: before
// the first empty line, since no field of a header fasthttp writes holds a
// line break. The blank line and the body, if any, move up behind them,
// within msg's capacity when it has room for forwardedLen(f) more bytes.
func insertForwarded(msg []byte, f forwardInfo) ([]byte, error) {
	end := bytes.Index(msg, crlfcrlf)
	if end < 0 {
		return nil, errors.New("the request written for the origin has no end of header")
	}
	end += 2 // after the last field's CRLF
	n, fl := len(msg), forwardedLen(f)
	msg = slices.Grow(msg, fl)[:n+fl]
	copy(msg[end+fl:], msg[end:n])
	if got := appendForwarded(msg[:end], f); len(got) != end+fl {
		return nil, errors.New("the gateway's header fields for the origin did not come out at the length counted")
	}
	return msg, nil
}

type reqBuf struct {
	buf bytes.Buffer
	w   *bufio.Writer
}

var reqBufPool = sync.Pool{New: func() any { return &reqBuf{w: bufio.NewWriterSize(nil, 4096)} }}

// traffic is the origin socket's OnTraffic: gather the answer.
func (lo *loopOrigin) traffic(gc gnet.Conn) gnet.Action {
	data, _ := gc.Next(-1)
	if len(data) == 0 {
		return gnet.None
	}
	x := lo.x
	if x == nil {
		return gnet.Close // bytes nobody asked for: the connection is unusable
	}
	now := time.Now()
	lo.buf = append(lo.buf, data...)
	if t := x.app.origin.ReadTimeout; t > 0 {
		lo.deadline = now.Add(t)
	}
	if lo.hlen == 0 {
		// The header is read once, into the exchange's response.
		hlen, blen, state := frameHeader(lo.buf, lo.head, &x.resp.Header)
		switch {
		case state == framingBad:
			lo.answer(len(lo.buf), false, now) // fasthttp names what is wrong
			return gnet.None
		case state == framingMore && len(lo.buf) <= loopResponseMax:
			return gnet.None
		case state == framingMore, state == framingInterim:
			lo.handOff()
			return gnet.Close
		}
		lo.hlen, lo.blen = hlen, blen
		// Most answers have a length and need no look over the header's
		// lines: only a chunked one (mixed framing?) and a bodiless one (a
		// HEAD's, a 204 or 304) do. A 101 never gets here (framingBad).
		if blen == bodyChunked || blen == bodyNone {
			lo.unsure = answerUnsure(lo.buf[:hlen], x.resp.Header.StatusCode(), lo.head)
		}
	}
	n, state := frameBody(lo.buf, lo.hlen, lo.blen)
	switch {
	case state == framingComplete && n <= loopResponseMax:
		lo.answer(n, n == len(lo.buf), now)
	case state == framingComplete:
		// Complete, but larger than the loop answers in one write (one
		// gnet read can bring up to 64 KiB more than loopResponseMax):
		// a worker streams it, with backpressure, as any large answer.
		lo.handOff()
		return gnet.Close
	case state == framingBad:
		lo.answer(len(lo.buf), false, now) // fasthttp names what is wrong
	case len(lo.buf) > loopResponseMax:
		lo.handOff()
		// Closed now, not by a task queued on the loop: the loop must not
		// read another byte of what the duplicate carries on.
		return gnet.Close
	}
	return gnet.None
}

// closed is the origin socket's OnClose.
func (lo *loopOrigin) closed() {
	p := lo.pool
	p.open.Add(-1)
	// gnet closes the loop's descriptor after OnClose: counted in a task,
	// which then finds another way for the exchanges waiting in the pool,
	// after the slot is back when this was the socket's last descriptor
	// (so that the pool can dial again into it), or with the socket living
	// on (handed off) and the pool one connection less.
	closedFD := gnet.RunnableFunc(func(context.Context) error {
		if lo.lastFD() {
			p.hc.slots.release(lo.promised)
		}
		p.settle()
		return nil
	})
	if p.loop.Execute(context.Background(), closedFD) != nil {
		lo.fdClosed()
	}
	if lo.done {
		return
	}
	lo.done = true
	for i, o := range p.idle {
		if o == lo {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			break
		}
	}
	lo.stopTimer() // running on after an answer (send), or waiting for one
	x := lo.x
	if x == nil {
		return
	}
	if len(lo.buf) == 0 {
		// Closed before any answer: an idempotent request goes again on a
		// worker's pooled client; the others fail as the client would.
		lo.x, x.lo = nil, nil
		if retryable(x.req, io.EOF) {
			x.c.leaveLoop()
			x.c.srv.workers.Go(func() { x.c.workFrom(x, nil, nil) })
			return
		}
		lo.fail(x, fasthttp.ErrConnectionClosed)
		return
	}
	if lo.hlen > 0 && lo.blen == bodyUntilClose {
		lo.answer(len(lo.buf), false, time.Now())
		return
	}
	lo.fail(x, io.ErrUnexpectedEOF)
}

func (lo *loopOrigin) stopTimer() {
	if lo.timer != nil {
		lo.timer.Stop()
		lo.timerSet = false
	}
}

// expire runs when origin_timeout may have passed: on the loop, it fails
// the exchange if no byte came for that long, or waits on.
func (lo *loopOrigin) expire() {
	_ = lo.pool.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if lo.x == nil || lo.done {
			lo.timerSet = false // the next request sets it
			return nil
		}
		if left := time.Until(lo.deadline); left > 0 {
			lo.timer.Reset(left)
			return nil
		}
		x := lo.x
		lo.x, x.lo = nil, nil
		lo.close()
		lo.fail(x, fasthttp.ErrTimeout)
		return nil
	}))
}

// fail ends the exchange's origin request with err and resumes it.
func (lo *loopOrigin) fail(x *exchange, err error) {
	lo.x, x.lo = nil, nil
	x.originErr, x.answered = err, true
	now := time.Now()
	x.originDur = now.Sub(lo.started)
	x.c.resumeOnLoop(x, now)
}

// answer parses the first n bytes of lo.buf as the exchange's answer,
// gives the connection back to the pool when it can carry another request
// (reusable: nothing followed the answer), and resumes the exchange; now
// is the time the answer's last bytes came. The read timer runs on: the
// next request moves its deadline, and when it fires with no request
// waiting it stops.
func (lo *loopOrigin) answer(n int, reusable bool, now time.Time) {
	x := lo.x
	lo.x, x.lo = nil, nil
	x.originDur = now.Sub(lo.started)
	x.resp.SkipBody = lo.head
	var err error
	if lo.hlen > 0 && (lo.blen >= 0 || lo.blen == bodyNone) {
		// The header is read already; the body is the bytes behind it.
		if lo.blen > 0 {
			x.resp.SetBody(lo.buf[lo.hlen:n])
		}
	} else {
		// Chunked, until the close, or not HTTP: fasthttp reads it all
		// (again) and decodes the body or says what is wrong.
		rr := respReaderPool.Get().(*respReader)
		rr.r.Reset(lo.buf[:n])
		rr.br.Reset(&rr.r)
		err = x.resp.Read(&rr.br)
		rr.br.Reset(nil)
		respReaderPool.Put(rr)
	}
	if err != nil {
		err = errors.Join(errBadOriginAnswer, err)
	}
	x.originErr, x.answered = err, true
	if err == nil && reusable && !lo.unsure && !x.resp.ConnectionClose() && !lo.done && !lo.pool.retired.Load() {
		if cap(lo.buf) > loopResponseMax*2 {
			lo.buf = nil
		}
		lo.buf = lo.buf[:0]
		lo.pool.reuse(lo, now)
	} else if !lo.done {
		_ = lo.gc.Close()
	}
	x.c.resumeOnLoop(x, now)
}

var errBadOriginAnswer = errors.New("gateway: malformed origin response")

type respReader struct {
	r  bytes.Reader
	br bufio.Reader
}

var respReaderPool = sync.Pool{New: func() any {
	rr := &respReader{}
	rr.br = *bufio.NewReaderSize(nil, 4096)
	return rr
}}

// handOff gives an answer too long for the loop to a worker: the socket
// leaves the loop (a duplicate of it goes to Go's netpoller), and the
// worker reads the header and streams the body from what was gathered and
// the rest of the socket.
func (lo *loopOrigin) handOff() {
	x := lo.x
	lo.stopTimer()
	lo.x, x.lo = nil, nil
	fd, err := lo.gc.Dup()
	var nc net.Conn
	if err == nil {
		f := os.NewFile(uintptr(fd), "origin")
		nc, err = net.FileConn(f)
		_ = f.Close()
	}
	lo.done = true // traffic returns gnet.Close
	x.c.leaveLoop()
	if err != nil {
		x.originErr, x.answered = err, true
		x.c.srv.workers.Go(func() { x.c.workFrom(x, nil, nil) })
		return
	}
	// The worker's descriptor keeps the socket, and its slot, until the
	// stream closes it.
	lo.fds.Add(1)
	oc := newOriginConn(nc, nc, x.app.origin.ReadTimeout, false, lo.fdClosed)
	if t := x.app.origin.ReadTimeout; t > 0 {
		_ = oc.SetReadDeadline(time.Now().Add(t))
	}
	gathered := append([]byte(nil), lo.buf...)
	x.streamFrom = io.MultiReader(bytes.NewReader(gathered), oc)
	x.streamConn = oc
	x.c.srv.workers.Go(func() { x.c.workFrom(x, nil, nil) })
}

// readStreamedResponse reads, on a worker, the header of an answer the
// loop handed off, leaving its body to stream.
func (x *exchange) readStreamedResponse() error {
	x.resp.StreamBody = true
	x.resp.SkipBody = x.req.Header.IsHead()
	return x.resp.Read(bufio.NewReaderSize(x.streamFrom, 4096))
}

// Framing states of a gathered answer.
const (
	framingMore       = iota // not complete yet
	framingComplete          // complete: its first n bytes
	framingUntilClose        // its body ends when the origin closes
	framingBad               // unreadable: fasthttp says why
	framingInterim           // an interim (1xx) answer first: a worker reads past it
)

// Body framings of an answer whose header is read (frameHeader), beside a
// Content-Length.
const (
	bodyChunked    = -1 // as fasthttp's ContentLength says
	bodyUntilClose = -2 // as fasthttp's ContentLength says
	bodyNone       = -3 // HEAD, 204, 304
)

// frameHeader reads the header of the answer that starts buf into h, with
// fasthttp's parser, once it is whole: its length, and how its body is
// framed (a length, bodyChunked, bodyUntilClose or bodyNone).
func frameHeader(buf []byte, head bool, h *fasthttp.ResponseHeader) (hlen, blen, state int) {
	hlen = headerEnd(buf)
	if hlen < 0 {
		return 0, 0, framingMore
	}
	rr := respReaderPool.Get().(*respReader)
	rr.r.Reset(buf[:hlen])
	rr.br.Reset(&rr.r)
	err := h.Read(&rr.br)
	// fasthttp must have read the header to the same end: the body's
	// bytes are counted from there.
	whole := rr.r.Len()+rr.br.Buffered() == 0
	rr.br.Reset(nil)
	respReaderPool.Put(rr)
	if err != nil || !whole {
		return 0, 0, framingBad
	}
	code := h.StatusCode()
	switch {
	case code == fasthttp.StatusSwitchingProtocols:
		return 0, 0, framingBad // no upgrade was asked for
	case code < 200:
		// 103 Early Hints, 102 Processing…: the final answer follows,
		// maybe much later; fasthttp's Response.Read skips the interim
		// one on a worker.
		return 0, 0, framingInterim
	case head || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified:
		return hlen, bodyNone, framingComplete
	}
	if cl := h.ContentLength(); cl >= bodyUntilClose {
		return hlen, cl, framingComplete
	}
	return hlen, bodyUntilClose, framingComplete
}

// headerEnd is the length of the header that starts buf, through the empty
// line that ends it, or -1 while that line has not come. Lines may end
// with a bare LF, as fasthttp reads them.
func headerEnd(buf []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(buf) && buf[i] == '\n':
			return i + 1
		case i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n':
			return i + 2
		}
	}
}

// answerStatus reads the status code from an answer's status line.
func answerStatus(block []byte) (int, bool) {
	if len(block) < 12 || !bytes.HasPrefix(block, []byte("HTTP/1.")) || block[8] != ' ' {
		return 0, false
	}
	code := 0
	for _, d := range block[9:12] {
		if d < '0' || d > '9' {
			return 0, false
		}
		code = code*10 + int(d-'0')
	}
	return code, true
}

// answerUnsure reports whether what follows an answer (its header block and
// status) on its connection cannot be known, so that the connection must
// carry no other request:
//   - both Content-Length and Transfer-Encoding: it is read as chunked, as
//     RFC 9112 says, but the origin may have framed it by the length;
//   - the answer to a HEAD (headReq), or a 204 or 304 that announces a body
//     (Transfer-Encoding, or a Content-Length other than 0): it ends with
//     its header, and a body the origin sent anyway would be read as the
//     answer to the next request;
//   - a 101: no upgrade was asked for, and the connection now speaks
//     something else.
func answerUnsure(block []byte, status int, headReq bool) bool {
	te := hasHeaderField(block, "Transfer-Encoding")
	cl, hasCL := headerField(block, "Content-Length")
	switch {
	case headReq || status == 101:
		return true
	case status == 204 || status == 304:
		return te || hasCL && string(cl) != "0"
	}
	return te && hasCL
}

// hasHeaderField reports whether the header block of an answer (its status
// line, then its fields) has a field called name: a look over the bytes
// fasthttp parsed, for what its parsed header no longer shows (it drops a
// Content-Length that came with chunked).
func hasHeaderField(block []byte, name string) bool {
	_, ok := headerField(block, name)
	return ok
}

// headerField is the value of the first field called name in the header
// block of an answer, trimmed of spaces and tabs.
func headerField(block []byte, name string) ([]byte, bool) {
	_, rest, _ := bytes.Cut(block, []byte{'\n'}) // past the status line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if field, value, ok := bytes.Cut(line, []byte{':'}); ok && bytes.EqualFold(bytes.TrimSpace(field), []byte(name)) {
			return bytes.Trim(value, " \t\r"), true
		}
	}
	return nil, false
}

// frameBody reports whether buf holds the whole answer whose header is its
// first hlen bytes and whose body is framed by blen (frameHeader): its
// length n, or that more must come, or that the body ends at the close.
func frameBody(buf []byte, hlen, blen int) (n, state int) {
	switch {
	case blen == bodyNone:
		return hlen, framingComplete
	case blen >= 0:
		// Compared as what is left, not as hlen+blen: an origin may declare
		// a length near the largest int, and the sum would wrap.
		if len(buf)-hlen >= blen {
			return hlen + blen, framingComplete
		}
		return 0, framingMore
	case blen == bodyChunked:
		return chunkedEnd(buf, hlen)
	}
	return 0, framingUntilClose
}

// chunkedEnd finds the end of a chunked body that starts at off in buf:
// the last chunk and the trailer section's empty line.
func chunkedEnd(buf []byte, off int) (n, state int) {
	for {
		i := bytes.Index(buf[off:], []byte("\r\n"))
		if i < 0 {
			return 0, framingMore
		}
		line := buf[off : off+i]
		if j := bytes.IndexByte(line, ';'); j >= 0 {
			line = line[:j]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 32)
		if err != nil {
			return 0, framingBad
		}
		off += i + 2
		if size == 0 {
			// Trailer fields, then the empty line.
			for {
				k := bytes.Index(buf[off:], []byte("\r\n"))
				if k < 0 {
					return 0, framingMore
				}
				off += k + 2
				if k == 0 {
					return off, framingComplete
				}
			}
		}
		if uint64(len(buf)-off) < size+2 {
			return 0, framingMore
		}
		off += int(size) + 2
	}
}
