package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"
)

// tcpGatewayTOML: bench.fleet.test is a tcp application in front of the
// echo origin (no PROXY header: the echo must carry the device's bytes
// only); app.fleet.test is one whose policy admits no device of the fleet.
var tcpGatewayTOML = template.Must(template.New("toml").Parse(`
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
associated_hostnames = ["bench.fleet.test", "app.fleet.test"]

[[applications]]
name = "relay"
domain = "bench.fleet.test"
protocol = "tcp"
origin = "tcp://{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]

[[applications]]
name = "closed"
domain = "app.fleet.test"
protocol = "tcp"
origin = "tcp://{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"

[[applications.policies]]
name = "nobody of the fleet"
decision = "non_identity"
include = [{ common_name = "not-a-bench-device" }]
`))

// startEcho runs the TCP echo origin for one test.
func startEcho(t testing.TB) *TCPServer {
	t.Helper()
	e, err := StartEchoOrigin("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// startTCPGateway runs fleetgate in-process with tcpGatewayTOML in front of
// origin and returns its address.
func startTCPGateway(t testing.TB, f *fixture, origin string) string {
	t.Helper()
	return runGateway(t, f, "bench-tcp.toml", tcpGatewayTOML, map[string]string{"Origin": origin})
}

// startGoRelay runs the Go relay with the fixture's certificates (or those
// of pkiDir when set) in front of upstream.
func startGoRelay(t testing.TB, f *fixture, pkiDir, upstream string) string {
	t.Helper()
	if pkiDir == "" {
		pkiDir = f.dir
	}
	s, err := StartGoRelay(GoRelayOptions{
		Listen: "127.0.0.1:0", Upstream: upstream,
		CertFile: filepath.Join(pkiDir, ServerFile), KeyFile: filepath.Join(pkiDir, ServerKeyFile),
		ClientCAFile: filepath.Join(pkiDir, RootFile),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Addr()
}

// tcpOptions are Options for a short ModeTCP run: 120 messages, 10 per
// connection.
func (f *fixture) tcpOptions(t testing.TB, addr string, size int) Options {
	o := f.options(t, addr, "bench.fleet.test", ModeTCP)
	o.Requests, o.Messages, o.MessageSize = 120, 10, size
	o.Concurrency = 3
	o.PIDs = []int{os.Getpid()} // the relay runs in this process
	return o
}

// Messages of 64 B and 4 KiB echo intact through fleetgate's tcp
// application and through the Go relay, in TLS 1.3 and 1.2; each connection
// carries Messages messages, then closes.
func TestRunTCP(t *testing.T) {
	f := newFixture(t)
	echo := startEcho(t)
	relays := map[string]string{
		"fleetgate": startTCPGateway(t, f, echo.Addr()),
		"gorelay":   startGoRelay(t, f, "", echo.Addr()),
	}
	tests := []struct {
		name  string
		relay string
		size  int
		tls   uint16
	}{
		{"fleetgate 64 B", "fleetgate", 64, tls.VersionTLS13},
		{"fleetgate 4 KiB TLS 1.2", "fleetgate", 4096, tls.VersionTLS12},
		{"gorelay 64 B TLS 1.2", "gorelay", 64, tls.VersionTLS12},
		{"gorelay 4 KiB", "gorelay", 4096, tls.VersionTLS13},
		// Smaller than the sequence stamp: still echoed and checked.
		{"fleetgate 3 B", "fleetgate", 3, tls.VersionTLS13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.tcpOptions(t, relays[tt.relay], tt.size)
			o.TLSVersion = tt.tls
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.ErrorTotal != 0 || r.Requests != 120 {
				t.Fatalf("%d messages, errors %v; want 120 and none", r.Requests, r.Errors)
			}
			s := r.TCP
			if s == nil || s.Messages != 120 || s.MessageSize != tt.size || s.MessagesPerConn != 10 {
				t.Fatalf("tcp stats %+v", s)
			}
			// 120 messages, 10 per connection, over 3 workers: each worker
			// opens ceil(its share / 10) connections.
			if s.Connects < 12 || s.Connects > 12+int64(o.Concurrency) || r.Handshakes != s.Connects {
				t.Errorf("connects %d (handshakes %d), want 12 … %d", s.Connects, r.Handshakes, 12+o.Concurrency)
			}
			if s.MessagesPerS <= 0 || s.ConnectsPerS <= 0 || r.Latency.P99 <= 0 || s.ConnectLatency.P99 <= 0 {
				t.Errorf("rates or latencies missing: %+v, message latency %+v", s, r.Latency)
			}
			if s.ServerCPUPerMessageUS == nil || s.ServerCPUPerConnectUS == nil ||
				*s.ServerCPUPerConnectUS < *s.ServerCPUPerMessageUS {
				t.Errorf("server CPU per message %v, per connect %v", s.ServerCPUPerMessageUS, s.ServerCPUPerConnectUS)
			}
			var text, js bytes.Buffer
			if err := r.WriteText(&text); err != nil || !strings.Contains(text.String(), "120 echoed, 0 errors") ||
				!strings.Contains(text.String(), "connects/s") {
				t.Errorf("text: %q, %v", text.String(), err)
			}
			if err := r.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"messages_per_s":`) {
				t.Errorf("JSON: %q, %v", js.String(), err)
			}
		})
	}
}

// Refused devices are counted as errors, by kind: fleetgate's policy admits
// nobody of the fleet (a bad_certificate alert the TLS 1.3 client reads
// after its handshake), and a Go relay trusting another CA refuses them in
// the handshake.
func TestRunTCPRefused(t *testing.T) {
	f := newFixture(t)
	echo := startEcho(t)
	other := t.TempDir()
	if _, err := InitPKI(other); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, addr, sni string
	}{
		{"fleetgate policy", startTCPGateway(t, f, echo.Addr()), "app.fleet.test"},
		{"gorelay other CA", startGoRelay(t, f, other, echo.Addr()), "bench.fleet.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.tcpOptions(t, tt.addr, 64)
			o.SNI, o.Requests, o.Insecure, o.RootCAs = tt.sni, 6, true, nil
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests != 0 || r.Errors["tls_alert"] != 6 || r.TCP.Messages != 0 {
				t.Errorf("%d messages, errors %v; want 6 × tls_alert", r.Requests, r.Errors)
			}
		})
	}
}

// A relay that changes a byte is caught: the echo must come back intact.
func TestRunTCPMismatch(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bad := serveTCP(ln, func(_ *TCPServer, c net.Conn) {
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			buf[n-1] ^= 1
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { _ = bad.Close() })
	o := f.tcpOptions(t, startGoRelay(t, f, "", bad.Addr()), 64)
	o.Requests = 4
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 0 || r.Errors["mismatch"] != 4 {
		t.Errorf("%d messages, errors %v; want 4 × mismatch", r.Requests, r.Errors)
	}
}

// tcp-hold: idle relayed connections, each after one echo, all still open
// when counted; closing the Go relay closes its connections (both sides).
func TestMeasureIdleRelayed(t *testing.T) {
	f := newFixture(t)
	echo := startEcho(t)
	for _, name := range []string{"fleetgate", "gorelay"} {
		t.Run(name, func(t *testing.T) {
			addr := ""
			if name == "fleetgate" {
				addr = startTCPGateway(t, f, echo.Addr())
			} else {
				addr = startGoRelay(t, f, "", echo.Addr())
			}
			o := f.options(t, addr, "bench.fleet.test", ModeTCPHold)
			res, err := MeasureIdle(context.Background(), IdleOptions{Run: o, N: 12, PID: os.Getpid(), PerSource: 5, Settle: time.Millisecond, Echo: 4096, Label: name})
			if err != nil {
				t.Fatal(err)
			}
			if res.Open != 12 || len(res.Errors) != 0 || res.Echo != 4096 {
				t.Errorf("open %d of 12, errors %v, echo %d", res.Open, res.Errors, res.Echo)
			}
			var b strings.Builder
			if err := res.WriteText(&b); err != nil || !strings.Contains(b.String(), "idle relayed mTLS connections [") {
				t.Errorf("text: %q, %v", b.String(), err)
			}
		})
	}
}

// Closing a TCPServer ends the connections it holds.
func TestTCPServerCloseEndsConnections(t *testing.T) {
	echo, err := StartEchoOrigin("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", echo.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, 4)
	if _, err := io.ReadFull(c, back); err != nil || string(back) != "ping" {
		t.Fatalf("echo %q, %v", back, err)
	}
	if err := echo.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(back); err == nil {
		t.Errorf("read %d bytes after the server closed, want EOF", n)
	}
	if err := <-echo.Done(); err != nil {
		t.Errorf("done: %v", err)
	}
}

func TestTCPOptionsValidation(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"hold is not a run", func(o *Options) { o.Mode = ModeTCPHold }, "tcp-hold"},
		{"message too large", func(o *Options) { o.MessageSize = MaxMessageSize + 1 }, "bytes"},
		{"negative messages", func(o *Options) { o.Messages = -1 }, "messages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.tcpOptions(t, "127.0.0.1:1", 64)
			tt.edit(&o)
			if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one naming %q", err, tt.want)
			}
		})
	}
	o, err := f.tcpOptions(t, "127.0.0.1:1", 0).withDefaults()
	if err != nil || o.MessageSize != DefaultMessageSize {
		t.Errorf("default message size %d, %v", o.MessageSize, err)
	}
	if _, err := StartGoRelay(GoRelayOptions{Listen: "127.0.0.1:0", Upstream: "no-port"}); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("go relay with a bad upstream: %v", err)
	}
	if _, err := MeasureIdle(context.Background(), IdleOptions{Run: o, N: 1, PID: os.Getpid(), Echo: -1}); err == nil {
		t.Error("a negative echo size was accepted")
	}
}
