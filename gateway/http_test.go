package gateway

// HTTP/1.1 handling over real TLS connections: keep-alive, pipelining,
// Expect: 100-continue, chunked bodies, the header and body limits, and the
// Host / SNI check (issue 4, points 1 and 2).

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestKeepAlive(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	for i := range 3 {
		path := "/ka/" + strconv.Itoa(i)
		c.send(request("GET", hApp, path))
		r := c.read("GET")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, r.StatusCode, r.body)
		}
		if r.Close {
			t.Fatalf("request %d: the gateway asked to close a keep-alive connection", i)
		}
		if got := r.echo(t).Path; got != path {
			t.Fatalf("request %d: origin saw path %q, want %q", i, got, path)
		}
	}

	// net/http reuses the connection too.
	cl := h.client(h.pki.sensor1)
	reused := 0
	for i := range 3 {
		req, _ := http.NewRequest("GET", href(hApp, "/"), nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if info.Reused {
					reused++
				}
			},
		}))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	if reused != 2 {
		t.Fatalf("net/http reused the connection %d times of 2", reused)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	// Three requests in one write, the second with a body.
	c.send(request("GET", hApp, "/p1") +
		request("POST", hApp, "/p2", "Content-Length: 5") + "hello" +
		request("GET", hApp, "/p3"))
	for i, want := range []struct{ path, body string }{{"/p1", ""}, {"/p2", "hello"}, {"/p3", ""}} {
		r := c.read("GET")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("response %d: status %d: %s", i, r.StatusCode, r.body)
		}
		e := r.echo(t)
		if e.Path != want.path || e.Body != want.body {
			t.Fatalf("response %d answers %s %q, want %s %q", i, e.Path, e.Body, want.path, want.body)
		}
	}
	// The connection is still usable.
	c.send(request("GET", hApp, "/p4"))
	if e := c.read("GET").echo(t); e.Path != "/p4" {
		t.Fatalf("after the pipeline: origin saw %q", e.Path)
	}
}

// TestAnsweredAfterCloseNotify: a device that closes its side of TLS
// (close_notify) right after its requests still gets every answer, then the
// gateway's close_notify: TLS 1.3 allows the half-close, and HAProxy answers
// it the same way. The first request is held at the origin until the
// close_notify has reached the gateway; the second waits behind it. (A TCP
// half-close is another matter: gnet closes a connection on a read of 0.)
func TestAnsweredAfterCloseNotify(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/hold/half-close") + request("GET", hApp, "/after"))
	h.origin.waitArrived(t)
	if err := c.c.CloseWrite(); err != nil {
		t.Fatalf("close_notify: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the close_notify reaches the gateway first
	h.origin.release <- struct{}{}
	for _, want := range []string{"/hold/half-close", "/after"} {
		r, err := c.readErr("GET")
		if err != nil {
			t.Fatalf("%s: no answer after the device's close_notify: %v", want, err)
		}
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", want, r.StatusCode, r.body)
		}
		if e := r.echo(t); e.Path != want {
			t.Fatalf("answer for %s carries %s", want, e.Path)
		}
	}
	c.expectEOF()
}

// TestDeviceAskedToClose: a request with Connection: close, or an HTTP/1.0
// request without keep-alive, is answered with Connection: close and the
// connection ends there; a request pipelined behind it is not served.
func TestDeviceAskedToClose(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ name, req string }{
		{"Connection: close", request("GET", hApp, "/last", "Connection: close")},
		{"HTTP/1.0", "GET /last HTTP/1.0\r\nHost: " + hApp + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, hApp, h.pki.sensor1)
			c.send(tc.req + request("GET", hApp, "/never"))
			r := c.read("GET")
			if r.StatusCode != http.StatusOK || r.echo(t).Path != "/last" {
				t.Fatalf("status %d: %s", r.StatusCode, r.body)
			}
			if !r.Close {
				t.Errorf("the answer does not say Connection: close")
			}
			c.expectEOF()
		})
	}
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send("GET /one HTTP/1.0\r\nHost: " + hApp + "\r\nConnection: keep-alive\r\n\r\n")
		r := c.read("GET")
		if r.StatusCode != http.StatusOK || r.Close {
			t.Fatalf("status %d, close %v: an HTTP/1.0 keep-alive request keeps the connection", r.StatusCode, r.Close)
		}
		if got := r.Header.Get("Connection"); !strings.EqualFold(got, "keep-alive") {
			t.Errorf("Connection: %q, want keep-alive (HTTP/1.0 keeps a connection only when told)", got)
		}
		if e := r.echo(t); e.Proto != "HTTP/1.1" {
			t.Errorf("the origin got %s; an HTTP/1.0 request goes upstream as HTTP/1.1 (pooled)", e.Proto)
		}
		c.send(request("GET", hApp, "/two"))
		if e := c.read("GET").echo(t); e.Path != "/two" {
			t.Fatalf("second request answered with %s", e.Path)
		}
	})
}

// TestRefusedBeforeBody: a request the gateway refuses is refused on its
// header: no 100 Continue, its body never read or forwarded, and the
// connection ends after the answer (its unread body cannot be framed).
func TestRefusedBeforeBody(t *testing.T) {
	h := newHarness(t)
	body := strings.Repeat("b", 1000)
	for _, tc := range []struct{ name, req string }{
		{"Expect: 100-continue", "POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"},
		{"body sent at once", "POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 1000\r\n\r\n" + body},
		{"chunked body", "POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + body + "\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, hApp, nil) // no certificate: the policies refuse it
			c.send(tc.req)
			r := c.read("POST")
			if r.StatusCode != http.StatusForbidden {
				t.Fatalf("first answer %d, want 403 before any 100 Continue: %s", r.StatusCode, r.body)
			}
			if !r.Close {
				t.Errorf("a refusal with an unread body must close the connection")
			}
			c.finish()
		})
	}
	t.Run("no body: the connection stays", func(t *testing.T) {
		c := h.dial(t, hApp, nil)
		c.send(request("GET", hApp, "/"))
		if r := c.read("GET"); r.StatusCode != http.StatusForbidden || r.Close {
			t.Fatalf("status %d, close %v: a refused GET keeps the connection", r.StatusCode, r.Close)
		}
		c.send(request("GET", hApp, "/cdn-cgi/access/certs"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK {
			t.Fatalf("the next request on the connection: %d", r.StatusCode)
		}
	})
}

// TestSlowSteadyUpload: idle_timeout bounds the time between the pieces of
// a body, not the whole upload: a body that keeps coming, slower than
// idle_timeout in total, goes through; one that stops gets 408.
func TestSlowSteadyUpload(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.IdleTimeout = "1s" })
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 10\r\n\r\n")
	for range 10 { // 10 bytes over about 3 s, one every 300 ms
		time.Sleep(300 * time.Millisecond)
		c.send("b")
	}
	if r := c.read("POST"); r.StatusCode != http.StatusOK || r.echo(t).Body != "bbbbbbbbbb" {
		t.Fatalf("a slow, steady upload: %d %s", r.StatusCode, r.body)
	}
	c.send("POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 10\r\n\r\nbbb")
	if r := c.read("POST"); r.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("an upload that stops: %d, want 408", r.StatusCode)
	}
}

// TestRaisedBodyLimitRightAfterHandshake: a reload that raises
// max_body_bytes raises what the engine holds behind the handshake too: a
// body larger than the old bound, sent with the client's Finished, is
// served, not cut off as inbound_overflow.
func TestRaisedBodyLimitRightAfterHandshake(t *testing.T) {
	// The harness's 1s origin_timeout is for the timeout tests: here the echo
	// origin reads, JSON-encodes and returns a mebibyte, which with -race on
	// busy cores can take longer than that and was answered 504.
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = "30s" })
	np := h.params
	np.MaxBodyBytes = "2MiB"
	h.writeConfig(np)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	body := strings.Repeat("x", 1<<20) // beyond the engine's start-time bound (256 KiB)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("POST /big HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	r := c.read("POST")
	if r.StatusCode != http.StatusOK || len(r.echo(t).Body) != len(body) {
		t.Fatalf("status %d, echoed %d bytes, want 200 and %d", r.StatusCode, len(r.body), len(body))
	}
}

// TestMaxConnectionAge: a keep-alive connection older than
// max_connection_age answers its current request with Connection: close
// and ends, as nginx's keepalive_time does; a younger one stays.
func TestMaxConnectionAge(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.MaxConnectionAge = "300ms" })
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/young"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.Close {
		t.Fatalf("a young connection: %d, close %v", r.StatusCode, r.Close)
	}
	time.Sleep(400 * time.Millisecond)
	c.send(request("GET", hApp, "/old"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || !r.Close {
		t.Fatalf("a connection past max_connection_age: %d, close %v; want its answer with Connection: close", r.StatusCode, r.Close)
	}
	c.expectEOF()
}

// TestMaxConnectionAgeReload: a reload that lowers max_connection_age
// reaches connections opened before it (that is what the limit is for).
func TestMaxConnectionAgeReload(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1) // under the default, 1h
	c.send(request("GET", hApp, "/before"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.Close {
		t.Fatalf("before: %d, close %v", r.StatusCode, r.Close)
	}
	np := h.params
	np.MaxConnectionAge = "200ms"
	h.writeConfig(np)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	c.send(request("GET", hApp, "/after"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || !r.Close {
		t.Fatalf("after the reload lowered the age: %d, close %v; want Connection: close", r.StatusCode, r.Close)
	}
	c.expectEOF()
}

func TestExpectContinue(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("PUT", hApp, "/upload", "Content-Length: 11", "Expect: 100-continue"))
	interim := c.read("PUT")
	if interim.StatusCode != http.StatusContinue {
		t.Fatalf("first response: status %d, want 100", interim.StatusCode)
	}
	c.send("hello world")
	r := c.read("PUT")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("final response: status %d: %s", r.StatusCode, r.body)
	}
	e := r.echo(t)
	if e.Method != "PUT" || e.Body != "hello world" {
		t.Fatalf("origin saw %s %q", e.Method, e.Body)
	}
	if _, ok := e.Headers["Expect"]; ok {
		t.Errorf("Expect was forwarded to the origin: %v", e.Headers["Expect"])
	}

	// Too large a declared body is refused before the client sends it.
	c2 := h.dial(t, hApp, h.pki.sensor1)
	c2.send(request("PUT", hApp, "/upload", "Content-Length: 1000000", "Expect: 100-continue"))
	r = c2.read("PUT")
	if r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized 100-continue: status %d, want 413", r.StatusCode)
	}
	if !r.Close {
		t.Errorf("413 before the body should say Connection: close")
	}
	c2.finish()
}

func TestChunkedRequestBody(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	chunks := []string{"telemetry ", "from ", strings.Repeat("x", 3000), " end"}
	var b strings.Builder
	b.WriteString(request("POST", hApp, "/ingest", "Transfer-Encoding: chunked", "Content-Type: text/plain"))
	for _, ch := range chunks {
		b.WriteString(strconv.FormatInt(int64(len(ch)), 16) + "\r\n" + ch + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	c.send(b.String())
	r := c.read("POST")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	if got, want := r.echo(t).Body, strings.Join(chunks, ""); got != want {
		t.Fatalf("origin received %d bytes %.40q…, want %d bytes", len(got), got, len(want))
	}
	// Keep-alive goes on after a chunked body.
	c.send(request("GET", hApp, "/after"))
	if e := c.read("GET").echo(t); e.Path != "/after" {
		t.Fatalf("next request: origin saw %q", e.Path)
	}
}

func TestRequestLimits(t *testing.T) {
	h := newHarness(t) // max_header_bytes 4KiB, max_header_count 20, max_body_bytes 64KiB
	many := make([]string, 30)
	for i := range many {
		many[i] = "X-Field-" + strconv.Itoa(i) + ": v"
	}
	chunked := request("POST", hApp, "/big", "Transfer-Encoding: chunked") +
		strings.Repeat("8000\r\n"+strings.Repeat("c", 0x8000)+"\r\n", 3) + "0\r\n\r\n"
	tests := []struct {
		name   string
		raw    string
		status int
		body   string
	}{
		{"header too large", request("GET", hApp, "/", "X-Big: "+strings.Repeat("a", 6000)), 431, "request header too large"},
		{"too many header fields", request("GET", hApp, "/", many...), 431, "too many header fields"},
		{"body over max_body_bytes", request("POST", hApp, "/big", "Content-Length: 70000") + strings.Repeat("b", 70000), 413, "request body too large"},
		{"chunked body over max_body_bytes", chunked, 413, "request body too large"},
		// The device keeps sending while the 413 goes out: the answer must not be lost.
		{"body far beyond every buffer", request("POST", hApp, "/huge", "Content-Length: 2000000") + strings.Repeat("h", 2000000), 413, "request body too large"},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, ""},
		{"within limits", request("POST", hApp, "/ok", "Content-Length: 60000", "X-Field: "+strings.Repeat("a", 3000)) + strings.Repeat("b", 60000), 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, hApp, h.pki.sensor1)
			// A first request makes sure the server side of the handshake is
			// over (see TestLargeBodyRightAfterHandshake).
			c.send(request("GET", hApp, "/warm"))
			if r := c.read("GET"); r.StatusCode != 200 {
				t.Fatalf("warm-up: status %d", r.StatusCode)
			}
			go func() { _, _ = c.c.Write([]byte(tc.raw)) }() // the gateway may answer before reading it all
			r := c.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.body != "" && strings.TrimSpace(r.body) != tc.body {
				t.Fatalf("body %q, want %q", r.body, tc.body)
			}
			if tc.status >= 400 {
				if !r.Close {
					t.Errorf("a refused request should close the connection (Connection: close)")
				}
				c.finish()
			}
		})
	}
	t.Run("a silent device is closed after the linger", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send(request("GET", hApp, "/", many...))
		if r := c.read("GET"); r.StatusCode != 431 {
			t.Fatalf("status %d", r.StatusCode)
		}
		start := time.Now()
		c.expectEOF() // the device neither sends nor closes
		if d := time.Since(start); d > lingerTime+time.Second {
			t.Errorf("closed after %v", d)
		}
	})
	// The gateway still serves.
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("after the limits: status %d", r.StatusCode)
	}
}

func TestHostMustMatchSNI(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		sni    string
		host   string
		status int
	}{
		{"same host", hApp, hApp, 200},
		{"port may differ", hApp, hApp + ":8443", 200},
		{"other port", hApp, hApp + ":1", 200},
		{"case differs", hApp, "APP.Fleet.Test", 200},
		{"another application", hApp, hIoT, 421},
		{"unknown host", hApp, "evil.example", 421},
		{"another application with port", hApp, hIoT + ":443", 421},
		{"no-duration app asked for the session app", hIoT, hApp, 421},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, tc.sni, h.pki.sensor1)
			c.send(request("GET", tc.host, "/"))
			r := c.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("SNI %s, Host %s: status %d, want %d: %s", tc.sni, tc.host, r.StatusCode, tc.status, r.body)
			}
			if tc.status == 421 && !strings.Contains(r.body, "does not match") {
				t.Errorf("421 body %q does not say why", r.body)
			}
		})
	}
	t.Run("no Host header", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n")
		if r := c.read("GET"); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400: %s", r.StatusCode, r.body)
		}
	})
}

// TestRefusedUploadIsAnswered: a device that keeps writing a body the
// gateway refuses still gets the 413 (lingering close), with Go's client,
// which stops reading when its write fails.
func TestRefusedUploadIsAnswered(t *testing.T) {
	h := newHarness(t)
	cl := h.client(h.pki.sensor1)
	for i := range 10 {
		// A new connection each time (the 413 closes it); the body, more
		// than the gateway buffers, is mostly written while the 413 is on
		// its way, and below tlsengine's 256KiB handshake bound.
		req, _ := http.NewRequest("POST", href(hApp, "/up"), strings.NewReader(strings.Repeat("u", 200_000)))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("upload %d: %v (the 413 was lost)", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("upload %d: status %d, want 413", i, resp.StatusCode)
		}
	}
}

// TestLargeBodyRightAfterHandshake: a TLS 1.3 client sends its request right
// behind its Finished, while the gateway is still finishing the handshake.
// Those bytes wait in the TLS engine, which must hold one whole request
// (header and body limits plus slack) there: a body within max_body_bytes is
// served, one above it gets 413 — never a dropped connection.
func TestLargeBodyRightAfterHandshake(t *testing.T) {
	h := newHarness(t)
	for i := range 10 {
		for _, tc := range []struct {
			size int
			want int
		}{{60_000, http.StatusOK}, {100_000, http.StatusRequestEntityTooLarge}} {
			req, _ := http.NewRequest("POST", href(hApp, "/up"), strings.NewReader(strings.Repeat("u", tc.size)))
			resp, err := h.client(h.pki.sensor1).Do(req) // a new connection each time
			if err != nil {
				t.Fatalf("upload %d of %d bytes: %v", i, tc.size, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("upload %d of %d bytes: status %d, want %d", i, tc.size, resp.StatusCode, tc.want)
			}
		}
	}
}
