package gateway

// What the device gets from unusual origin answers, using an origin that
// writes raw HTTP (the standard library's server would fix its answers up).

import (
	"bufio"
	"net"
	"net/http"
	"testing"
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
	var found bool
	for _, l := range h.accessLines(t) {
		if l["method"] == "HEAD" {
			found = true
			if l["bytes_out"] != float64(0) {
				t.Errorf("HEAD logged bytes_out %v, want 0", l["bytes_out"])
			}
		}
	}
	if !found {
		t.Fatal("no access log line for the HEAD")
	}
}
