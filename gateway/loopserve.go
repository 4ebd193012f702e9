package gateway

// Serving requests on the event loop.
//
// When a burst of requests starts and the first one's header is buffered
// whole, the event loop serves it itself, with no worker goroutine: the
// phases run on the loop, the request goes to the origin on one of the
// loop's own origin connections (loopclient.go), the exchange suspends, and
// when the origin's answer is in, the loop resumes it and writes the
// response with one direct write. A keep-alive request then costs no
// goroutine hand-off, no eventfd wake-up and no Go netpoller wait.
//
// What may block, or costs more CPU than the loop should spend, moves the
// exchange to a worker (workFrom), from the phase that asked:
//
//	a body not yet buffered whole, chunked, or behind Expect: 100-continue;
//	a token to verify, an access endpoint, a token to sign;
//	an https origin, or no idle origin connection on this loop yet (the
//	  loop dials one off the loop meanwhile, for the requests that follow);
//	an origin connection the origin closed before answering (the pooled
//	  client retries an idempotent request);
//	an answer longer than loopResponseMax (its body streams from a worker,
//	  with the backpressure of tlsWriter).
//
// Nor does the loop start when the device is not reading its answers
// (its outbound buffer holds more than flowLowWater): the worker waits.
//
// The other way, a worker's exchange moves to the loop for its origin
// round trip (moveToLoop): a request served on a worker (the request that
// came with a handshake, on the handshake's goroutine, or one whose token
// a worker signed) goes to the origin on the loop's connections too, and
// the loop writes its answer. The worker's goroutine is free once the
// request is ready, and no goroutine waits in Go's netpoller for the
// origin, so a P spent waiting in gnet's epoll_wait never holds up the
// answer (procs.go).

import (
	"bufio"
	"bytes"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// startServing begins serving a burst of requests (no worker runs): on the
// loop when it can, else on a worker.
func (c *conn) startServing() {
	if !c.loopCanServe() {
		c.srv.workers.Go(c.work)
		return
	}
	c.served.Store(true)
	br := c.snap.readers.Get().(*bufio.Reader)
	br.Reset(c.pipe)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(&c.out)
	c.enterLoop()
	c.loopServe(c.loopExchange(br, bw))
}

// loopCanServe reports whether the loop may serve the request waiting in
// the pipe: its header is buffered whole, the origin is plain HTTP and the
// device reads what it is sent.
func (c *conn) loopCanServe() bool {
	return !c.app().origin.IsTLS && c.gc.OutboundBuffered() <= flowLowWater && c.pipe.holdsHeader()
}

func (c *conn) enterLoop() {
	c.onLoop = true
	c.pipe.setNoWait(true)
}

func (c *conn) leaveLoop() {
	c.onLoop = false
	c.pipe.setNoWait(false)
}

func (c *conn) loopExchange(br *bufio.Reader, bw *bufio.Writer) *exchange {
	x := c.newExchange(br, bw)
	x.onLoop = true
	return x
}

// loopCarries reports whether the loop can carry x, ready for its origin
// on a worker, to the origin: a plain HTTP origin, a body read whole, and
// the loop has not already declined it (no idle origin connection, an
// answer too long to gather: noLoop).
func (x *exchange) loopCarries() bool {
	return !x.noLoop && !x.app.origin.IsTLS && !x.req.IsBodyStream()
}

// moveToLoop hands x, which forward suspended on a worker (toLoop), to the
// event loop: the loop sends the request on one of its origin connections
// and answers the device itself, and from then on owns x and its reader and
// writer. It reports false when the loop takes no more tasks (the engine is
// stopping): x then goes on on this worker, with the pooled client. On the
// loop, a connection gone meanwhile or a device not reading its answers
// gives x back to a worker, as loopCanServe would not have started it.
func (c *conn) moveToLoop(x *exchange) bool {
	x.toLoop = false
	err := c.afterQueued(func(_ gnet.Conn, err error) error {
		if err != nil || c.gc.OutboundBuffered() > flowLowWater {
			x.noLoop = true
			c.srv.workers.Go(func() { c.workFrom(x, nil, nil) })
			return nil
		}
		c.enterLoop()
		x.onLoop, x.evAt = true, time.Now()
		c.loopServe(x)
		return nil
	})
	if err != nil {
		x.noLoop = true
		return false
	}
	return true
}

// loopServe runs x on the loop until it suspends or the burst ends: what
// becomes of the connection, the next request if it is buffered whole, or a
// worker for the rest.
func (c *conn) loopServe(x *exchange) {
	for {
		e := c.serveOne(x)
		if e == endSuspended {
			if x.wantWorker {
				c.leaveLoop()
				_ = c.tc.Flush() // nothing is held; keeps Cork's state clean
				// A copy for the closure: x, reassigned below, stays
				// off the heap.
				w := x
				c.srv.workers.Go(func() { c.workFrom(w, nil, nil) })
			}
			return // else the origin's answer resumes it (resumeOnLoop)
		}
		// x has ended: what follows needs only its buffers and its clock.
		br, bw, at := x.br, x.bw, x.clock()
		x.recycle()
		switch e {
		case endClose:
			c.leaveLoop()
			c.shutdown() // sends what Cork held, with the close_notify
			c.putBuffers(br, bw)
			return
		case endLinger:
			c.leaveLoop()
			_ = c.tc.Flush()
			c.lingerClose()
			c.putBuffers(br, bw)
			return
		}
		c.flushOnLoop()
		if c.pipe.finish(br.Buffered()) {
			c.leaveLoop()
			c.putBuffers(br, bw)
			if c.srv.draining.Load() || c.pipe.isClosed() {
				c.shutdown()
				return
			}
			c.armIdle(c.snap.idleTimeout, monoOf(at))
			return
		}
		if !c.nextHeaderBuffered(br) || c.gc.OutboundBuffered() > flowLowWater {
			c.leaveLoop()
			c.srv.workers.Go(func() { c.workFrom(nil, br, bw) })
			return
		}
		x = c.loopExchange(br, bw)
	}
}

// resumeOnLoop goes on with an exchange whose origin answer is in (on the
// loop); now is the time of the event that brought it.
func (c *conn) resumeOnLoop(x *exchange, now time.Time) {
	x.evAt = now
	c.loopServe(x)
}

// flushOnLoop sends the answer Cork held: by direct write, unless output
// queued off the loop may still be ahead of it.
func (c *conn) flushOnLoop() {
	if c.asyncOut.Load() == 0 {
		_ = c.tc.FlushOnLoop()
		return
	}
	_ = c.tc.Flush()
}

// nextHeaderBuffered reports whether the next request's header is buffered
// whole, in br (pipelined behind the last one) or in the pipe.
func (c *conn) nextHeaderBuffered(br *bufio.Reader) bool {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return bytes.Contains(b, crlfcrlf)
	}
	return c.pipe.holdsHeader()
}

// stayOnLoop moves the exchange to a worker, on the loop, when what
// follows may block or sign: a body not buffered whole (or chunked, or
// behind Expect: 100-continue), a session token to verify, an access
// endpoint, an application with identity providers (a login may discover
// its provider over the network).
func (x *exchange) stayOnLoop() outcome {
	if !x.onLoop {
		return proceed
	}
	h := &x.req.Header
	cl := h.ContentLength()
	leave := len(x.app.idps) > 0 || x.req.MayContinue() || cl == -1 ||
		cl > 0 && cl > x.br.Buffered()+x.c.pipe.buffered() ||
		len(h.Peek("Cf-Access-Token")) > 0 ||
		bytes.HasPrefix(x.req.URI().Path(), []byte("/cdn-cgi/access/"))
	if !leave {
		name := x.app.snap.cookieName
		for k := range h.Cookies() {
			if string(k) == name {
				leave = true
				break
			}
		}
	}
	if leave {
		x.wantWorker = true
		return suspend
	}
	return proceed
}
