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

	"github.com/fleetgate/fleetgate/policy"
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

	countedIP bool        // counted in Server.perIP (max_connections_per_ip)
	served    atomic.Bool // a request worker has run: the device uses the connection

	// Touched only on the event loop.
	handshakeSeen bool

	// session is the last session token minted on this connection; only
	// the request worker touches it.
	session *session

	// unread is set by the worker when it refuses a request whose bytes it
	// did not all read (413, 431, 400, 408): the connection then lingers.
	unread bool
	// unchecked counts the response bytes written since the outbound
	// buffer was last looked at (tlsWriter); request workers only, one at a
	// time.
	unchecked int

	mu       sync.Mutex
	idle     *time.Timer // closes the connection when no request comes in time
	linger   *time.Timer // ends a lingering close
	closing  bool
	peerDone bool // the device sends nothing more (close_notify or a broken record)
}

// lingerTime bounds a lingering close: after refusing a request it did not
// read in full, the gateway keeps reading (and discarding) what the device
// still sends, until the device closes or this long has passed. Closing at
// once, with input unread, makes the kernel send a reset, and a device still
// writing its body would lose the 413 (nginx's lingering_close does the same).
const lingerTime = 2 * time.Second

// readBufPool holds the buffers OnTraffic decrypts into; they are per call,
// not per connection, so an idle connection costs no buffer.
var readBufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

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
	if !c.handshakeSeen {
		c.handshakeSeen = true
		c.armIdle(c.idleLimit())
	}
	bp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bp)
	buf := *bp
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
				c.stopIdle()
				c.srv.workers.Go(c.work)
			}
		}
		if errors.Is(err, tlsengine.ErrWouldBlock) {
			return gnet.None
		}
		if err != nil {
			// close_notify or a broken record: no more requests come; the
			// worker (if any) finishes what it has, then closes.
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
func (c *conn) work() {
	c.served.Store(true)
	s := c.snap
	// The buffers come from pools: a worker starts for every burst of
	// requests, and allocating them each time was a tenth of the CPU of a
	// keep-alive request.
	br := s.readers.Get().(*bufio.Reader)
	br.Reset(c.pipe)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(&tlsWriter{c: c})
	defer func() {
		br.Reset(nil)
		s.readers.Put(br)
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	for {
		keep := c.serveOne(br, bw)
		if !keep {
			// Input not read (a refused body, or requests pipelined behind
			// the last one): closing at once could make the kernel reset
			// the connection and lose the answer just written.
			if c.unread || br.Buffered() > 0 || c.pipe.buffered() > 0 {
				c.lingerClose()
			} else {
				c.shutdown()
			}
			return
		}
		if c.pipe.finish(br.Buffered()) {
			// Draining, or the device already finished sending (close_notify
			// or EOF while this request was served): nothing more will come.
			if c.srv.draining.Load() || c.pipe.isClosed() {
				c.shutdown()
				return
			}
			c.armIdle(s.idleTimeout)
			return
		}
	}
}

// writerPool holds the response writers of request workers.
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// serveOne reads, serves and answers one request. It reports whether the
// connection may carry another.
func (c *conn) serveOne(br *bufio.Reader, bw *bufio.Writer) (keepAlive bool) {
	s := c.snap
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	c.pipe.setDeadline(time.Now().Add(s.headerTimeout))
	err := awaitHeader(br)
	if err == nil {
		err = req.Header.Read(br)
	}
	start := time.Now()
	c.srv.inflight.Add(1)
	defer c.srv.inflight.Add(-1)
	x := &exchange{c: c, app: c.app(), req: req, resp: resp, now: c.srv.now()}
	if err != nil {
		if isQuietEOF(err) {
			return false
		}
		x.refuseRead(err, false)
		c.unread = true
		c.finishExchange(x, bw, start)
		return false
	}
	if !supportedProtocol(req.Header.Protocol()) {
		// An HTTP version this gateway does not speak (HTTP/1.2, HTTP/2.0 in
		// an HTTP/1 request line): its framing is unknown, so nothing after
		// the header can be trusted.
		x.closeAfter = true
		c.unread = true
		x.refuse(fasthttp.StatusHTTPVersionNotSupported, "HTTP version not supported")
		c.finishExchange(x, bw, start)
		return false
	}
	if refusedMethod(req) { // CONNECT, TRACE: never forwarded (framing.go)
		c.unread = true
		x.refuseMethod() // 405 with Allow; the connection closes
		c.finishExchange(x, bw, start)
		return false
	}
	if why := framingError(req); why != "" {
		// Never forwarded: the origin could frame it differently.
		x.closeAfter = true
		c.unread = true
		x.refuse(fasthttp.StatusBadRequest, "malformed request: "+why)
		c.finishExchange(x, bw, start)
		return false
	}
	if s.maxHeaderCount > 0 && req.Header.Len() > s.maxHeaderCount {
		x.closeAfter = true
		c.unread = true
		x.refuse(fasthttp.StatusRequestHeaderFieldsTooLarge, "too many header fields")
		c.finishExchange(x, bw, start)
		return false
	}
	if req.MayContinue() {
		if cl := req.Header.ContentLength(); cl > int(s.maxBodyBytes) {
			x.closeAfter = true // the body may follow anyway: it is never read
			c.unread = true
			x.refuse(fasthttp.StatusRequestEntityTooLarge, "request body too large")
			c.finishExchange(x, bw, start)
			return false
		}
	}

	// Read before the phases: forwarding strips the hop-by-hop Connection
	// header, and fasthttp's close flag (HTTP/1.0, Connection: close) with it.
	// max_connection_age comes from the newest configuration: a reload that
	// lowers it reaches open connections.
	x.http10 = !req.Header.IsHTTP11()
	if req.Header.ConnectionClose() || c.srv.draining.Load() || c.aged(c.srv.snap.Load().maxConnAge) {
		x.closeAfter = true
	}
	// Authorize on the header alone: a refused request's body is never read
	// (nor 100 Continue sent), so the connection ends after the answer.
	if x.admit() == respond {
		if cl := req.Header.ContentLength(); cl > 0 || cl == -1 { // a length, or chunked (-2: none)
			x.closeAfter = true
			c.unread = true
		}
		c.finishExchange(x, bw, start)
		return !x.closeAfter
	}

	if req.MayContinue() {
		if _, err := bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
		if err := bw.Flush(); err != nil {
			return false
		}
	}
	c.pipe.setIdleTimeout(s.idleTimeout) // between reads: a slow, steady upload is fine
	if err := req.ContinueReadBody(br, int(s.maxBodyBytes), false); err != nil {
		x.refuseRead(err, true)
		c.unread = true
		c.finishExchange(x, bw, start)
		return false
	}
	c.pipe.setDeadline(time.Time{})

	x.serve()
	if c.srv.draining.Load() { // a drain that began while this request was served
		x.closeAfter = true
	}
	c.finishExchange(x, bw, start)
	return !x.closeAfter
}

// supportedProtocol reports whether a request line's version is one the
// gateway speaks: HTTP/1.1 or HTTP/1.0 (fasthttp accepts any HTTP/x.y).
func supportedProtocol(proto []byte) bool {
	return string(proto) == "HTTP/1.1" || string(proto) == "HTTP/1.0"
}

// refuseRead answers a request that could not be read.
func (x *exchange) refuseRead(err error, inBody bool) {
	x.closeAfter = true
	// Logged and counted as refused before the policies (decision none), as
	// when refused before they ran: the request never reached the origin.
	x.decided, x.decision = false, policy.Decision{}
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, errBareLF):
		x.refuse(fasthttp.StatusBadRequest, "malformed request: bare LF line ending")
	case errors.Is(err, errReadTimeout):
		x.refuse(fasthttp.StatusRequestTimeout, "request timeout")
	case errors.As(err, &small):
		x.refuse(fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		x.refuse(fasthttp.StatusRequestEntityTooLarge, "request body too large")
	case inBody:
		x.refuse(fasthttp.StatusBadRequest, "malformed request body")
	default:
		x.refuse(fasthttp.StatusBadRequest, "malformed request")
	}
}

// finishExchange writes the response, counts it and logs it. An origin
// body that is still streaming is read whole when it is small, else copied
// to the device as it arrives (stream.go).
func (c *conn) finishExchange(x *exchange, bw *bufio.Writer, start time.Time) {
	var body *streamedBody
	if x.resp.IsBodyStream() {
		body = x.settleBody()
	}
	if body != nil && x.http10 && x.resp.Header.ContentLength() < 0 {
		// HTTP/1.0 has no chunked coding: a body of unknown length is
		// delimited by closing the connection (writeStreamed).
		x.closeAfter = true
	}
	if x.closeAfter {
		x.resp.SetConnectionClose()
	} else if x.http10 {
		// HTTP/1.0 keeps a connection only when the response says so.
		x.resp.Header.Set("Connection", "keep-alive")
	}
	x.resp.SkipBody = x.req.Header.IsHead()
	if x.status == 0 {
		x.status = x.resp.StatusCode()
	}
	var out int64
	var err error
	if body != nil {
		out, err = x.writeStreamed(bw, body)
	} else {
		if x.closeAfter && !c.unread {
			// The connection closes right after this response (work calls
			// shutdown): the response and close_notify go out in one write.
			c.tc.Cork()
		}
		if !x.resp.SkipBody {
			out = int64(len(x.resp.Body())) // a HEAD's answer sends none
		}
		err = x.resp.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
	}
	if err != nil {
		x.closeAfter = true
	} else if ss := c.session; x.cookieSet && ss != nil && ss.token == x.assertion {
		ss.sentFor = x.host // the device has the cookie: later responses need not repeat it
	}
	total := time.Since(start)
	c.srv.metrics.request(x, total)
	c.srv.accessLog(x, total, out)
}

// aged reports whether the connection has lived longer than maxAge (0: no
// limit): its current request is its last (max_connection_age).
func (c *conn) aged(maxAge time.Duration) bool {
	return maxAge > 0 && time.Since(c.opened) >= maxAge
}

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
	case !c.tc.HandshakeComplete():
	case c.served.Load():
		c.idleExpired()
	default:
		c.armIdle(drainGrace)
	}
}

// armIdle (re)starts the idle timer.
func (c *conn) armIdle(d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(d, c.idleExpired)
		return
	}
	c.idle.Reset(d)
}

func (c *conn) stopIdle() {
	c.mu.Lock()
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
}

// idleExpired closes the connection unless a request started meanwhile.
func (c *conn) idleExpired() {
	if c.pipe.stopIfIdle() {
		c.shutdown()
	}
}

// lingerClose ends the connection after a refused request without cutting
// off the answer: input is discarded from now on, and the connection closes
// when the device closes its side or after lingerTime.
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
