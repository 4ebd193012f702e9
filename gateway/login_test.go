package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
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
	op      *fixtureOP        // nil with a provider of internal/oidcop
	opCA    *x509.Certificate // what the provider's TLS certificate chains to
	laptop  *device           // an enrolled laptop of the fleet CA
	laptop2 *device           // another one
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
	return newLoginFixtureWith(t, user, func(*cfgParams) {}, policies...)
}

var opsUser = opUser{Sub: "u-ops", Email: "ops@fleet.test", Groups: []string{"ops"}, Verified: true}

// browser is a Go client with a cookie jar and a client certificate (nil:
// none): *.fleet.test goes to the gateway, anything else (the provider)
// where it says. It follows redirects unless follow is false.
func (f *loginFixture) browser(dev *device, jar http.CookieJar, follow bool) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(f.h.pki.root.Cert)
	roots.AddCert(f.opCA)
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
	return testkit.Fetch(t, c, req)
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
	checkLoginCookie(t, resp)
	resp, body = browse(t, c, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("provider: %d %s", resp.StatusCode, body)
	}
	return c, resp.Header.Get("Location")
}

// checkLoginCookie checks the login state cookie resp (the redirect to the
// provider) sets: exactly one, short-lived (Max-Age at most 600 s, and an
// Expires that agrees), sent only to the callback, HttpOnly, Secure and
// SameSite=Lax.
func checkLoginCookie(t *testing.T, resp *http.Response) {
	t.Helper()
	var login []*http.Cookie
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, loginCookiePrefix) {
			login = append(login, c)
		}
	}
	if len(login) != 1 {
		t.Fatalf("%d login cookies in %q", len(login), resp.Header.Values("Set-Cookie"))
	}
	c := login[0]
	if c.MaxAge <= 0 || c.MaxAge > 600 || c.Expires.After(time.Now().Add(601*time.Second)) || c.Expires.Before(time.Now()) ||
		c.Path != pathCallback || c.Domain != "" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode || c.Value == "" {
		t.Fatalf("login cookie %q: want Max-Age in (0, 600], Path %s, host-only, HttpOnly, Secure, SameSite=Lax", c.Raw, pathCallback)
	}
}

// assertNoSession checks a refused login: the status, the page's title
// (title), no Set-Cookie that sets a session (every one of the answer's,
// not only the first), nothing of the request reflected (reflect, when
// set, must not be in the body) and, with a jar, no session in it.
func assertNoSession(t *testing.T, resp *http.Response, body string, status int, title string, jar http.CookieJar, reflect ...string) {
	t.Helper()
	if resp.StatusCode != status || !strings.Contains(body, "<h1>"+title+"</h1>") {
		t.Fatalf("%d (want %d), page (want %q): %s", resp.StatusCode, status, title, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("error page Content-Type %q, Cache-Control %q", ct, resp.Header.Get("Cache-Control"))
	}
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if name, value, _ := strings.Cut(sc, "="); strings.TrimSpace(name) == "CF_Authorization" && !strings.HasPrefix(value, ";") && value != "" {
			t.Fatalf("a session cookie in Set-Cookie %q", resp.Header.Values("Set-Cookie"))
		}
	}
	for _, c := range resp.Cookies() {
		if c.Name == "CF_Authorization" && c.Value != "" {
			t.Fatalf("a session cookie %q", c.Raw)
		}
	}
	if jar != nil {
		u := *resp.Request.URL
		u.Path, u.RawQuery = "/", ""
		for _, c := range jar.Cookies(&u) {
			if c.Name == "CF_Authorization" {
				t.Fatalf("a session cookie in the jar: %v", c)
			}
		}
	}
	for _, r := range reflect {
		if r != "" && strings.Contains(body, r) {
			t.Fatalf("the page reflects %q: %s", r, body)
		}
	}
}

func TestLoginFailures(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	stateOf := func(t *testing.T, cb string) string {
		t.Helper()
		u, err := url.Parse(cb)
		if err != nil || !validState(u.Query().Get("state")) {
			t.Fatalf("callback URL %q", cb)
		}
		return u.Query().Get("state")
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
		exchanges := f.op.tokenRequests.Load()
		fresh, _ := cookiejar.New(nil)
		fresh.SetCookies(u, saved) // the attacker kept the login cookie too
		resp, body := browse(t, f.browser(f.laptop, fresh, false), cb)
		assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", fresh, stateOf(t, cb))
		// The same browser, replaying its own callback (its jar holds the
		// session of the first one): refused, and no new session set.
		c.Jar.SetCookies(u, saved)
		resp, body = browse(t, c, cb)
		assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", nil, stateOf(t, cb))
		if n := f.op.tokenRequests.Load(); n != exchanges {
			t.Fatalf("%d code exchanges after the first's %d: a replay reached the provider", n, exchanges)
		}
	})
	t.Run("another issuer", func(t *testing.T) {
		// A response that says another provider sent it (RFC 9207's iss,
		// a mix-up attack): refused, and its code goes to no token endpoint.
		c, cb := f.startLogin(t)
		u, _ := url.Parse(cb)
		q := u.Query()
		q.Set("iss", "https://idp.attacker.test")
		u.RawQuery = q.Encode()
		exchanges := f.op.tokenRequests.Load()
		resp, body := browse(t, c, u.String())
		assertNoSession(t, resp, body, http.StatusUnauthorized, "Sign-in failed", c.Jar.(*cookiejar.Jar), stateOf(t, cb))
		if n := f.op.tokenRequests.Load(); n != exchanges {
			t.Fatal("the code of a response from another issuer was exchanged")
		}
	})
	t.Run("forged state", func(t *testing.T) {
		_, cb := f.startLogin(t)
		jar, _ := cookiejar.New(nil)
		resp, body := browse(t, f.browser(f.laptop, jar, false), cb) // no login cookie
		assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", jar, stateOf(t, cb))
		for _, forge := range []func(string) string{
			func(string) string { return strings.Repeat("A", 43) },            // names no cookie
			func(s string) string { return s[:16] + strings.Repeat("A", 27) }, // names the login's cookie, not its state
		} {
			c, cb := f.startLogin(t)
			u, _ := url.Parse(cb)
			q := u.Query()
			forged := forge(q.Get("state"))
			q.Set("state", forged)
			u.RawQuery = q.Encode()
			resp, body = browse(t, c, u.String())
			assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", c.Jar, forged)
		}
	})
	t.Run("tampered login cookie", func(t *testing.T) {
		oc, ocb := f.startLogin(t) // another login of the same laptop
		ou, _ := url.Parse(ocb)
		otherSealed := oc.Jar.Cookies(ou)[0].Value
		for _, tamper := range []func(string) string{
			func(v string) string { // one character changed
				b := []byte(v)
				if i := len(b) / 2; b[i] == 'A' {
					b[i] = 'B'
				} else {
					b[i] = 'A'
				}
				return string(b)
			},
			func(v string) string { return v[:len(v)-4] }, // truncated
			func(v string) string { return v + "AAAA" },   // extended
			func(string) string { return "" },             // emptied
			func(v string) string { return "!" + v[1:] },  // not base64url
			func(string) string { return otherSealed },    // another login's sealed state
		} {
			c, cb := f.startLogin(t)
			u, _ := url.Parse(cb)
			cookies := c.Jar.Cookies(u)
			if len(cookies) != 1 || !strings.HasPrefix(cookies[0].Name, loginCookiePrefix) {
				t.Fatalf("login cookies %v", cookies)
			}
			jar, _ := cookiejar.New(nil)
			jar.SetCookies(u, []*http.Cookie{{Name: cookies[0].Name, Value: tamper(cookies[0].Value), Path: pathCallback}})
			resp, body := browse(t, f.browser(f.laptop, jar, false), cb)
			assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", jar, stateOf(t, cb))
			// The untampered cookie still completes that login: the
			// refusal used nothing up.
			if resp, body := browse(t, c, cb); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" {
				t.Fatalf("the login after the tampered callback: %d %s", resp.StatusCode, body)
			}
		}
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
			assertNoSession(t, resp, body, http.StatusUnauthorized, "Sign-in failed", c.Jar, stateOf(t, cb))
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

// TestLoginJWKSUnavailable: a provider whose key set cannot be had at the
// callback (its JWKS answers 503) is an unavailable provider: 502 "Sign-in
// unavailable" and no session, not a refused login; once the keys are back
// the next login completes.
func TestLoginJWKSUnavailable(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	c, cb := f.startLogin(t)
	f.op.set(func(op *fixtureOP) { op.jwksDown = http.StatusServiceUnavailable })
	resp, body := browse(t, c, cb)
	assertNoSession(t, resp, body, http.StatusBadGateway, "Sign-in unavailable", c.Jar)
	if !strings.Contains(body, "cannot be reached") {
		t.Fatalf("the 502 page: %s", body)
	}
	if !strings.Contains(f.h.logs.String(), "identity provider unavailable") {
		t.Fatalf("the log does not say the provider is unavailable:\n%s", f.h.logs.String())
	}
	f.op.set(func(op *fixtureOP) { op.jwksDown = 0 })
	resp, body = browse(t, f.browser(f.laptop, nil, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusOK || assertionClaims(t, body)["email"] != opsUser.Email {
		t.Fatalf("a login once the keys are back: %d %s", resp.StatusCode, body)
	}
}

// TestLoginBypassAndNonIdentity: on an application with identity
// providers, a request a bypass policy (a device's health check) or a
// non_identity policy (a provisioning service's certificate) admits is
// answered at once, whatever it accepts: no login starts, the provider sees
// nothing. A request neither admits still starts a login.
func TestLoginBypassAndNonIdentity(t *testing.T) {
	p := sharedPKI()
	f := newLoginFixture(t, opsUser,
		policySection{Name: "sensors' health checks", Decision: "bypass", Include: []selector{{"common_name": p.sensor1.name}}},
		policySection{Name: "provisioning service", Decision: "non_identity", Include: []selector{{"common_name": p.sensor2.name}}},
		policySection{Name: "ops on enrolled laptops", Decision: "allow", Include: []selector{{"group": "ops"}}, Require: []selector{anyFleetDevice}})
	for _, tc := range []struct {
		name      string
		dev       *device
		assertion bool // non_identity mints one; bypass does not
	}{
		{"bypass", p.sensor1, false},
		{"non_identity", p.sensor2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, accept := range []string{"text/html,application/xhtml+xml", "application/json", ""} {
				req, _ := http.NewRequest(http.MethodGet, f.consoleURL("/healthz"), nil)
				if accept != "" {
					req.Header.Set("Accept", accept)
				}
				resp, err := f.browser(tc.dev, nil, false).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body := string(b)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
					t.Fatalf("Accept %q: %d %q: %s", accept, resp.StatusCode, resp.Header.Get("Location"), body)
				}
				var e echo
				if err := json.Unmarshal(b, &e); err != nil || e.Path != "/healthz" {
					t.Fatalf("Accept %q: not the origin's answer (%v): %s", accept, err, body)
				}
				if got := e.Headers.Get("Cf-Access-Jwt-Assertion") != ""; got != tc.assertion {
					t.Fatalf("Accept %q: assertion to the origin %v, want %v", accept, got, tc.assertion)
				}
				for _, c := range resp.Cookies() {
					if strings.HasPrefix(c.Name, loginCookiePrefix) {
						t.Fatalf("Accept %q: a login cookie %q", accept, c.Raw)
					}
				}
			}
		})
	}
	if n, m := f.op.authorizations.Load(), f.op.tokenRequests.Load(); n != 0 || m != 0 {
		t.Fatalf("the provider saw %d authorizations and %d code exchanges", n, m)
	}
	// The laptop matches neither: its page request goes to the provider.
	resp, body := browse(t, f.browser(f.laptop, nil, false), f.consoleURL("/healthz"))
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), f.op.Issuer()+"/authorize?") {
		t.Fatalf("the laptop: %d %q: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

// TestLoginUnverifiedEmail: an email the provider does not say is verified
// is dropped and the login goes on without it: a group policy still
// admits the person, an email_domain policy does not.
func TestLoginUnverifiedEmail(t *testing.T) {
	f := newLoginFixture(t, opUser{Sub: "u-ops", Email: "ops@fleet.test", Groups: []string{"ops"}, Verified: false})
	resp, body := browse(t, f.browser(f.laptop, nil, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("in the group, email unverified: %d %s", resp.StatusCode, body)
	}
	if c := assertionClaims(t, body); c["email"] != nil && c["email"] != "" || c["sub"] != "u-ops" {
		t.Fatalf("claims with an unverified email: %v", c)
	}
	f.op.set(func(op *fixtureOP) { op.user.Groups = []string{"guests"} })
	resp, body = browse(t, f.browser(f.laptop, nil, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Access denied") {
		t.Fatalf("only email_domain could admit, email unverified: %d %s", resp.StatusCode, body)
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

// fromIP makes c's connections to the gateway leave from the loopback
// address ip, so a test can replay a cookie "from elsewhere".
func (f *loginFixture) fromIP(c *http.Client, ip string) *http.Client {
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, _ := net.SplitHostPort(addr); strings.HasSuffix(host, ".fleet.test") {
			addr = f.h.addr
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return d.DialContext(ctx, network, addr)
	}
	return c
}

// TestLoginStolenCookieNeedsTheLaptop: a session minted by a policy without
// certificate selectors names the laptop's certificate but is not bound to
// it; replayed without any certificate from another address it must not
// satisfy another policy's valid_certificate.
func TestLoginStolenCookieNeedsTheLaptop(t *testing.T) {
	f := newLoginFixture(t, opsUser,
		policySection{Name: "ops from the office", Decision: "allow", Include: []selector{{"email_domain": "fleet.test"}}, Require: []selector{{"ip": []string{"127.0.0.1/32"}}}},
		policySection{Name: "ops on enrolled laptops", Decision: "allow", Include: []selector{{"group": "ops"}}, Require: []selector{anyFleetDevice}})
	c := f.browser(f.laptop, nil, true)
	resp, body := browse(t, c, f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	if cl := assertionClaims(t, body); cl["policy"] != "ops from the office" || cl["cnf"] != nil || cl["cert_sha256"] == nil {
		t.Fatalf("login claims %v", cl)
	}
	u, _ := url.Parse(f.consoleURL("/"))
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(u, c.Jar.Cookies(u))
	resp, body = browse(t, f.fromIP(f.browser(nil, jar, false), "127.0.0.2"), f.consoleURL("/dash"))
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("the stolen cookie without the laptop opened the console: %s", body)
	}
}

// newLoginFixtureWith is newLoginFixture with more harness settings (a
// clock, the cookie's SameSite); policies nil: ops on enrolled laptops.
func newLoginFixtureWith(t *testing.T, user opUser, mod func(*cfgParams), policies ...policySection) *loginFixture {
	op := startFixtureOP(t, loginClient, loginSecret, user)
	_, l1, l2 := loginPKI()
	ls := loginSetup{Issuer: op.Issuer(), CAPEM: op.CAPEM(), Policies: policies}
	login := withLogin(t, t.TempDir(), ls)
	h := newHarness(t, func(p *cfgParams) {
		login(p)
		edit := p.Edit
		p.Edit = nil
		mod(p)
		if e := p.Edit; e != nil {
			p.Edit = func(c *fileConfig) { edit(c); e(c) }
		} else {
			p.Edit = edit
		}
	})
	return &loginFixture{h: h, op: op, opCA: op.srv.Certificate(), laptop: l1, laptop2: l2}
}

// TestLoginSessionEndsAfterSessionDuration: using the laptop re-mints the
// session, but never past the login's time plus session_duration: then
// the person goes back to the identity provider.
func TestLoginSessionEndsAfterSessionDuration(t *testing.T) {
	var offset atomic.Int64 // the gateway's clock runs this far ahead
	f := newLoginFixtureWith(t, opsUser, func(p *cfgParams) {
		p.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	c := f.browser(f.laptop, nil, true)
	for _, step := range []struct {
		at     time.Duration
		logins int32
	}{{0, 1}, {time.Hour, 1}, {5 * time.Hour, 1}, {7 * time.Hour, 1}, {8*time.Hour + 5*time.Minute, 2}} {
		offset.Store(int64(step.at))
		resp, body := browse(t, c, f.consoleURL("/dash"))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("at +%v: %d %s", step.at, resp.StatusCode, body)
		}
		if n := f.op.authorizations.Load(); n != step.logins {
			t.Fatalf("at +%v after the login: %d logins at the provider, want %d", step.at, n, step.logins)
		}
	}
}

// TestLoginCallbackErrorKeepsState: a callback that carries the provider's
// error (or no code) is refused without using up the login's state, so the
// real callback that follows still completes; and a replay still fails.
func TestLoginCallbackErrorKeepsState(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	c, cb := f.startLogin(t)
	u, _ := url.Parse(cb)
	saved := c.Jar.Cookies(u)
	for _, mangle := range []func(url.Values){
		func(q url.Values) { q.Del("code"); q.Set("error", "access_denied") },
		func(q url.Values) { q.Set("error", "login_required") },
		func(q url.Values) { q.Del("code") },
	} {
		bad := *u
		q := bad.Query()
		mangle(q)
		bad.RawQuery = q.Encode()
		jar, _ := cookiejar.New(nil)
		jar.SetCookies(u, saved)
		resp, body := browse(t, f.browser(f.laptop, jar, false), bad.String())
		if resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusOK {
			t.Fatalf("callback %s: %d %s", bad.RawQuery, resp.StatusCode, body)
		}
	}
	resp, body := browse(t, c, cb)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" {
		t.Fatalf("the real callback after the error ones: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	f.expectReplayRefused(t, u, saved, cb)
}

// expectReplayRefused replays the callback cb of a completed login from a
// fresh browser on the same laptop, holding the login cookies saved for u
// before it completed: the state is used up, so the answer is 400.
func (f *loginFixture) expectReplayRefused(t *testing.T, u *url.URL, saved []*http.Cookie, cb string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(u, saved)
	if resp, body := browse(t, f.browser(f.laptop, jar, false), cb); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replayed callback: %d %s", resp.StatusCode, body)
	}
}

// TestLoginUsedStatesNeverFull: a flood of used login states (callbacks
// with a valid state and a bogus code) never stops the next real login, and
// a real replay still fails.
func TestLoginUsedStatesNeverFull(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	used := f.h.srv.snap.Load().logins.used
	now := time.Now()
	exp := now.Add(loginLifetime).Unix()
	for i := 0; i < maxUsedStates+10; i++ {
		used.claim("flood-"+strconv.Itoa(i), exp, now)
	}
	c, cb := f.startLogin(t)
	u, _ := url.Parse(cb)
	saved := c.Jar.Cookies(u)
	if resp, body := browse(t, c, cb); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" {
		t.Fatalf("a real login after the flood: %d %s", resp.StatusCode, body)
	}
	f.expectReplayRefused(t, u, saved, cb)
}

// TestLoginStateBoundToCertificate: a login state completes only on a
// connection presenting the certificate the login started with, so a login
// cookie planted from a sibling host (with the planter's callback URL) does
// not log the victim's laptop in as someone else.
func TestLoginStateBoundToCertificate(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	c, cb := f.startLogin(t) // with f.laptop
	u, _ := url.Parse(cb)
	for _, dev := range []*device{f.laptop2, nil} {
		jar, _ := cookiejar.New(nil)
		jar.SetCookies(u, c.Jar.Cookies(u))
		resp, body := browse(t, f.browser(dev, jar, false), cb)
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(resp.Header.Get("Set-Cookie"), "CF_Authorization=ey") {
			t.Fatalf("callback on another laptop (%v): %d %q %s", dev != nil, resp.StatusCode, resp.Header.Get("Set-Cookie"), body)
		}
	}
	if resp, body := browse(t, c, cb); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" {
		t.Fatalf("callback on the laptop that started: %d %s", resp.StatusCode, body)
	}
}

// TestLoginStrictCookieNoLoop: with cookie_same_site = "strict" the
// callback does not answer with a redirect (the navigation the provider
// started is cross-site, so the browser would not send the Strict cookie
// it just got, and the login would start again): it sets the cookie on a
// small page that navigates on to the path first asked for, same-site.
func TestLoginStrictCookieNoLoop(t *testing.T) {
	f := newLoginFixtureWith(t, opsUser, func(p *cfgParams) {
		p.Edit = func(c *fileConfig) { c.Tokens.CookieSameSite = "strict" }
	})
	c, cb := f.startLogin(t)
	resp, body := browse(t, c, cb)
	sc := resp.Header.Get("Set-Cookie")
	for _, h := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(h, "CF_Authorization=ey") {
			sc = h
		}
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || !strings.HasPrefix(sc, "CF_Authorization=ey") ||
		!strings.Contains(sc, "SameSite=Strict") || !strings.Contains(body, `<meta http-equiv="refresh" content="0;url=/dash">`) ||
		!strings.Contains(body, `href="/dash"`) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("callback under SameSite=Strict: %d Location %q Set-Cookie %q: %s", resp.StatusCode, resp.Header.Get("Location"), sc, body)
	}
	// The page's navigation is same-site: the cookie goes with it.
	if resp, body := browse(t, c, f.consoleURL("/dash")); resp.StatusCode != http.StatusOK || f.op.authorizations.Load() != 1 {
		t.Fatalf("after the page: %d after %d logins: %s", resp.StatusCode, f.op.authorizations.Load(), body)
	}
}

// TestLoginCookieFitsBrowser: the session keeps only the groups the
// application's policies name, so a provider's long groups claim does not
// make a cookie browsers drop (which loops back to the login); an identity
// too large anyway is refused with a clear page instead of a cookie.
func TestLoginCookieFitsBrowser(t *testing.T) {
	many := []string{"ops"}
	for i := 0; i < 300; i++ {
		many = append(many, fmt.Sprintf("team-%04d-of-a-large-organisation", i))
	}
	f := newLoginFixture(t, opUser{Sub: "u-ops", Email: "ops@fleet.test", Groups: many, Verified: true})
	c, cb := f.startLogin(t)
	resp, body := browse(t, c, cb)
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if len(sc) > 4000 {
			t.Fatalf("a Set-Cookie of %d bytes", len(sc))
		}
	}
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	resp, body = browse(t, c, f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after login: %d %s", resp.StatusCode, body)
	}
	if g, _ := assertionClaims(t, body)["groups"].([]any); len(g) != 1 || g[0] != "ops" {
		t.Fatalf("groups in the token: %v", g)
	}

	f.op.set(func(op *fixtureOP) { op.user.Email = "ops-" + strings.Repeat("a", 4000) + "@fleet.test" })
	c, cb = f.startLogin(t)
	resp, body = browse(t, c, cb)
	if resp.StatusCode != http.StatusForbidden || strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), "\n"), "CF_Authorization=ey") ||
		!strings.Contains(body, "too large") || strings.Contains(body, "aaaa") {
		t.Fatalf("an identity too large for a cookie: %d %q: %s", resp.StatusCode, resp.Header.Values("Set-Cookie"), body)
	}
}

// TestLoginStateParamAndCookieSize: the callback's state parameter names
// the login cookie to clear only once it has the shape of a state (no
// attribute injected into the Set-Cookie), and the login cookie of the
// longest return URL accepted still fits a browser's 4 KB.
func TestLoginStateParamAndCookieSize(t *testing.T) {
	f := newLoginFixture(t, opsUser)
	for _, state := range []string{"x;Domain=fleet.test;Path=/;Max-Age=99999", "aaaaaaaaaaaaaaaa\"; Secure"} {
		resp, _ := browse(t, f.browser(f.laptop, nil, false), f.consoleURL("/cdn-cgi/access/callback?code=c&state="+url.QueryEscape(state)))
		for _, sc := range resp.Header.Values("Set-Cookie") {
			if name, _, _ := strings.Cut(sc, "="); strings.ContainsAny(name, ";\" ") || strings.Contains(sc, "Domain=") {
				t.Fatalf("state %q: Set-Cookie %q", state, sc)
			}
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("state %q: %d", state, resp.StatusCode)
		}
	}
	ret := "/dash?q=" + strings.Repeat("<", 2000)
	resp, body := browse(t, f.browser(f.laptop, nil, false), f.consoleURL(ret))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("start: %d %s", resp.StatusCode, body)
	}
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if len(sc) > 4000 {
			t.Fatalf("a login cookie of %d bytes", len(sc))
		}
	}
}

// TestLoginReloadClosesOldProvider: a reload that replaces a provider (its
// secret changed) closes the old one's idle connections to the identity
// provider instead of leaving them to time out.
func TestLoginReloadClosesOldProvider(t *testing.T) {
	op := startFixtureOP(t, loginClient, loginSecret, opsUser)
	// The same provider behind a second server that counts its open
	// connections (ConnState must be set before the server starts).
	var open atomic.Int32
	counted := httptest.NewUnstartedServer(op.srv.Config.Handler)
	counted.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	counted.TLS = &tls.Config{Certificates: op.srv.TLS.Certificates}
	counted.StartTLS()
	t.Cleanup(counted.Close)
	op.srv = counted // its URL is the issuer from now on
	_, l1, l2 := loginPKI()
	f := &loginFixture{op: op, opCA: op.srv.Certificate(), laptop: l1, laptop2: l2}
	f.h = newHarness(t, withLogin(t, t.TempDir(), loginSetup{Issuer: op.Issuer(), CAPEM: op.CAPEM()}))
	c := f.browser(f.laptop, nil, true)
	if resp, body := browse(t, c, f.consoleURL("/dash")); resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	c.Transport.(*http.Transport).CloseIdleConnections() // the browser's, to /authorize
	waitOpen := func(ok func(int32) bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(open.Load()); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d connections open at the provider", what, open.Load())
			}
		}
	}
	waitOpen(func(n int32) bool { return n >= 1 }, "the gateway's provider keeps a connection")
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
	waitOpen(func(n int32) bool { return n == 0 }, "after the reload replaced the provider")
}

// TestLoginGroupRuleAddedAfterLogin: a session token records only the groups
// the application's rules named when it was minted. When a reload names
// another group (here, an exclude of "suspended"), a cookie minted before
// cannot say whether the person is in it: the person logs in again and is
// judged on the provider's groups, instead of being let in on the old
// cookie.
func TestLoginGroupRuleAddedAfterLogin(t *testing.T) {
	f := newLoginFixture(t, opUser{Sub: "u-ops", Email: "ops@fleet.test", Groups: []string{"ops", "suspended"}, Verified: true})
	jar, _ := cookiejar.New(nil)
	resp, body := browse(t, f.browser(f.laptop, jar, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	claims := assertionClaims(t, body)
	if g, _ := claims["groups"].([]any); len(g) != 1 || g[0] != "ops" || claims["group_set"] == nil || claims["auth_time"] == nil {
		t.Fatalf("the session's claims: groups %v, group_set %v, auth_time %v", g, claims["group_set"], claims["auth_time"])
	}
	cfg := f.h.config()
	console := &cfg.Applications[len(cfg.Applications)-1]
	console.Policies[0].Exclude = []selector{{"group": "suspended"}}
	f.h.write(cfg)
	if err := f.h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	resp, body = browse(t, f.browser(f.laptop, jar, false), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/authorize") {
		t.Fatalf("the old cookie under the new group rule: %d %s (Location %q); want a new login", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	resp, body = browse(t, f.browser(f.laptop, jar, true), f.consoleURL("/dash"))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logged in again, in group suspended: %d %s; want 403", resp.StatusCode, body)
	}
}
