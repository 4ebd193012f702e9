package gateway

import (
	"bufio"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/policy"
)

// exchange is one request's trip through the gateway: what came in, what was
// decided, and what goes back. serveOne runs its phases in order.
type exchange struct {
	c    *conn
	app  *application
	cur  *snapshot // the newest configuration, loaded once for this request
	br   *bufio.Reader
	bw   *bufio.Writer
	req  *fasthttp.Request
	resp *fasthttp.Response
	now  time.Time
	host string // the request's host, lower-case, without port

	start     time.Time // the header was read
	headerErr error     // why the header could not be read; checkFraming answers it

	token    string         // the token the device presented, if any
	claims   *policy.Claims // its verified claims; nil when absent or invalid
	tokenErr error          // why a presented token was refused

	input     policy.Input
	decision  policy.Decision
	decided   bool   // the policies were evaluated (decision is meaningful)
	assertion string // the token forwarded to the origin
	cookie    string // the session cookie minted for the device (Set-Cookie), "" for none
	cookieSet bool   // the response carries cookie (forward added it and no failure replaced it)

	status     int
	reason     string // for the access log (and the body of a refusal)
	requestID  string // set for a page that shows one (a denied login), and logged
	bytesOut   int64  // the response body's bytes as sent
	originKind string // origin failure kind, for logs and metrics
	originDur  time.Duration

	// What decides the end of the exchange (last, endOf). Phases record
	// facts here; none of them decides whether the connection stays open.
	http10      bool // the device spoke HTTP/1.0: a connection kept open must say keep-alive
	deviceClose bool // Connection: close, or HTTP/1.0 without keep-alive
	silent      bool // the device sent no request (closed, or went quiet)
	unread      bool // input was left unread: a refused header, or a body refused mid-read
	bodyRead    bool // the request's body was read whole
	malformed   bool // nothing after this request can be trusted (400)
	perRequest  bool // a "no duration" application's request: a token for it alone, or its refusal
	unframed    bool // the body goes to an HTTP/1.0 device delimited by the close
	cut         bool // the answer could not be written whole
	final       bool // the answer says Connection: close (last decided it)

	// Where the exchange runs (loopserve.go). A phase that cannot go on
	// where it is returns suspend; run resumes at that phase later.
	next       int         // the phase run resumes at
	begun      bool        // the header was read and the request counted in flight
	onLoop     bool        // running on the connection's event loop
	evAt       time.Time   // on the loop: the clock's reading for the event running x (clock)
	wantWorker bool        // suspended to go on on a worker goroutine
	toLoop     bool        // suspended on a worker to go on on the loop (forward)
	noLoop     bool        // the loop cannot carry this request to the origin: the pooled client does
	prepared   bool        // cleanRequest has rewritten req for the origin
	answered   bool        // the origin's answer (or failure) is in resp and originErr
	originErr  error       // why the origin request failed
	lo         *loopOrigin // the loop's origin connection carrying the request
	streamFrom io.Reader   // the rest of a response too long for the loop, read on a worker
	streamConn io.Closer   // an origin connection whose body streams from a worker; closed at release
	// fwd is the gateway's own headers for the origin, set with prepared;
	// forwardedSet once they are in req's header (the pooled client's
	// requests) rather than appended as the loop writes it.
	fwd          forwardInfo
	forwardedSet bool
}

// outcome is what a phase tells serveOne.
type outcome uint8

const (
	proceed outcome = iota // go on to the next phase
	respond                // the response is complete: send it
	hangUp                 // nothing can be answered: end the exchange silently
	suspend                // go on later, from this phase (on a worker, or once the origin answers)
)

// end is what becomes of a connection after an exchange.
type end uint8

const (
	endKeep      end = iota // wait for the next request
	endClose                // close_notify, then close
	endLinger               // close once the device stops sending (lingerClose)
	endSuspended            // the exchange goes on later (suspend): nothing is decided yet
)

// serveOne serves one request on the connection, its phases in order, and
// reports what becomes of the connection. The policies run on the header
// alone: a refused request's body is never read, nor 100 Continue sent.
// A phase that must wait (the origin's answer on the event loop) or leave
// the loop (loopserve.go) suspends the exchange: serveOne is called again
// with it later, and resumes at that phase.
func (c *conn) serveOne(x *exchange) end {
	if !x.begun {
		if x.readHeader() == hangUp {
			x.final = true
			return x.finish()
		}
		x.begun = true
		c.srv.inflight.Add(1)
	}
	switch x.run(
		(*exchange).checkFraming,       // 505, 405, 400, 431, 413: never forwarded
		(*exchange).stayOnLoop,         // what may block or sign leaves the event loop
		(*exchange).recheckCertificate, // revocation and expiry, now
		(*exchange).checkHost,          // Host against the TLS server name (421)
		(*exchange).readToken,          // a session token, from a cookie or header
		(*exchange).accessEndpoints,    // /cdn-cgi/access/*
		(*exchange).decide,             // the application's policies (403)
		(*exchange).readBody,           // 100 Continue, then the body
		(*exchange).mint,               // the token the origin gets
		(*exchange).forward,            // the origin's answer
	) {
	case suspend:
		return endSuspended
	case hangUp:
		x.final = true
		return x.finish()
	}
	x.respond()
	total := x.elapsed()
	c.srv.metrics.request(x, total)
	c.srv.accessLog(x, total, x.bytesOut)
	return x.finish()
}

// finish ends the exchange: what becomes of the connection. Its request
// and response stay with it: whoever ran it then recycles it (the event
// loop) or drops it (a worker).
func (x *exchange) finish() end {
	e := x.c.endOf(x)
	if x.begun {
		x.c.srv.inflight.Add(-1)
	}
	if x.streamConn != nil {
		_ = x.streamConn.Close()
	}
	return e
}

// newExchange starts an exchange on the connection: a recycled one, with
// the request and response it kept, or a new one with pooled ones.
func (c *conn) newExchange(br *bufio.Reader, bw *bufio.Writer) *exchange {
	x := exchangePool.Get().(*exchange)
	req, resp := x.req, x.resp
	if req == nil {
		req, resp = fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	}
	*x = exchange{
		c: c, app: c.app(), cur: c.srv.snap.Load(), br: br, bw: bw,
		req: req, resp: resp,
	}
	return x
}

// exchangePool holds exchanges the event loop has finished with
// (recycle), each with its request and response. An exchange is some 700
// bytes, allocated once per request: at tens of thousands of keep-alive
// requests a second it was most of what the collector had to do.
var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

// recycle gives a finished exchange back for a later request, with its
// request and response reset. Only the event loop calls it, once the
// exchange has ended (not suspended) and after its last use: nothing else
// holds an exchange by then. The loop's origin connection and its queue
// let go of it before they resume it, and an exchange a worker ran is
// dropped, never recycled. The rest of it is cleared, so that a pooled
// exchange keeps no connection alive.
func (x *exchange) recycle() {
	req, resp := x.req, x.resp
	req.Reset()
	resp.Reset()
	*x = exchange{req: req, resp: resp}
	exchangePool.Put(x)
}

// drop ends a finished exchange a worker ran: its request and response go
// back to fasthttp's pools, the exchange itself to the collector.
func (x *exchange) drop() {
	fasthttp.ReleaseRequest(x.req)
	fasthttp.ReleaseResponse(x.resp)
	x.req, x.resp = nil, nil
}

// run runs phases in order, from the one a suspended exchange stopped at,
// until one completes the response, hangs up or suspends.
func (x *exchange) run(phases ...func(*exchange) outcome) outcome {
	for ; x.next < len(phases); x.next++ {
		if o := phases[x.next](x); o != proceed {
			return o
		}
	}
	return proceed
}

// clock is the time for x's phases. On the loop it is the reading taken
// when the event running x began (evAt), shared by the phases that event
// runs (clock.go); on a worker, which may have waited since, the clock.
func (x *exchange) clock() time.Time {
	if x.onLoop {
		return x.evAt
	}
	return time.Now()
}

// elapsed is the time since the header was read.
func (x *exchange) elapsed() time.Duration {
	if x.onLoop {
		return x.evAt.Sub(x.start)
	}
	return time.Since(x.start) // one clock read, where time.Now takes two
}

// aged reports whether the connection has lived longer than
// max_connection_age (0: no limit): this request is its last.
func (x *exchange) aged() bool {
	d := x.cur.maxConnAge
	return d > 0 && x.clock().Sub(x.c.opened) >= d
}

// last reports whether this exchange is the connection's last: every
// reason a connection cannot carry another request is here. respond asks it
// before the header goes out (Connection: close).
func (x *exchange) last() bool {
	return x.unread || x.bodyLeft() || x.malformed || x.perRequest || x.unframed ||
		x.deviceClose || x.cut || x.c.srv.draining.Load() || x.aged()
}

// bodyLeft reports whether the request announced a body that was not read
// (a request refused on its header): what follows cannot be parsed.
func (x *exchange) bodyLeft() bool {
	if x.bodyRead || x.headerErr != nil {
		return false
	}
	cl := x.req.Header.ContentLength()
	return cl > 0 || cl == -1 // a length, or chunked (-2: none)
}

// endOf decides what becomes of the connection once the exchange is over:
// kept for the next request, closed, or closed lingering when input is left
// unread (closing at once would make the kernel reset the connection and
// could destroy the answer just written).
func (c *conn) endOf(x *exchange) end {
	switch {
	case !x.final:
		return endKeep
	case x.unread || x.bodyLeft() || x.br.Buffered() > 0 || c.pipe.buffered() > 0:
		return endLinger
	}
	return endClose
}

// supportedProtocol reports whether a request line's version is one the
// gateway speaks: HTTP/1.1 or HTTP/1.0 (fasthttp accepts any HTTP/x.y).
func supportedProtocol(proto []byte) bool {
	return string(proto) == "HTTP/1.1" || string(proto) == "HTTP/1.0"
}
