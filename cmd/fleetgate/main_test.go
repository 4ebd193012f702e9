package main

// The commands run in process, through run(), as main runs them: fast, and
// counted by coverage. Only the tests that signal a running `fleetgate serve`
// (SIGHUP reload, SIGTERM drain, a second signal; see serve_test.go) start
// the real binary, which is built on first use: serve runs until a signal,
// and a signal cannot be aimed at one test inside the test process.
//
// run writes only to the writers it is given, uses a flag set of its own per
// command and never exits the process, so the in-process tests run in
// parallel.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// buildFlags gains -race when the tests run with -race (race_test.go), so
// the binary's own races fail the serve tests.
var buildFlags []string

var (
	// binDir holds the built binary; TestMain makes it and removes it.
	binDir string
	// buildOnce builds the binary for the first test that needs it.
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fleetgateBinary returns the path of the fleetgate binary, building it on
// the first call.
func fleetgateBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		path := filepath.Join(binDir, "fleetgate")
		args := append([]string{"build", "-o", path}, buildFlags...)
		if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building fleetgate: %v\n%s", err, out)
			return
		}
		binary = path
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// childEnv is the binary's environment: a race-enabled build exits at once
// (the race runtime otherwise sleeps a second at exit) and still fails with
// exit code 66 when it saw a race.
func childEnv() []string {
	return append(os.Environ(), "GORACE=atexit_sleep_ms=0 exitcode=66")
}

// runInProcess calls run with args, as main does, and returns its exit code
// and output. Paths in args must be absolute: the working directory is the
// test process's, shared by every test. A command that does not return
// within a minute fails the test rather than hang it.
func runInProcess(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e testkit.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &o, &e) }()
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("fleetgate %v did not return within a minute\nstdout:\n%s\nstderr:\n%s", args, o.String(), e.String())
	}
	return code, o.String(), e.String()
}

// fleetgate runs the binary to completion in dir and returns its exit code
// and output.
func fleetgate(t testing.TB, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fleetgateBinary(t), args...)
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

// process is a running `fleetgate serve`, the binary.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *testkit.Buffer
	done           chan struct{}
	err            error
}

// startFleetgate starts the binary in dir; it is killed at the end of the
// test if it still runs, and its output is logged if the test failed.
func startFleetgate(t testing.TB, dir string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(fleetgateBinary(t), args...), stdout: &testkit.Buffer{}, stderr: &testkit.Buffer{}, done: make(chan struct{})}
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

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls the admin listener's /readyz until it answers 200.
func (p *process) waitReady(t testing.TB, admin string) {
	t.Helper()
	if !p.awaitReady(t, admin) {
		t.Fatalf("fleetgate exited before it was ready: %v", p.err)
	}
}

// awaitReady is waitReady that reports false when the process exits first.
func (p *process) awaitReady(t testing.TB, admin string) bool {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	testkit.WaitFor(t, "fleetgate to be ready", 30*time.Second, func() bool {
		if p.exited() {
			return true
		}
		resp, err := c.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return !p.exited()
}

// waitLog waits until the process's stderr holds n occurrences of s. Take
// n from p.stderr.Count(s) before the action, plus one, so that a line
// written before the action cannot satisfy it.
func (p *process) waitLog(t testing.TB, s string, n int) {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("%d × %q in stderr", n, s), 20*time.Second, func() bool {
		return p.stderr.Count(s) >= n
	})
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	return testkit.FreePort(t)
}

// serveParams fill the configuration of the serve tests.
type serveParams struct {
	Listen, Admin, Origin string
	SecondCA              bool   // trust pki2/ on app.fleet.test
	DrainTimeout          string // "10s" when empty
}

// writeServeConfig writes, at path, a configuration of the PKI made by runPKI
// in path's folder (pki/, and pki2/ with SecondCA): two applications,
// devices.fleet.test (sensor-0001 only, no session) and app.fleet.test (any
// device of the CA, 24h sessions).
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

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	code, out, _ := runInProcess(t, "version")
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
		{"token verify usage names --cacert", []string{"token", "verify", "-h"}, "Usage: fleetgate token verify --jwks URL|FILE [--aud TAG] [--iss URL] [--cacert FILE] TOKEN"},
		{"token usage names --cacert", []string{"token", "-h"}, "[--cacert FILE] TOKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runInProcess(t, tc.args...)
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
			t.Parallel()
			if code, out, errOut := runInProcess(t, tc.args...); code != 2 {
				t.Fatalf("exit %d, want 2\n%s%s", code, out, errOut)
			}
		})
	}
}
