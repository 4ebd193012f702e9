package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// bodyPeerOrigin answers each request with the address it came from, the
// method, the body it received and whether it carried a token.
func bodyPeerOrigin(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		tok := r.Header.Get("Cf-Access-Jwt-Assertion") != ""
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.RemoteAddr+" "+r.Method+" "+string(b)+" token="+strconv.FormatBool(tok))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// oneLoopHarness starts a gateway with one event loop (one loop pool, so
// one loop origin connection) in front of bodyPeerOrigin.
func oneLoopHarness(t *testing.T) *harness {
	t.Helper()
	o := bodyPeerOrigin(t)
	return newHarness(t, func(p *cfgParams) {
		p.Origin = o.URL
		p.Edit = func(f *fileConfig) { f.Gateway.EventLoops = 1 }
	})
}

// freshPeer sends one request on a new connection to the no-duration
// application and returns the origin's answer fields: the address the
// request came from and the rest. The gateway closes the connection after
// the answer.
func freshPeer(t *testing.T, h *harness, req, method string) (peer, rest string) {
	t.Helper()
	c := h.dial(t, hIoT, h.pki.sensor1)
	defer c.c.Close()
	c.send(req)
	r := c.read(method)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", method, r.StatusCode, r.body)
	}
	if !r.Close {
		t.Fatalf("%s: the answer of a no-duration request does not close the connection", method)
	}
	c.expectEOF()
	peer, rest, _ = strings.Cut(r.body, " ")
	return peer, rest
}

// TestLoopCarriesFreshRequests: a request that came with its handshake is
// served on the handshake's goroutine (its token signed there), and its
// origin round trip moves to the event loop: once the loop has its own
// origin connection, fresh requests reach the origin from it, not from the
// pooled client's connection the first request used (the loop had none
// yet, and gave it back to the worker). A body read by the worker goes
// with it, and the device gets the whole answer and the close.
func TestLoopCarriesFreshRequests(t *testing.T) {
	h := oneLoopHarness(t)
	get := request("GET", hIoT, "/peer")

	first, rest := freshPeer(t, h, get, "GET")
	if rest != "GET  token=true" {
		t.Fatalf("first answer %q", rest)
	}
	loopPeer, same := "", 0
	for i := 0; i < 200 && same < 5; i++ {
		peer, _ := freshPeer(t, h, get, "GET")
		switch {
		case peer == first:
			same = 0
			time.Sleep(2 * time.Millisecond) // the loop's connection is dialed meanwhile
		case peer == loopPeer:
			same++
		default:
			loopPeer, same = peer, 1
		}
	}
	if same < 5 {
		t.Fatalf("fresh requests never moved to the loop's origin connection (all from the pooled client's %s)", first)
	}
	body := "reading=21.5"
	post := request("POST", hIoT, "/peer", "Content-Type: text/plain", "Content-Length: "+strconv.Itoa(len(body))) + body
	for i := 0; i < 10; i++ {
		peer, rest := freshPeer(t, h, post, "POST")
		if peer != loopPeer || rest != "POST "+body+" token=true" {
			t.Fatalf("POST %d: from %s %q; want from the loop's %s with its body and token", i, peer, rest, loopPeer)
		}
	}
	if pools, open := loopPools(h); pools != 1 || open != 1 {
		t.Fatalf("loop pools %d with %d connections; want 1 with 1", pools, open)
	}
}

// TestHandOverDeviceGone: devices that hang up right after sending their
// request (close_notify and FIN while the token is signed, or while the
// request waits for its turn on the loop) leave nothing behind: every
// request ends (none stays counted in flight), every connection is
// released, and the gateway goes on serving.
func TestHandOverDeviceGone(t *testing.T) {
	h := oneLoopHarness(t)
	get := request("GET", hIoT, "/peer")
	freshPeer(t, h, get, "GET") // the loop's pool starts growing
	for i := 0; i < 60; i++ {
		c := h.dial(t, hIoT, h.pki.sensor1)
		c.send(get)
		_ = c.c.Close()
	}
	testkit.WaitFor(t, "every request ended and every connection released", 10*time.Second, func() bool {
		return h.srv.inflight.Load() == 0 && h.srv.conns.Load() == 0
	})
	if _, rest := freshPeer(t, h, get, "GET"); rest != "GET  token=true" {
		t.Fatalf("after the hang-ups: %q", rest)
	}
}
