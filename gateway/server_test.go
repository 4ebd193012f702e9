package gateway

// The admin listener, reload, graceful drain and the access log.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
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

func TestReload(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	get := func(t *testing.T, dev *device) int {
		t.Helper()
		return h.get(t, h.client(dev), href(hApp, "/")).StatusCode
	}
	// A keep-alive connection opened under the first configuration.
	old := h.dial(t, hApp, p.sensor1)
	oldGet := func(t *testing.T, what string) {
		t.Helper()
		old.send(request("GET", hApp, "/old"))
		if r := old.read("GET"); r.StatusCode != 200 || r.Close {
			t.Fatalf("%s: the old keep-alive connection got %d (close %v): %s", what, r.StatusCode, r.Close, r.body)
		}
	}
	oldGet(t, "before any reload")
	if s := get(t, p.newFleet); s != 403 {
		t.Fatalf("device of the second CA before the reload: %d, want 403", s)
	}

	missing := h.config() // every server certificate file is missing
	for i := range missing.Applications {
		missing.Applications[i].TLSCertFile = "missing.pem"
	}
	bad := []struct {
		name string
		data string
		want string // in the error
	}{
		{"not TOML", "[gateway\nlisten = ", "fleetgate.toml"},
		{"unknown key and bad values", "[gateway]\nlisten = \"" + h.addr + "\"\nlisen = 1\nmax_body_bytes = \"lots\"\n", "fleetgate.toml:3"},
		{"missing files", string(marshalConfig(t, missing)), "missing.pem"},
	}
	// refusals returns the log lines of refused reloads, oldest first: each
	// subtest must add exactly one (an earlier subtest's line must not do).
	refusals := func() []string {
		var lines []string
		for _, l := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(l, `"msg":"reload refused`) {
				lines = append(lines, l)
			}
		}
		return lines
	}
	for _, tc := range bad {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			h.writeFile("fleetgate.toml", []byte(tc.data))
			before := len(refusals())
			err := h.srv.Reload()
			if err == nil {
				t.Fatal("Reload accepted a bad file")
			}
			var list *configs.Errors
			if !errors.As(err, &list) && !strings.Contains(err.Error(), "configs:") {
				t.Errorf("error %T %v is not a configuration error", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if after := refusals(); len(after) != before+1 {
				t.Errorf("%d refused-reload log lines before this reload and %d after, want exactly one more", before, len(after))
			} else if last := after[len(after)-1]; !strings.Contains(last, tc.want) {
				t.Errorf("the refused-reload log line does not mention %q: %s", tc.want, last)
			}
			if s := get(t, p.sensor1); s != 200 {
				t.Fatalf("after a refused reload, a new connection gets %d", s)
			}
			oldGet(t, "after a refused reload")
		})
	}

	t.Run("accepted: new CA", func(t *testing.T) {
		cfg := h.config()
		cfg.trustOnlySecondCA()
		h.write(cfg)
		if err := h.srv.Reload(); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if s := get(t, p.newFleet); s != 200 {
			t.Fatalf("device of the new CA: %d, want 200", s)
		}
		if s := get(t, p.sensor1); s != 403 {
			t.Fatalf("device of the CA no longer associated, new connection: %d, want 403", s)
		}
		// The connection that started under the old snapshot finishes on it.
		oldGet(t, "after the reload")
		// Other applications are untouched.
		if s := h.get(t, h.client(p.sensor1), href(hIoT, "/")).StatusCode; s != 200 {
			t.Fatalf("iot after the reload: %d", s)
		}
	})
}

func TestGracefulDrain(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = "10s" })
	idle := h.dial(t, hApp, h.pki.sensor1) // an idle keep-alive connection
	idle.send(request("GET", hApp, "/"))
	if r := idle.read("GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}

	slow := h.dial(t, hApp, h.pki.sensor1)
	slow.send(request("GET", hApp, "/hold/drain"))
	h.origin.waitArrived(t)

	h.stopped = true // this test shuts the gateway down itself
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- h.srv.Shutdown(ctx)
	}()
	testkit.WaitFor(t, "/readyz to answer 503", 5*time.Second, func() bool {
		s, _ := adminGet(t, h, "/readyz")
		return s == http.StatusServiceUnavailable
	})
	if s, _ := adminGet(t, h, "/healthz"); s != 200 {
		t.Errorf("/healthz while draining: %d, want 200 (alive, not ready)", s)
	}
	if h.srv.Ready() {
		t.Error("Ready() while draining")
	}

	// New connections are refused.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, h.tlsConfig(hApp, h.pki.sensor1))
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, request("GET", hApp, "/new"))
		b, rerr := io.ReadAll(c)
		c.Close()
		if rerr == nil && strings.HasPrefix(string(b), "HTTP/1.1 200") {
			t.Fatal("a new connection was served while draining")
		}
	}

	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}

	h.origin.release <- struct{}{}
	r := slow.read("GET")
	if r.StatusCode != 200 || r.echo(t).Path != "/hold/drain" {
		t.Fatalf("in-flight request: status %d: %s", r.StatusCode, r.body)
	}
	if !r.Close {
		t.Error("a response sent while draining should close its connection")
	}
	slow.expectEOF()

	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Shutdown")
	}
	// The idle keep-alive connection is closed, and so is the admin listener.
	idle.expectEOF()
	if _, err := net.DialTimeout("tcp", h.srv.AdminAddr(), time.Second); err == nil {
		t.Error("the admin listener still accepts after Run returned")
	}
}

func TestDrainTimeout(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = "10s" })
	slow := h.dial(t, hApp, h.pki.sensor1)
	slow.send(request("GET", hApp, "/hold/stuck"))
	h.origin.waitArrived(t)
	h.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = h.srv.Shutdown(ctx) // the request never finishes: the drain gives up
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v with a 300ms drain", d)
	}
	select {
	case <-h.runErr:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain timeout")
	}
	if !strings.Contains(h.logs.String(), "drain timeout") {
		t.Error("the drain timeout is not logged")
	}
}

func TestAccessLog(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	login := h.get(t, h.client(p.sensor2), href(hApp, "/log/me?x=1"))
	_, ck := sessionCookieOf(t, login)
	h.do(t, h.client(nil), "GET", href(hApp, "/with-cookie"), http.Header{"Cookie": {"CF_Authorization=" + ck.Value}}, "")
	h.get(t, h.client(nil), href(hIoT, "/refused"))
	noDur := h.get(t, h.client(p.sensor1), href(hIoT, "/nodur"))
	assertion := noDur.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")

	var lines []map[string]any // each is written once its response is out
	testkit.WaitFor(t, "four access-log lines", 5*time.Second, func() bool {
		lines = h.accessLines(t)
		return len(lines) >= 4
	})
	byPath := map[string]map[string]any{}
	for _, l := range lines {
		path, _ := l["path"].(string)
		if _, dup := byPath[path]; dup {
			t.Errorf("two access-log lines for %s", path)
		}
		byPath[path] = l
	}
	tests := []struct {
		path     string
		status   float64
		decision string
		policy   string
		reason   string
		cn       string
	}{
		{"/log/me", 200, "non_identity", "fleet devices", `allowed by policy "fleet devices"`, "sensor-0002"},
		{"/with-cookie", 200, "non_identity", "fleet devices", `allowed by policy "fleet devices"`, ""},
		{"/refused", 403, "deny", "", "no client certificate", ""},
		{"/nodur", 200, "non_identity", "sensor-0001 only", `allowed by policy "sensor-0001 only"`, "sensor-0001"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			l := byPath[tc.path]
			if l == nil {
				t.Fatalf("no access-log line for %s among %d", tc.path, len(lines))
			}
			for _, k := range []string{"time", "client_ip", "sni", "host", "method", "path", "status", "decision", "policy", "reason",
				"cert_cn", "cert_sha256", "bytes_in", "bytes_out", "handshake_ms", "origin_ms", "total_ms"} {
				if _, ok := l[k]; !ok {
					t.Errorf("no %q in %v", k, l)
				}
			}
			if l["status"] != tc.status || l["decision"] != tc.decision || l["policy"] != tc.policy || l["reason"] != tc.reason || l["cert_cn"] != tc.cn {
				t.Errorf("line %v", l)
			}
			if l["client_ip"] != "127.0.0.1" || l["method"] != "GET" || l["sni"] == "" {
				t.Errorf("line %v", l)
			}
		})
	}
	all := h.logs.String()
	for name, secret := range map[string]string{
		"session token":         ck.Value,
		"session signature":     ck.Value[strings.LastIndexByte(ck.Value, '.')+1:],
		"no-duration assertion": assertion[strings.LastIndexByte(assertion, '.')+1:],
		"private key":           "PRIVATE KEY",
	} {
		if strings.Contains(all, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
}

// TestReloadNamesRestartOnlySettings: a reload that changes a setting only a
// restart applies says so, naming it, on every reload while it differs
// from the running value; the rest of the file applies.
func TestReloadNamesRestartOnlySettings(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Gateway.HandshakeTimeout = "7s"
	h.write(cfg)
	for i := 1; i <= 2; i++ {
		if err := h.srv.Reload(); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if n := h.logs.Count("need a restart"); n != i {
			t.Fatalf("after reload %d: %d restart warnings, want %d\n%s", i, n, i, h.logs.String())
		}
	}
	if !strings.Contains(h.logs.String(), `"keys":"handshake_timeout"`) {
		t.Errorf("the warning does not name handshake_timeout:\n%s", h.logs.String())
	}
}
