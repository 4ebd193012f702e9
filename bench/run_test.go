package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// checkResult asserts what any clean run of n requests must show: no
// error, every request counted, ordered percentiles; never a speed.
func checkResult(t *testing.T, r *Result, n int64) {
	t.Helper()
	if r.ErrorTotal != 0 || len(r.Errors) != 0 {
		t.Errorf("errors: %v (total %d)", r.Errors, r.ErrorTotal)
	}
	if r.Requests != n {
		t.Errorf("requests = %d, want %d", r.Requests, n)
	}
	l := r.Latency
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("percentiles out of order or zero: %+v", l)
	}
	if r.Throughput <= 0 || r.DurationS <= 0 {
		t.Errorf("throughput %v over %vs", r.Throughput, r.DurationS)
	}
	if r.ClientCPUPerReqUS < 0 {
		t.Errorf("client CPU per request %v", r.ClientCPUPerReqUS)
	}
}

func TestRunAgainstGateway(t *testing.T) {
	f := newFixture(t)
	addr := startGateway(t, f)
	tests := []struct {
		name string
		sni  string
		mode Mode
		tls  uint16
		// handshakes is the exact count expected, or -1 for "at most
		// Concurrency" (one connection per worker).
		handshakes int64
	}{
		{"fresh TLS 1.3", "devices.fleet.test", ModeFresh, tls.VersionTLS13, 200},
		{"fresh TLS 1.2", "devices.fleet.test", ModeFresh, tls.VersionTLS12, 200},
		{"keepalive", "app.fleet.test", ModeKeepalive, tls.VersionTLS13, -1},
		// A no-duration application closes after each response: keepalive
		// mode reconnects, one handshake per request.
		{"keepalive on a no-duration app", "devices.fleet.test", ModeKeepalive, tls.VersionTLS13, 200},
		{"cookie", "app.fleet.test", ModeCookie, tls.VersionTLS13, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.options(t, addr, tt.sni, tt.mode)
			o.TLSVersion = tt.tls
			o.PIDs = []int{os.Getpid()} // the gateway runs in this process
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, r, 200)
			switch {
			case tt.handshakes >= 0 && r.Handshakes != tt.handshakes:
				t.Errorf("handshakes = %d, want %d", r.Handshakes, tt.handshakes)
			case tt.handshakes < 0 && (r.Handshakes < 1 || r.Handshakes > int64(o.Concurrency)):
				t.Errorf("handshakes = %d, want 1 … %d", r.Handshakes, o.Concurrency)
			}
			if r.ServerCPUPerReqUS == nil || *r.ServerCPUPerReqUS < 0 {
				t.Errorf("server CPU per request not reported: %v", r.ServerCPUPerReqUS)
			}
		})
	}
}

func TestRunAgainstStdlib(t *testing.T) {
	f := newFixture(t)
	addr := startStdlib(t, f)
	for _, mode := range []Mode{ModeFresh, ModeKeepalive} {
		t.Run(string(mode), func(t *testing.T) {
			o := f.options(t, addr, "bench.fleet.test", mode)
			o.Warmup = 50 * time.Millisecond
			o.BodySize = 100
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, r, 200)
		})
	}
}

// A device from another CA is refused: fleetgate answers 403 (status_403),
// the standard-library server refuses the handshake (tls_alert, seen on
// the first read in TLS 1.3), and the report lists the kinds.
func TestRunCountsErrorsByKind(t *testing.T) {
	f := newFixture(t)
	root := pki.MustRoot(pki.Root("foreign root"))
	dev := root.MustIssue(pki.Device("intruder"))
	for _, tt := range []struct {
		name, addr, sni, kind string
	}{
		{"fleetgate", startGateway(t, f), "app.fleet.test", "status_403"},
		{"stdlib", startStdlib(t, f), "bench.fleet.test", "tls_alert"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := f.options(t, tt.addr, tt.sni, ModeKeepalive)
			o.Devices = []tls.Certificate{dev.TLSCertificate()}
			o.Requests = 20
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests != 0 || r.ErrorTotal != 20 || r.Errors[tt.kind] != 20 {
				t.Errorf("requests %d, errors %v (total %d); want 20 × %s", r.Requests, r.Errors, r.ErrorTotal, tt.kind)
			}
			var text bytes.Buffer
			if err := r.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text.String(), tt.kind+"=20") {
				t.Errorf("the text report does not list the errors:\n%s", text.String())
			}
		})
	}
}

// Nobody listening: dial errors, and the run still ends by itself.
func TestRunDialErrors(t *testing.T) {
	f := newFixture(t)
	o := f.options(t, "127.0.0.1:1", "bench.fleet.test", ModeFresh)
	o.Requests = 10
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors["dial"] != 10 {
		t.Errorf("errors %v, want 10 dial errors", r.Errors)
	}
}

// A run bounded by time alone stops by itself, and the JSON report holds
// the fields scripts read.
func TestRunDurationAndJSON(t *testing.T) {
	f := newFixture(t)
	addr := startStdlib(t, f)
	o := f.options(t, addr, "bench.fleet.test", ModeKeepalive)
	o.Requests = 0
	o.Duration = 200 * time.Millisecond
	o.Label = "stdlib"
	var progress bytes.Buffer
	o.Progress = &syncWriter{w: &progress}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.ErrorTotal != 0 || r.Requests == 0 {
		t.Errorf("requests %d, errors %v", r.Requests, r.Errors)
	}
	var out bytes.Buffer
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	for _, k := range []string{"label", "requests", "errors", "throughput_rps", "latency_us", "client_cpu_us_per_req", "client_cpu_s", "duration_s", "mode", "tls"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON report has no %q: %s", k, out.String())
		}
	}
	if _, ok := m["server_cpu_us_per_req"]; ok {
		t.Errorf("server CPU reported without PIDs: %s", out.String())
	}
	if _, ok := m["client_core_cpu_s"]; ok {
		t.Errorf("client core CPU reported without its PIDs: %s", out.String())
	}
	if r.ClientCPUS <= 0 || r.ClientCoreBusy() <= 0 || r.ClientCoreBusy() > 2 {
		t.Errorf("client CPU %.3fs over %.3fs: core %.2f busy", r.ClientCPUS, r.DurationS, r.ClientCoreBusy())
	}

	// The client core's other processes (here: this one again) add to the
	// client's own CPU.
	o.ClientCorePIDs = []int{os.Getpid()}
	o.Progress = nil
	r, err = Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.ClientCoreCPUS == nil || *r.ClientCoreCPUS < r.ClientCPUS || len(r.ClientCorePIDs) != 1 {
		t.Errorf("client core CPU %v, client's own %.3fs, PIDs %v", r.ClientCoreCPUS, r.ClientCPUS, r.ClientCorePIDs)
	}
}

// In cookie mode, a server that sets no cookie is a setup error that says
// what to check.
func TestRunCookieModeWithoutCookie(t *testing.T) {
	f := newFixture(t)
	addr := startStdlib(t, f)
	_, err := Run(context.Background(), f.options(t, addr, "bench.fleet.test", ModeCookie))
	if err == nil || !strings.Contains(err.Error(), "CF_Authorization") {
		t.Fatalf("err = %v, want one naming the missing cookie", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	f := newFixture(t)
	base := func() Options { return f.options(t, "127.0.0.1:8443", "", ModeFresh) }
	tests := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no target", func(o *Options) { o.Target = "" }, "no target"},
		{"target without port", func(o *Options) { o.Target = "localhost" }, "target"},
		{"no devices", func(o *Options) { o.Devices = nil }, "no device"},
		{"no CA", func(o *Options) { o.RootCAs = nil }, "-cacert"},
		{"mlkem on 1.2", func(o *Options) { o.Group, o.TLSVersion = tls.X25519MLKEM768, tls.VersionTLS12 }, "TLS 1.3"},
		{"bad mode", func(o *Options) { o.Mode = "burst" }, "mode"},
		{"bad path", func(o *Options) { o.Path = "x" }, "path"},
		{"spread off loopback", func(o *Options) { o.Target, o.SourceIPs = "192.0.2.1:443", 10 }, "loopback"},
		{"unreadable PID", func(o *Options) { o.PIDs = []int{1 << 30} }, "process"},
		{"unreadable client core PID", func(o *Options) { o.ClientCorePIDs = []int{1 << 30} }, "process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.mod(&o)
			_, err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	b := base()
	b.Duration = 0
	o, err := b.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.SNI != "127.0.0.1" || o.Host != "127.0.0.1" || o.Duration != MaxRunTime || o.Concurrency != 4 {
		t.Errorf("defaults: SNI %q Host %q Duration %v Concurrency %d", o.SNI, o.Host, o.Duration, o.Concurrency)
	}
}

func TestParsers(t *testing.T) {
	if m, err := ParseMode("KeepAlive"); err != nil || m != ModeKeepalive {
		t.Errorf("ParseMode: %v %v", m, err)
	}
	if v, err := ParseTLSVersion("1.2"); err != nil || v != tls.VersionTLS12 {
		t.Errorf("ParseTLSVersion: %v %v", v, err)
	}
	for in, want := range map[string]tls.CurveID{"x25519": tls.X25519, "p256": tls.CurveP256, "mlkem": tls.X25519MLKEM768} {
		if g, err := ParseGroup(in); err != nil || g != want {
			t.Errorf("ParseGroup(%q) = %v, %v", in, g, err)
		}
	}
	if _, err := ParseGroup("x448"); err == nil {
		t.Error("ParseGroup(x448): no error")
	}
	if pids, err := ParsePIDs(" 12,34 ,"); err != nil || len(pids) != 2 || pids[0] != 12 || pids[1] != 34 {
		t.Errorf("ParsePIDs: %v %v", pids, err)
	}
	if _, err := ParsePIDs("12,x"); err == nil {
		t.Error("ParsePIDs(12,x): no error")
	}
}

func TestParseStatTicks(t *testing.T) {
	// A command name with a space and a ')' inside; utime 7, stime 5,
	// cutime 3, cstime 2.
	line := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 3 2 20 0 1 0 123 456 78 18446744073709551615\n"
	got, err := parseStatTicks([]byte(line))
	if err != nil || got != 17 {
		t.Fatalf("parseStatTicks = %d, %v; want 17", got, err)
	}
	if _, err := parseStatTicks([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("short line: no error")
	}
	if d, err := ProcCPU(os.Getpid()); err != nil || d < 0 {
		t.Errorf("ProcCPU(self) = %v, %v", d, err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		stage  string
		err    error
		reused bool
		want   string
	}{
		{"deadline", "read", os.ErrDeadlineExceeded, false, "timeout"},
		{"context deadline", "dial", context.DeadlineExceeded, false, "timeout"},
		{"EOF on a reused connection", "read", errEOF(), true, "closed"},
		{"EOF on a new connection", "read", errEOF(), false, "read"},
		{"handshake", "handshake", os.ErrInvalid, false, "handshake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.stage, tt.err, tt.reused); got != tt.want {
				t.Errorf("classify = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadFleet(t *testing.T) {
	dir := t.TempDir()
	if created, err := InitPKI(dir); err != nil || !created {
		t.Fatalf("InitPKI = %v, %v", created, err)
	}
	if created, err := InitPKI(dir); err != nil || created {
		t.Fatalf("InitPKI again = %v, %v; want the folder kept", created, err)
	}
	first, err := LoadFleet(FleetOptions{Dir: dir, N: 3})
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadFleet(FleetOptions{Dir: dir, N: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if !bytes.Equal(first[i].Certificate[0], again[i].Certificate[0]) {
			t.Errorf("device %d was regenerated", i+1)
		}
		if len(first[i].Certificate) != 2 {
			t.Errorf("device %d sends %d certificates, want leaf + intermediate", i+1, len(first[i].Certificate))
		}
		if cn := again[i].Leaf.Subject.CommonName; cn != DeviceName(i+1) {
			t.Errorf("device %d is %q", i+1, cn)
		}
	}

	// A folder of devices made elsewhere (no CA in it) serves as it is,
	// until a device is missing.
	bare := t.TempDir()
	if err := os.CopyFS(filepath.Join(bare, DevicesDirName), os.DirFS(filepath.Join(dir, DevicesDirName))); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadFleet(FleetOptions{Dir: bare, N: 3}); err != nil || len(got) != 3 {
		t.Fatalf("devices without a CA: %d, %v", len(got), err)
	}
	if _, err := LoadFleet(FleetOptions{Dir: bare, N: 4}); err == nil || !strings.Contains(err.Error(), "-ca-cert") {
		t.Errorf("a missing device without a CA: err = %v", err)
	}

	// A CA given by files: a root issues the devices directly (no chain
	// to send), in a folder of its own.
	other := t.TempDir()
	root := pki.MustRoot(pki.Root("given root"))
	caCert, caKey := filepath.Join(other, "ca.pem"), filepath.Join(other, "ca-key.pem")
	if err := root.WriteFiles(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	given, err := LoadFleet(FleetOptions{Dir: other, N: 1, CACertFile: caCert, CAKeyFile: caKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(given[0].Certificate) != 1 || given[0].Leaf.CheckSignatureFrom(root.Cert) != nil {
		t.Errorf("device of a given root: %d certificates", len(given[0].Certificate))
	}
	// The first folder's devices were not issued by that root.
	_, err = LoadFleet(FleetOptions{Dir: dir, N: 1, CACertFile: caCert, CAKeyFile: caKey})
	if err == nil || !strings.Contains(err.Error(), "another CA") {
		t.Errorf("devices of another CA: err = %v", err)
	}
	if _, err := LoadFleet(FleetOptions{Dir: dir, N: 1, CACertFile: caCert}); err == nil {
		t.Error("-ca-cert without -ca-key: no error")
	}
	if _, err := LoadFleet(FleetOptions{Dir: dir, N: 1, CACertFile: caCert, CAKeyFile: filepath.Join(dir, RootKeyFile)}); err == nil ||
		!strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched CA key: err = %v", err)
	}
}
