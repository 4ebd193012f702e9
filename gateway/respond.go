package gateway

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/policy"
)

// respond writes the answer: whole, or its header and then the body as the
// origin sends it, when the body is too long to hold (stream.go). Whether
// it is the connection's last answer is decided here, before its header
// goes out, and a failed write makes it so.
func (x *exchange) respond() {
	var body *streamedBody
	if x.resp.IsBodyStream() {
		body = x.settleBody()
	}
	// HTTP/1.0 has no chunked coding: a body of unknown length is delimited
	// by closing the connection (writeStreamed).
	x.unframed = body != nil && x.http10 && x.resp.Header.ContentLength() < 0
	x.final = x.last()
	if x.final {
		x.resp.SetConnectionClose()
	} else if x.http10 {
		// HTTP/1.0 keeps a connection only when the response says so.
		x.resp.Header.Set("Connection", "keep-alive")
	}
	x.resp.SkipBody = x.req.Header.IsHead()
	if x.status == 0 {
		x.status = x.resp.StatusCode()
	}
	if x.onLoop {
		// On the event loop the answer is held and goes out in one direct
		// write once the exchange ends (loopserve.go).
		x.c.tc.Cork()
	}
	var err error
	if body != nil {
		x.bytesOut, err = x.writeStreamed(x.bw, body)
	} else {
		if x.final && !x.unread {
			// The connection most likely closes right after this answer:
			// the answer and close_notify go out in one write.
			x.c.tc.Cork()
		}
		if !x.resp.SkipBody {
			x.bytesOut = int64(len(x.resp.Body())) // a HEAD's answer sends none
		}
		err = x.resp.Write(x.bw)
		if err == nil {
			err = x.bw.Flush()
		}
	}
	if err != nil {
		x.cut, x.final = true, true
	} else if ss := x.c.session; x.cookieSet && ss != nil && ss.token == x.assertion {
		ss.sentFor = x.host // the device has the cookie: later responses need not repeat it
	}
}

// refuseRead answers a request that could not be read (inBody: its body).
func (x *exchange) refuseRead(err error, inBody bool) outcome {
	// Logged and counted as refused before the policies (decision none), as
	// when refused before they ran: the request never reached the origin.
	x.decided, x.decision = false, policy.Decision{}
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, errBareLF):
		return x.refuseUnread(fasthttp.StatusBadRequest, "malformed request: bare LF line ending")
	case errors.Is(err, errReadTimeout):
		return x.refuseUnread(fasthttp.StatusRequestTimeout, "request timeout")
	case errors.As(err, &small):
		return x.refuseUnread(fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return x.refuseUnread(fasthttp.StatusRequestEntityTooLarge, "request body too large")
	case inBody:
		return x.refuseUnread(fasthttp.StatusBadRequest, "malformed request body")
	}
	return x.refuseUnread(fasthttp.StatusBadRequest, "malformed request")
}

// refuseUnread refuses a request whose input is not read in full: the
// connection closes after the answer, lingering.
func (x *exchange) refuseUnread(status int, reason string) outcome {
	x.unread = true
	return x.refuse(status, reason)
}

// refuse answers with a status and a one-line reason the device can read.
func (x *exchange) refuse(status int, reason string) outcome {
	x.reason = reason
	return x.fail(status, reason)
}

// fail writes a short text response.
func (x *exchange) fail(status int, body string) outcome {
	x.status = status
	if x.reason == "" {
		x.reason = body
	}
	x.resp.Reset()
	x.cookieSet = false // a replaced response does not carry the cookie
	x.resp.SetStatusCode(status)
	x.resp.Header.SetContentType("text/plain; charset=utf-8")
	x.resp.Header.Set("Cache-Control", "no-store")
	x.resp.SetBodyString(body + "\n")
	return respond
}

func (x *exchange) internalError(what string, err error) outcome {
	x.c.srv.log.Error("internal error", "what", what, "err", err.Error())
	x.reason = "internal error: " + what
	return x.fail(fasthttp.StatusInternalServerError, "internal error")
}
