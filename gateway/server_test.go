package gateway

// The Server's life: reload (accepted, refused, restart-only settings,
// configuration warnings), graceful drain and its timeout, and reloads and
// a shutdown under load.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

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

// TestRestartOnlyKeys: gomaxprocs is applied by a reload (tuneRuntime), so
// a reload that changes it warns of nothing; event_loops waits for a
// restart.
func TestRestartOnlyKeys(t *testing.T) {
	running := configs.Gateway{GOMAXPROCS: 1, EventLoops: 2}
	if keys := restartOnly(&running, &configs.Gateway{GOMAXPROCS: 3, EventLoops: 2}); len(keys) != 0 {
		t.Errorf("gomaxprocs changed: %v need a restart, want none", keys)
	}
	if keys := restartOnly(&running, &configs.Gateway{GOMAXPROCS: 1, EventLoops: 4}); !slices.Equal(keys, []string{"event_loops"}) {
		t.Errorf("event_loops changed: %v need a restart, want [event_loops]", keys)
	}
}

// loadClient makes requests until stop is closed, each on a fresh connection
// (the connection closes after the response), and records failures.
type loadClient struct {
	h      *harness
	sni    string
	ok     atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	errs   []string
}

// once sends one request on a new connection. dialed reports whether the
// handshake completed (the connection was admitted); err is set when the
// request then failed.
func (l *loadClient) once(path string) (dialed bool, err error) {
	c, err := tlsDial(l.h, l.sni)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, request("GET", l.sni, path)); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return true, err
	}
	if resp.StatusCode != 200 {
		return true, fmt.Errorf("status %d", resp.StatusCode)
	}
	return true, nil
}

func (l *loadClient) fail(err error) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

// tlsDial completes a handshake with the gateway as sensor-0001.
func tlsDial(h *harness, sni string) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", h.addr, h.tlsConfig(sni, h.pki.sensor1))
}

// TestReloadUnderLoad: the configuration reloads every 20ms while clients
// make requests on fresh and on kept-alive connections: none fails.
func TestReloadUnderLoad(t *testing.T) {
	h := newHarness(t)
	l := &loadClient{h: h, sni: hIoT} // no duration: a fresh connection per request
	keep := h.client(h.pki.sensor1)   // app: connections kept alive across reloads
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := l.once("/reload"); err != nil {
					l.fail(err)
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := keep.Get(href(hApp, "/keep"))
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				l.fail(err)
			} else {
				l.ok.Add(1)
			}
		}
	})
	// Reload for 2 s, and on until 10 requests have been served through
	// the reloads (a loaded machine serves fewer in 2 s), within 30 s.
	reloads := 0
	for start := time.Now(); (time.Since(start) < 2*time.Second || l.ok.Load() < 10) && time.Since(start) < 30*time.Second; reloads++ {
		if err := h.srv.Reload(); err != nil {
			t.Fatalf("reload %d: %v", reloads, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reloads, %d requests served, %d failed", reloads, l.ok.Load(), l.failed.Load())
	if l.failed.Load() != 0 {
		t.Fatalf("%d requests failed during reloads: %v", l.failed.Load(), l.errs)
	}
	if l.ok.Load() < 10 {
		t.Fatalf("only %d requests were served", l.ok.Load())
	}
}

// TestShutdownUnderLoad: Shutdown while requests are held at the origin and
// clients keep opening connections: every request whose connection was
// admitted gets its response, later connections are refused, and Run
// returns nil.
func TestShutdownUnderLoad(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = "10s" })
	const held = 6
	heldErr := make(chan error, held)
	for i := range held {
		go func() {
			c, err := tlsDial(h, hApp)
			if err != nil {
				heldErr <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			path := "/hold/" + strconv.Itoa(i)
			_, _ = io.WriteString(c, request("GET", hApp, path))
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				if err == nil && (resp.StatusCode != 200 || !strings.Contains(string(b), path)) {
					err = fmt.Errorf("%s: status %d: %.100s", path, resp.StatusCode, b)
				}
			}
			heldErr <- err
		}()
	}
	for range held {
		h.origin.waitArrived(t)
	}

	// Clients that keep coming, each on a fresh connection.
	l := &loadClient{h: h, sni: hIoT}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				dialed, err := l.once("/more")
				switch {
				case !dialed:
					refused.Add(1) // not admitted: the gateway is draining or gone
					if !h.srv.draining.Load() {
						l.fail(fmt.Errorf("refused before the drain: %v", err))
					}
					return
				case err != nil:
					l.fail(err) // admitted, then lost
				default:
					l.ok.Add(1)
				}
			}
		})
	}
	testkit.WaitFor(t, "some requests under load", 10*time.Second, func() bool { return l.ok.Load() >= 5 })

	h.stopped = true // this test shuts the gateway down itself
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- h.srv.Shutdown(ctx)
	}()
	testkit.WaitFor(t, "the drain to start", 5*time.Second, func() bool { return !h.srv.Ready() })
	time.Sleep(200 * time.Millisecond) // the held requests are still waiting
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with requests in flight", err)
	default:
	}
	for range held {
		h.origin.release <- struct{}{}
	}
	for range held {
		if err := <-heldErr; err != nil {
			t.Errorf("a request in flight at the shutdown: %v", err)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
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
	wg.Wait()
	t.Logf("%d requests served under load, %d admitted and lost, %d connections refused", l.ok.Load(), l.failed.Load(), refused.Load())
	if l.failed.Load() != 0 {
		t.Fatalf("%d admitted requests got no response: %v", l.failed.Load(), l.errs)
	}
}

// TestExpiryWarningsLogged: a client CA that expires within 30 days is
// logged at warn level when the configuration is loaded, at start and on
// reload, and its expiry gauge says so.
func TestExpiryWarningsLogged(t *testing.T) {
	h := newHarness(t)
	opts := pki.Root("Fleet Root Expiring")
	opts.NotAfter = time.Now().Add(10 * 24 * time.Hour)
	root := pki.MustRoot(opts)
	h.writeFile("ca2-chain.pem", root.CertPEM())
	cfg := h.config()
	cfg.ClientCAs = append(cfg.ClientCAs, secondFleetCA())
	h.write(cfg)

	warned := func(logs string) bool {
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, `"msg":"configuration warning"`) &&
				strings.Contains(line, "client_cas[1]") && strings.Contains(line, "expires on") {
				return true
			}
		}
		return false
	}

	t.Run("reload", func(t *testing.T) {
		if err := h.srv.Reload(); err != nil {
			t.Fatal(err)
		}
		if !warned(h.logs.String()) {
			t.Fatalf("no warning logged for the expiring CA:\n%s", h.logs.String())
		}
		s := scrapeMetrics(t, h)
		v, found := s.value("fleetgate_client_ca_expiry_seconds", "name", "fleet-2")
		if !found || v <= 9*24*3600 || v > 10*24*3600 {
			t.Errorf("fleetgate_client_ca_expiry_seconds{name=fleet-2} = %v (found %v), want about 10 days", v, found)
		}
	})
	t.Run("start", func(t *testing.T) {
		logs := &testkit.Buffer{}
		_, err := New(Options{
			Load:   func() (*configs.Config, error) { return configs.Load(h.cfgPath) },
			Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if !warned(logs.String()) {
			t.Fatalf("no warning logged at start:\n%s", logs.String())
		}
	})
}

// TestLoopOptions: the loops poll edge-triggered and end a connection's
// event after one read (the relay and keep-alive costs in
// docs/performance.md depend on it), one listening socket per loop.
func TestLoopOptions(t *testing.T) {
	var o gnet.Options
	for _, opt := range loopOptions(3, slog.New(slog.DiscardHandler)) {
		opt(&o)
	}
	if !o.EdgeTriggeredIO || o.EdgeTriggeredIOChunk != edgeReadChunk {
		t.Errorf("edge-triggered %v, chunk %d; want edge-triggered reads of %d", o.EdgeTriggeredIO, o.EdgeTriggeredIOChunk, edgeReadChunk)
	}
	if o.NumEventLoop != 3 || !o.Multicore || !o.ReusePort || !o.ReuseAddr || o.TCPNoDelay != gnet.TCPNoDelay {
		t.Errorf("loops %d, multicore %v, SO_REUSEPORT %v, SO_REUSEADDR %v, TCP_NODELAY %v", o.NumEventLoop, o.Multicore, o.ReusePort, o.ReuseAddr, o.TCPNoDelay)
	}
}
