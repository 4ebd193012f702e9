package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// The console application of the login tests.
const (
	hConsole     = "console.fleet.test"
	loginSecret  = "fixture-client-secret-7d1e"
	loginClient  = "fleetgate"
	loginIdPName = "corp"
)

// idpSection is one [[identity_providers]] of the harness file.
type idpSection struct {
	Name             string   `toml:"name,omitempty"`
	Type             string   `toml:"type,omitempty"`
	Issuer           string   `toml:"issuer,omitempty"`
	ClientID         string   `toml:"client_id,omitempty"`
	ClientSecretFile string   `toml:"client_secret_file,omitempty"`
	Scopes           []string `toml:"scopes,omitempty"`
	GroupsClaim      string   `toml:"groups_claim,omitempty"`
	OriginCAFile     string   `toml:"origin_ca_file,omitempty"`
}

// loginSetup is how a test points an application at an OpenID provider:
// its issuer URL and the PEM of the CA its TLS certificate chains to
// (fixtureOP here; internal/oidcop works the same way).
type loginSetup struct {
	Issuer string
	CAPEM  []byte
	// Policies are the console's; nil: ops on enrolled laptops.
	Policies []policySection
}

// loginFixture is a running gateway with the console application, its
// provider and the laptops.
type loginFixture struct {
	h       *harness
	op      *fixtureOP
	laptop  *device // an enrolled laptop of the fleet CA
	laptop2 *device // another one
}

var loginPKI = func() func() (*pki.Cert, *device, *device) {
	var cert *pki.Cert
	var l1, l2 *device
	return func() (*pki.Cert, *device, *device) {
		if cert == nil {
			p := sharedPKI()
			cert = p.inter.MustIssue(pki.Server(hConsole))
			for _, d := range []**device{&l1, &l2} {
				cn := "laptop-7"
				if d == &l2 {
					cn = "laptop-8"
				}
				c := p.inter.MustIssue(pki.Device(cn))
				*d = &device{name: cn, cert: c, tls: c.TLSCertificate(p.inter)}
			}
		}
		return cert, l1, l2
	}
}()

// withLogin adds the console application (login with the provider of ls)
// to the harness configuration; its files go to dir.
func withLogin(t testing.TB, dir string, ls loginSetup) func(*cfgParams) {
	cert, _, _ := loginPKI()
	p := sharedPKI()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cert.WriteFiles(filepath.Join(dir, "console.pem"), filepath.Join(dir, "console-key.pem"), p.inter))
	must(os.WriteFile(filepath.Join(dir, "oidc-secret"), []byte(loginSecret+"\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "idp-ca.pem"), ls.CAPEM, 0o600))
	policies := ls.Policies
	if policies == nil {
		policies = []policySection{{Name: "ops on enrolled laptops", Decision: "allow",
			Include: []selector{{"email_domain": "fleet.test"}, {"group": "ops"}}, Require: []selector{anyFleetDevice}}}
	}
	return func(cp *cfgParams) {
		cp.Edit = func(c *fileConfig) {
			c.ClientCAs[0].AssociatedHostnames = append(c.ClientCAs[0].AssociatedHostnames, hConsole)
			c.IdentityProviders = []idpSection{{Name: loginIdPName, Type: "oidc", Issuer: ls.Issuer, ClientID: loginClient,
				ClientSecretFile: filepath.Join(dir, "oidc-secret"), OriginCAFile: filepath.Join(dir, "idp-ca.pem")}}
			app := appSection{Name: "console", Domain: hConsole, Origin: cp.Origin, SessionDuration: "8h",
				TLSCertFile: filepath.Join(dir, "console.pem"), TLSKeyFile: filepath.Join(dir, "console-key.pem"),
				IdentityProviders: []string{loginIdPName}, Policies: policies}
			c.Applications = append(c.Applications, app)
		}
	}
}

func newLoginFixture(t *testing.T, user opUser, policies ...policySection) *loginFixture {
	op := startFixtureOP(t, loginClient, loginSecret, user)
	_, l1, l2 := loginPKI()
	ls := loginSetup{Issuer: op.Issuer(), CAPEM: op.CAPEM(), Policies: policies}
	h := newHarness(t, withLogin(t, t.TempDir(), ls))
	return &loginFixture{h: h, op: op, laptop: l1, laptop2: l2}
}

var opsUser = opUser{Sub: "u-ops", Email: "ops@fleet.test", Groups: []string{"ops"}, Verified: true}

// browser is a Go client with a cookie jar and a client certificate (nil:
// none): *.fleet.test goes to the gateway, anything else (the provider)
// where it says. It follows redirects unless follow is false.
func (f *loginFixture) browser(dev *device, jar http.CookieJar, follow bool) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(f.h.pki.root.Cert)
	roots.AddCert(f.op.srv.Certificate())
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(addr); strings.HasSuffix(host, ".fleet.test") {
				addr = f.h.addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if dev == nil {
					return &tls.Certificate{}, nil
				}
				return &dev.tls, nil
			}},
	}
	f.h.t.Cleanup(tr.CloseIdleConnections)
	if jar == nil {
		jar, _ = cookiejar.New(nil)
	}
	c := &http.Client{Transport: tr, Jar: jar, Timeout: 20 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// consoleURL is a URL of the console on the gateway's port.
func (f *loginFixture) consoleURL(path string) string {
	_, port, _ := net.SplitHostPort(f.h.addr)
	return "https://" + hConsole + ":" + port + path
}

// browse GETs url as a browser navigation would.
func browse(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// assertionClaims decodes the payload of the token the origin received.
func assertionClaims(t *testing.T, body string) map[string]any {
	t.Helper()
	var e echo
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not the origin's echo: %v: %s", err, body)
	}
	tok := e.Headers.Get("Cf-Access-Jwt-Assertion")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("assertion %q", tok)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoginFlow(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	c := f.browser(f.laptop, nil, true)
	resp, body := browse(t, c, f.consoleURL("/dash?tab=1"))
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/dash" || resp.Request.URL.RawQuery != "tab=1" {
		t.Fatalf("after login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	claims := assertionClaims(t, body)
	sum := sha256.Sum256(f.laptop.cert.Cert.Raw)
	cnf, _ := claims["cnf"].(map[string]any)
	if claims["email"] != "ops@fleet.test" || claims["idp"] != loginIdPName || claims["sub"] != "u-ops" ||
		cnf["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]) || claims["identity_nonce"] == "" {
		t.Fatalf("claims %v", claims)
	}
	// The cookie carries the session: no second login.
	resp, body = browse(t, c, f.consoleURL("/other"))
	if resp.StatusCode != http.StatusOK || f.op.authorizations.Load() != 1 {
		t.Fatalf("second request: %d after %d logins: %s", resp.StatusCode, f.op.authorizations.Load(), body)
	}
	if c2 := assertionClaims(t, body); c2["identity_nonce"] != claims["identity_nonce"] || c2["email"] != "ops@fleet.test" {
		t.Fatalf("the session's identity changed: %v", c2)
	}
	// A script without a session gets 401, not a redirect.
	req, _ := http.NewRequest(http.MethodGet, f.consoleURL("/api"), nil)
	resp, err := f.browser(f.laptop, nil, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Cookie") {
		t.Fatalf("script without session: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// get-identity names the person.
	resp, body = browse(t, c, f.consoleURL("/cdn-cgi/access/get-identity"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"email":"ops@fleet.test"`) || !strings.Contains(body, `"idp":"corp"`) {
		t.Fatalf("get-identity: %d %s", resp.StatusCode, body)
	}

	// The cookie without the laptop's certificate, or with another
	// laptop's, opens nothing: as if there were no session.
	u, _ := url.Parse(f.consoleURL("/"))
	for _, dev := range []*device{nil, f.laptop2} {
		jar, _ := cookiejar.New(nil)
		jar.SetCookies(u, c.Jar.Cookies(u))
		if len(jar.Cookies(u)) == 0 {
			t.Fatal("no session cookie in the jar")
		}
		resp, body := browse(t, f.browser(dev, jar, false), f.consoleURL("/dash"))
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), f.op.Issuer()+"/authorize") {
			t.Fatalf("stolen cookie (certificate %v): %d %s: %s", dev != nil, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}

	// Logout clears the cookie and goes to the provider's end_session_endpoint.
	resp, _ = browse(t, f.browser(f.laptop, c.Jar, false), f.consoleURL("/cdn-cgi/access/logout"))
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), f.op.Issuer()+"/logout?client_id=fleetgate") ||
		!strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: %d %q %q", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Set-Cookie"))
	}
	if strings.Contains(f.h.logs.String(), loginSecret) {
		t.Fatal("the client secret is in the gateway's log")
	}
}

// startLogin runs the browser up to the callback and returns its URL (the
// provider's redirect) with the client whose jar holds the login cookie.
func (f *loginFixture) startLogin(t *testing.T) (*http.Client, string) {
	t.Helper()
	c := f.browser(f.laptop, nil, false)
	resp, body := browse(t, c, f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("start: %d %s", resp.StatusCode, body)
	}
	if sc := resp.Header.Get("Set-Cookie"); !strings.Contains(sc, "SameSite=Lax") || !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "Secure") {
		t.Fatalf("login cookie %q", sc)
	}
	resp, body = browse(t, c, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("provider: %d %s", resp.StatusCode, body)
	}
	return c, resp.Header.Get("Location")
}

func TestLoginFailures(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	noSession := func(t *testing.T, resp *http.Response, body string, status int) {
		t.Helper()
		if resp.StatusCode != status || strings.Contains(resp.Header.Get("Set-Cookie"), "CF_Authorization=ey") {
			t.Fatalf("%d (want %d), Set-Cookie %q: %s", resp.StatusCode, status, resp.Header.Get("Set-Cookie"), body)
		}
	}
	t.Run("replayed state", func(t *testing.T) {
		c, cb := f.startLogin(t)
		jar := c.Jar.(*cookiejar.Jar)
		u, _ := url.Parse(cb)
		saved := jar.Cookies(u)
		resp, _ := browse(t, c, cb)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" {
			t.Fatalf("first callback: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		fresh, _ := cookiejar.New(nil)
		fresh.SetCookies(u, saved) // the attacker kept the login cookie too
		resp, body := browse(t, f.browser(f.laptop, fresh, false), cb)
		noSession(t, resp, body, http.StatusBadRequest)
	})
	t.Run("forged state", func(t *testing.T) {
		_, cb := f.startLogin(t)
		resp, body := browse(t, f.browser(f.laptop, nil, false), cb) // no login cookie
		noSession(t, resp, body, http.StatusBadRequest)
		c, cb := f.startLogin(t)
		u, _ := url.Parse(cb)
		q := u.Query()
		q.Set("state", strings.Repeat("A", 43))
		u.RawQuery = q.Encode()
		resp, body = browse(t, c, u.String())
		noSession(t, resp, body, http.StatusBadRequest)
	})
	for _, tc := range []struct {
		name string
		set  func(*fixtureOP)
	}{
		{"wrong nonce", func(op *fixtureOP) { op.nonce = "not-the-login-nonce" }},
		{"another issuer", func(op *fixtureOP) { op.issuer = "https://evil.test" }},
		{"another audience", func(op *fixtureOP) { op.audience = "someone-else" }},
		{"expired ID token", func(op *fixtureOP) { op.ttl = -time.Hour }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, cb := f.startLogin(t)
			f.op.set(tc.set)
			defer f.op.set(func(op *fixtureOP) { op.nonce, op.issuer, op.audience, op.ttl = "", "", "", 5*time.Minute })
			resp, body := browse(t, c, cb)
			noSession(t, resp, body, http.StatusUnauthorized)
			if !strings.Contains(body, "Sign-in failed") {
				t.Fatalf("page: %s", body)
			}
		})
	}
	t.Run("return URL to another host", func(t *testing.T) {
		for _, ret := range []string{"//evil.test/x", "https://evil.test/", `/\evil.test`, "evil.test"} {
			resp, body := browse(t, f.browser(f.laptop, nil, false), f.consoleURL("/cdn-cgi/access/login/corp?redirect_url="+url.QueryEscape(ret)))
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "evil") {
				t.Fatalf("%q: %d %s", ret, resp.StatusCode, body)
			}
		}
	})
	if strings.Contains(f.h.logs.String(), loginSecret) {
		t.Fatal("the client secret is in the gateway's log")
	}
}

func TestLoginDenied(t *testing.T) {
	f := newLoginFixture(t, opUser{Sub: "u-guest", Email: "guest@elsewhere.test", Groups: []string{"guests"}, Verified: true})
	resp, body := browse(t, f.browser(f.laptop, nil, true), f.consoleURL("/dash?<script>"))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "console") || strings.Contains(body, "script") ||
		strings.Contains(body, "email_domain") || strings.Contains(body, "ops on enrolled") {
		t.Fatalf("denied: %d %s", resp.StatusCode, body)
	}
	i := strings.Index(body, "<code>")
	if i < 0 {
		t.Fatalf("no request id: %s", body)
	}
	id := body[i+6 : i+22]
	var line map[string]any
	for deadline := time.Now().Add(5 * time.Second); line == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range f.h.accessLines(t) { // written just after the answer
			if l["request_id"] == id {
				line = l
			}
		}
	}
	if line == nil || line["status"] != float64(403) || line["email"] != "guest@elsewhere.test" || line["reason"] != "no policy matched" {
		t.Fatalf("access log line of %s: %v", id, line)
	}
}

func TestLoginProviderDown(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	f.op.srv.Close()
	start := time.Now()
	resp, body := browse(t, f.browser(f.laptop, nil, false), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot be reached") || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("provider down: %d %q %s", resp.StatusCode, resp.Header.Get("Set-Cookie"), body)
	}
	if time.Since(start) > 15*time.Second {
		t.Fatalf("the failure took %v", time.Since(start))
	}
	// Other applications keep serving.
	r := f.h.get(t, f.h.client(f.h.pki.sensor1), href(hApp, "/x"))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("app.fleet.test while the provider is down: %d", r.StatusCode)
	}
}

func TestLoginSecretReload(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	// The provider's secret rotates; the gateway still has the old one.
	f.op.set(func(op *fixtureOP) { op.secret = "rotated-secret-41" })
	resp, body := browse(t, f.browser(f.laptop, nil, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old secret: %d %s", resp.StatusCode, body)
	}
	// The secret file changes and the gateway reloads: logins work again.
	var secretFile string
	for _, ip := range f.h.srv.snap.Load().cfg.IdentityProviders {
		secretFile = ip.ClientSecretFile
	}
	if err := os.WriteFile(secretFile, []byte("rotated-secret-41\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	resp, body = browse(t, f.browser(f.laptop, nil, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the reload: %d %s", resp.StatusCode, body)
	}
	for _, s := range []string{loginSecret, "rotated-secret-41"} {
		if strings.Contains(f.h.logs.String(), s) {
			t.Fatalf("a client secret is in the gateway's log")
		}
	}
}
