package gateway

// Reconnect storms: a whole fleet of a tcp application reconnects within one
// second, each device retrying with backoff, against max_handshake_rate.
// TestTCPReconnectStorm runs a small one against a Server in this process
// (part of `make test`); TestTCPReconnectStormBinary runs the full one (3,000
// devices at 500 handshakes a second) against the real binary, started by
// `make storm`, whose RSS it samples.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/procstat"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

const stormDomain = "storm.tcp.test"

// stormParams are a storm's scale and its pass criteria.
type stormParams struct {
	devices    int           // devices reconnecting
	rate       int           // max_handshake_rate
	burst      int           // max_handshake_burst
	spread     time.Duration // every device makes its first attempt within this
	backoff    time.Duration // the first retry's delay…
	maxBackoff time.Duration // …doubling up to this
	within     time.Duration // all connected within this of the storm's start
	rssLimit   int64         // the gateway's peak RSS, bytes
	// handshakeTimeout is [gateway].handshake_timeout ("" for the default).
	handshakeTimeout string
}

// stormFleet is a PKI made for a storm: a root and an intermediate, the
// gateway's certificate for stormDomain and the devices.
type stormFleet struct {
	root, inter, server *pki.Cert
	devices             []tls.Certificate
}

func newStormFleet(t testing.TB, n int) *stormFleet {
	t.Helper()
	f := &stormFleet{root: pki.MustRoot(pki.Root("Storm Root"))}
	f.inter = f.root.MustIssue(pki.Intermediate("Storm Intermediate"))
	f.server = f.inter.MustIssue(pki.Server(stormDomain))
	f.devices = make([]tls.Certificate, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				d := f.inter.MustIssue(pki.Device(fmt.Sprintf("storm-%05d", i+1)))
				f.devices[i] = d.TLSCertificate(f.inter)
			}
		})
	}
	wg.Wait()
	return f
}

// writeConfig writes the storm's PKI files and configuration into dir: one
// tcp application on stormDomain relaying to origin, any fleet device
// admitted, handshakes limited to p.rate a second.
func (f *stormFleet) writeConfig(t testing.TB, dir, listen, admin, origin string, p stormParams) string {
	t.Helper()
	files := map[string][]byte{
		"ca-chain.pem": pki.ChainPEM(f.inter, f.root),
		"token.pem":    sharedPKI().tokenKey,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.server.WriteFiles(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), f.inter); err != nil {
		t.Fatal(err)
	}
	app := tcpApp("storm", stormDomain, origin, anyFleetDevice)
	app.Policies[0].Name = "fleet"
	app.IdleTimeout = "5m"
	cfg := fileConfig{
		Gateway: gatewaySection{Listen: listen, AdminListen: admin, MaxHandshakeRate: p.rate,
			MaxHandshakeBurst: p.burst, DrainTimeout: "1s", HandshakeTimeout: p.handshakeTimeout},
		Tokens:       tokensSection{SigningKeyFile: "token.pem"},
		ClientCAs:    []clientCASection{{Name: "storm fleet", PEMFile: "ca-chain.pem", AssociatedHostnames: []string{stormDomain}}},
		Applications: []appSection{app},
	}
	path := filepath.Join(dir, "fleetgate.toml")
	if err := os.WriteFile(path, marshalConfig(t, cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// stormGateway is the gateway under a storm: where devices connect, where
// its metrics are, and its RSS now.
type stormGateway struct {
	addr    string
	metrics func() (string, error)
	rss     func() (int64, error)
}

// stormResult is what a storm measured.
type stormResult struct {
	connected  int           // devices whose relay echoed a byte
	lastAt     time.Duration // when the last of them was connected, from the start
	attempts   int64         // connection attempts, first ones included
	failures   failureKinds  // failed attempts, by kind
	peakRSS    int64         // the gateway's highest RSS sampled
	shed       float64       // connections refused with reason rate, from the metrics
	openRelays float64       // fleetgate_tcp_connections{app="storm"} with every device connected
}

// runStorm makes every device of fleet connect within p.spread, retrying
// with backoff, until all are connected (each echoes a byte through the
// relay and stays connected) or p.within has passed.
func runStorm(t testing.TB, g stormGateway, fleet *stormFleet, p stormParams) *stormResult {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(fleet.root.Cert)
	ctx, cancel := context.WithTimeout(context.Background(), p.within)
	defer cancel()

	res := &stormResult{}
	var peak atomic.Int64
	sampleRSS := func() {
		if n, err := g.rss(); err == nil && n > peak.Load() {
			peak.Store(n)
		}
	}
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() { close(stopSampler) })
		<-samplerDone
	}
	defer stop() // also when the test fails half-way
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			sampleRSS()
			select {
			case <-stopSampler:
				return
			case <-tick.C:
			}
		}
	}()

	conns := make([]*tls.Conn, len(fleet.devices))
	errs := make([]error, len(fleet.devices))
	var attempts atomic.Int64
	var lastNanos atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := range fleet.devices {
		conf := &tls.Config{RootCAs: roots, ServerName: stormDomain, Certificates: fleet.devices[i : i+1]}
		first := time.Duration(rand.Int64N(int64(p.spread)))
		wg.Go(func() {
			conns[i], errs[i] = stormDevice(ctx, g.addr, conf, first, p, &attempts, &res.failures)
			if conns[i] != nil {
				d := int64(time.Since(start))
				for {
					old := lastNanos.Load()
					if d <= old || lastNanos.CompareAndSwap(old, d) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	for _, c := range conns {
		if c != nil {
			res.connected++
		}
	}
	res.lastAt = time.Duration(lastNanos.Load())
	res.attempts = attempts.Load()

	// The gauge with every device connected, then the shed count. The
	// gauge moves as the gateway's loops register the relays: wait a moment.
	m := ""
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if m, err = g.metrics(); err != nil {
			t.Fatalf("metrics: %v", err)
		}
		res.openRelays = metricValue(m, `fleetgate_tcp_connections{app="storm"}`)
		if int(res.openRelays) >= res.connected || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.shed = metricValue(m, `fleetgate_connections_refused_total{reason="rate"}`)
	if hs := metricValue(m, `fleetgate_handshakes_total{reason="rate",result="error"}`); hs != res.shed {
		t.Errorf("handshakes refused for rate: %v, connections refused for rate: %v; want the same", hs, res.shed)
	}
	stop()
	sampleRSS()
	res.peakRSS = peak.Load()

	if res.connected < len(fleet.devices) {
		var sample []string
		for i, err := range errs {
			if err != nil && len(sample) < 5 {
				sample = append(sample, fmt.Sprintf("device %d: %v", i+1, err))
			}
		}
		t.Errorf("%d of %d devices connected within %v; for example: %s", res.connected, len(fleet.devices), p.within, strings.Join(sample, "; "))
	}
	return res
}

// stormDevice connects one device: a first attempt after first, then
// retries with a delay from p.backoff doubling up to p.maxBackoff (each
// delay jittered to between half and all of it), until its relay echoes a
// byte or ctx ends.
func stormDevice(ctx context.Context, addr string, conf *tls.Config, first time.Duration, p stormParams, attempts *atomic.Int64, failures *failureKinds) (*tls.Conn, error) {
	wait := first
	backoff := p.backoff
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("not connected in time: %w", ctx.Err())
		case <-time.After(wait):
		}
		attempts.Add(1)
		c, err := stormConnect(ctx, addr, conf)
		failures.count(err)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("not connected in time (last attempt: %w)", err)
		}
		wait = backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		backoff = min(2*backoff, p.maxBackoff)
	}
}

// stormConnect makes one attempt: the handshake, then a byte echoed by the
// origin through the relay (under TLS 1.3 the gateway's decision comes
// after the client's handshake ends, so the handshake alone proves little).
func stormConnect(ctx context.Context, addr string, conf *tls.Config) (*tls.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: conf}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*tls.Conn)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := []byte{'s'}
	if _, err := c.Write(buf); err != nil {
		_ = c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 's' {
		_ = c.Close()
		return nil, fmt.Errorf("echo through the relay: %q, %v", buf, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// failureKinds counts failed connection attempts by kind. A shed device
// sees its connection closed before the handshake: EOF or a reset.
type failureKinds struct {
	eof, reset, timeout, other atomic.Int64
	mu                         sync.Mutex
	examples                   []string // of other, the first few
}

func (f *failureKinds) count(err error) {
	var ne net.Error
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		f.eof.Add(1)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		f.reset.Add(1)
	case errors.As(err, &ne) && ne.Timeout():
		f.timeout.Add(1)
	default:
		f.other.Add(1)
		f.mu.Lock()
		if len(f.examples) < 3 {
			f.examples = append(f.examples, err.Error())
		}
		f.mu.Unlock()
	}
}

func (f *failureKinds) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fmt.Sprintf("eof %d, reset %d, timeout %d, other %d", f.eof.Load(), f.reset.Load(), f.timeout.Load(), f.other.Load())
	if len(f.examples) > 0 {
		s += fmt.Sprintf(" %q", f.examples)
	}
	return s
}

// metricValue is the value of one exposition line starting with series
// (name and labels as Prometheus prints them, labels sorted), 0 if absent.
func metricValue(exposition, series string) float64 {
	for line := range strings.SplitSeq(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

func getMetrics(admin string) (string, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// checkStorm asserts a storm's three criteria and logs its figures.
func checkStorm(t *testing.T, res *stormResult, p stormParams) {
	t.Helper()
	t.Logf("storm: %d devices, rate %d/s burst %d: %d connected, the last after %v; %d attempts (failed: %v); %v shed (rate); peak RSS %.1f MiB",
		p.devices, p.rate, p.burst, res.connected, res.lastAt.Round(time.Millisecond), res.attempts, &res.failures, res.shed, float64(res.peakRSS)/(1<<20))
	if res.connected == p.devices && res.lastAt > p.within {
		t.Errorf("the last device connected after %v, want within %v", res.lastAt, p.within)
	}
	if res.shed <= 0 {
		t.Errorf("no connection was shed for the rate (%d attempts for %d devices)", res.attempts, p.devices)
	}
	if int(res.openRelays) != res.connected {
		t.Errorf("fleetgate_tcp_connections = %v with %d devices connected", res.openRelays, res.connected)
	}
	if res.peakRSS <= 0 {
		t.Error("the gateway's RSS was never sampled")
	} else if res.peakRSS >= p.rssLimit {
		t.Errorf("peak RSS %.1f MiB, want under %.0f MiB", float64(res.peakRSS)/(1<<20), float64(p.rssLimit)/(1<<20))
	}
}

// TestTCPReconnectStorm: 100 devices reconnect within one second against
// max_handshake_rate = 20 (burst 20), with a Server in this process: a rate
// the race detector on a busy two-core machine can serve (both sides of
// every handshake run here), with a handshake_timeout of 15s so that a
// descheduled handshake is not taken for a stalled one. The excess is shed
// at once (reason rate), every device is connected within 30 s, and the
// storm adds under 300 MiB to the process (gateway, origin and devices);
// under the race detector, whose shadow memory multiplies a process's
// memory, under 900 MiB.
func TestTCPReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a reconnect storm of 100 devices: not with -short")
	}
	p := stormParams{devices: 100, rate: 20, burst: 20, spread: time.Second,
		backoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second, within: 30 * time.Second, rssLimit: 300 << 20,
		handshakeTimeout: "15s"}
	if raceDetector {
		p.rssLimit *= 3
	}
	testkit.NeedFDs(t, uint64(4*p.devices+200)) // per device: its socket, the gateway's two, the origin's
	fleet := newStormFleet(t, p.devices)
	origin := startTCPOrigin(t, stormEcho)
	dir := t.TempDir()
	srv, listen := startStormServer(t, func(listen string) string {
		return fleet.writeConfig(t, dir, listen, "127.0.0.1:0", origin.url(), p)
	}, slog.New(slog.DiscardHandler))
	if st := srv.engine.Stats(); st.HandshakeRate != p.rate || st.HandshakeBurst != p.burst {
		t.Fatalf("engine rate %d burst %d, want %d and %d", st.HandshakeRate, st.HandshakeBurst, p.rate, p.burst)
	}
	// In process, the RSS is this test binary's, with whatever earlier
	// tests left in it: what the storm adds is what is bounded (make storm
	// bounds the real binary's whole RSS).
	base, err := procstat.RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	g := stormGateway{addr: listen,
		metrics: func() (string, error) { return getMetrics(srv.AdminAddr()) },
		rss: func() (int64, error) {
			r, err := procstat.RSS(os.Getpid())
			return max(r-base, 1), err // 1: sampled, even if nothing grew
		}}
	res := runStorm(t, g, fleet, p)
	checkStorm(t, res, p)
	// The shed connections were refused before any handshake work.
	if st := srv.engine.Stats(); float64(st.Handshakes["rate"]) != res.shed {
		t.Errorf("engine counted %d rate refusals, metrics %v", st.Handshakes["rate"], res.shed)
	}
}

// startStormServer runs a Server until the test ends on the configuration
// file write writes (it returns the file's path) for a free listen address,
// and returns the server and that address. As for the harness's gateway, a
// port taken between the moment it was found free and the bind is given
// up for another, up to five times.
func startStormServer(t *testing.T, write func(listen string) string, logger *slog.Logger) (*Server, string) {
	t.Helper()
	var srv *Server
	var listen string
	runErr := make(chan error, 1)
	testkit.BootRetrying(t, func(int) (<-chan struct{}, <-chan error) {
		var err error
		if listen, err = FreePort(); err != nil {
			t.Fatal(err)
		}
		path := write(listen)
		if srv, err = New(Options{Load: func() (*configs.Config, error) { return configs.Load(path) }, Logger: logger}); err != nil {
			t.Fatal(err)
		}
		go func() { runErr <- srv.Run() }()
		return srv.Booted(), runErr
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-runErr
	})
	return srv, listen
}

// TestHandshakeRateReload: max_handshake_rate takes effect on a reload,
// both ways, without a restart; a shed device is refused before its
// handshake and counted with reason rate.
func TestHandshakeRateReload(t *testing.T) {
	fleet := newStormFleet(t, 1)
	origin := startTCPOrigin(t, stormEcho)
	dir := t.TempDir()
	limited := stormParams{rate: 1, burst: 1}
	logs := &testkit.Buffer{}
	srv, listen := startStormServer(t, func(listen string) string {
		return fleet.writeConfig(t, dir, listen, "127.0.0.1:0", origin.url(), limited)
	}, slog.New(slog.NewJSONHandler(logs, nil)))
	roots := x509.NewCertPool()
	roots.AddCert(fleet.root.Cert)
	conf := &tls.Config{RootCAs: roots, ServerName: stormDomain, Certificates: fleet.devices}
	connect := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := stormConnect(ctx, listen, conf)
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	shed := func() float64 {
		m, err := getMetrics(srv.AdminAddr())
		if err != nil {
			t.Fatal(err)
		}
		return metricValue(m, `fleetgate_connections_refused_total{reason="rate"}`)
	}
	// One token: the first device gets in, the one right behind it (well
	// within the second the bucket takes to refill) is shed.
	limitedPhase := func(phase string, shedBefore float64) {
		t.Helper()
		if err := connect(); err != nil {
			t.Fatalf("%s: the first device: %v", phase, err)
		}
		if err := connect(); err == nil {
			t.Fatalf("%s: a second device within the same second was admitted at 1/s", phase)
		}
		if n := shed(); n != shedBefore+1 {
			t.Fatalf("%s: %v connections shed for the rate, want %v", phase, n, shedBefore+1)
		}
	}
	limitedPhase("at start", 0)

	fleet.writeConfig(t, dir, listen, "127.0.0.1:0", origin.url(), stormParams{})
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := connect(); err != nil {
			t.Fatalf("rate removed by reload: device %d: %v", i, err)
		}
	}
	if n := shed(); n != 1 {
		t.Fatalf("%v shed with no rate, want still 1", n)
	}

	fleet.writeConfig(t, dir, listen, "127.0.0.1:0", origin.url(), limited)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	limitedPhase("rate set again by reload", 1)
	if strings.Contains(logs.String(), "max_handshake_rate") {
		t.Errorf("a reload of max_handshake_rate logged about it (it needs no restart):\n%s", logs.String())
	}
}

// stormEcho is the storm's origin: it echoes until the device goes, with no
// deadline (the devices stay connected until the storm is over).
func stormEcho(c net.Conn) {
	_ = c.SetDeadline(time.Time{})
	_, _ = io.Copy(c, c)
}

// TestTCPReconnectStormBinary is the full storm against the real binary:
// 3,000 devices reconnect within one second against max_handshake_rate = 500
// (burst 500), each retrying with backoff from 100 ms up to 5 s. All are
// connected within 30 s, some connections are shed (reason rate), and the
// gateway process's RSS stays under 300 MiB. `make storm` builds the binary
// and runs it (FLEETGATE_STORM_BIN names the binary; STORM_DEVICES,
// STORM_RATE, STORM_BURST and STORM_RSS_MIB change the scale and limit).
// Without the race detector: it measures the gateway, not the detector.
func TestTCPReconnectStormBinary(t *testing.T) {
	bin := os.Getenv("FLEETGATE_STORM_BIN")
	if bin == "" {
		t.Skip("FLEETGATE_STORM_BIN is not set: the full storm runs with `make storm`")
	}
	if testing.Short() {
		t.Skip("the full reconnect storm: not with -short")
	}
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	p := stormParams{devices: env("STORM_DEVICES", 3000), rate: env("STORM_RATE", 500), burst: env("STORM_BURST", 500),
		spread: time.Second, backoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second, within: 30 * time.Second,
		rssLimit: int64(env("STORM_RSS_MIB", 300)) << 20}
	testkit.NeedFDs(t, uint64(2*p.devices+200)) // the devices and the origin's side; the gateway has its own limit
	fleet := newStormFleet(t, p.devices)
	origin := startTCPOrigin(t, stormEcho)
	dir := t.TempDir()
	listen, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	path := fleet.writeConfig(t, dir, listen, admin, origin.url(), p)
	logFile, err := os.Create(filepath.Join(dir, "fleetgate.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", "-c", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			if len(b) > 8<<10 {
				b = b[len(b)-8<<10:]
			}
			t.Logf("gateway log (end):\n%s", b)
		}
	})
	testkit.WaitFor(t, "the gateway to be ready", 15*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	pid := cmd.Process.Pid
	g := stormGateway{addr: listen,
		metrics: func() (string, error) { return getMetrics(admin) },
		rss:     func() (int64, error) { return procstat.RSS(pid) }}
	res := runStorm(t, g, fleet, p)
	checkStorm(t, res, p)
	select {
	case err := <-exited:
		t.Fatalf("the gateway exited during the storm: %v", err)
	default:
	}
}
