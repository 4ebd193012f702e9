package gateway

// The admin listener: its endpoints, and readiness (/readyz before the
// listener is up, while serving, and through a drain).

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

func adminGet(t testing.TB, h *harness, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + h.srv.AdminAddr() + path)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminEndpoints(t *testing.T) {
	h := newHarness(t)
	host, _, err := net.SplitHostPort(h.srv.AdminAddr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("AdminAddr %q: want a loopback address (%v)", h.srv.AdminAddr(), err)
	}
	tests := []struct {
		name, path string
		status     int
		body       string
	}{
		{"healthz", "/healthz", 200, "ok"},
		{"readyz", "/readyz", 200, "ready"},
		{"unknown", "/metrics-nope", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := adminGet(t, h, tc.path)
			if status != tc.status || (tc.body != "" && strings.TrimSpace(body) != tc.body) {
				t.Fatalf("%s: %d %q, want %d %q", tc.path, status, body, tc.status, tc.body)
			}
		})
	}
	if !h.srv.Ready() {
		t.Error("Ready() is false on a running gateway")
	}
}

// TestReadyz: not ready before the listener is up, ready while serving, not
// ready while draining (and connections then are refused and counted), and
// a Shutdown that comes before the listener never lets it turn ready.
func TestReadyz(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = "10s" })
	readyz := func(addr string) (int, string) {
		t.Helper()
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatalf("/readyz: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	t.Run("before the listener", func(t *testing.T) {
		s, err := New(Options{Load: func() (*configs.Config, error) { return configs.Load(h.cfgPath) }})
		if err != nil {
			t.Fatal(err)
		}
		a, err := startAdmin("127.0.0.1:0", s) // what Run does first
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		if code, body := readyz(a.addr()); code != 503 || body != "not ready: listener not up" {
			t.Errorf("/readyz before Run: %d %q", code, body)
		}
		if s.Ready() {
			t.Error("Ready() before Run")
		}
	})

	t.Run("shutdown before boot", func(t *testing.T) {
		var s *Server
		var done, run chan error
		// As for the harness's gateway, a free port taken before the bind
		// is given up for another: Run then returns before boot.
		for attempt := 1; ; attempt++ {
			cfgPath := h.variantConfig(t)
			var err error
			s, err = New(Options{Load: func() (*configs.Config, error) { return configs.Load(cfgPath) }})
			if err != nil {
				t.Fatal(err)
			}
			done = make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done <- s.Shutdown(ctx)
			}()
			testkit.WaitFor(t, "draining", 5*time.Second, s.draining.Load)
			run = make(chan error, 1)
			go func() { run <- s.Run() }()
			select {
			case <-s.Booted():
			case err := <-run:
				if err == nil { // booted, and stopped at once as it should
					run <- nil
					break
				}
				if testkit.PortTaken(err) && attempt < 5 {
					<-done
					continue
				}
				t.Fatalf("Run returned before boot: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the gateway did not boot")
			}
			break
		}
		if s.Ready() {
			t.Error("ready after a Shutdown that came before the listener")
		}
		if err := <-done; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-run; err != nil {
			t.Errorf("Run: %v", err)
		}
		if s.Ready() {
			t.Error("ready after Run returned")
		}
	})

	if code, body := readyz(h.srv.AdminAddr()); code != 200 || body != "ready" {
		t.Fatalf("/readyz while serving: %d %q", code, body)
	}

	slow := h.dial(t, hApp, h.pki.sensor1)
	slow.send(request("GET", hApp, "/hold/ready"))
	h.origin.waitArrived(t)
	h.stopped = true
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- h.srv.Shutdown(ctx)
	}()
	testkit.WaitFor(t, "/readyz to answer 503", 5*time.Second, func() bool {
		code, body := readyz(h.srv.AdminAddr())
		return code == 503 && body == "not ready: draining"
	})
	refused(t, h.addr)
	expectMetrics(t, h, []want{w("fleetgate_connections_refused_total", 1, "reason", "draining")})
	if v, _ := scrapeMetrics(t, h).value("fleetgate_ready"); v != 0 {
		t.Errorf("fleetgate_ready = %v while draining", v)
	}
	h.origin.release <- struct{}{}
	if r := slow.read("GET"); r.StatusCode != 200 {
		t.Errorf("in-flight request: %d", r.StatusCode)
	}
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
	<-h.runErr
}

// variantConfig writes a copy of h's configuration with its own free
// listen address and returns its path.
func (h *harness) variantConfig(t *testing.T) string {
	t.Helper()
	cfg := h.config()
	cfg.Gateway.Listen = testkit.FreePort(t)
	path := filepath.Join(h.dir, "variant-"+strings.ReplaceAll(cfg.Gateway.Listen, ":", "-")+".toml")
	if err := os.WriteFile(path, marshalConfig(t, cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAdminBounds: the admin listener answers a header larger than its
// bound with 431, and closes a connection whose client trickles its
// request, or keeps it idle after an answer, instead of holding it (and a
// goroutine of the gateway's process) for good.
func TestAdminBounds(t *testing.T) {
	h := newHarness(t)
	dial := func(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}
	// closedWithin reads until the admin listener closes c, failing when it
	// is still open after d.
	closedWithin := func(t *testing.T, c net.Conn, br *bufio.Reader, d time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(d))
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Fatalf("the connection is still open after %v: %v", d, err)
		}
	}

	t.Run("huge header", func(t *testing.T) {
		c, br := dial(t, h.srv.AdminAddr())
		pad := strings.Repeat("a", 64<<10)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Pad: "+pad+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("a 64KiB header: %d, want 431", resp.StatusCode)
		}
	})

	t.Run("trickled body", func(t *testing.T) {
		c, br := dial(t, h.srv.AdminAddr())
		if _, err := io.WriteString(c, "POST /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 1000\r\n\r\nabc"); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, c, br, defaultAdminLimits.read+3*time.Second)
	})

	t.Run("idle", func(t *testing.T) {
		lim := defaultAdminLimits
		lim.idle = 300 * time.Millisecond
		a, err := startAdminLimited("127.0.0.1:0", h.srv, lim)
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		c, br := dial(t, a.addr())
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("/healthz: %d, close %v: want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		closedWithin(t, c, br, lim.idle+3*time.Second)
	})
}
