package gateway

// What the device gets from unusual origin answers, using an origin that
// writes raw HTTP (the standard library's server would fix its answers up).

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// startRawOrigin answers every request with answer(path), as raw bytes,
// and closes the connection after it.
func startRawOrigin(t *testing.T, answer func(path string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(answer(req.URL.Path)))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestOriginAnswersRelayedAsSent(t *testing.T) {
	origin := startRawOrigin(t, func(path string) string {
		switch path {
		case "/switch":
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		default: // no Content-Type
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
		}
	})
	h := newHarness(t, func(p *cfgParams) { p.Origin = origin })

	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/plain"))
	r := c.read("GET")
	if r.StatusCode != http.StatusOK || r.body != "ok" {
		t.Fatalf("status %d body %q", r.StatusCode, r.body)
	}
	if ct, ok := r.Header["Content-Type"]; ok {
		t.Errorf("the origin sent no Content-Type; the device got %q", ct)
	}

	c.send(request("GET", hApp, "/switch", "Connection: Upgrade", "Upgrade: websocket"))
	if r := c.read("GET"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("an origin's 101 to a request whose Upgrade it never saw: %d, want 502", r.StatusCode)
	}
}

// TestHeadRefusalLogsNoBody: the access log's bytes_out for a HEAD is what
// was sent: no body.
func TestHeadRefusalLogsNoBody(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, nil) // no certificate: 403
	c.send(request("HEAD", hApp, "/"))
	if r := c.read("HEAD"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d", r.StatusCode)
	}
	// The line is written just after the answer: wait for it.
	var line map[string]any
	testkit.WaitFor(t, "the HEAD's access log line", 5*time.Second, func() bool {
		for _, l := range h.accessLines(t) {
			if l["method"] == "HEAD" {
				line = l
				return true
			}
		}
		return false
	})
	if line["bytes_out"] != float64(0) {
		t.Errorf("HEAD logged bytes_out %v, want 0", line["bytes_out"])
	}
}

// TestHTTP10StreamedBodyUnframed: HTTP/1.0 has no chunked coding, so a
// streamed body of unknown length goes to an HTTP/1.0 device unframed and
// the connection closes after it; an HTTP/1.1 device gets it chunked.
func TestHTTP10StreamedBodyUnframed(t *testing.T) {
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	const n = 1 << 20 // past what the gateway buffers: streamed
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("GET /chunked?n=1048576 HTTP/1.0\r\nHost: " + hApp + "\r\nConnection: keep-alive\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET", ProtoMajor: 1, ProtoMinor: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) != 0 || resp.Header.Get("Transfer-Encoding") != "" {
		t.Fatalf("an HTTP/1.0 device got Transfer-Encoding %v", resp.TransferEncoding)
	}
	if !resp.Close {
		t.Errorf("a close-delimited body must come with Connection: close")
	}
	if _, err := checkPattern(resp.Body, n); err != nil {
		t.Fatalf("body: %v", err)
	}

	c11 := h.dial(t, hApp, h.pki.sensor1)
	c11.send(request("GET", hApp, "/chunked?n=1048576"))
	resp11, err := http.ReadResponse(c11.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	defer resp11.Body.Close()
	if len(resp11.TransferEncoding) != 1 || resp11.TransferEncoding[0] != "chunked" || resp11.Close {
		t.Fatalf("HTTP/1.1: transfer encoding %v, close %v; want chunked and kept", resp11.TransferEncoding, resp11.Close)
	}
	if _, err := checkPattern(resp11.Body, n); err != nil {
		t.Fatalf("body: %v", err)
	}
}

// TestHTTPSOriginWithItsCA: an https origin whose certificate comes from a
// private CA is reached when origin_ca_file names that CA, and refused
// (502) when it does not: the origin's certificate is verified.
func TestHTTPSOriginWithItsCA(t *testing.T) {
	p := sharedPKI()
	cert := p.inter.MustIssue(pki.Server("127.0.0.1"))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls origin: "+r.Host+r.URL.RequestURI())
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate(p.inter)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	h := newHarness(t, func(c *cfgParams) { c.Origin, c.OriginCAFile = srv.URL, "root.pem" })
	c := h.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/x?y=1"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "tls origin: app.fleet.test/x?y=1" {
		t.Fatalf("https origin with its CA: %d %q", r.StatusCode, r.body)
	}

	untrusted := newHarness(t, func(c *cfgParams) { c.Origin = srv.URL })
	c = untrusted.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/"))
	if r := c.read("GET"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("https origin whose CA is not trusted: %d, want 502: %s", r.StatusCode, r.body)
	}
}

// TestBodyRefusalLoggedBeforePolicies: a body refused while it is read
// (413 here) is logged and counted as refused before the policies, as the
// same 413 after Expect is, although the policies ran on the header.
func TestBodyRefusalLoggedBeforePolicies(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("u", 70000))
	if r := c.read("POST"); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", r.StatusCode)
	}
	var line map[string]any
	testkit.WaitFor(t, "the access log line", 5*time.Second, func() bool {
		for _, l := range h.accessLines(t) {
			if l["status"] == float64(413) {
				line = l
				return true
			}
		}
		return false
	})
	// The access log's word for a refusal no policy made is "deny" (the
	// metrics' decision label is "none"); either way, no policy.
	if line["decision"] != "deny" || line["policy"] != "" {
		t.Errorf("413 logged with decision %v, policy %q; want deny and no policy", line["decision"], line["policy"])
	}
}
