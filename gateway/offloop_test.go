package gateway

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// offLoopCount is fleetgate_connections_off_loop_total.
func offLoopCount(t *testing.T, h *harness) float64 {
	t.Helper()
	n, _ := scrapeMetrics(t, h).value("fleetgate_connections_off_loop_total")
	return n
}

// TestOffLoopFreshRequests: the connections of a no-duration application
// leave the event loop after their ClientHello; each one's request is
// answered, with its per-request assertion at the origin, and the
// connection closes. The same device's connection to a 24h-session
// application stays on the loop and stays open.
func TestOffLoopFreshRequests(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 5; i++ {
		c := h.dial(t, hIoT, h.pki.sensor1)
		c.send(request("GET", hIoT, "/fresh"))
		r := c.read("GET")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.StatusCode, r.body)
		}
		if e := r.echo(t); e.Path != "/fresh" || e.Headers.Get("Cf-Access-Jwt-Assertion") == "" {
			t.Fatalf("request %d: the origin saw %q without an assertion (%v)", i, e.Path, e.Headers)
		}
		c.expectEOF()
	}
	if n := offLoopCount(t, h); n != 5 {
		t.Fatalf("connections off the loop: %v, want 5", n)
	}
	c := h.dial(t, hApp, h.pki.sensor2)
	for i := 0; i < 2; i++ {
		c.send(request("GET", hApp, "/kept"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK {
			t.Fatalf("session application, request %d: %d %s", i, r.StatusCode, r.body)
		}
	}
	if n := offLoopCount(t, h); n != 5 {
		t.Fatalf("connections off the loop after a session application's: %v, want still 5", n)
	}
	testkit.WaitFor(t, "the fresh connections to be gone", 5*time.Second, func() bool { return h.srv.conns.Load() == 1 })
}

// TestOffLoopRefusals: off the loop, a refusal is still an HTTP answer: a
// denied device gets 403, a device without a certificate 403, a wrong Host
// 421. No token was minted, so, as on the loop, the connection stays open
// for the device's next request, which the connection's pump reads and a
// worker answers the same way.
func TestOffLoopRefusals(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name string
		dev  *device
		host string
		want int
	}{
		{"denied device", h.pki.retired, hIoT, http.StatusForbidden},
		{"no certificate", nil, hIoT, http.StatusForbidden},
		{"another Host", h.pki.sensor1, hApp, http.StatusMisdirectedRequest},
	} {
		c := h.dial(t, hIoT, tc.dev)
		for i := 0; i < 2; i++ {
			c.send(request("GET", tc.host, "/"))
			if r := c.read("GET"); r.StatusCode != tc.want {
				t.Fatalf("%s, request %d: %d %s, want %d", tc.name, i, r.StatusCode, r.body, tc.want)
			}
		}
		_ = c.c.Close()
	}
	if n := offLoopCount(t, h); n != 3 {
		t.Fatalf("connections off the loop: %v, want 3", n)
	}
	testkit.WaitFor(t, "every connection to be gone", 5*time.Second, func() bool { return h.srv.conns.Load() == 0 })
}

// TestOffLoopLateAndSilent: off the loop, a request sent well after the
// handshake is read by the connection's pump and answered; a device that
// sends nothing is closed at idle_timeout; a device that closes its side
// ends the connection. None of them leaves a connection counted.
func TestOffLoopLateAndSilent(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.IdleTimeout = "1s" })

	late := h.dial(t, hIoT, h.pki.sensor1)
	time.Sleep(200 * time.Millisecond)
	late.send(request("GET", hIoT, "/late"))
	if r := late.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("late request: %d %s", r.StatusCode, r.body)
	}
	late.expectEOF()

	silent := h.dial(t, hIoT, h.pki.sensor1)
	start := time.Now()
	silent.expectEOF()
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("a silent device was closed after %v, before its idle_timeout of 1s", d)
	}

	gone := h.dial(t, hIoT, h.pki.sensor1)
	_ = gone.c.Close()
	testkit.WaitFor(t, "every connection to be gone", 5*time.Second, func() bool { return h.srv.conns.Load() == 0 })
	if n := offLoopCount(t, h); n != 3 {
		t.Fatalf("connections off the loop: %v, want 3", n)
	}
}

// TestOffLoopTLS12: a TLS 1.2 device (two server flights) leaves the loop
// too and is answered.
func TestOffLoopTLS12(t *testing.T) {
	h := newHarness(t)
	conf := h.tlsConfig(hIoT, h.pki.sensor1)
	conf.MaxVersion = tls.VersionTLS12
	c := h.dialConfig(t, hIoT, conf)
	c.send(request("GET", hIoT, "/tls12"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("TLS 1.2: %d %s", r.StatusCode, r.body)
	}
	c.expectEOF()
	if n := offLoopCount(t, h); n != 1 {
		t.Fatalf("connections off the loop: %v, want 1", n)
	}
}

// TestOffLoopShutdown: a drain closes an off-loop connection that has not
// sent its request (after the grace a handshake-complete connection gets),
// and Shutdown returns with nothing counted.
func TestOffLoopShutdown(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hIoT, h.pki.sensor1)
	testkit.WaitFor(t, "the connection to leave the loop", 5*time.Second, func() bool { return offLoopCount(t, h) == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	c.expectEOF()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if n := h.srv.conns.Load(); n != 0 {
		t.Fatalf("%d connections counted after Shutdown", n)
	}
}
