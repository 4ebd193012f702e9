package gateway

// The end-to-end harness of the gateway's tests: a PKI generated at run time,
// a TOML configuration written to a temporary folder, an echo origin (plus a
// held and an unreachable variant), a running Server on loopback, and client
// helpers (Go's net/http and crypto/tls, raw bytes over TLS, curl).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
)

// The application domains the harness configures.
const (
	hIoT  = "iot.fleet.test"  // no duration, non_identity common_name sensor-0001, deny sensor-retired
	hApp  = "app.fleet.test"  // 24h session, non_identity valid_certificate
	hSvc  = "svc.fleet.test"  // service_auth_401, non_identity common_name sensor-0001
	hFwd  = "fwd.fleet.test"  // forward_client_cert, valid_certificate
	hDown = "down.fleet.test" // origin unreachable
)

var harnessDomains = []string{hIoT, hApp, hSvc, hFwd, hDown}

// device is a client certificate with the chain a device sends.
type device struct {
	name string
	cert *pki.Cert
	tls  tls.Certificate
}

// testPKI is the PKI shared by every test of the package (generated once).
type testPKI struct {
	root, inter   *pki.Cert // the fleet CA; also issues the gateway's server certificate
	root2, inter2 *pki.Cert // a second fleet CA, added by a reload
	foreignRoot   *pki.Cert // a CA no configuration trusts
	server        *pki.Cert
	tokenKey      []byte // PEM

	sensor1, sensor2, retired, expired *device // of root/inter
	newFleet                           *device // of root2/inter2
	foreign                            *device // of foreignRoot
}

var sharedPKI = sync.OnceValue(func() *testPKI {
	p := &testPKI{}
	p.root = pki.MustRoot(pki.Root("Fleet Root"))
	p.inter = p.root.MustIssue(pki.Intermediate("Fleet Intermediate"))
	p.root2 = pki.MustRoot(pki.Root("Fleet Root 2"))
	p.inter2 = p.root2.MustIssue(pki.Intermediate("Fleet Intermediate 2"))
	p.foreignRoot = pki.MustRoot(pki.Root("Foreign Root"))
	foreignInter := p.foreignRoot.MustIssue(pki.Intermediate("Foreign Intermediate"))
	p.server = p.inter.MustIssue(pki.Server(harnessDomains...))
	dev := func(issuer *pki.Cert, o pki.Options) *device {
		c := issuer.MustIssue(o)
		return &device{name: o.CommonName, cert: c, tls: c.TLSCertificate(issuer)}
	}
	p.sensor1 = dev(p.inter, pki.Device("sensor-0001"))
	p.sensor2 = dev(p.inter, pki.Device("sensor-0002"))
	p.retired = dev(p.inter, pki.Device("sensor-retired"))
	exp := pki.Device("sensor-0001")
	exp.NotBefore, exp.NotAfter = time.Now().Add(-72*time.Hour), time.Now().Add(-24*time.Hour)
	p.expired = dev(p.inter, exp)
	p.newFleet = dev(p.inter2, pki.Device("sensor-0101"))
	p.foreign = dev(foreignInter, pki.Device("sensor-0001"))
	key, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		panic(err)
	}
	p.tokenKey = (&pki.Cert{Key: key}).KeyPEM()
	return p
})

// cfgParams are the parts of the harness configuration a test may change.
type cfgParams struct {
	Listen        string
	Origin        string // the echo origin, http://127.0.0.1:port
	DownOrigin    string // a port nobody listens on
	OriginTimeout string
	DrainTimeout  string
	// FleetOnApp associates the first fleet CA with app.fleet.test.
	FleetOnApp bool
	// SecondCA adds the second fleet CA, associated with app.fleet.test.
	SecondCA bool
	// MaxBodyBytes is [gateway].max_body_bytes ("64KiB" when empty).
	MaxBodyBytes string
	// MaxConnectionAge is [gateway].max_connection_age (the default when empty).
	MaxConnectionAge string
	// IdleTimeout is [gateway].idle_timeout ("10s" when empty).
	IdleTimeout string
	// HandshakeTimeout is [gateway].handshake_timeout ("5s" when empty).
	HandshakeTimeout string
	// CRL gives the fleet CA the CRL file fleet.crl (the harness writes one
	// that revokes nothing; tests replace it).
	CRL bool
	// CRLStale is the fleet CA's crl_stale ("warn" when empty).
	CRLStale string
	// Wildcard adds the application "wild" on *.wild.fleet.test (24h
	// sessions, fleet CA) and makes it the default site for ClientHellos
	// without SNI, and "exact-under-wild" on exact.wild.fleet.test (fleet
	// CA, sensor-0002 only), a name the wildcard also covers.
	Wildcard bool
	// OriginCAFile is app.fleet.test's origin_ca_file ("" for none).
	OriginCAFile string
	// Now, when set, is the gateway's clock (not part of the file).
	Now func() time.Time
	// Extra is TOML appended to the file as is (more client CAs and
	// applications, such as the tcp applications of relay_test.go).
	Extra string
}

var cfgTemplate = template.Must(template.New("toml").Parse(`
[gateway]
listen = "{{.Listen}}"
admin_listen = "127.0.0.1:0"
issuer = "https://access.fleet.test"
event_loops = 2
handshake_timeout = "{{with .HandshakeTimeout}}{{.}}{{else}}5s{{end}}"
header_timeout = "2s"
idle_timeout = "{{with .IdleTimeout}}{{.}}{{else}}10s{{end}}"
{{with .MaxConnectionAge}}max_connection_age = "{{.}}"{{end}}
drain_timeout = "{{.DrainTimeout}}"
{{if .Wildcard}}default_site = "*.wild.fleet.test"{{end}}
max_header_bytes = "4KiB"
max_header_count = 20
max_body_bytes = "{{with .MaxBodyBytes}}{{.}}{{else}}64KiB{{end}}"
origin_connect_timeout = "1s"
origin_timeout = "{{.OriginTimeout}}"

[tokens]
signing_key_file = "token.pem"

[[client_cas]]
name = "fleet"
pem_file = "ca-chain.pem"
associated_hostnames = ["iot.fleet.test", "svc.fleet.test", "fwd.fleet.test", "down.fleet.test"{{if .FleetOnApp}}, "app.fleet.test"{{end}}{{if .Wildcard}}, "*.wild.fleet.test", "exact.wild.fleet.test"{{end}}]
{{if .CRL}}crl_files = ["fleet.crl"]{{end}}
{{with .CRLStale}}crl_stale = "{{.}}"{{end}}
{{if .SecondCA}}
[[client_cas]]
name = "fleet-2"
pem_file = "ca2-chain.pem"
associated_hostnames = ["app.fleet.test"]
{{end}}
[[applications]]
name = "iot"
domain = "iot.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
session_duration = "0s"

[[applications.policies]]
name = "sensor-0001 only"
decision = "non_identity"
include = [{ common_name = "sensor-0001" }]

[[applications.policies]]
name = "retired"
decision = "deny"
include = [{ common_name = "sensor-retired" }]

[[applications]]
name = "app"
domain = "app.fleet.test"
origin = "{{.Origin}}"
{{with .OriginCAFile}}origin_ca_file = "{{.}}"{{end}}
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
session_duration = "24h"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]

[[applications]]
name = "svc"
domain = "svc.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
service_auth_401 = true

[[applications.policies]]
name = "sensor-0001 service"
decision = "non_identity"
include = [{ common_name = "sensor-0001" }]

[[applications]]
name = "fwd"
domain = "fwd.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
forward_client_cert = true

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]

[[applications]]
name = "down"
domain = "down.fleet.test"
origin = "{{.DownOrigin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
{{if .Wildcard}}
[[applications]]
name = "exact-under-wild"
domain = "exact.wild.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"

[[applications.policies]]
name = "sensor-0002 only"
decision = "non_identity"
include = [{ common_name = "sensor-0002" }]

[[applications]]
name = "wild"
domain = "*.wild.fleet.test"
origin = "{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
session_duration = "24h"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
{{end}}
{{.Extra}}`))

// echo is what the test origin answers: the request as it arrived.
type echo struct {
	Method  string      `json:"method"`
	Proto   string      `json:"proto"`
	Path    string      `json:"path"`
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
}

// origin is the test origin: it echoes every request as JSON; /hold waits
// (after telling the test it arrived) until the test releases it, the
// gateway gives up, or the test ends; /close closes the connection without
// an answer and /garbage answers something that is not HTTP.
type origin struct {
	srv     *httptest.Server
	arrived chan string   // the path of each /hold request, as it arrives
	release chan struct{} // one receive per held request
	done    chan struct{} // closed at cleanup: every handler returns
}

func startOrigin(t testing.TB) *origin {
	o := &origin{arrived: make(chan string, 16), release: make(chan struct{}), done: make(chan struct{})}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/close", "/garbage": // a broken origin: no HTTP answer
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			if r.URL.Path == "/garbage" {
				_, _ = io.WriteString(conn, "SSH-2.0-not-http\r\n\r\n")
			}
			_ = conn.Close()
			return
		}
		if strings.HasPrefix(r.URL.Path, "/hold") {
			o.arrived <- r.URL.Path
			select {
			case <-o.release:
			case <-r.Context().Done():
				return
			case <-o.done:
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Origin", "echo")
		_ = json.NewEncoder(w).Encode(echo{Method: r.Method, Proto: r.Proto, Path: r.URL.RequestURI(), Host: r.Host, Headers: r.Header, Body: string(body)})
	}))
	t.Cleanup(func() {
		close(o.done)
		o.srv.Close()
	})
	return o
}

// waitArrived waits for a held request to reach the origin.
func (o *origin) waitArrived(t testing.TB) string {
	t.Helper()
	select {
	case p := <-o.arrived:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the origin's /hold")
		return ""
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is one running gateway with its origin and configuration file.
type harness struct {
	t       testing.TB
	pki     *testPKI
	dir     string
	cfgPath string
	params  cfgParams
	origin  *origin
	srv     *Server
	addr    string
	logs    *syncBuffer // diagnostics and access log, JSON lines
	runErr  chan error
	stopped bool
}

// newHarness writes the PKI and a configuration, starts the origin and the
// gateway, and registers their shutdown with t.Cleanup.
func newHarness(t testing.TB, mod ...func(*cfgParams)) *harness {
	t.Helper()
	p := sharedPKI()
	h := &harness{t: t, pki: p, dir: t.TempDir(), logs: &syncBuffer{}, runErr: make(chan error, 1)}
	h.origin = startOrigin(t)
	listen, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down, err := FreePort() // free a moment ago: nobody listens there
	if err != nil {
		t.Fatal(err)
	}
	h.params = cfgParams{Listen: listen, Origin: h.origin.srv.URL, DownOrigin: "http://" + down,
		OriginTimeout: "1s", DrainTimeout: "5s", FleetOnApp: true}
	for _, m := range mod {
		m(&h.params)
	}
	h.addr = h.params.Listen
	h.writeFile("ca-chain.pem", pki.ChainPEM(p.inter, p.root))
	h.writeFile("ca2-chain.pem", pki.ChainPEM(p.inter2, p.root2))
	h.writeFile("root.pem", p.root.CertPEM())
	h.writeFile("token.pem", p.tokenKey)
	if h.params.CRL {
		h.writeCRL()
	}
	if err := p.server.WriteFiles(filepath.Join(h.dir, "server.pem"), filepath.Join(h.dir, "server-key.pem"), p.inter); err != nil {
		t.Fatal(err)
	}
	h.cfgPath = filepath.Join(h.dir, "fleetgate.toml")
	h.writeConfig(h.params)

	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The port was free a moment ago, but with other test binaries running
	// an outgoing connection may take it meanwhile: then pick another.
	for attempt := 1; ; attempt++ {
		h.srv, err = New(Options{Load: func() (*configs.Config, error) { return configs.Load(h.cfgPath) },
			Logger: logger, Now: h.params.Now})
		if err != nil {
			t.Fatal(err)
		}
		go func() { h.runErr <- h.srv.Run() }()
		select {
		case <-h.srv.Booted():
		case err := <-h.runErr:
			if (errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")) && attempt < 5 {
				if h.params.Listen, err = FreePort(); err != nil {
					t.Fatal(err)
				}
				h.addr = h.params.Listen
				h.writeConfig(h.params)
				continue
			}
			t.Fatalf("Run returned before boot: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("gateway did not boot")
		}
		break
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", h.logs.String())
		}
	})
	return h
}

// stop shuts the gateway down (once) and waits for Run to return.
func (h *harness) stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		h.t.Errorf("Shutdown: %v", err)
	}
	select {
	case <-h.runErr:
	case <-time.After(10 * time.Second):
		h.t.Error("Run did not return after Shutdown")
	}
}

func (h *harness) writeFile(name string, data []byte) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, name), data, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// writeConfig renders the configuration with p into the harness's file.
func (h *harness) writeConfig(p cfgParams) {
	h.t.Helper()
	var b bytes.Buffer
	if err := cfgTemplate.Execute(&b, p); err != nil {
		h.t.Fatal(err)
	}
	h.writeFile("fleetgate.toml", b.Bytes())
}

// tlsConfig is a device's TLS client configuration: it trusts the fleet root
// for the gateway's certificate, sends SNI sni ("" for none) and presents dev
// (nil for no certificate) whatever CAs the server asks for.
func (h *harness) tlsConfig(sni string, dev *device) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(h.pki.root.Cert)
	return &tls.Config{
		RootCAs:    roots,
		ServerName: sni,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if dev == nil {
				return &tls.Certificate{}, nil
			}
			c := dev.tls
			return &c, nil
		},
	}
}

// client returns an HTTP client whose connections all go to the gateway (the
// URL's host is the SNI and the Host header), presenting dev.
func (h *harness) client(dev *device) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.addr)
		},
		TLSClientConfig:     h.tlsConfig("", dev),
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// response is a completed exchange.
type response struct {
	*http.Response
	body string
}

// echo decodes the origin's echo from the body.
func (r *response) echo(t testing.TB) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("status %d: body is not the origin's echo: %v\n%s", r.StatusCode, err, r.body)
	}
	return e
}

// do sends one request with c and reads the whole answer.
func (h *harness) do(t testing.TB, c *http.Client, method, url string, header http.Header, body string) *response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			if strings.EqualFold(k, "Host") {
				req.Host = v
				continue
			}
			req.Header.Add(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return &response{Response: resp, body: string(b)}
}

// get is do with GET, no header and no body.
func (h *harness) get(t testing.TB, c *http.Client, url string) *response {
	t.Helper()
	return h.do(t, c, http.MethodGet, url, nil, "")
}

// rawConn is a TLS connection to the gateway for hand-written requests.
type rawConn struct {
	t  testing.TB
	c  *tls.Conn
	br *bufio.Reader
}

// dial opens a TLS connection with SNI sni presenting dev, and completes
// the handshake.
func (h *harness) dial(t testing.TB, sni string, dev *device) *rawConn {
	t.Helper()
	return h.dialConfig(t, sni, h.tlsConfig(sni, dev))
}

// dialUnverified is dial without checking the gateway's certificate: for
// no SNI (sni "") and for names the harness's server certificate lacks.
func (h *harness) dialUnverified(t testing.TB, sni string, dev *device) *rawConn {
	t.Helper()
	conf := h.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = true
	return h.dialConfig(t, sni, conf)
}

func (h *harness) dialConfig(t testing.TB, sni string, conf *tls.Config) *rawConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", h.addr, conf)
	if err != nil {
		t.Fatalf("dial %q: %v", sni, err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// send writes raw bytes.
func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read reads one response (the body in full), for a request of method.
func (r *rawConn) read(method string) *response {
	r.t.Helper()
	resp, err := r.readErr(method)
	if err != nil {
		r.t.Fatalf("read response: %v", err)
	}
	return resp
}

func (r *rawConn) readErr(method string) (*response, error) {
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{Response: resp, body: string(b)}, nil
}

// expectEOF asserts that the gateway closes the connection: the next read
// ends (EOF or a reset) within a few seconds, with no further bytes.
func (r *rawConn) expectEOF() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var one [1]byte
	n, err := r.br.Read(one[:])
	if n > 0 {
		r.t.Fatalf("expected the connection to close, read %q", one[:n])
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		r.t.Fatal("expected the connection to close; it stayed open")
	}
	if err == nil {
		r.t.Fatal("expected EOF, got no error")
	}
}

// finish is what a client does after a Connection: close answer: it closes
// its side (close_notify); the gateway must then close the connection at
// once, even when it lingers after a refused request.
func (r *rawConn) finish() {
	r.t.Helper()
	if err := r.c.CloseWrite(); err != nil {
		r.t.Fatalf("close_notify: %v", err)
	}
	start := time.Now()
	r.expectEOF()
	if d := time.Since(start); d > lingerTime/2 {
		r.t.Errorf("the gateway closed %v after the client's close_notify", d)
	}
}

// request formats a minimal HTTP/1.1 request.
func request(method, host, path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, host)
	for _, e := range extra {
		b.WriteString(e)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// href returns https://domain+path (the harness's clients dial the gateway
// whatever the host).
func href(domain, path string) string { return "https://" + domain + path }

// accessLines returns the access-log lines (msg "request") logged so far.
func (h *harness) accessLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
