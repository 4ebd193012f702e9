package main

// `fleetgate serve` runs until a signal: these tests start the binary and
// signal it (SIGHUP reloads, SIGTERM or SIGINT drains, a second one stops at
// once). Those tests do not run in parallel: each runs a gateway, and their
// exit deadlines should not depend on how many others share the machine.
// TestServeRefusesStrayArguments starts nothing and runs in process.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// fleet is the PKI, configuration and origin of a serve test.
type fleet struct {
	dir, cfg      string
	listen, admin string
	origin        *httptest.Server
	arrived       chan struct{}
	release       chan struct{}
	roots         *x509.CertPool
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{dir: t.TempDir(), listen: freePort(t), admin: freePort(t), arrived: make(chan struct{}, 4), release: make(chan struct{})}
	runPKI(t, f.dir, "pki", "sensor-0001,sensor-0002")
	runPKI(t, f.dir, "pki2", "sensor-0101")
	done := make(chan struct{})
	f.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			f.arrived <- struct{}{}
			select {
			case <-f.release:
			case <-r.Context().Done():
			case <-done:
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "assertion": r.Header.Get("Cf-Access-Jwt-Assertion")})
	}))
	t.Cleanup(func() { close(done); f.origin.Close() })
	f.cfg = filepath.Join(f.dir, "fleetgate.toml")
	f.write(t, false)
	f.roots = x509.NewCertPool()
	ca, _ := os.ReadFile(filepath.Join(f.dir, "pki", "ca.pem"))
	f.roots.AppendCertsFromPEM(ca)
	return f
}

// serve starts `fleetgate serve -c fleetgate.toml` in f's folder and waits
// until it is ready. The fleet's ports were found free when it was made,
// seconds before: one another process has bound since is given up for
// another, in the configuration file as it stands (startUntilReady).
func (f *fleet) serve(t *testing.T) *process {
	t.Helper()
	return startUntilReady(t, func(attempt int) (*process, string, []string) {
		if attempt > 1 {
			f.movePorts(t)
		}
		return startFleetgate(t, f.dir, "serve", "-c", "fleetgate.toml"), f.admin, []string{f.listen, f.admin}
	})
}

// startUntilReady calls start (attempt 1, 2, …), which starts fleetgate
// and returns it, its admin address and the ports it was given, until one
// is ready. One that exits first because a port it was given was taken
// before its bind (its error names the port) is started again, start
// picking other ports, up to five times, as the gateway package's harness
// does; any other exit fails the test.
func startUntilReady(t *testing.T, start func(attempt int) (p *process, admin string, ports []string)) *process {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, admin, ports := start(attempt)
		if p.awaitReady(t, admin) {
			return p
		}
		stderr := p.stderr.String()
		if attempt < 5 && strings.Contains(stderr, "address already in use") &&
			slices.ContainsFunc(ports, func(port string) bool { return strings.Contains(stderr, port) }) {
			continue
		}
		t.Fatalf("fleetgate exited before it was ready: %v", p.err)
	}
}

// movePorts gives f new free ports for listen and admin_listen, in its
// configuration file too.
func (f *fleet) movePorts(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	listen, admin := freePort(t), freePort(t)
	text := strings.NewReplacer(strconv.Quote(f.listen), strconv.Quote(listen), strconv.Quote(f.admin), strconv.Quote(admin)).Replace(string(b))
	if err := os.WriteFile(f.cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f.listen, f.admin = listen, admin
}

func (f *fleet) write(t testing.TB, secondCA bool) {
	writeServeConfig(t, f.cfg, serveParams{Listen: f.listen, Admin: f.admin, Origin: f.origin.URL, SecondCA: secondCA})
}

// deviceCert loads the device certificate <pkiDir>/devices/<cn>.pem and
// its key.
func (f *fleet) deviceCert(t testing.TB, pkiDir, cn string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(f.dir, pkiDir, "devices", cn+".pem"), filepath.Join(f.dir, pkiDir, "devices", cn+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client returns an HTTP client that presents the device certificate in
// pkiDir/devices/<cn>.pem ("" for none) and dials the gateway for any host.
func (f *fleet) client(t testing.TB, pkiDir, cn string) *http.Client {
	t.Helper()
	var certs []tls.Certificate
	if cn != "" {
		certs = []tls.Certificate{f.deviceCert(t, pkiDir, cn)}
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", f.listen)
		},
		TLSClientConfig: &tls.Config{RootCAs: f.roots, Certificates: certs, MinVersion: tls.VersionTLS12},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(t testing.TB, c *http.Client, url string, header ...string) (int, string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func TestServeReloadAndDrain(t *testing.T) {
	f := newFleet(t)
	p := f.serve(t)
	sensor1 := f.client(t, "pki", "sensor-0001")
	if s, body, _ := get(t, sensor1, "https://app.fleet.test/"); s != 200 {
		t.Fatalf("app: %d %s", s, body)
	}
	if s, body, _ := get(t, f.client(t, "pki2", "sensor-0101"), "https://app.fleet.test/"); s != 403 {
		t.Fatalf("device of the second CA before the reload: %d %s", s, body)
	}

	// SIGHUP with a bad file: refused, logged, the old configuration serves.
	const problem = "fleetgate.toml:2: gateway.listen"
	refused, problems := p.stderr.Count("reload refused"), p.stderr.Count(problem)
	if err := os.WriteFile(f.cfg, []byte("[gateway]\nlisten = 12\nbogus = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "reload refused", refused+1)
	if p.stderr.Count(problem) <= problems {
		t.Errorf("the refused reload's log does not name the problem (%q):\n%s", problem, p.stderr)
	}
	for _, u := range []string{"https://app.fleet.test/", "https://devices.fleet.test/"} {
		if s, body, _ := get(t, f.client(t, "pki", "sensor-0001"), u); s != 200 {
			t.Fatalf("%s after a bad reload: %d %s", u, s, body)
		}
	}

	// SIGHUP with a good file adding a CA: its devices get in. (After the
	// refused reload the gateway also watches the file and may reload it
	// itself: either reload applies the new file.)
	reloads := p.stderr.Count("configuration reloaded")
	f.write(t, true)
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "configuration reloaded", reloads+1)
	if s, body, _ := get(t, f.client(t, "pki2", "sensor-0101"), "https://app.fleet.test/"); s != 200 {
		t.Fatalf("device of the new CA after the reload: %d %s", s, body)
	}
	if s, _, _ := get(t, sensor1, "https://app.fleet.test/"); s != 200 {
		t.Fatalf("the first CA after the reload: %d", s)
	}

	// SIGTERM with a slow request in flight: it completes, the process exits 0.
	type result struct {
		status int
		err    error
	}
	slow := make(chan result, 1)
	slowClient := f.client(t, "pki", "sensor-0001")
	go func() {
		resp, err := slowClient.Get("https://app.fleet.test/slow")
		if err != nil {
			slow <- result{0, err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		slow <- result{resp.StatusCode, nil}
	}()
	select {
	case <-f.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow request never reached the origin")
	}
	draining := p.stderr.Count(`"draining"`)
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `"draining"`, draining+1)
	if p.exited() {
		t.Fatal("fleetgate exited with a request in flight")
	}
	close(f.release)
	select {
	case r := <-slow:
		if r.err != nil || r.status != 200 {
			t.Fatalf("in-flight request: %d %v", r.status, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the in-flight request did not complete")
	}
	if code := p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
	if _, err := net.DialTimeout("tcp", f.listen, time.Second); err == nil {
		t.Error("the listener still accepts after exit")
	}
}

// startDemo starts the demo in demoDir through the binary, its gateway and
// admin listener on free ports, and waits until it is ready, other ports
// tried when one was taken (startUntilReady); fresh says demoDir did not
// exist before, and is removed again before another try.
func startDemo(t *testing.T, work, demoDir string, fresh bool) (p *process, listen, admin string) {
	t.Helper()
	p = startUntilReady(t, func(attempt int) (*process, string, []string) {
		if attempt > 1 && fresh {
			if err := os.RemoveAll(demoDir); err != nil {
				t.Fatal(err)
			}
		}
		listen, admin = freePort(t), freePort(t)
		return startFleetgate(t, work, "serve", "-demo-dir", demoDir, "-listen", listen, "-admin-listen", admin), admin, []string{listen, admin}
	})
	return p, listen, admin
}

// demoOrigin is the demo's fixed echo origin (configs.DemoOrigin).
const demoOrigin = "127.0.0.1:9000"

// TestDemo runs the demo (serve without -c) through the binary: it runs
// until SIGINT or SIGTERM, and its echo origin, MQTT broker and identity
// provider take fixed ports.
func TestDemo(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	for _, addr := range []string{demoOrigin, demoBroker, demoIdP} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Skipf("a port of the demo's origins is busy: %v", err)
		} else {
			l.Close()
		}
	}
	work := t.TempDir()
	demoDir := filepath.Join(work, "demo") // a clean folder: it does not exist yet
	p, listen, admin := startDemo(t, work, demoDir, true)

	out := p.stdout.String()
	if !strings.Contains(out, "created the demo PKI") || !strings.Contains(out, demoDir) {
		t.Fatalf("stdout does not name the new demo folder:\n%s", out)
	}
	type step struct {
		title, cmd string
		status     int
	}
	var steps []step
	lines := strings.Split(out, "\n")
	status := regexp.MustCompile(`→ (\d{3})\b`)
	for i, l := range lines {
		m := status.FindStringSubmatch(l)
		if !strings.HasPrefix(l, "# ") || m == nil || i+1 >= len(lines) {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		steps = append(steps, step{strings.TrimPrefix(l, "# "), lines[i+1], n})
	}
	if len(steps) != 5 {
		t.Fatalf("found %d curl steps in stdout, want 5:\n%s", len(steps), out)
	}
	_, port, _ := net.SplitHostPort(listen)
	for _, s := range steps {
		if !strings.HasPrefix(s.cmd, "curl ") || !strings.Contains(s.cmd, ":"+port+"/") {
			t.Fatalf("step %q: %q is not a curl command for port %s", s.title, s.cmd, port)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		got, err := exec.CommandContext(ctx, "sh", "-c", s.cmd).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("step %q: %v\n%s", s.title, err, got)
		}
		lines := strings.Split(strings.TrimSpace(string(got)), "\n")
		if last := lines[len(lines)-1]; last != strconv.Itoa(s.status) {
			t.Errorf("step %q printed %q, want %d", s.title, got, s.status)
		}
	}
	checkDemoMQTT(t, demoDir, listen, out)
	checkDemoConsole(t, demoDir, listen, p.stdout.String, p.stderr.String)
	p.signal(t, syscall.SIGINT)
	if code := p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}

	// A second start reuses the folder.
	p2, listen, admin := startDemo(t, work, demoDir, false)
	if out := p2.stdout.String(); !strings.Contains(out, "using the demo PKI") || strings.Contains(out, "created the demo PKI") {
		t.Errorf("second start: %s", out)
	}
	p2.signal(t, syscall.SIGTERM)
	if code := p2.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("second start: exit %d", code)
	}

	// The identity provider's port taken: a clear error, exit 1.
	l, err := net.Listen("tcp", demoIdP)
	if err != nil {
		t.Logf("not checked: the demo IdP's port was taken after the demo stopped: %v", err)
		return
	}
	defer l.Close()
	p3 := startFleetgate(t, work, "serve", "-demo-dir", demoDir, "-listen", listen, "-admin-listen", admin)
	if code := p3.exitCode(t, 20*time.Second); code != 1 || !strings.Contains(p3.stderr.String(), "fleetgate: demo: identity provider: listen tcp "+demoIdP) {
		t.Errorf("with the IdP's port taken: exit %d, stderr:\n%s", code, p3.stderr.String())
	}
}

// TestServeZeroDrainTimeout: with drain_timeout = "0s" a SIGTERM stops the
// gateway at once, every time (the expired context used to race with the
// boot check and leave it running).
func TestServeZeroDrainTimeout(t *testing.T) {
	f := newFleet(t)
	writeServeConfig(t, f.cfg, serveParams{Listen: f.listen, Admin: f.admin, Origin: f.origin.URL, DrainTimeout: "0s"})
	for i := range 4 {
		p := f.serve(t)
		p.signal(t, syscall.SIGTERM)
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Fatalf("run %d: exit %d after SIGTERM, want 0", i, code)
		}
	}
}

// TestServeSecondSignal: a second SIGTERM during the drain stops at once,
// cutting the request in flight, and the exit status says so (1).
func TestServeSecondSignal(t *testing.T) {
	f := newFleet(t)
	p := f.serve(t)
	slowClient := f.client(t, "pki", "sensor-0001")
	go func() {
		resp, err := slowClient.Get("https://app.fleet.test/slow")
		if err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-f.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow request never reached the origin")
	}
	draining := p.stderr.Count(`"draining"`)
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `"draining"`, draining+1)
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 5*time.Second); code != 1 {
		t.Fatalf("exit %d after a second SIGTERM, want 1 (drain_timeout is 10s)", code)
	}
}

// TestServeRefusesStrayArguments: "fleetgate serve my.toml" (without -c)
// is a mistake, not a request for the demo. In process: the refusal comes
// before anything starts. The demo folder is named, in the test's own
// folder, so that a regression that starts the demo shows there instead of
// writing into the package's source folder (the working directory).
func TestServeRefusesStrayArguments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	demoDir := filepath.Join(dir, "demo")
	for _, args := range [][]string{
		{"serve", "-demo-dir", demoDir, "my.toml"},
		{"check", filepath.Join(dir, "my.toml")},
		{"pki", "-out", filepath.Join(dir, "p"), "-cn", "a", "b"},
	} {
		code, _, stderr := runInProcess(t, args...)
		if code != 2 || !strings.Contains(stderr, "-c") {
			t.Errorf("%v: exit %d, %q; want 2 and a pointer to the flag", args, code, stderr)
		}
	}
	if _, err := os.Stat(demoDir); err == nil {
		t.Error("a stray argument started the demo")
	}
	if _, err := os.Stat(filepath.Join(dir, "p")); err == nil {
		t.Error("pki with a stray argument wrote its folder")
	}
}

// TestServeSIGHUPWhileStarting: a SIGHUP that arrives while the gateway is
// still loading its configuration (a deployment tool reloading a service it
// has just started) does not end the process; the reload happens once it
// runs. The configuration is first a named pipe, so that the signal lands
// while the file is being read, then a plain file for the reload.
func TestServeSIGHUPWhileStarting(t *testing.T) {
	f := newFleet(t)
	src, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(f.dir, "starting.toml")
	if err := syscall.Mkfifo(cfg, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	p := startFleetgate(t, f.dir, "serve", "-c", "starting.toml")
	w := openReaderFIFO(t, p, cfg)
	p.signal(t, syscall.SIGHUP)
	// fleetgate holds the pipe open: the reload will read a plain file.
	plain := filepath.Join(f.dir, "plain.toml")
	if err := os.WriteFile(plain, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(plain, cfg); err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(src)
	w.Close()
	testkit.WaitFor(t, "the reload of the SIGHUP sent while starting", 20*time.Second, func() bool {
		return p.exited() || p.stderr.Count("configuration reloaded") > 0
	})
	if p.exited() {
		t.Fatalf("a SIGHUP while starting ended fleetgate: %v", p.err)
	}
	p.waitReady(t, f.admin)
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
}

// openReaderFIFO opens the named pipe fifo for writing once p has opened it
// to read; it fails the test when p exits first.
func openReaderFIFO(t testing.TB, p *process, fifo string) *os.File {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Without a reader, a non-blocking open for writing fails (ENXIO).
		fd, err := syscall.Open(fifo, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err == nil {
			if err := syscall.SetNonblock(fd, false); err != nil {
				t.Fatal(err)
			}
			return os.NewFile(uintptr(fd), fifo)
		}
		if p.exited() {
			t.Fatalf("fleetgate exited before it read %s: %v\n%s", fifo, p.err, p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleetgate did not open %s within 20s", fifo)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServeNamesTheBusyListener: when [gateway].listen cannot be bound,
// serve exits 1 with an error that names the address, as it does for
// admin_listen.
func TestServeNamesTheBusyListener(t *testing.T) {
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	writeServeConfig(t, filepath.Join(dir, "fleetgate.toml"), serveParams{Listen: addr, Origin: "http://127.0.0.1:9"})
	code, _, stderr := fleetgate(t, dir, "serve", "-c", "fleetgate.toml", "-log-level", "error")
	if code != 1 || !strings.Contains(stderr, addr) {
		t.Fatalf("listen on a busy port: exit %d, stderr %q; want 1 and the address %s", code, stderr, addr)
	}
}

// TestServeChecksListenFlags: -listen and -admin-listen replace keys that
// check validates, so their values are checked the same way and refused as
// a usage error (exit 2) naming the flag, before anything starts; the
// admin flag's "" (no admin listener) is a value, not a mistake.
func TestServeChecksListenFlags(t *testing.T) {
	t.Parallel()
	demoDir := filepath.Join(t.TempDir(), "demo")
	for _, c := range []struct{ flag, value string }{
		{"-listen", "8443"},
		{"-listen", "localhost:https"},
		{"-admin-listen", "127.0.0.1:99999"},
		{"-admin-listen", "not a host:9090"},
	} {
		code, _, stderr := runInProcess(t, "serve", "-demo-dir", demoDir, c.flag, c.value)
		if code != 2 || !strings.Contains(stderr, c.flag+": ") || !strings.Contains(stderr, "is not host:port") {
			t.Errorf("serve %s %q: exit %d, %q; want 2 and the flag named", c.flag, c.value, code, stderr)
		}
	}
	if _, err := os.Stat(demoDir); err == nil {
		t.Error("a bad listen flag started the demo")
	}
}
