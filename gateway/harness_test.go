package gateway

// The end-to-end harness of the gateway's tests: a PKI generated at run time,
// the TOML configuration as a Go value (fileConfig) written to a temporary
// folder, an echo origin (plus a held and an unreachable variant), a running
// Server on loopback (and variants of it on the same files), and client
// helpers (Go's net/http and crypto/tls, raw bytes over TLS). Polling, log
// buffers and free ports come from internal/testkit.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
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
	// Edit, when set, changes the file's Go value after the settings above:
	// more client CAs and applications (the tcp applications of
	// relay_test.go), or any key the fields above do not cover.
	Edit func(*fileConfig)
	// Loaded, when set, changes each loaded configuration before the
	// gateway uses it: what is not a key of the file (an identity
	// provider's Resolve).
	Loaded func(*configs.Config)
	// Refused, when set, runs after a load of the file failed, within the
	// reload that read it.
	Refused func()
}

// fileConfig is the gateway's TOML file as the tests write it: a Go value
// mirroring the sections of configs/schema.go, marshalled by write. Every
// key but admin_listen is omitempty: a key left unset is absent from the
// file, and its default applies. Durations and sizes are written as in the
// file ("5s", "64KiB").
type fileConfig struct {
	Gateway       gatewaySection        `toml:"gateway"`
	Tokens        tokensSection         `toml:"tokens"`
	ClientCAs     []clientCASection     `toml:"client_cas,omitempty"`
	Revocation    revocationSection     `toml:"revocation,omitempty"`
	Applications  []appSection          `toml:"applications,omitempty"`
	Lists         []listSection         `toml:"lists,omitempty"`
	ServiceTokens []serviceTokenSection `toml:"service_tokens,omitempty"`
	// IdentityProviders are the [[identity_providers]] (login_test.go).
	IdentityProviders []idpSection `toml:"identity_providers,omitempty"`
}

// listSection is one [[lists]].
type listSection struct {
	Name   string   `toml:"name,omitempty"`
	Kind   string   `toml:"kind,omitempty"`
	File   string   `toml:"file,omitempty"`
	Values []string `toml:"values,omitempty"`
}

// serviceTokenSection is one [[service_tokens]].
type serviceTokenSection struct {
	Name               string `toml:"name,omitempty"`
	ClientID           string `toml:"client_id,omitempty"`
	ClientSecretSHA256 string `toml:"client_secret_sha256,omitempty"`
	Expires            string `toml:"expires,omitempty"`
}

// gatewaySection is [gateway].
type gatewaySection struct {
	Listen               string   `toml:"listen,omitempty"`
	AdminListen          string   `toml:"admin_listen"` // "" turns the admin listener off
	Issuer               string   `toml:"issuer,omitempty"`
	EventLoops           int      `toml:"event_loops,omitempty"`
	HandshakeWorkers     int      `toml:"handshake_workers,omitempty"`
	HandshakeQueue       int      `toml:"handshake_queue,omitempty"`
	HandshakeTimeout     string   `toml:"handshake_timeout,omitempty"`
	MaxHandshakeRate     int      `toml:"max_handshake_rate,omitempty"`
	MaxHandshakeBurst    int      `toml:"max_handshake_burst,omitempty"`
	HeaderTimeout        string   `toml:"header_timeout,omitempty"`
	IdleTimeout          string   `toml:"idle_timeout,omitempty"`
	MaxConnectionAge     string   `toml:"max_connection_age,omitempty"`
	DrainTimeout         string   `toml:"drain_timeout,omitempty"`
	MaxConnections       int      `toml:"max_connections,omitempty"`
	MaxConnectionsPerIP  int      `toml:"max_connections_per_ip,omitempty"`
	MaxHeaderBytes       string   `toml:"max_header_bytes,omitempty"`
	MaxHeaderCount       int      `toml:"max_header_count,omitempty"`
	MaxBodyBytes         string   `toml:"max_body_bytes,omitempty"`
	MaxResponseBytes     string   `toml:"max_response_bytes,omitempty"`
	OriginConnectTimeout string   `toml:"origin_connect_timeout,omitempty"`
	OriginTimeout        string   `toml:"origin_timeout,omitempty"`
	MaxConnsPerOrigin    int      `toml:"max_conns_per_origin,omitempty"`
	DefaultSite          string   `toml:"default_site,omitempty"`
	VerdictCacheSize     int      `toml:"verdict_cache_size,omitempty"`
	TokenCacheSize       int      `toml:"token_cache_size,omitempty"`
	ProxyProtocolFrom    []string `toml:"proxy_protocol_from,omitempty"`
}

// tokensSection is [tokens].
type tokensSection struct {
	SigningKeyFile   string   `toml:"signing_key_file,omitempty"`
	PreviousKeyFiles []string `toml:"previous_key_files,omitempty"`
	CookieName       string   `toml:"cookie_name,omitempty"`
	CookieSameSite   string   `toml:"cookie_same_site,omitempty"`
}

// clientCASection is one [[client_cas]].
type clientCASection struct {
	Name                string   `toml:"name,omitempty"`
	PEMFile             string   `toml:"pem_file,omitempty"`
	PEM                 string   `toml:"pem,omitempty"`
	AssociatedHostnames []string `toml:"associated_hostnames,omitempty"`
	CRLFiles            []string `toml:"crl_files,omitempty"`
	CRLStale            string   `toml:"crl_stale,omitempty"`
}

// revocationSection is [revocation].
type revocationSection struct {
	DeniedSerials      []string `toml:"denied_serials,omitempty"`
	DeniedFingerprints []string `toml:"denied_fingerprints,omitempty"`
}

// appSection is one [[applications]]. A bool is written only when true.
type appSection struct {
	Name                 string          `toml:"name,omitempty"`
	Domain               string          `toml:"domain,omitempty"`
	Protocol             string          `toml:"protocol,omitempty"`
	Origin               string          `toml:"origin,omitempty"`
	OriginCAFile         string          `toml:"origin_ca_file,omitempty"`
	OriginCertFile       string          `toml:"origin_cert_file,omitempty"`
	OriginKeyFile        string          `toml:"origin_key_file,omitempty"`
	OriginServerName     string          `toml:"origin_server_name,omitempty"`
	TLSCertFile          string          `toml:"tls_cert_file,omitempty"`
	TLSKeyFile           string          `toml:"tls_key_file,omitempty"`
	SessionDuration      string          `toml:"session_duration,omitempty"`
	ForwardClientCert    bool            `toml:"forward_client_cert,omitempty"`
	ServiceAuth401       bool            `toml:"service_auth_401,omitempty"`
	SessionTickets       bool            `toml:"session_tickets,omitempty"`
	RejectInvalidCert    bool            `toml:"reject_invalid_cert,omitempty"`
	AUD                  string          `toml:"aud,omitempty"`
	ProxyProtocol        string          `toml:"proxy_protocol,omitempty"`
	OriginConnectTimeout string          `toml:"origin_connect_timeout,omitempty"`
	IdleTimeout          string          `toml:"idle_timeout,omitempty"`
	MaxConnectionAge     string          `toml:"max_connection_age,omitempty"`
	RelayBuffer          string          `toml:"relay_buffer,omitempty"`
	MQTTClientID         string          `toml:"mqtt_client_id,omitempty"`
	MQTTUsername         string          `toml:"mqtt_username,omitempty"`
	MQTTPassword         string          `toml:"mqtt_password,omitempty"`
	MaxConnectBytes      string          `toml:"max_connect_bytes,omitempty"`
	IdentityProviders    []string        `toml:"identity_providers,omitempty"`
	Policies             []policySection `toml:"policies,omitempty"`
}

// policySection is one [[applications.policies]].
type policySection struct {
	Name            string     `toml:"name,omitempty"`
	Decision        string     `toml:"decision,omitempty"`
	SessionDuration string     `toml:"session_duration,omitempty"`
	Include         []selector `toml:"include,omitempty,inline"`
	Require         []selector `toml:"require,omitempty,inline"`
	Exclude         []selector `toml:"exclude,omitempty,inline"`
}

// selector is one rule, written as an inline table: { common_name = "x" }.
type selector map[string]any

// commonName and anyFleetDevice are the selectors the tests use.
func commonName(cn string) selector { return selector{"common_name": cn} }

var anyFleetDevice = selector{"valid_certificate": true}

// admit is a policy admitting (non_identity) the devices sel matches.
func admit(name string, sel selector) policySection {
	return policySection{Name: name, Decision: "non_identity", Include: []selector{sel}}
}

// httpApp is an http application on domain with the harness's server
// certificate, proxying to origin, with policies.
func httpApp(name, domain, origin string, policies ...policySection) appSection {
	return appSection{Name: name, Domain: domain, Origin: origin,
		TLSCertFile: "server.pem", TLSKeyFile: "server-key.pem", Policies: policies}
}

// secondFleetCA is the second fleet CA (ca2-chain.pem) on app.fleet.test.
func secondFleetCA() clientCASection {
	return clientCASection{Name: "fleet-2", PEMFile: "ca2-chain.pem", AssociatedHostnames: []string{hApp}}
}

// baseConfig is the harness's configuration file for p.
func baseConfig(p cfgParams) fileConfig {
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	cfg := fileConfig{
		Gateway: gatewaySection{
			Listen:               p.Listen,
			AdminListen:          "127.0.0.1:0",
			Issuer:               "https://access.fleet.test",
			EventLoops:           2,
			HandshakeTimeout:     or(p.HandshakeTimeout, "5s"),
			HeaderTimeout:        "2s",
			IdleTimeout:          or(p.IdleTimeout, "10s"),
			MaxConnectionAge:     p.MaxConnectionAge,
			DrainTimeout:         p.DrainTimeout,
			MaxHeaderBytes:       "4KiB",
			MaxHeaderCount:       20,
			MaxBodyBytes:         or(p.MaxBodyBytes, "64KiB"),
			OriginConnectTimeout: "1s",
			OriginTimeout:        p.OriginTimeout,
		},
		Tokens: tokensSection{SigningKeyFile: "token.pem"},
	}
	fleet := clientCASection{Name: "fleet", PEMFile: "ca-chain.pem", CRLStale: p.CRLStale,
		AssociatedHostnames: []string{hIoT, hSvc, hFwd, hDown}}
	if p.FleetOnApp {
		fleet.AssociatedHostnames = append(fleet.AssociatedHostnames, hApp)
	}
	if p.Wildcard {
		cfg.Gateway.DefaultSite = "*.wild.fleet.test"
		fleet.AssociatedHostnames = append(fleet.AssociatedHostnames, "*.wild.fleet.test", "exact.wild.fleet.test")
	}
	if p.CRL {
		fleet.CRLFiles = []string{"fleet.crl"}
	}
	cfg.ClientCAs = []clientCASection{fleet}
	if p.SecondCA {
		cfg.ClientCAs = append(cfg.ClientCAs, secondFleetCA())
	}

	iot := httpApp("iot", hIoT, p.Origin, admit("sensor-0001 only", commonName("sensor-0001")),
		policySection{Name: "retired", Decision: "deny", Include: []selector{commonName("sensor-retired")}})
	iot.SessionDuration = "0s"
	app := httpApp("app", hApp, p.Origin, admit("fleet devices", anyFleetDevice))
	app.OriginCAFile = p.OriginCAFile
	app.SessionDuration = "24h"
	svc := httpApp("svc", hSvc, p.Origin, admit("sensor-0001 service", commonName("sensor-0001")))
	svc.ServiceAuth401 = true
	fwd := httpApp("fwd", hFwd, p.Origin, admit("fleet devices", anyFleetDevice))
	fwd.ForwardClientCert = true
	down := httpApp("down", hDown, p.DownOrigin, admit("fleet devices", anyFleetDevice))
	cfg.Applications = []appSection{iot, app, svc, fwd, down}
	if p.Wildcard {
		exact := httpApp("exact-under-wild", "exact.wild.fleet.test", p.Origin, admit("sensor-0002 only", commonName("sensor-0002")))
		wild := httpApp("wild", "*.wild.fleet.test", p.Origin, admit("fleet devices", anyFleetDevice))
		wild.SessionDuration = "24h"
		cfg.Applications = append(cfg.Applications, exact, wild)
	}
	if p.Edit != nil {
		p.Edit(&cfg)
	}
	return cfg
}

// trustOnlySecondCA makes app.fleet.test trust the second fleet CA and no
// longer the first.
func (c *fileConfig) trustOnlySecondCA() {
	c.ClientCAs[0].AssociatedHostnames = slices.DeleteFunc(slices.Clone(c.ClientCAs[0].AssociatedHostnames),
		func(name string) bool { return name == hApp })
	c.ClientCAs = append(c.ClientCAs, secondFleetCA())
}

// marshalConfig is cfg as the file's text.
func marshalConfig(t testing.TB, cfg fileConfig) []byte {
	t.Helper()
	b, err := toml.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal the configuration: %v", err)
	}
	return b
}

// echo is what the test origin answers: the request as it arrived.
type echo struct {
	Method  string      `json:"method"`
	Proto   string      `json:"proto"`
	Path    string      `json:"path"`
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
	Peer    string      `json:"peer"` // the address the request came from
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
		_ = json.NewEncoder(w).Encode(echo{Method: r.Method, Proto: r.Proto, Path: r.URL.RequestURI(), Host: r.Host, Headers: r.Header, Body: string(body), Peer: r.RemoteAddr})
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
	logs    *testkit.Buffer // diagnostics and access log, JSON lines
	runErr  chan error
	stopped bool
}

// newHarness writes the PKI and a configuration, starts the origin and the
// gateway, and registers their shutdown with t.Cleanup.
func newHarness(t testing.TB, mod ...func(*cfgParams)) *harness {
	t.Helper()
	p := sharedPKI()
	h := &harness{t: t, pki: p, dir: t.TempDir(), logs: &testkit.Buffer{}, runErr: make(chan error, 1)}
	h.origin = startOrigin(t)
	listen := testkit.FreePort(t)
	down := testkit.FreePort(t) // free a moment ago: nobody listens there
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
	h.write(h.config())

	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The port was free a moment ago, but with other test binaries running
	// an outgoing connection may take it meanwhile: then pick another.
	testkit.BootRetrying(t, func(attempt int) (<-chan struct{}, <-chan error) {
		if attempt > 1 {
			h.params.Listen = testkit.FreePort(t)
			h.addr = h.params.Listen
			h.write(h.config())
		}
		var err error
		h.srv, err = New(Options{Load: func() (*configs.Config, error) {
			cfg, err := configs.Load(h.cfgPath)
			if err == nil && h.params.Loaded != nil {
				h.params.Loaded(cfg)
			}
			if err != nil && h.params.Refused != nil {
				h.params.Refused()
			}
			return cfg, err
		},
			Logger: logger, Now: h.params.Now})
		if err != nil {
			t.Fatal(err)
		}
		go func() { h.runErr <- h.srv.Run() }()
		return h.srv.Booted(), h.runErr
	})
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

// config returns the harness's configuration file as a Go value, a fresh
// copy built from its cfgParams: change it, then write it.
func (h *harness) config() fileConfig { return baseConfig(h.params) }

// write replaces the harness's configuration file with cfg; the gateway
// reads it on its next reload.
func (h *harness) write(cfg fileConfig) {
	h.t.Helper()
	if err := os.WriteFile(h.cfgPath, marshalConfig(h.t, cfg), 0o600); err != nil {
		h.t.Fatal(err)
	}
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
// its side (close_notify); the gateway must then close the connection, the
// socket itself, at once, even when it lingers after a refused request.
func (r *rawConn) finish() {
	r.t.Helper()
	if err := r.c.CloseWrite(); err != nil {
		r.t.Fatalf("close_notify: %v", err)
	}
	start := time.Now()
	r.expectEOF()
	r.expectSocketClosed(lingerTime / 2)
	if d := time.Since(start); d > lingerTime/2 {
		r.t.Errorf("the gateway closed %v after the client's close_notify", d)
	}
}

// expectSocketClosed expects the gateway to close the TCP connection within
// d, after the TLS session's end (close_notify) was read.
func (r *rawConn) expectSocketClosed(d time.Duration) {
	r.t.Helper()
	raw := r.c.NetConn()
	_ = raw.SetReadDeadline(time.Now().Add(d))
	var one [1]byte
	n, err := raw.Read(one[:])
	switch {
	case n > 0:
		r.t.Fatalf("expected the socket to close, read %q after close_notify", one[:n])
	case isTimeout(err):
		r.t.Fatalf("the socket stayed open %v after close_notify", d)
	case err == nil:
		r.t.Fatal("expected the socket to close, got no error")
	}
}

// expectLinger expects what follows a refusal with input left unread: the
// answer is followed at once by close_notify (the end of the stream for a
// device that reads until then), while the socket stays open and the
// gateway still reads, and discards, what the device sends (no reset).
func (r *rawConn) expectLinger() {
	r.t.Helper()
	start := time.Now()
	_ = r.c.SetReadDeadline(time.Now().Add(lingerTime / 2))
	var one [1]byte
	if n, err := r.br.Read(one[:]); n > 0 || err != io.EOF {
		r.t.Fatalf("after the refusal: %q, %v; want close_notify (io.EOF) at once", one[:n], err)
	}
	if d := time.Since(start); d > lingerTime/2 {
		r.t.Errorf("close_notify came %v after the answer", d)
	}
	raw := r.c.NetConn()
	_ = raw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := raw.Read(one[:]); n > 0 || !isTimeout(err) {
		r.t.Fatalf("after close_notify: %q, %v; want the socket still open (lingering)", one[:n], err)
	}
	if _, err := r.c.Write([]byte("what the device still sends")); err != nil {
		r.t.Fatalf("writing while the gateway lingers: %v", err)
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

// writeCRL writes fleet.crl, signed by the fleet intermediate, revoking the
// given devices. Each call moves thisUpdate forward so the file changes.
func (h *harness) writeCRL(revoked ...*device) {
	h.t.Helper()
	h.writeCRLUntil(time.Now().Add(24*time.Hour), revoked...)
}

// writeCRLUntil is writeCRL with the list's nextUpdate.
func (h *harness) writeCRLUntil(nextUpdate time.Time, revoked ...*device) {
	h.t.Helper()
	certs := make([]*pki.Cert, 0, len(revoked))
	for _, d := range revoked {
		certs = append(certs, d.cert)
	}
	now := time.Now()
	der := h.pki.inter.MustCRL(pki.Serials(certs...), now.Add(-time.Minute), nextUpdate)
	path := filepath.Join(h.dir, "fleet.crl")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pki.CRLPEM(der), 0o600); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // atomically, as operators are told to
		h.t.Fatal(err)
	}
}

// variantWith starts a second gateway on h's files, with h's configuration
// changed by edit and a listen address of its own, and returns a harness for
// it (same PKI and origin).
func (h *harness) variantWith(t *testing.T, edit func(*fileConfig)) *harness {
	t.Helper()
	return h.startVariant(t, func(listen string) []byte {
		cfg := h.config()
		cfg.Gateway.Listen = listen
		if edit != nil {
			edit(&cfg)
		}
		return marshalConfig(t, cfg)
	})
}

// startVariant starts a gateway on the file text(listen) (written beside
// h's), listening on a free port. As for h, a port taken between the
// moment it was found free and the bind is given up for another.
func (h *harness) startVariant(t *testing.T, text func(listen string) []byte) *harness {
	t.Helper()
	v := &harness{t: t, pki: h.pki, dir: h.dir, cfgPath: filepath.Join(h.dir, "variant.toml"),
		params: h.params, origin: h.origin, logs: &testkit.Buffer{}, runErr: make(chan error, 1)}
	logger := slog.New(slog.NewJSONHandler(v.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	testkit.BootRetrying(t, func(int) (<-chan struct{}, <-chan error) {
		v.addr = testkit.FreePort(t)
		v.params.Listen = v.addr
		v.writeFile("variant.toml", text(v.addr))
		var err error
		v.srv, err = New(Options{Load: func() (*configs.Config, error) { return configs.Load(v.cfgPath) }, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		go func() { v.runErr <- v.srv.Run() }()
		return v.srv.Booted(), v.runErr
	})
	t.Cleanup(func() {
		v.stop()
		if t.Failed() {
			t.Logf("variant gateway log:\n%s", v.logs.String())
		}
	})
	return v
}

// refused dials the gateway and waits for it to close the connection.
func refused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return // refused before accept: fine too
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n > 0 || isTimeout(err) {
		t.Fatalf("the connection was not refused (read %d, %v)", n, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// rawGet makes one request on a fresh TLS connection (a fresh handshake)
// and returns the response.
func (h *harness) rawGet(t testing.TB, sni, host, path string, dev *device, extra ...string) *response {
	t.Helper()
	c := h.dial(t, sni, dev)
	c.send(request("GET", host, path, append(extra, "Connection: close")...))
	r := c.read("GET")
	_ = c.c.Close()
	return r
}
