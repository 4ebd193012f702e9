package main

// End to end through the real binary: built once in TestMain, then run as an
// operator runs it (check, pki, token verify, version, serve with SIGHUP and
// SIGTERM, and the demo with its printed curl commands).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
)

// binary is the fleetgate built by TestMain.
var binary string

// buildFlags gains -race when the tests run with -race (race_test.go), so
// the binary's own races fail the serve tests.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "fleetgate")
	args := append([]string{"build", "-o", binary}, buildFlags...)
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building fleetgate:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childEnv is the binary's environment: a race-enabled build exits at once
// (the race runtime otherwise sleeps a second at exit) and still fails with
// exit code 66 when it saw a race.
func childEnv() []string {
	return append(os.Environ(), "GORACE=atexit_sleep_ms=0 exitcode=66")
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fleetgate runs the binary to completion in dir and returns its exit code
// and output.
func fleetgate(t testing.TB, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir, cmd.Env = dir, childEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	}
	if err != nil {
		t.Fatalf("fleetgate %v: %v", args, err)
	}
	return 0, o.String(), e.String()
}

// process is a running `fleetgate serve`.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	err            error
}

func startFleetgate(t testing.TB, dir string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(binary, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env = dir, childEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("fleetgate stdout:\n%s\nfleetgate stderr:\n%s", p.stdout, p.stderr)
		}
	})
	return p
}

func (p *process) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// exitCode waits for the process to exit.
func (p *process) exitCode(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("fleetgate did not exit within %v", within)
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("fleetgate: %v", p.err)
	}
	return 0
}

// waitReady polls the admin listener's /readyz until it answers 200.
func (p *process) waitReady(t testing.TB, admin string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("fleetgate exited before it was ready: %v", p.err)
		default:
		}
		if resp, err := c.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("fleetgate did not become ready")
}

// waitLog polls the process's stderr until it holds n occurrences of s.
func (p *process) waitLog(t testing.TB, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(p.stderr.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("stderr never held %d × %q", n, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := fleetgate(t, t.TempDir(), "version")
	if code != 0 || !regexp.MustCompile(`^fleetgate \S+\n$`).MatchString(out) {
		t.Fatalf("version: exit %d, %q", code, out)
	}
	tests := []struct {
		name string
		args []string
		want string // in stdout+stderr
	}{
		{"top level -h", []string{"-h"}, "fleetgate serve"},
		{"top level --help", []string{"--help"}, "fleetgate check"},
		{"help", []string{"help"}, "fleetgate token verify"},
		{"serve -h", []string{"serve", "-h"}, "-demo-dir"},
		{"serve --help", []string{"serve", "--help"}, "SIGHUP"},
		{"check -h", []string{"check", "-h"}, "Usage: fleetgate check"},
		{"pki -h", []string{"pki", "-h"}, "example.pem"},
		{"token -h", []string{"token", "-h"}, "fleetgate token verify"},
		{"token verify -h", []string{"token", "verify", "-h"}, "-jwks"},
		{"token verify --help", []string{"token", "verify", "--help"}, "-aud"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := fleetgate(t, t.TempDir(), tc.args...)
			if code != 0 {
				t.Fatalf("exit %d, want 0\n%s%s", code, out, errOut)
			}
			if !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("output lacks %q:\n%s%s", tc.want, out, errOut)
			}
		})
	}
	usage := []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"unknown command", []string{"nope"}},
		{"unknown flag", []string{"serve", "-nope"}},
		{"check without -c", []string{"check"}},
		{"token without verify", []string{"token"}},
		{"token verify without a token", []string{"token", "verify", "--jwks", "x"}},
	}
	for _, tc := range usage {
		t.Run("usage error: "+tc.name, func(t *testing.T) {
			if code, out, errOut := fleetgate(t, t.TempDir(), tc.args...); code != 2 {
				t.Fatalf("exit %d, want 2\n%s%s", code, out, errOut)
			}
		})
	}
}

// runPKI runs `fleetgate pki` into dir/out.
func runPKI(t testing.TB, dir, out string, cns string) {
	t.Helper()
	code, stdout, stderr := fleetgate(t, dir, "pki", "-out", out, "-hosts", "devices.fleet.test,app.fleet.test", "-cn", cns)
	if code != 0 {
		t.Fatalf("pki: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001,sensor-0002")
	files := []string{"ca.pem", "ca-key.pem", "intermediate.pem", "intermediate-key.pem", "ca-chain.pem",
		"server.pem", "server-key.pem", "example.pem", "key.pem", "token.pem",
		"devices/sensor-0001.pem", "devices/sensor-0001-key.pem", "devices/sensor-0002.pem", "devices/sensor-0002-key.pem"}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, "pki", f))
		if err != nil {
			t.Fatalf("missing %s: %v", f, err)
		}
		if strings.HasSuffix(f, "key.pem") || f == "token.pem" {
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is readable by others (%v)", f, fi.Mode())
			}
		}
	}
	// example.pem / key.pem: sensor-0001, a client certificate that chains to ca.pem.
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", "example.pem"), filepath.Join(dir, "pki", "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if leaf.Subject.CommonName != "sensor-0001" || len(pair.Certificate) != 2 {
		t.Fatalf("example.pem: CN %q, chain of %d", leaf.Subject.CommonName, len(pair.Certificate))
	}
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "ca.pem"))
	roots.AppendCertsFromPEM(caPEM)
	inter, _ := x509.ParseCertificate(pair.Certificate[1])
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("example.pem does not verify for client auth against ca.pem: %v", err)
	}

	// The result loads in a configuration, and check says so.
	cfgPath := filepath.Join(dir, "fleetgate.toml")
	writeServeConfig(t, cfgPath, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	if _, err := configs.Load(cfgPath); err != nil {
		t.Fatalf("a configuration of the pki output does not load: %v", err)
	}

	// A second run refuses to overwrite, unless -force.
	if code, _, stderr := fleetgate(t, dir, "pki", "-out", "pki"); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("second pki: exit %d, %q", code, stderr)
	}
	// Not even when ca.pem is gone: a kept token.pem is not replaced.
	if err := os.Remove(filepath.Join(dir, "pki", "ca.pem")); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := fleetgate(t, dir, "pki", "-out", "pki"); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("pki over a folder without ca.pem: exit %d, %q", code, stderr)
	}
	// -force rewrites, and a key made world-readable meanwhile comes back 0600.
	if err := os.Chmod(filepath.Join(dir, "pki", "token.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := fleetgate(t, dir, "pki", "-out", "pki", "-force", "-key", "ed25519"); code != 0 {
		t.Fatalf("pki -force: exit %d, %q", code, stderr)
	}
	for _, f := range []string{"token.pem", "ca-key.pem", "devices/sensor-0001-key.pem"} {
		if fi, err := os.Stat(filepath.Join(dir, "pki", f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s after -force: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}
	bad := []struct {
		name string
		args []string
	}{
		{"unknown key type", []string{"-key", "dsa"}},
		{"device name with a slash", []string{"-cn", "../evil"}},
		{"no days", []string{"-days", "0"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, _ := fleetgate(t, dir, append([]string{"pki", "-out", "other"}, tc.args...)...); code != 2 {
				t.Fatalf("exit %d, want 2", code)
			}
		})
	}
}

// serveParams fill the configuration of the serve tests.
type serveParams struct {
	Listen, Admin, Origin string
	SecondCA              bool   // trust pki2/ on app.fleet.test
	DrainTimeout          string // "10s" when empty
}

func writeServeConfig(t testing.TB, path string, p serveParams) {
	t.Helper()
	second := ""
	if p.SecondCA {
		second = `
[[client_cas]]
name = "fleet-2"
pem_file = "pki2/ca-chain.pem"
associated_hostnames = ["app.fleet.test"]
`
	}
	drain := p.DrainTimeout
	if drain == "" {
		drain = "10s"
	}
	data := fmt.Sprintf(`[gateway]
listen = %q
admin_listen = %q
issuer = "https://access.fleet.test"
event_loops = 2
drain_timeout = %q
origin_timeout = "10s"
origin_connect_timeout = "1s"

[tokens]
signing_key_file = "pki/token.pem"

[[client_cas]]
name = "fleet"
pem_file = "pki/ca-chain.pem"
associated_hostnames = ["devices.fleet.test", "app.fleet.test"]
%s
[[applications]]
name = "devices"
domain = "devices.fleet.test"
origin = %q
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"
session_duration = "0s"

[[applications.policies]]
name = "sensor-0001 only"
decision = "non_identity"
include = [{ common_name = "sensor-0001" }]

[[applications]]
name = "app"
domain = "app.fleet.test"
origin = %q
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"
session_duration = "24h"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
`, p.Listen, p.Admin, drain, second, p.Origin, p.Origin)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	good := filepath.Join(dir, "good.toml")
	writeServeConfig(t, good, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	code, out, errOut := fleetgate(t, dir, "check", "-c", "good.toml")
	if code != 0 {
		t.Fatalf("good file: exit %d\n%s%s", code, out, errOut)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "ok: 2 applications, 1 client CAs") {
		t.Fatalf("good file: want a one-line summary, got %q", out)
	}

	badFile := `[gateway]
listen = "nope"
max_body_bytes = "lots"
lisen = "x"

[tokens]
signing_key_file = "missing.pem"

[[applications]]
name = "a"
domain = "http://x"
origin = "ftp://y"
`
	if err := os.WriteFile(filepath.Join(dir, "bad.toml"), []byte(badFile), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = fleetgate(t, dir, "check", "-c", "bad.toml")
	if code != 1 {
		t.Fatalf("bad file: exit %d, want 1\n%s%s", code, out, errOut)
	}
	if out != "" {
		t.Errorf("bad file: stdout %q, want nothing", out)
	}
	line := regexp.MustCompile(`^bad\.toml(:\d+)?: [a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: \S.*$`)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	for _, l := range lines {
		if !line.MatchString(l) && !strings.HasPrefix(l, "warning: ") {
			t.Errorf("not a file:line: path: msg line: %q", l)
		}
	}
	for _, want := range []string{
		"bad.toml:2: gateway.listen: ",
		"bad.toml:3: gateway.max_body_bytes: ",
		"bad.toml:4: gateway.lisen: ",
		"bad.toml:7: tokens.signing_key_file: ",
		"bad.toml:11: applications[0].domain: ",
		"bad.toml:12: applications[0].origin: ",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check does not report %q", want)
		}
	}
	if len(lines) < 6 {
		t.Errorf("check printed %d problems, want every one (at least 6):\n%s", len(lines), errOut)
	}
	if code, _, errOut := fleetgate(t, dir, "check", "-c", "missing.toml"); code != 1 || !strings.Contains(errOut, "missing.toml") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

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

func (f *fleet) write(t testing.TB, secondCA bool) {
	writeServeConfig(t, f.cfg, serveParams{Listen: f.listen, Admin: f.admin, Origin: f.origin.URL, SecondCA: secondCA})
}

// client returns an HTTP client that presents the device certificate in
// pkiDir/devices/<cn>.pem ("" for none) and dials the gateway for any host.
func (f *fleet) client(t testing.TB, pkiDir, cn string) *http.Client {
	t.Helper()
	var certs []tls.Certificate
	if cn != "" {
		c, err := tls.LoadX509KeyPair(filepath.Join(f.dir, pkiDir, "devices", cn+".pem"), filepath.Join(f.dir, pkiDir, "devices", cn+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		certs = []tls.Certificate{c}
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
	p := startFleetgate(t, f.dir, "serve", "-c", "fleetgate.toml")
	p.waitReady(t, f.admin)
	sensor1 := f.client(t, "pki", "sensor-0001")
	if s, body, _ := get(t, sensor1, "https://app.fleet.test/"); s != 200 {
		t.Fatalf("app: %d %s", s, body)
	}
	if s, body, _ := get(t, f.client(t, "pki2", "sensor-0101"), "https://app.fleet.test/"); s != 403 {
		t.Fatalf("device of the second CA before the reload: %d %s", s, body)
	}

	// SIGHUP with a bad file: refused, logged, the old configuration serves.
	if err := os.WriteFile(f.cfg, []byte("[gateway]\nlisten = 12\nbogus = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "reload refused", 1)
	if !strings.Contains(p.stderr.String(), "fleetgate.toml:2: gateway.listen") {
		t.Errorf("the refused reload's log does not name the problem:\n%s", p.stderr)
	}
	for _, u := range []string{"https://app.fleet.test/", "https://devices.fleet.test/"} {
		if s, body, _ := get(t, f.client(t, "pki", "sensor-0001"), u); s != 200 {
			t.Fatalf("%s after a bad reload: %d %s", u, s, body)
		}
	}

	// SIGHUP with a good file adding a CA: its devices get in.
	f.write(t, true)
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "configuration reloaded", 1)
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
	go func() {
		resp, err := f.client(t, "pki", "sensor-0001").Get("https://app.fleet.test/slow")
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
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `"draining"`, 1)
	select {
	case <-p.done:
		t.Fatal("fleetgate exited with a request in flight")
	default:
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

func TestTokenVerify(t *testing.T) {
	f := newFleet(t)
	p := startFleetgate(t, f.dir, "serve", "-c", "fleetgate.toml")
	p.waitReady(t, f.admin)

	// A session token (the cookie) and a no-duration token (what the origin got).
	s, _, resp := get(t, f.client(t, "pki", "sensor-0002"), "https://app.fleet.test/")
	if s != 200 {
		t.Fatalf("app: %d", s)
	}
	var session string
	for _, c := range resp.Cookies() {
		if c.Name == "CF_Authorization" {
			session = c.Value
		}
	}
	s, body, _ := get(t, f.client(t, "pki", "sensor-0001"), "https://devices.fleet.test/")
	if s != 200 {
		t.Fatalf("devices: %d %s", s, body)
	}
	var echo struct{ Assertion string }
	_ = json.Unmarshal([]byte(body), &echo)
	if session == "" || echo.Assertion == "" {
		t.Fatalf("no tokens: cookie %q, assertion %q", session, echo.Assertion)
	}
	_, jwks, _ := get(t, f.client(t, "", ""), "https://devices.fleet.test/cdn-cgi/access/certs")
	jwksFile := filepath.Join(f.dir, "jwks.json")
	if err := os.WriteFile(jwksFile, []byte(jwks), 0o600); err != nil {
		t.Fatal(err)
	}
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, jwks)
	}))
	defer jwksSrv.Close()

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"session token, file", []string{"--jwks", jwksFile, session}, 0, `"common_name": "sensor-0002"`},
		{"no-duration token, file", []string{"--jwks", jwksFile, echo.Assertion}, 0, `"no_duration": true`},
		{"session token, URL", []string{"--jwks", jwksSrv.URL + "/cdn-cgi/access/certs", session}, 0, "valid"},
		{"issuer checked", []string{"--jwks", jwksFile, "--iss", "https://access.fleet.test", session}, 0, "valid"},
		{"wrong issuer", []string{"--jwks", jwksFile, "--iss", "https://other.example", session}, 1, "invalid"},
		{"wrong aud", []string{"--jwks", jwksFile, "--aud", strings.Repeat("0", 64), session}, 1, "invalid"},
		{"tampered payload", []string{"--jwks", jwksFile, tamper(t, session)}, 1, "invalid"},
		{"truncated signature", []string{"--jwks", jwksFile, session[:len(session)-4]}, 1, "invalid"},
		{"not a token", []string{"--jwks", jwksFile, "hello"}, 1, "invalid"},
		{"missing JWKS file", []string{"--jwks", filepath.Join(f.dir, "nope.json"), session}, 1, "nope.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := fleetgate(t, f.dir, append([]string{"token", "verify"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", code, tc.code, tc.want, out, errOut)
			}
			if tc.code == 0 && !strings.HasPrefix(out, "valid\n") {
				t.Fatalf("stdout %q does not start with valid", out)
			}
		})
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// tamper changes a token's claims, keeping its signature.
func tamper(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte("sensor-0002"), []byte("sensor-9999"), 1)
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// demoOrigin is the demo's fixed echo origin (configs.DemoOrigin).
const demoOrigin = "127.0.0.1:9000"

func TestDemo(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	if l, err := net.Listen("tcp", demoOrigin); err != nil {
		t.Skipf("the demo origin's port is busy: %v", err)
	} else {
		l.Close()
	}
	work := t.TempDir()
	demoDir := filepath.Join(work, "demo") // a clean folder: it does not exist yet
	listen, admin := freePort(t), freePort(t)
	p := startFleetgate(t, work, "serve", "-demo-dir", demoDir, "-listen", listen, "-admin-listen", admin)
	p.waitReady(t, admin)

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
	p.signal(t, syscall.SIGINT)
	if code := p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}

	// A second start reuses the folder.
	p2 := startFleetgate(t, work, "serve", "-demo-dir", demoDir, "-listen", listen, "-admin-listen", admin)
	p2.waitReady(t, admin)
	if !strings.Contains(p2.stdout.String(), "using the demo PKI") {
		t.Errorf("second start: %s", p2.stdout)
	}
	p2.signal(t, syscall.SIGTERM)
	if code := p2.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("second start: exit %d", code)
	}
}

// TestServeZeroDrainTimeout: with drain_timeout = "0s" a SIGTERM stops the
// gateway at once, every time (the expired context used to race with the
// boot check and leave it running).
func TestServeZeroDrainTimeout(t *testing.T) {
	f := newFleet(t)
	writeServeConfig(t, f.cfg, serveParams{Listen: f.listen, Admin: f.admin, Origin: f.origin.URL, DrainTimeout: "0s"})
	for i := range 4 {
		p := startFleetgate(t, f.dir, "serve", "-c", "fleetgate.toml")
		p.waitReady(t, f.admin)
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
	p := startFleetgate(t, f.dir, "serve", "-c", "fleetgate.toml")
	p.waitReady(t, f.admin)
	go func() {
		resp, err := f.client(t, "pki", "sensor-0001").Get("https://app.fleet.test/slow")
		if err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-f.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow request never reached the origin")
	}
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `"draining"`, 1)
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 5*time.Second); code != 1 {
		t.Fatalf("exit %d after a second SIGTERM, want 1 (drain_timeout is 10s)", code)
	}
}

// TestServeRefusesStrayArguments: "fleetgate serve my.toml" (without -c)
// is a mistake, not a request for the demo.
func TestServeRefusesStrayArguments(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"serve", "my.toml"}, {"check", "my.toml"}, {"pki", "-out", "p", "-cn", "a", "b"}} {
		code, _, stderr := fleetgate(t, dir, args...)
		if code != 2 || !strings.Contains(stderr, "-c") {
			t.Errorf("%v: exit %d, %q; want 2 and a pointer to the flag", args, code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "demo")); err == nil {
		t.Error("a stray argument started the demo")
	}
}

// TestBenchExitCodes: -h is not an error, a concurrency below 1 is a usage
// error, and a run in which every request failed exits 1 (scripts must not
// read it as a measurement).
func TestBenchExitCodes(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := fleetgate(t, dir, "bench", "-h"); code != 0 {
		t.Errorf("bench -h: exit %d, want 0: %s", code, stderr)
	}
	if code, _, stderr := fleetgate(t, dir, "bench", "-concurrency", "0", "-target", "127.0.0.1:1"); code != 2 || !strings.Contains(stderr, "concurrency") {
		t.Errorf("bench -concurrency 0: exit %d, want 2: %s", code, stderr)
	}
	if code, _, stderr := fleetgate(t, dir, "bench", "-init", "pki"); code != 0 {
		t.Fatalf("bench -init: exit %d: %s", code, stderr)
	}
	closed := freePort(t) // nobody listens there
	code, _, stderr := fleetgate(t, dir, "bench", "-insecure", "-target", closed, "-dir", "pki", "-devices", "2", "-concurrency", "1", "-requests", "3")
	if code != 1 || !strings.Contains(stderr, "every request failed") {
		t.Errorf("a run where every request failed: exit %d, want 1: %s", code, stderr)
	}
}
