package gateway

// Pooled origin connections: origin_timeout bounds each wait for the
// origin's bytes, and a connection the origin closed while idle is not
// reused for a request.

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestOriginTimeout(t *testing.T) {
	const originTimeout = time.Second // long enough for three handshakes under -race on a busy machine
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = originTimeout.String() })
	type result struct {
		status int
		body   string
		err    error
		dur    time.Duration
	}
	// The slow request runs off the test goroutine, so it reports failure
	// through the channel (t.Fatal there would leave the test waiting):
	// exactly one result is always sent.
	slow := make(chan result, 1)
	c := h.client(h.pki.sensor1)
	go func() {
		start := time.Now()
		var res result
		resp, err := c.Get(href(hApp, "/hold/slow"))
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			res.status, res.body, err = resp.StatusCode, string(b), rerr
		}
		res.err, res.dur = err, time.Since(start)
		slow <- res
	}()
	h.origin.waitArrived(t)

	// While the slow request waits for its origin, others are served.
	for _, d := range []string{hApp, hIoT, hFwd} {
		if r := h.get(t, h.client(h.pki.sensor1), href(d, "/fast")); r.StatusCode != 200 {
			t.Fatalf("%s while another request waits: status %d", d, r.StatusCode)
		}
	}
	select {
	case res := <-slow:
		// Either the gateway answered the held request before its
		// origin_timeout, or the fast requests above were so slow that
		// they were not served "while another request waits": both make
		// the rest of the test meaningless.
		t.Fatalf("the slow request ended before the others were served: after %v, status %d, err %v, body %q",
			res.dur, res.status, res.err, res.body)
	default:
	}

	var res result
	select {
	case res = <-slow:
	case <-time.After(originTimeout + 15*time.Second):
		t.Fatalf("the slow request has not ended %v after origin_timeout", 15*time.Second)
	}
	if res.err != nil {
		t.Fatalf("the slow request failed after %v: %v", res.dur, res.err)
	}
	if res.status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504: %s", res.status, res.body)
	}
	// One attempt: a timed-out request is not sent to the origin again.
	if res.dur < originTimeout*8/10 || res.dur > originTimeout*5/2 {
		t.Errorf("504 after %v; origin_timeout is %v", res.dur, originTimeout)
	}
	if n := len(h.origin.arrived); n != 0 {
		t.Errorf("the origin got the timed-out request %d more times", n)
	}
	if !strings.Contains(h.logs.String(), `"kind":"timeout"`) {
		t.Errorf("the log does not name the timeout")
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/after")); r.StatusCode != 200 {
		t.Fatalf("after the timeout: status %d", r.StatusCode)
	}
}

func TestOriginClosedIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 16)
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Method+" ok")
	}))
	o.Config.IdleTimeout = 50 * time.Millisecond // the origin drops idle keep-alive connections quickly
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for i, method := range []string{"GET", "GET", "PUT", "POST"} {
		r := h.do(t, h.client(h.pki.sensor1), method, href(hApp, "/"), nil, "body")
		if r.StatusCode != 200 {
			t.Fatalf("request %d (%s) after the origin closed the pooled connection: %d %s", i, method, r.StatusCode, r.body)
		}
		select { // the origin closes the gateway's pooled connection
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the origin did not close its idle connection")
		}
	}
}
