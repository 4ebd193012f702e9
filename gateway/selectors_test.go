package gateway

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// The selector tests: each selector on an application of its own, reached
// through the real server over real TLS by devices whose certificates were
// made for it.

// selPKI are the devices of the selector tests.
type selPKI struct {
	meter  *device // CA A: CN meter-0017, O, OU meters, DNS/URI/email SANs, serial 4f1a09
	gauge  *device // CA B: CN gauge-0001, OU gauges
	server *pki.Cert
}

func selDomain(name string) string { return name + ".sel.fleet.test" }

var sharedSelPKI = sync.OnceValue(func() *selPKI {
	p := sharedPKI()
	s := &selPKI{}
	mo := pki.Device("meter-0017")
	mo.Organization = []string{"Acme Meters"}
	mo.OrgUnit = []string{"meters"}
	mo.DNSNames = []string{"meter-17.fleet.test"}
	mo.URIs = []string{"spiffe://fleet.test/meter/17"}
	mo.EmailAddresses = []string{"ops@fleet.test"}
	mo.Serial = big.NewInt(0x4f1a09)
	c := p.inter.MustIssue(mo)
	s.meter = &device{name: "meter-0017", cert: c, tls: c.TLSCertificate(p.inter)}
	go2 := pki.Device("gauge-0001")
	go2.OrgUnit = []string{"gauges"}
	g := p.inter2.MustIssue(go2)
	s.gauge = &device{name: "gauge-0001", cert: g, tls: g.TLSCertificate(p.inter2)}
	s.server = p.inter.MustIssue(pki.Server("*.sel.fleet.test", "sel.fleet.test"))
	return s
})

// selCase is one application and who it admits.
type selCase struct {
	name    string
	sel     selector // the include entry
	rule    string   // how the access log names it
	admits  func(*selPKI, *testPKI) *device
	refuses func(*selPKI, *testPKI) *device
}

func meter(s *selPKI, _ *testPKI) *device   { return s.meter }
func gauge(s *selPKI, _ *testPKI) *device   { return s.gauge }
func sensor1(_ *selPKI, p *testPKI) *device { return p.sensor1 }

func selCases(s *selPKI) []selCase {
	fp := sha256.Sum256(s.meter.cert.Cert.Raw)
	fph := strings.ToUpper(hex.EncodeToString(fp[:]))
	return []selCase{
		{"cn-pattern", selector{"common_name_pattern": "meter-*"}, `common_name_pattern = "meter-*"`, meter, sensor1},
		{"san-dns", selector{"san_dns": "*.fleet.test"}, `san_dns = "*.fleet.test"`, meter, sensor1},
		{"san-dns-exact", selector{"san_dns": "meter-17.fleet.test"}, `san_dns = "meter-17.fleet.test"`, meter, gauge},
		{"san-uri", selector{"san_uri": "spiffe://fleet.test/meter/*"}, `san_uri = "spiffe://fleet.test/meter/*"`, meter, sensor1},
		{"san-uri-exact", selector{"san_uri": "spiffe://fleet.test/meter/17"}, `san_uri = "spiffe://fleet.test/meter/17"`, meter, gauge},
		{"san-email", selector{"san_email": "ops@fleet.test"}, `san_email = "ops@fleet.test"`, meter, sensor1},
		{"org", selector{"organization": "Acme Meters"}, `organization = "Acme Meters"`, meter, gauge},
		{"ou", selector{"organizational_unit": "gauges"}, `organizational_unit = "gauges"`, gauge, meter},
		{"serial", selector{"serial": "4F:1A:09"}, `serial = "4F:1A:09"`, meter, sensor1},
		{"fingerprint", selector{"fingerprint": fph}, `fingerprint = "` + fph + `"`, meter, sensor1},
		{"client-ca-a", selector{"client_ca": "sel-a"}, `client_ca = "sel-a"`, meter, gauge},
		{"client-ca-b", selector{"client_ca": "sel-b"}, `client_ca = "sel-b"`, gauge, meter},
		{"ip", selector{"ip": []string{"127.0.0.0/8", "2001:db8::/32"}}, `ip = ["127.0.0.0/8", "2001:db8::/32"]`, meter, nil},
		{"ip-other", selector{"ip": []string{"10.0.0.0/8"}}, `ip = ["10.0.0.0/8"]`, nil, meter},
		{"list", selector{"list": "beta"}, `list = "beta"`, gauge, meter},
	}
}

// selEnv is where the selector applications' files are (dir) and the
// origin they proxy to.
type selEnv struct{ dir, origin string }

// app is an http application of the selector tests on domain, with the
// selector server certificate.
func (e selEnv) app(name, domain string, pols ...policySection) appSection {
	a := httpApp(name, domain, e.origin, pols...)
	a.TLSCertFile, a.TLSKeyFile = filepath.Join(e.dir, "sel.pem"), filepath.Join(e.dir, "sel-key.pem")
	return a
}

// selConfig adds the selector applications to c: both CAs, associated with
// every one of them, and the lists they use.
func selConfig(c *fileConfig, e selEnv, cases []selCase) {
	domains := make([]string, 0, len(cases)+1)
	for _, sc := range cases {
		domains = append(domains, selDomain(sc.name))
	}
	domains = append(domains, "sel.fleet.test")
	c.ClientCAs = append(c.ClientCAs,
		clientCASection{Name: "sel-a", PEMFile: "ca-chain.pem", AssociatedHostnames: domains},
		clientCASection{Name: "sel-b", PEMFile: "ca2-chain.pem", AssociatedHostnames: domains})
	c.Lists = append(c.Lists,
		listSection{Name: "beta", Kind: "common_name", Values: []string{"gauge-0001"}},
		listSection{Name: "quarantine", Kind: "common_name", File: filepath.Join(e.dir, "quarantine.txt")})
	for _, sc := range cases {
		c.Applications = append(c.Applications, e.app("sel-"+sc.name, selDomain(sc.name),
			policySection{Name: sc.name, Decision: "allow", Include: []selector{sc.sel}}))
	}
}

// selHarness is a harness with the selector applications; their files
// (server certificate, quarantine list) are in dir, named by absolute path.
type selHarness struct {
	*harness
	dir string
}

// writeSel writes a file of the selector applications.
func (h *selHarness) writeSel(name string, data []byte) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, name), data, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// newSelHarness starts a gateway with the selector applications (listening
// on listen, "" for the harness's IPv4 default).
func newSelHarness(t *testing.T, listen string, more func(*fileConfig, selEnv)) (*selHarness, *selPKI, []selCase) {
	t.Helper()
	s := sharedSelPKI()
	cases := selCases(s)
	dir := t.TempDir()
	if err := s.server.WriteFiles(filepath.Join(dir, "sel.pem"), filepath.Join(dir, "sel-key.pem"), sharedPKI().inter); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "quarantine.txt"), []byte("# quarantined devices\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(p *cfgParams) {
		if listen != "" {
			p.Listen = listen
		}
		e := selEnv{dir: dir, origin: p.Origin}
		p.Edit = func(c *fileConfig) {
			selConfig(c, e, cases)
			if more != nil {
				more(c, e)
			}
		}
	})
	return &selHarness{harness: h, dir: dir}, s, cases
}

// lineFor waits for the access-log line of a request to app answered with
// status (the line is written after the answer) and returns the last one.
func lineFor(t *testing.T, h *selHarness, app string, status int) map[string]any {
	t.Helper()
	var line map[string]any
	testkit.WaitFor(t, fmt.Sprintf("the access-log line of %s (%d)", app, status), 5*time.Second, func() bool {
		for _, l := range h.accessLines(t) {
			if l["app"] == app && l["status"] == float64(status) {
				line = l
			}
		}
		return line != nil
	})
	return line
}

func TestSelectorsEndToEnd(t *testing.T) {
	h, s, cases := newSelHarness(t, "", nil)
	p := h.pki
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := href(selDomain(c.name), "/")
			if c.admits != nil {
				dev := c.admits(s, p)
				r := h.get(t, h.client(dev), url)
				if r.StatusCode != http.StatusOK {
					t.Fatalf("%s: status %d (%s), want 200", dev.name, r.StatusCode, r.body)
				}
				if cn := r.Header.Get("X-Origin"); cn != "echo" {
					t.Fatalf("not the origin's answer")
				}
				line := lineFor(t, h, "sel-"+c.name, http.StatusOK)
				if want := "include[0] " + c.rule; line["rule"] != want || line["policy"] != c.name {
					t.Errorf("access log rule %q policy %q, want %q", line["rule"], line["policy"], want)
				}
			}
			if c.refuses != nil {
				dev := c.refuses(s, p)
				r := h.get(t, h.client(dev), url)
				if r.StatusCode != http.StatusForbidden {
					t.Fatalf("%s: status %d, want 403", dev.name, r.StatusCode)
				}
				if line := lineFor(t, h, "sel-"+c.name, http.StatusForbidden); line["rule"] != "" || line["policy"] != "" {
					t.Errorf("refusal logged rule %q policy %v", line["rule"], line["policy"])
				}
			}
		})
	}
}

// freeIPv6Port returns a free [::1] port, or skips without IPv6 loopback.
func freeIPv6Port(t *testing.T) string {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestSelectorIPv6Client(t *testing.T) {
	listen := freeIPv6Port(t)
	h, s, _ := newSelHarness(t, listen, func(c *fileConfig, e selEnv) {
		c.Applications = append(c.Applications, e.app("sel-ipv6", "sel.fleet.test",
			policySection{Name: "loopback v6", Decision: "allow", Include: []selector{{"ip": []string{"::1/128"}}}}))
	})
	if !strings.HasPrefix(h.addr, "[::1]") {
		t.Skipf("the harness fell back to %s", h.addr)
	}
	r := h.get(t, h.client(s.meter), href("sel.fleet.test", "/"))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("::1 client: status %d, want 200", r.StatusCode)
	}
	if line := lineFor(t, h, "sel-ipv6", http.StatusOK); line["client_ip"] != "::1" || line["rule"] != `include[0] ip = ["::1/128"]` {
		t.Errorf("access log: client_ip %v rule %v", line["client_ip"], line["rule"])
	}
	// An IPv4-only range refuses the IPv6 device.
	if r := h.get(t, h.client(s.meter), href(selDomain("ip-other"), "/")); r.StatusCode != http.StatusForbidden {
		t.Errorf("ip-other: status %d, want 403", r.StatusCode)
	}
	// 127.0.0.0/8 is not ::1.
	if r := h.get(t, h.client(s.meter), href(selDomain("ip"), "/")); r.StatusCode != http.StatusForbidden {
		t.Errorf("ip (IPv4 ranges) from ::1: status %d, want 403", r.StatusCode)
	}
}

// TestListReloadRefusesKeepAlive: a device added to a list that a deny and
// an exclude use is refused on its next request over the keep-alive
// connection it already holds, once the file watch sees the new list; a bad
// line keeps the old list serving.
func TestListReloadRefusesKeepAlive(t *testing.T) {
	h, s, _ := newSelHarness(t, "", func(c *fileConfig, e selEnv) {
		a := e.app("sel-quarantine", "sel.fleet.test",
			policySection{Name: "quarantined", Decision: "deny", Include: []selector{{"list": "quarantine"}}},
			policySection{Name: "meters", Decision: "allow", Include: []selector{{"organizational_unit": "meters"}},
				Exclude: []selector{{"list": "quarantine"}}})
		a.SessionDuration = "1h"
		c.Applications = append(c.Applications, a)
	})
	rc := h.dial(t, "sel.fleet.test", s.meter)
	rc.send(request("GET", "sel.fleet.test", "/one"))
	if r := rc.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("before: status %d", r.StatusCode)
	}
	h.writeSel("quarantine.txt", []byte("# quarantined\nmeter-0017\n"))
	testkit.WaitFor(t, "the list's reload", 4*crlWatchInterval, func() bool {
		return h.srv.snap.Load().lists.Get("quarantine").Len() == 1
	})
	rc.send(request("GET", "sel.fleet.test", "/two"))
	r := rc.read("GET")
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, `denied by policy "quarantined"`) {
		t.Fatalf("after: status %d %q, want 403 by the quarantine policy", r.StatusCode, r.body)
	}
	if line := lineFor(t, h, "sel-quarantine", http.StatusForbidden); line["rule"] != `include[0] list = "quarantine"` {
		t.Errorf("rule %v", line["rule"])
	}
}

func TestListBadLineKeepsOldList(t *testing.T) {
	h, _, _ := newSelHarness(t, "", nil)
	h.writeSel("quarantine.txt", []byte("meter-0017\n"))
	if err := h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	// A kind with a syntax: a bad line names file:line.
	cfg := h.config()
	for i := range cfg.Lists {
		if cfg.Lists[i].Name == "quarantine" {
			cfg.Lists[i].Kind = "fingerprint"
		}
	}
	h.write(cfg)
	err := h.srv.Reload()
	if err == nil || !strings.Contains(err.Error(), "quarantine.txt:1: fingerprint \"meter-0017\" is not 64 hex digits") {
		t.Fatalf("reload: %v, want quarantine.txt:1 named", err)
	}
	if l := h.srv.snap.Load().lists.Get("quarantine"); l == nil || l.Len() != 1 || !l.Contains("meter-0017") {
		t.Error("the old list does not serve after a refused reload")
	}
}

// TestTCPSelectorsAndListClose: selectors on tcp applications, the rule in
// the close line, and a live connection closed with reason policy within 2 s
// of a reload that quarantines its device.
func TestTCPSelectorsAndListClose(t *testing.T) {
	s := sharedSelPKI()
	o := startTCPOrigin(t, echoHandler)
	h, _, _ := newSelHarness(t, "", func(c *fileConfig, e selEnv) {
		app := func(name, domain string, include, exclude selector) appSection {
			a := e.app(name, domain, policySection{Name: "devices", Decision: "allow",
				Include: []selector{include}, Exclude: []selector{exclude}})
			a.Protocol, a.Origin = "tcp", o.url()
			return a
		}
		c.Applications = append(c.Applications,
			app("tcp-uri", "tcp-uri.sel.fleet.test", selector{"san_uri": "spiffe://fleet.test/meter/*"}, selector{"list": "quarantine"}),
			app("tcp-ca", "tcp-ca.sel.fleet.test", selector{"client_ca": "sel-tcp-b"}, selector{"fingerprint": strings.Repeat("0", 64)}))
		c.ClientCAs = append(c.ClientCAs,
			clientCASection{Name: "sel-tcp", PEMFile: "ca-chain.pem", AssociatedHostnames: []string{"tcp-uri.sel.fleet.test", "tcp-ca.sel.fleet.test"}},
			clientCASection{Name: "sel-tcp-b", PEMFile: "ca2-chain.pem", AssociatedHostnames: []string{"tcp-ca.sel.fleet.test"}})
	})
	f := &tcpFixture{harness: h.harness}
	// client_ca on tcp: the gauge (CA B) in, the meter (CA A) refused in
	// the handshake.
	if c, err := f.dialTCP(t, "tcp-ca.sel.fleet.test", s.gauge); err != nil {
		t.Fatalf("gauge: %v", err)
	} else {
		roundTrip(t, c)
		_ = c.Close()
	}
	if c, err := f.dialTCP(t, "tcp-ca.sel.fleet.test", s.meter); err == nil {
		if _, err = c.Read(make([]byte, 1)); err == nil {
			t.Fatal("meter admitted by client_ca = sel-b")
		}
	}
	// san_uri on tcp, then the device quarantined while connected.
	c, err := f.dialTCP(t, "tcp-uri.sel.fleet.test", s.meter)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	h.writeSel("quarantine.txt", []byte("meter-0017\n"))
	start := time.Now()
	if err := h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the quarantined device read %v, want close_notify within 2s", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed %v after the reload", d)
	}
	line := f.closeLine(t, "tcp-uri", closePolicy)
	if line["rule"] != `include[0] san_uri = "spiffe://fleet.test/meter/*"` {
		t.Errorf("close line rule %v", line["rule"])
	}
	// A new connection is refused in the handshake, with the rule empty.
	if c, err := f.dialTCP(t, "tcp-uri.sel.fleet.test", s.meter); err == nil {
		if _, err = c.Read(make([]byte, 1)); err == nil {
			t.Fatal("quarantined meter admitted again")
		}
	}
}

func roundTrip(t *testing.T, c io.ReadWriter) {
	t.Helper()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
}

// TestServiceTokens: a machine without a certificate presents its service
// token; the origin gets a token naming it and never the credentials; a
// wrong or expired one is refused (401 with service_auth_401, else 403);
// neither header reaches a log.
func TestServiceTokens(t *testing.T) {
	const (
		id      = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.access"
		secret  = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
		oldID   = "ffffffffffffffffffffffffffffffff.access"
		oldPass = "old-secret"
	)
	sum := sha256.Sum256([]byte(secret))
	oldSum := sha256.Sum256([]byte(oldPass))
	h, _, _ := newSelHarness(t, "", func(c *fileConfig, e selEnv) {
		c.ServiceTokens = append(c.ServiceTokens,
			serviceTokenSection{Name: "backend-job", ClientID: id, ClientSecretSHA256: hex.EncodeToString(sum[:])},
			serviceTokenSection{Name: "old-job", ClientID: oldID, ClientSecretSHA256: hex.EncodeToString(oldSum[:]), Expires: "2020-01-01T00:00:00Z"})
		app := func(name, domain string, sel selector) appSection {
			a := e.app(name, domain, policySection{Name: "machines", Decision: "non_identity", Include: []selector{sel}})
			a.SessionDuration = "0s"
			return a
		}
		a401 := app("svc-401", "sel.fleet.test", selector{"service_token": "backend-job"})
		a401.ServiceAuth401 = true
		c.Applications = append(c.Applications, a401,
			app("svc-403", "any.sel.fleet.test", selector{"any_valid_service_token": true}))
	})
	c := h.client(nil)
	creds := func(id, secret string) http.Header {
		return http.Header{"Cf-Access-Client-Id": {id}, "Cf-Access-Client-Secret": {secret}}
	}
	for _, domain := range []string{"sel.fleet.test", "any.sel.fleet.test"} {
		r := h.do(t, c, "GET", href(domain, "/job"), creds(id, secret), "")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s: valid token: status %d %s", domain, r.StatusCode, r.body)
		}
		e := r.echo(t)
		for k := range e.Headers {
			if strings.EqualFold(k, "Cf-Access-Client-Id") || strings.EqualFold(k, "Cf-Access-Client-Secret") {
				t.Errorf("the origin received %s", k)
			}
		}
		claims := jwtClaims(t, e.Headers.Get("Cf-Access-Jwt-Assertion"))
		if claims["common_name"] != id || claims["service_token_name"] != "backend-job" || claims["cert_sha256"] != nil {
			t.Errorf("%s: token claims %v", domain, claims)
		}
	}
	for _, tc := range []struct {
		domain, id, secret string
		status             int
		reason             string
	}{
		{"sel.fleet.test", id, "wrong", http.StatusUnauthorized, "invalid service token"},
		{"sel.fleet.test", oldID, oldPass, http.StatusUnauthorized, "service token expired"},
		{"any.sel.fleet.test", id, "wrong", http.StatusForbidden, "invalid service token"},
		{"any.sel.fleet.test", oldID, oldPass, http.StatusForbidden, "service token expired"},
		{"any.sel.fleet.test", id, "", http.StatusForbidden, "invalid service token"},
		{"any.sel.fleet.test", "", "", http.StatusForbidden, "no client certificate"},
	} {
		hdr := creds(tc.id, tc.secret)
		if tc.id == "" {
			hdr = nil
		}
		r := h.do(t, c, "GET", href(tc.domain, "/job"), hdr, "")
		if r.StatusCode != tc.status || !strings.Contains(r.body, tc.reason) {
			t.Errorf("%s id %q secret %q: status %d %q, want %d %q", tc.domain, tc.id, tc.secret, r.StatusCode, r.body, tc.status, tc.reason)
		}
	}
	testkit.WaitFor(t, "the access-log lines", 5*time.Second, func() bool { return len(h.accessLines(t)) >= 8 })
	logs := h.logs.String()
	for _, s := range []string{secret, id, oldPass, oldID} {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds a service-token credential %q", s)
		}
	}
	if line := lineFor(t, h, "svc-401", http.StatusOK); line["service_token"] != "backend-job" || line["rule"] != `include[0] service_token = "backend-job"` {
		t.Errorf("access log: service_token %v rule %v", line["service_token"], line["rule"])
	}
}

// jwtClaims decodes a JWT's payload (the signature is the token tests').
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
