package gateway

// Request framing over real TLS connections: request smuggling shapes are
// refused with 400 and never reach the origin; a slowloris header gets 408
// at header_timeout; CONNECT and TRACE are refused with 405; the checks cost
// no allocation.

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// countingOrigin is an origin that answers 200 "ok" and counts the requests
// that reach it.
type countingOrigin struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func startCountingOrigin(t testing.TB) *countingOrigin {
	o := &countingOrigin{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func TestSmugglingShapesRefused(t *testing.T) {
	o := startCountingOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	const host = "Host: " + hApp + "\r\n"
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"obs-fold with a space", "GET / HTTP/1.1\r\n" + host + "X-A: b\r\n c\r\n\r\n", 400},
		{"obs-fold with a tab", "GET / HTTP/1.1\r\n" + host + "X-A: b\r\n\tc\r\n\r\n", 400},
		{"Content-Length then Transfer-Encoding", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"two different Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"two equal Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"Content-Length list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 5\r\n\r\nhello", 400},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n" + host + "\r\n", 505},
		{"HTTP/2.0 in an HTTP/1 request line", "POST / HTTP/2.0\r\n" + host + "Content-Length: 5\r\n\r\nhello", 505},
		{"negative Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", 400},
		{"bare LF everywhere", "GET / HTTP/1.1\nHost: " + hApp + "\n\n", 400},
		{"bare LF in one header line", "GET / HTTP/1.1\r\nHost: " + hApp + "\nX-A: b\r\n\r\n", 400},
		{"bare LF after the request line", "GET / HTTP/1.1\n" + host + "\r\n", 400},
		{"bare CR inside a value", "GET / HTTP/1.1\r\n" + host + "X-A: b\rc\r\n\r\n", 400},
		{"invalid chunk size", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
		{"chunk size with 0x", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400},
		{"chunk size overflow", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n", 400},
		{"chunk size ended by bare LF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400},
		{"space before the colon", "GET / HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n", 400},
		{"space before the colon of Transfer-Encoding", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"space inside a field name", "GET / HTTP/1.1\r\n" + host + "X A: b\r\n\r\n", 400},
		{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", 400},
		{"two Transfer-Encoding", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"HTTP/1.0 with Transfer-Encoding", "POST / HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"NUL in a value", "GET / HTTP/1.1\r\n" + host + "X-A: b\x00c\r\n\r\n", 400},
		{"two Host", "GET / HTTP/1.1\r\n" + host + "Host: " + hIoT + "\r\n\r\n", 400},
		{"absolute target for another host", "GET https://" + hIoT + "/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"userinfo after the Host's port", "GET / HTTP/1.1\r\nHost: " + hApp + ":80@evil.example\r\n\r\n", 400},
		{"space in the Host's port", "GET / HTTP/1.1\r\nHost: " + hApp + ": 0\r\n\r\n", 400},
		{"letters in the Host's port", "GET / HTTP/1.1\r\nHost: " + hApp + ":https\r\n\r\n", 400},
		{"six-digit port", "GET / HTTP/1.1\r\nHost: " + hApp + ":100443\r\n\r\n", 400},
		{"path in the Host", "GET / HTTP/1.1\r\nHost: " + hApp + "/x\r\n\r\n", 400},
		{"Host of only a port", "GET / HTTP/1.1\r\nHost: :443\r\n\r\n", 400},
		{"unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400},
		{"truncated percent-encoding", "GET /%0 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"percent-encoding that is not hex", "GET /a%zzb HTTP/1.1\r\n" + host + "\r\n", 400},
		{"percent at the end", "GET /a?b=% HTTP/1.1\r\n" + host + "\r\n", 400},
		// Controls: the same shapes done right are served.
		{"control: chunked body", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200},
		{"control: absolute target for the same host", "GET https://" + hApp + ":443/x HTTP/1.1\r\n" + host + "\r\n", 200},
		{"control: Transfer-Encoding in capitals", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200},
		{"control: tab in a value", "GET / HTTP/1.1\r\n" + host + "X-A: b\tc\r\n\r\n", 200},
		{"control: percent-encoded slash and query", "GET /a%2Fb?c=%41 HTTP/1.1\r\n" + host + "\r\n", 200},
		{"control: Host with a port", "GET / HTTP/1.1\r\nHost: " + hApp + ":8443\r\n\r\n", 200},
		{"control: Host in capitals with a trailing dot", "GET / HTTP/1.1\r\nHost: APP.fleet.test.\r\n\r\n", 200},
	}
	served := int64(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, hApp, h.pki.sensor1)
			before := o.hits.Load()
			c.send(tc.raw)
			r := c.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.status == 200 {
				served++
				return
			}
			if !r.Close {
				t.Errorf("a refused request should close the connection (Connection: close)")
			}
			c.finish()
			if n := o.hits.Load() - before; n != 0 {
				t.Errorf("the origin received %d requests", n)
			}
		})
	}
	if n := o.hits.Load(); n != served {
		t.Errorf("the origin received %d requests; only the %d controls should reach it", n, served)
	}
	for _, l := range h.accessLines(t) {
		if l["status"] == float64(400) && !strings.HasPrefix(l["reason"].(string), "malformed request") {
			t.Errorf("400 with reason %q", l["reason"])
		}
	}
	// The gateway still serves.
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/after")); r.StatusCode != 200 {
		t.Fatalf("after the refusals: status %d", r.StatusCode)
	}
}

// TestSlowloris: a header trickled one byte at a time gets 408 once
// header_timeout (2s in the harness) has passed since it started, however
// steadily the bytes keep coming; a header that stops halfway too.
func TestSlowloris(t *testing.T) {
	o := startCountingOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	t.Run("trickled", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		start := time.Now()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			hdr := "GET / HTTP/1.1\r\nHost: " + hApp + "\r\nX-Slow: " + strings.Repeat("a", 1000)
			for i := range len(hdr) {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := c.c.Write([]byte{hdr[i]}); err != nil {
					return
				}
			}
		}()
		r := c.read("GET")
		elapsed := time.Since(start)
		close(stop)
		<-done
		if r.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d, want 408: %s", r.StatusCode, r.body)
		}
		if elapsed < time.Second || elapsed > 8*time.Second {
			t.Errorf("408 after %v; header_timeout is 2s", elapsed)
		}
		if !r.Close {
			t.Error("a 408 should close the connection (Connection: close)")
		}
		c.finish()
	})
	t.Run("stalled halfway", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send("GET / HTTP/1.1\r\nHost: " + hApp + "\r\nX-Half: ")
		if r := c.read("GET"); r.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d, want 408: %s", r.StatusCode, r.body)
		}
		c.finish()
	})
	if n := o.hits.Load(); n != 0 {
		t.Errorf("the origin received %d requests", n)
	}
}

// typicalRequest is a device request with a body, as the framing checks see
// it on the hot path.
const typicalRequest = "POST /ingest?batch=7 HTTP/1.1\r\nHost: app.fleet.test\r\nUser-Agent: sensor/1.0\r\n" +
	"Content-Type: application/json\r\nContent-Length: 2\r\nCookie: CF_Authorization=x\r\nX-Request-Id: 1234\r\n\r\n{}"

// TestFramingChecksNoAlloc: the framing checks cost no allocation per
// request.
func TestFramingChecksNoAlloc(t *testing.T) {
	raw := []byte(typicalRequest)
	rd := bytes.NewReader(raw)
	br := bufio.NewReaderSize(rd, 4096)
	var req fasthttp.Request
	if err := awaitHeader(br); err != nil {
		t.Fatal(err)
	}
	if err := req.Header.Read(br); err != nil {
		t.Fatal(err)
	}
	if why := framingError(&req); why != "" {
		t.Fatalf("a typical request refused: %s", why)
	}
	if n := testing.AllocsPerRun(100, func() { _ = framingError(&req) }); n != 0 {
		t.Errorf("framingError: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		rd.Reset(raw)
		br.Reset(rd)
		_ = awaitHeader(br)
	}); n != 0 {
		t.Errorf("awaitHeader: %v allocations", n)
	}
}

func BenchmarkFramingChecks(b *testing.B) {
	raw := []byte(typicalRequest)
	rd := bytes.NewReader(raw)
	br := bufio.NewReaderSize(rd, 4096)
	var req fasthttp.Request
	_ = req.Header.Read(br)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(raw)
		br.Reset(rd)
		if awaitHeader(br) != nil || framingError(&req) != "" {
			b.Fatal("refused")
		}
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"app.fleet.test":           true,
		"app.fleet.test:443":       true,
		"app.fleet.test:":          true, // port = *DIGIT (RFC 3986)
		"APP.Fleet.Test.":          true,
		"127.0.0.1:8443":           true,
		"[::1]":                    true,
		"[::1]:8443":               true,
		"[2001:db8::1]":            true,
		"[::ffff:127.0.0.1]:443":   true,
		"under_score.fleet.test":   true,
		"app.fleet.test:80@evil":   false,
		"user@app.fleet.test":      false,
		"app.fleet.test: 0":        false,
		"app.fleet.test:0x1bb":     false,
		"app.fleet.test:100000":    false,
		"app.fleet.test/x":         false,
		"app fleet.test":           false,
		":443":                     false,
		".":                        false,
		".app.fleet.test":          false,
		"[::1":                     false,
		"[::1]x":                   false,
		"[::1]:8443:1":             false,
		"[]":                       false,
		"[fe80::1%25eth0]":         false,
		"[::1]:abc":                false,
		"app.fleet.test\x00":       false,
		"app.fleet.test:443:443":   false,
		"xn--bcher-kva.fleet.test": true,
	} {
		if got := validHost([]byte(h)); got != want {
			t.Errorf("validHost(%q) = %v, want %v", h, got, want)
		}
	}
}

// TestHardeningRefusedMethods: CONNECT and TRACE are refused
// before anything is forwarded.
func TestHardeningRefusedMethods(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		refused bool
	}{
		{"CONNECT app.fleet.test:443 HTTP/1.1\r\nHost: app.fleet.test:443\r\n\r\n", true},
		{"TRACE / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", true},
		{"trace / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", true},
		{"Connect / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
		{"OPTIONS * HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
		{"TRACK / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
		{"PROPFIND / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
	} {
		req := readRequest(t, tc.raw)
		if got := refusedMethod(req); got != tc.refused {
			t.Errorf("%q: refusedMethod = %v", tc.raw, got)
		}
		if why := framingError(req); (why != "") != tc.refused {
			t.Errorf("%q: framingError = %q", tc.raw, why)
		}
	}
	x := &exchange{resp: &fasthttp.Response{}}
	x.refuseMethod()
	if x.resp.StatusCode() != fasthttp.StatusMethodNotAllowed || !x.unread || len(x.resp.Header.Peek("Allow")) == 0 {
		t.Errorf("refuseMethod: status %d, close %v, Allow %q", x.resp.StatusCode(), x.unread, x.resp.Header.Peek("Allow"))
	}
}

// TestHardeningRefusedMethodsEndToEnd: over the wire, CONNECT and TRACE
// get 405 with an Allow header, the connection closes, and neither reaches
// the origin.
func TestHardeningRefusedMethodsEndToEnd(t *testing.T) {
	o := startCountingOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	for _, raw := range []string{
		"CONNECT " + hApp + ":443 HTTP/1.1\r\nHost: " + hApp + ":443\r\n\r\n",
		"TRACE / HTTP/1.1\r\nHost: " + hApp + "\r\n\r\n",
	} {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send(raw)
		r := c.read("GET")
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") == "" {
			t.Errorf("%q: status %d, Allow %q; want 405 with Allow: %s", raw, r.StatusCode, r.Header.Get("Allow"), r.body)
		}
		if !r.Close {
			t.Errorf("%q: the connection should close", raw)
		}
	}
	if n := o.hits.Load(); n != 0 {
		t.Errorf("the origin received %d requests", n)
	}
}
