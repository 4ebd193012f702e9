package bench

// The test harness: one bench PKI per test binary, the origin, and a real
// fleetgate gateway or the standard-library proxy running in-process.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/gateway"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// testDir is a bench PKI folder shared by the tests of the package, with
// four devices.
var testDir = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "fleetgate-bench-test-")
	if err != nil {
		return "", err
	}
	if _, err := InitPKI(dir); err != nil {
		return "", err
	}
	if _, err := LoadFleet(FleetOptions{Dir: dir, N: 4}); err != nil {
		return "", err
	}
	return dir, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := testDir(); err == nil {
		_ = os.RemoveAll(dir)
	}
	os.Exit(code)
}

// fixture is the shared PKI with its fleet loaded.
type fixture struct {
	dir   string
	fleet []tls.Certificate
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir, err := testDir()
	if err != nil {
		t.Fatalf("bench PKI: %v", err)
	}
	fleet, err := LoadFleet(FleetOptions{Dir: dir, N: 4})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, fleet: fleet}
}

// options are Options for a short run against addr with the fixture's
// fleet and CA.
func (f *fixture) options(t testing.TB, addr, sni string, mode Mode) Options {
	t.Helper()
	roots, err := LoadRoots(filepath.Join(f.dir, RootFile))
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Target: addr, SNI: sni, Devices: f.fleet, RootCAs: roots, Mode: mode,
		Concurrency: 4, Requests: 200, Duration: time.Minute, Timeout: 20 * time.Second,
	}
}

func startOrigin(t testing.TB) *Server {
	t.Helper()
	o, err := StartOrigin("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// gatewayTOML is the configuration of the gateway under test:
// devices.fleet.test has no session (a fresh handshake per request),
// app.fleet.test a 24h session cookie; both admit any device of the fleet.
var gatewayTOML = template.Must(template.New("toml").Parse(`
[gateway]
listen = "{{.Listen}}"
admin_listen = ""
event_loops = 2
handshake_workers = 2

[tokens]
signing_key_file = "token.pem"

[[client_cas]]
name = "bench-fleet"
pem_file = "ca-chain.pem"
associated_hostnames = ["devices.fleet.test", "app.fleet.test"]

[[applications]]
name = "devices"
domain = "devices.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
session_duration = "0s"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]

[[applications]]
name = "app"
domain = "app.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
session_duration = "24h"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
`))

// startGateway runs fleetgate in-process in front of a new origin and
// returns its address.
func startGateway(t testing.TB, f *fixture) string {
	t.Helper()
	origin := startOrigin(t)
	return runGateway(t, f, "bench.toml", gatewayTOML, map[string]string{"Origin": "http://" + origin.Addr()})
}

// runGateway runs fleetgate in-process on the configuration tmpl makes of
// vars and a free listen address, and returns its address. The port was
// free a moment before the bind; should another test process have taken
// it meanwhile, another is picked, up to five times, as the gateway
// package's harness does.
func runGateway(t testing.TB, f *fixture, name string, tmpl *template.Template, vars map[string]string) string {
	t.Helper()
	var srv *gateway.Server
	runErr := make(chan error, 1)
	testkit.BootRetrying(t, func(int) (<-chan struct{}, <-chan error) {
		listen, err := gateway.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		vars["Listen"] = listen
		var cfg bytes.Buffer
		if err := tmpl.Execute(&cfg, vars); err != nil {
			t.Fatal(err)
		}
		srv, err = gateway.New(gateway.Options{
			Load:   func() (*configs.Config, error) { return configs.Parse(name, cfg.Bytes(), f.dir) },
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() { runErr <- srv.Run() }()
		return srv.Booted(), runErr
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		select {
		case <-runErr:
		case <-time.After(10 * time.Second):
			t.Error("gateway Run did not return after Shutdown")
		}
	})
	return srv.Addr()
}

// startStdlib runs the standard-library proxy in front of a new origin.
func startStdlib(t testing.TB, f *fixture) string {
	t.Helper()
	origin := startOrigin(t)
	s, err := StartStdlib(StdlibOptions{
		Listen:       "127.0.0.1:0",
		CertFile:     filepath.Join(f.dir, ServerFile),
		KeyFile:      filepath.Join(f.dir, ServerKeyFile),
		ClientCAFile: filepath.Join(f.dir, RootFile),
		Upstream:     "http://" + origin.Addr(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Addr()
}

// syncWriter serializes writes (the progress goroutine writes while the
// test may read).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// errEOF is an io.EOF wrapped as crypto/tls and net/http return it.
func errEOF() error { return fmt.Errorf("reading: %w", io.EOF) }
