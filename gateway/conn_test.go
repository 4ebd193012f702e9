package gateway

// A connection's life over real TLS: keep-alive, pipelined requests answered
// in order, the device's close_notify and Connection: close, idle_timeout
// between the pieces of a body, max_connection_age, and a device that does
// not read being held back by the outbound bound.

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
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
	cfg := h.config()
	cfg.Gateway.MaxConnectionAge = "200ms"
	h.write(cfg)
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

// TestNonReaderHeldBack: a device that never reads but keeps sending small
// requests, each served by a new worker, is held back by the outbound
// bound like one large response is: its answers do not pile up in the
// gateway (they did: 150 answers of 200 KiB, 26 MiB buffered).
func TestNonReaderHeldBack(t *testing.T) {
	fo := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = fo.URL })
	raw, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.(*net.TCPConn).SetReadBuffer(4096)
	c := tls.Client(raw, h.tlsConfig(hApp, h.pki.sensor1))
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	var writeErr error // the gateway may give up on the connection; then nothing is left to measure
	sent := 0
	for ; sent < 150; sent++ {
		if _, writeErr = c.Write([]byte(request("GET", hApp, "/body?n=204800"))); writeErr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)

	// Measure this device's connection, found on its event loop by its
	// address: the bound below means nothing unless it was measured.
	type sample struct {
		addr string
		n    int
	}
	local := raw.LocalAddr().String()
	measured, buffered := false, 0
	h.srv.live.Range(func(k, _ any) bool {
		got := make(chan sample, 1)
		if err := k.(*conn).gc.AsyncWrite(nil, func(gc gnet.Conn, err error) error {
			s := sample{n: -1}
			if err == nil && gc.RemoteAddr() != nil {
				s = sample{gc.RemoteAddr().String(), gc.OutboundBuffered()}
			}
			got <- s
			return nil
		}); err != nil {
			return true // closed meanwhile: not this device's, or reported below
		}
		select {
		case s := <-got:
			if s.n >= 0 && s.addr == local {
				measured, buffered = true, s.n
				return false
			}
		case <-time.After(2 * time.Second):
			t.Errorf("the event loop did not answer the outbound-buffer query in 2s")
		}
		return true
	})
	if !measured {
		t.Fatalf("the device's connection (%s) was not measured: it is not open (after %d requests; last write error %v)", local, sent, writeErr)
	}
	if buffered == 0 {
		t.Fatalf("nothing buffered for a device that sent %d requests and read nothing: were they served at all?", sent)
	}
	t.Logf("%d requests sent, %d KiB buffered", sent, buffered>>10)
	if buffered > 2*flowCheck+flowLowWater {
		t.Fatalf("%d KiB of answers buffered for a device that reads nothing; the bound is about %d KiB", buffered>>10, (flowCheck+flowLowWater)>>10)
	}
}

// TestRefusalBeforeTheLinger: a request refused before its body came (a
// policy refusal decided on a worker, where the header left the loop to
// wait for the body) is answered at once, followed by close_notify, and the
// connection then lingers to read what the device still sends: neither the
// answer nor the end of the stream waits for the lingering close to end
// (lingerTime); the device's own close ends it.
func TestRefusalBeforeTheLinger(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name, sni, expect string
		dev               *device
	}{
		{"no-duration app, CN not admitted", hIoT, "", h.pki.sensor2},
		{"session app, foreign CA", hApp, "", h.pki.foreign},
		{"session app, foreign CA, Expect 100-continue", hApp, "Expect: 100-continue\r\n", h.pki.foreign},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, tc.sni, tc.dev)
			c.send("POST /upload HTTP/1.1\r\nHost: " + tc.sni + "\r\nContent-Length: 100\r\n" + tc.expect + "\r\n")
			if r := c.read("POST"); r.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want 403", r.StatusCode)
			}
			c.expectLinger()
			c.finish()
		})
	}
}
