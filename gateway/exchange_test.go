package gateway

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestEndOfExchange pins the one decision of what becomes of a connection
// after an answer: every fact a phase can record, alone, and what it leads
// to (kept, closed, or closed lingering because input is left unread).
func TestEndOfExchange(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n"
	const post = "POST / HTTP/1.1\r\nHost: app.fleet.test\r\nContent-Length: 5\r\n\r\n"
	const chunked = "POST / HTTP/1.1\r\nHost: app.fleet.test\r\nTransfer-Encoding: chunked\r\n\r\n"
	tests := []struct {
		name     string
		header   string
		set      func(x *exchange)
		draining bool
		maxAge   time.Duration
		pending  string // bytes the device sent after the request
		want     end
	}{
		{name: "a plain request", header: get, want: endKeep},
		{name: "a body read whole", header: post, set: func(x *exchange) { x.bodyRead = true }, want: endKeep},
		{name: "a body never read", header: post, want: endLinger},
		{name: "a chunked body never read", header: chunked, want: endLinger},
		{name: "input refused unread", header: get, set: func(x *exchange) { x.unread = true }, want: endLinger},
		{name: "device asked to close", header: get, set: func(x *exchange) { x.deviceClose = true }, want: endClose},
		{name: "device asked to close, more pipelined", header: get, set: func(x *exchange) { x.deviceClose = true }, pending: "GET /next", want: endLinger},
		{name: "more pipelined, kept", header: get, pending: "GET /next", want: endKeep},
		{name: "malformed", header: get, set: func(x *exchange) { x.malformed = true }, want: endClose},
		{name: "no-duration token", header: get, set: func(x *exchange) { x.perRequest = true }, want: endClose},
		{name: "body delimited by the close", header: get, set: func(x *exchange) { x.unframed = true }, want: endClose},
		{name: "answer cut", header: get, set: func(x *exchange) { x.cut = true }, want: endClose},
		{name: "draining", header: get, draining: true, want: endClose},
		{name: "older than max_connection_age", header: get, maxAge: time.Nanosecond, want: endClose},
		{name: "younger than max_connection_age", header: get, maxAge: time.Hour, want: endKeep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{}
			srv.draining.Store(tc.draining)
			c := &conn{srv: srv, pipe: newPlainPipe(1 << 20), opened: time.Now().Add(-time.Second)}
			br := bufio.NewReader(strings.NewReader(tc.header + tc.pending))
			x := &exchange{c: c, cur: &snapshot{maxConnAge: tc.maxAge}, br: br, req: fasthttp.AcquireRequest()}
			defer fasthttp.ReleaseRequest(x.req)
			if err := x.req.Header.Read(br); err != nil {
				t.Fatalf("header: %v", err)
			}
			if tc.pending != "" {
				if _, err := br.Peek(len(tc.pending)); err != nil {
					t.Fatalf("pending: %v", err)
				}
			}
			if tc.set != nil {
				tc.set(x)
			}
			x.final = x.last() // as respond decides before the header goes out
			if got := c.endOf(x); got != tc.want {
				t.Errorf("endOf = %v, want %v (last %v)", got, tc.want, x.final)
			}
		})
	}
}
