package gateway

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/tlsengine"
)

// conn is one device connection: the TLS session driven by the event loop,
// the plaintext pipe to its request worker, and the snapshot it started with.
type conn struct {
	srv        *Server
	gc         gnet.Conn
	tc         *tlsengine.Conn
	snap       *snapshot
	pipe       *plainPipe
	remoteAddr netip.Addr
	remoteIP   string
	opened     time.Time

	// proxied holds the two ends a load balancer's PROXY header named
	// (balancer.go): nil for a device's own connection, or a header that
	// named none.
	proxied *proxiedAddrs

	countedIP bool        // counted in Server.perIP (max_connections_per_ip)
	served    atomic.Bool // a request worker has run: the device uses the connection

	// Touched only on the event loop.
	handshakeSeen bool
	// awaitHeader is set while a load balancer's connection waits for its
	// PROXY header (until headerRead) and then for its first TLS byte:
	// until then it has no tc, and headerTimer closes it when they are late
	// (setting headerLate, from the timer's goroutine).
	awaitHeader bool
	headerRead  bool
	headerTimer *time.Timer
	headerLate  atomic.Bool
	// buf is the loop's decrypt buffer (Server.loopBuf), shared with the
	// loop's other connections: live only within one OnTraffic.
	buf *[]byte
	// relay is set when the connection is a tcp application's, relayed to
	// its origin (relay.go).
	relay *relay
	// mqtt is set for an mqtt application's connection from the end of its
	// handshake until its CONNECT is decided (mqttapp.go).
	mqtt *mqttGate

	// session is the last session token minted on this connection; only
	// the request worker touches it.
	session *session

	// unchecked counts the response bytes written since the outbound
	// buffer was last looked at (tlsWriter); request workers only, one at a
	// time.
	unchecked int
	// out is the sink of the response writer (bufio.Writer), one per
	// connection rather than one per burst of requests.
	out tlsWriter
	// onLoop is set while the event loop serves the connection's requests
	// itself (loopserve.go); asyncOut counts the barriers queued behind
	// output written off the loop, which a direct write must not overtake.
	onLoop   bool
	asyncOut atomic.Int32
	// pool is the loop's origin connections the last request on the loop
	// went to (sendOnLoop): the next one to the same origin client looks
	// no further while it is not retired. Event loop only.
	pool *loopPool

	mu sync.Mutex
	// idle closes the connection when no request comes in time: by
	// idleAt (mono), the end of the last burst of requests plus
	// idle_timeout. Requests do not stop or reset it (armIdle): it fires
	// at idleFires (0: not set), and waits on when idleAt has moved.
	idle      *time.Timer
	idleAt    time.Duration
	idleFires time.Duration
	linger    *time.Timer // ends a lingering close
	closing   bool
	peerDone  bool // the device sends nothing more (close_notify or a broken record)
}

// lingerTime bounds a lingering close: after refusing a request it did not
// read in full, the gateway keeps reading (and discarding) what the device
// still sends, until the device closes or this long has passed. Closing at
// once, with input unread, makes the kernel send a reset, and a device still
// writing its body would lose the 413 (nginx's lingering_close does the same).
const lingerTime = 2 * time.Second

// decryptBufSize is the size of a decrypt buffer: a TLS record's largest
// plaintext, so that one read returns a whole record.
const decryptBufSize = 16 << 10

// loopBuf returns the decrypt buffer of an event loop, made on first use.
// Every reader on the loop (readRequests, the MQTT gate, a relay's
// pumpDevice) decrypts into it and copies or hands the bytes on before its
// callback returns, so one buffer serves all the loop's connections: an
// idle connection holds none, and no read pays a pool's round trip.
func (s *Server) loopBuf(loop gnet.EventLoop) *[]byte {
	if b, ok := s.loopBufs.Load(loop); ok {
		return b.(*[]byte)
	}
	nb := make([]byte, decryptBufSize)
	b, _ := s.loopBufs.LoadOrStore(loop, &nb)
	return b.(*[]byte)
}

// traffic is called on the event loop with newly received bytes: feed them
// to TLS, and once the handshake is done, move the plaintext to the worker.
func (c *conn) traffic(data []byte) gnet.Action {
	if err := c.tc.Feed(data); err != nil {
		// The engine is already closing the connection (after flushing what
		// is queued, such as a 413 sent before the body was read): a
		// gnet.Close here would drop that response.
		return gnet.None
	}
	if !c.tc.HandshakeComplete() {
		return gnet.None
	}
	if c.relay != nil {
		return c.relay.pumpDevice()
	}
	if app := c.app(); app.mqtt != nil {
		return c.mqttTraffic(app)
	} else if app.tcp != nil {
		c.startRelay(app)
		return gnet.None
	}
	if !c.handshakeSeen {
		c.handshakeSeen = true
		c.armIdle(c.idleLimit(), mono())
		c.asyncBarrier() // behind what the handshake queued
	}
	return c.readRequests()
}

// readRequests decrypts what the device sent and pushes it to the
// connection's plaintext pipe, starting to serve when a request begins.
func (c *conn) readRequests() gnet.Action {
	buf := *c.buf
	for {
		n, err := c.tc.Read(buf)
		if n > 0 {
			start, perr := c.pipe.push(buf[:n])
			if perr != nil {
				// Take no more input. A running worker answers what it has
				// (such as the 413 of a body that can never fit) and then
				// closes; closing here would drop that answer.
				c.srv.log.Info("closing connection", "client", c.remoteIP, "reason", perr.Error())
				c.pipe.close()
				if c.pipe.stopIfIdle() {
					c.shutdown()
				}
				return gnet.None
			}
			if start {
				c.startServing()
			}
		}
		if errors.Is(err, tlsengine.ErrWouldBlock) {
			return gnet.None
		}
		if err != nil {
			// close_notify or a broken record: no more requests come; the
			// worker (if any) finishes what it has, then closes.
			if errors.Is(err, tlsengine.ErrTooManyKeyUpdates) {
				c.srv.log.Info("closing connection", "client", c.remoteIP, "reason", err.Error())
			}
			c.pipe.close()
			if lingering := c.peerFinished(); c.pipe.stopIfIdle() || lingering {
				c.shutdown()
			}
			return gnet.None
		}
	}
}

// work is the connection's request worker: it parses requests from the
// plaintext pipe and serves them in order (pipelining), and exits when
// nothing is pending, so idle keep-alive connections hold no goroutine.
func (c *conn) work() { c.workFrom(nil, nil, nil) }

// workFrom is work, going on with x, an exchange the event loop suspended,
// or with the loop's reader and writer (br holding a request's start).
func (c *conn) workFrom(x *exchange, br *bufio.Reader, bw *bufio.Writer) {
	c.served.Store(true)
	s := c.snap
	if x != nil {
		br, bw = x.br, x.bw
		// The loop began the origin's round trip and gave it up (no idle
		// origin connection, an answer to stream, a dropped connection to
		// retry): it is not offered to the loop again.
		x.noLoop = x.noLoop || x.prepared
		x.onLoop, x.wantWorker = false, false
	}
	if br == nil {
		// The buffers come from pools: a worker starts for every burst of
		// requests, and allocating them each time was a tenth of the CPU of
		// a keep-alive request.
		br = s.readers.Get().(*bufio.Reader)
		br.Reset(c.pipe)
		bw = writerPool.Get().(*bufio.Writer)
		bw.Reset(&c.out)
	}
	moved := false // the loop owns the buffers now (moveToLoop)
	defer func() {
		if !moved {
			c.putBuffers(br, bw)
		}
	}()
	for {
		if x == nil {
			x = c.newExchange(br, bw)
		}
		e := c.serveOne(x)
		if e == endSuspended {
			// forward moved the origin's round trip to the loop (toLoop).
			if moved = c.moveToLoop(x); moved {
				return
			}
			continue // the pooled client carries it
		}
		x.drop()
		x = nil
		switch e {
		case endClose:
			c.shutdown()
			return
		case endLinger:
			_ = c.tc.Flush() // the answer respond corked goes now, not when the linger ends
			c.lingerClose()
			return
		}
		c.asyncBarrier()
		if c.pipe.finish(br.Buffered()) {
			// Draining, or the device already finished sending (close_notify
			// or EOF while this request was served): nothing more will come.
			if c.srv.draining.Load() || c.pipe.isClosed() {
				c.shutdown()
				return
			}
			c.armIdle(s.idleTimeout, mono())
			return
		}
	}
}

// putBuffers gives a request reader and response writer back to their pools.
func (c *conn) putBuffers(br *bufio.Reader, bw *bufio.Writer) {
	br.Reset(nil)
	c.snap.readers.Put(br)
	bw.Reset(nil)
	writerPool.Put(bw)
}

// asyncBarrier queues, behind the output written so far off the loop, a
// callback that marks it gone: until it runs, the loop's own answers go out
// queued too, in order, rather than by direct write.
func (c *conn) asyncBarrier() {
	c.asyncOut.Add(1)
	if c.afterQueued(func(gnet.Conn, error) error {
		c.asyncOut.Add(-1)
		return nil
	}) != nil {
		c.asyncOut.Add(-1) // the connection is gone: nothing is queued
	}
}

// afterQueued runs cb on c's event loop after every write queued to it so
// far (its error is net.ErrClosed when the connection is gone by then). It
// queues an empty AsyncWritev, not an empty AsyncWrite: gnet writes an
// empty buffer with a write(2) of nothing, one system call per fresh
// request, but returns from an empty writev before the system call.
func (c *conn) afterQueued(cb gnet.AsyncCallback) error {
	return c.gc.AsyncWritev(nil, cb)
}

// writerPool holds the response writers of request workers.
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// app returns the application this connection's site belongs to.
func (c *conn) app() *application {
	return c.tc.Site().App.(*application)
}

func isQuietEOF(err error) bool {
	var nothing fasthttp.ErrNothingRead
	return errors.Is(err, io.EOF) || errors.As(err, &nothing)
}

// drainGrace is how long, once the gateway drains, a connection whose
// handshake is complete may take to send its first request: it was admitted
// and the device is most likely sending it right now.
const drainGrace = time.Second

// idleLimit is how long the connection may wait for its next request:
// idle_timeout, or drainGrace once the gateway drains.
func (c *conn) idleLimit() time.Duration {
	if c.srv.draining.Load() {
		return drainGrace
	}
	return c.snap.idleTimeout
}

// drain is called once, when the gateway starts draining. An idle
// keep-alive connection closes now (a device sending its next request
// right then sees the close before any response byte, and may retry); one
// that has not sent its first request gets drainGrace; a request in
// progress is answered, then the connection closes (work). A connection
// still in its handshake gets drainGrace when it completes (traffic).
func (c *conn) drain() {
	switch {
	case c.tc.HandshakeComplete() && c.app().tcp != nil:
		// A relayed connection is cut once drain_timeout has passed
		// (Server.Shutdown).
	case !c.tc.HandshakeComplete():
	case c.served.Load():
		c.closeIfIdle()
	default:
		c.armIdle(drainGrace, mono())
	}
}

// armIdle gives the connection d from now (a mono reading) to send its
// next request. The timer is set only when it is not, or would fire too
// late (a drain shortening the wait): a keep-alive connection's requests
// move idleAt, and the timer, firing early, waits on (idleExpired).
func (c *conn) armIdle(d, now time.Duration) {
	if d <= 0 {
		return
	}
	at := now + d
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.idleAt = at
	switch {
	case c.idle == nil:
		c.idle = time.AfterFunc(d, c.idleExpired)
	case c.idleFires == 0 || c.idleFires > at:
		c.idle.Reset(d)
	default:
		return // it fires in time, and waits on for the rest
	}
	c.idleFires = at
}

// idleExpired is the idle timer's: it waits on when idleAt has moved since
// the timer was set, and otherwise closes the connection unless a request
// is in progress (whose end sets the timer again).
func (c *conn) idleExpired() {
	c.mu.Lock()
	if left := c.idleAt - mono(); left > 0 && !c.closing {
		c.idle.Reset(left)
		c.idleFires = c.idleAt
		c.mu.Unlock()
		return
	}
	c.idleFires = 0
	c.mu.Unlock()
	c.closeIfIdle()
}

// closeIfIdle closes the connection unless a request is in progress or
// waiting in the pipe.
func (c *conn) closeIfIdle() {
	if c.pipe.stopIfIdle() {
		c.shutdown()
	}
}

// lingerClose ends the connection after a refused request without cutting
// off the answer: the answer is followed at once by close_notify, so a
// device that reads until the end of the stream is not kept waiting; input
// is discarded from now on, and the connection closes when the device
// closes its side or after lingerTime. nginx's lingering close does the
// same (its SSL shutdown, then discarding reads).
func (c *conn) lingerClose() {
	c.pipe.close() // push discards on a closed pipe
	c.mu.Lock()
	if c.closing || c.linger != nil {
		c.mu.Unlock()
		return
	}
	if c.peerDone {
		// The device has already closed its side: there is nothing left
		// to wait for.
		c.mu.Unlock()
		c.shutdown()
		return
	}
	c.linger = time.AfterFunc(lingerTime, c.shutdown)
	c.mu.Unlock()
	_ = c.tc.CloseWrite() // fails only when the connection is already closing
}

// peerFinished records that the device will send nothing more and reports
// whether a lingering close was waiting for that. Together with lingerClose,
// under the same lock, whichever comes second closes the connection.
func (c *conn) peerFinished() (lingering bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peerDone = true
	return c.linger != nil
}

// shutdown closes the TLS session (close_notify, then the socket once the
// output is flushed). Safe to call more than once, from any goroutine.
func (c *conn) shutdown() {
	if c.markClosing() {
		_ = c.tc.Close()
	}
}

// markClosing stops the connection's timers and marks it closing; it
// reports whether this call did (false when it was already closing).
func (c *conn) markClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing = true
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.linger != nil {
		c.linger.Stop()
	}
	return true
}
