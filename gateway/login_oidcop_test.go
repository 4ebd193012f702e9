package gateway

// The login against a real OpenID Provider: internal/oidcop, built on
// zitadel/oidc's certified op package, over TLS on a loopback socket. A Go
// client with a cookie jar and the laptop's certificate goes through the
// whole flow, the provider's login form included:
//
//	GET console/dash ─▶ 302 provider /authorize ─▶ 302 /login (form)
//	POST /login username, password ─▶ 303 /authorize/callback ─▶ 302 console/cdn-cgi/access/callback
//	─▶ code exchanged by the gateway ─▶ CF_Authorization, 302 /dash ─▶ the origin

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"html"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/oidcop"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// idpCerts are the CA of the providers' TLS certificates and the
// certificate itself (for 127.0.0.1 and idp.fleet.test).
type idpCerts struct {
	root *pki.Cert
	cert tls.Certificate
}

var idpPKI = sync.OnceValue(func() *idpCerts {
	root := pki.MustRoot(pki.Root("IdP Root"))
	return &idpCerts{root: root, cert: root.MustIssue(pki.Server("127.0.0.1", "idp.fleet.test")).TLSCertificate()}
})

// The provider's users and their passwords.
var (
	opOps     = oidcop.User{Subject: "u-ops", Email: "ops@fleet.test", EmailVerified: true, Groups: []string{"ops"}, Password: "ops-pass-1"}
	opDev     = oidcop.User{Subject: "u-dev", Email: "dev@fleet.test", EmailVerified: true, Groups: []string{"dev"}, Password: "dev-pass-2"}
	opPartner = oidcop.User{Subject: "u-partner", Email: "ops@partner.test", EmailVerified: true, Groups: []string{"ops"}, Password: "partner-pass-3"}
)

// realOP is an internal/oidcop provider: its socket is open (so that its
// issuer URL is known before the gateway is configured); start serves it.
type realOP struct {
	ln     net.Listener
	issuer string
	p      *oidcop.Provider
}

// listenOP opens the provider's loopback socket; its issuer names host
// ("": the socket's address) and the socket's port.
func listenOP(t testing.TB, host string) *realOP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	if host != "" {
		_, port, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(host, port)
	}
	return &realOP{ln: ln, issuer: "https://" + addr}
}

// start serves the provider, with the gateway as its one client (redirect
// URI: the console's callback on the gateway's port) and opOps, opDev and
// opPartner as users. ttl is the ID tokens' lifetime (0: the default).
func (r *realOP) start(t testing.TB, redirect, postLogout string, ttl time.Duration) {
	t.Helper()
	p, err := oidcop.New(oidcop.Options{
		Issuer:         r.issuer,
		TLSCertificate: &idpPKI().cert,
		Clients: []oidcop.Client{{ID: loginClient, Secret: loginSecret,
			RedirectURIs: []string{redirect}, PostLogoutRedirectURIs: []string{postLogout}}},
		Users:           []oidcop.User{opOps, opDev, opPartner},
		IDTokenLifetime: ttl,
		RequirePKCE:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(r.ln); err != nil {
		t.Fatal(err)
	}
	r.p = p
	t.Cleanup(func() { p.Close() })
}

// opSetup is how a test wants its gateway and providers.
type opSetup struct {
	// Policies are the console's; nil: ops on enrolled laptops (withLogin).
	Policies []policySection
	// IDTokenLifetime of the providers' ID tokens; negative: expired.
	IDTokenLifetime time.Duration
	// Second, when set, is the name of a second provider (on a second
	// oidcop) the console offers after the first.
	Second string
	// SameSite is [tokens].cookie_same_site ("" for the default, lax).
	SameSite string
	// IdPHost, when set, is the host name of the providers' issuers
	// (idp.fleet.test) instead of their loopback address; the gateway
	// reaches them through the providers' Resolve, the way the demo does.
	IdPHost string
}

// oidcFixture is a gateway whose console logs in with internal/oidcop
// providers.
type oidcFixture struct {
	*loginFixture
	ops []*realOP // ops[0] is provider "corp"
}

func newOIDCFixture(t *testing.T, s opSetup) *oidcFixture {
	t.Helper()
	ops := []*realOP{listenOP(t, s.IdPHost)}
	dir := t.TempDir()
	mod := withLogin(t, dir, loginSetup{Issuer: ops[0].issuer, CAPEM: idpPKI().root.CertPEM(), Policies: s.Policies})
	if s.Second != "" {
		ops = append(ops, listenOP(t, s.IdPHost))
		mod = withProvider(mod, dir, s.Second, ops[1].issuer)
	}
	if s.SameSite != "" {
		mod = withSameSite(mod, s.SameSite)
	}
	if s.IdPHost != "" {
		mod = withResolve(mod, ops)
	}
	_, l1, l2 := loginPKI()
	f := &oidcFixture{loginFixture: &loginFixture{h: newHarness(t, mod), opCA: idpPKI().root.Cert, laptop: l1, laptop2: l2}, ops: ops}
	for _, op := range ops {
		op.start(t, f.consoleURL(pathCallback), f.consoleURL("/"), s.IDTokenLifetime)
	}
	return f
}

// withProvider adds to the configuration of withLogin (mod) a second
// provider called name at issuer, with the same client, secret and CA, and
// offers it on the console after the first.
func withProvider(mod func(*cfgParams), dir, name, issuer string) func(*cfgParams) {
	return func(cp *cfgParams) {
		mod(cp)
		edit := cp.Edit
		cp.Edit = func(c *fileConfig) {
			edit(c)
			c.IdentityProviders = append(c.IdentityProviders, idpSection{Name: name, Type: "oidc", Issuer: issuer,
				ClientID: loginClient, ClientSecretFile: filepath.Join(dir, "oidc-secret"), OriginCAFile: filepath.Join(dir, "idp-ca.pem")})
			app := &c.Applications[len(c.Applications)-1]
			app.IdentityProviders = append(app.IdentityProviders, name)
		}
	}
}

// withSameSite sets [tokens].cookie_same_site on the configuration of mod.
func withSameSite(mod func(*cfgParams), sameSite string) func(*cfgParams) {
	return func(cp *cfgParams) {
		mod(cp)
		edit := cp.Edit
		cp.Edit = func(c *fileConfig) {
			edit(c)
			c.Tokens.CookieSameSite = sameSite
		}
	}
}

// withResolve makes the gateway dial each provider of ops on its loopback
// socket, whatever its issuer's host name resolves to.
func withResolve(mod func(*cfgParams), ops []*realOP) func(*cfgParams) {
	return func(cp *cfgParams) {
		mod(cp)
		cp.Loaded = func(c *configs.Config) {
			for i := range c.IdentityProviders {
				for _, op := range ops {
					if c.IdentityProviders[i].Issuer == op.issuer {
						c.IdentityProviders[i].Resolve = op.ln.Addr().String()
					}
				}
			}
		}
	}
}

var authRequestField = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// signIn expects resp (body) to be the provider's login form, as a browser
// lands on it, and posts user and password to it with c; it returns where
// the redirects that follow end.
func signIn(t *testing.T, c *http.Client, resp *http.Response, body string, user oidcop.User) (*http.Response, string) {
	t.Helper()
	m := authRequestField.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/login" || m == nil {
		t.Fatalf("not the provider's login form: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	form := url.Values{"authRequestID": {html.UnescapeString(m[1])}, "username": {user.Email}, "password": {user.Password}}
	action := resp.Request.URL.ResolveReference(&url.URL{Path: "/login"})
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	return testkit.Fetch(t, c, req)
}

// login runs the whole login of user with c from the console's path.
func (f *oidcFixture) login(t *testing.T, c *http.Client, path string, user oidcop.User) (*http.Response, string) {
	t.Helper()
	resp, body := browse(t, c, f.consoleURL(path))
	return signIn(t, c, resp, body, user)
}

// sessionCookie returns the console's CF_Authorization in jar, "" if none.
func (f *oidcFixture) session(jar http.CookieJar) string {
	u, _ := url.Parse(f.consoleURL("/"))
	for _, c := range jar.Cookies(u) {
		if c.Name == "CF_Authorization" {
			return c.Value
		}
	}
	return ""
}

// x5t is base64url(SHA-256(DER)) without padding (RFC 8705 section 3.1).
func x5t(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestOIDCLoginFlow(t *testing.T) {
	f := newOIDCFixture(t, opSetup{})
	op := f.ops[0]
	c := f.browser(f.laptop, nil, true)

	// A wrong password: the provider's form again, no session.
	resp, body := browse(t, c, f.consoleURL("/some/path?x=1"))
	wrong := opOps
	wrong.Password = "not-the-password"
	if r, b := signIn(t, c, resp, body, wrong); r.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "Wrong username or password") || f.session(c.Jar) != "" {
		t.Fatalf("wrong password: %d at %s: %s", r.StatusCode, r.Request.URL, b)
	}

	resp, body = f.login(t, c, "/some/path?x=1", opOps)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != f.consoleURL("/some/path?x=1") {
		t.Fatalf("after login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	if f.session(c.Jar) == "" {
		t.Fatal("no CF_Authorization cookie after the login")
	}
	claims := assertionClaims(t, body)
	cnf, _ := claims["cnf"].(map[string]any)
	want := x5t(f.laptop.cert.Cert.Raw)
	if claims["email"] != opOps.Email || claims["idp"] != loginIdPName || claims["sub"] != opOps.Subject ||
		cnf["x5t#S256"] != want || strings.ContainsAny(want, "=+/") || claims["identity_nonce"] == nil || claims["identity_nonce"] == "" {
		t.Fatalf("claims %v (want x5t#S256 %s)", claims, want)
	}

	// The cookie is the session on a new connection with the same laptop.
	jarOf := func() http.CookieJar {
		jar, _ := cookiejar.New(nil)
		u, _ := url.Parse(f.consoleURL("/"))
		jar.SetCookies(u, c.Jar.Cookies(u))
		return jar
	}
	resp, body = browse(t, f.browser(f.laptop, jarOf(), false), f.consoleURL("/again"))
	if resp.StatusCode != http.StatusOK || assertionClaims(t, body)["email"] != opOps.Email {
		t.Fatalf("the cookie on a new connection of the laptop: %d %s", resp.StatusCode, body)
	}
	// Replayed with another certificate, or none: no access, a new login.
	for _, dev := range []*device{f.laptop2, nil} {
		resp, body := browse(t, f.browser(dev, jarOf(), false), f.consoleURL("/again"))
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), op.issuer+"/authorize?") {
			t.Fatalf("stolen cookie (certificate %v): %d %q: %s", dev != nil, resp.StatusCode, resp.Header.Get("Location"), body)
		}
		req, _ := http.NewRequest(http.MethodGet, f.consoleURL("/api"), nil) // a script
		r, err := f.browser(dev, jarOf(), false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("stolen cookie from a script (certificate %v): %d", dev != nil, r.StatusCode)
		}
	}

	// Logout: the cookie is cleared and the browser goes to the provider's
	// end_session_endpoint, which ends the provider's session too.
	resp, _ = browse(t, f.browser(f.laptop, c.Jar, false), f.consoleURL("/cdn-cgi/access/logout"))
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, op.issuer+"/end_session?") || !strings.Contains(loc, "client_id="+loginClient) ||
		!strings.Contains(resp.Header.Get("Set-Cookie"), "CF_Authorization=;") || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: %d %q %q", resp.StatusCode, loc, resp.Header.Get("Set-Cookie"))
	}
	if f.session(c.Jar) != "" {
		t.Fatal("the session cookie survived the logout")
	}
	resp, body = browse(t, c, loc)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), op.issuer) {
		t.Fatalf("the provider's end_session: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	// Signed out at the provider too: the next visit shows its form again.
	resp, body = browse(t, c, f.consoleURL("/some/path"))
	if resp.Request.URL.Path != "/login" || !authRequestField.MatchString(body) {
		t.Fatalf("after logout: %d at %s, not the login form: %s", resp.StatusCode, resp.Request.URL, body)
	}
	if strings.Contains(f.h.logs.String(), loginSecret) {
		t.Fatal("the client secret is in the gateway's log")
	}
}

func TestOIDCLoginPolicies(t *testing.T) {
	// ops in the group, from fleet.test, on an enrolled laptop.
	f := newOIDCFixture(t, opSetup{Policies: []policySection{{Name: "ops group from fleet.test", Decision: "allow",
		Include: []selector{{"group": "ops"}}, Require: []selector{{"email_domain": "fleet.test"}, anyFleetDevice}}}})
	requestID := regexp.MustCompile(`<code>[0-9a-f]{16}</code>`)
	for _, tc := range []struct {
		name    string
		user    oidcop.User
		allowed bool
	}{
		{"in the group, from the domain", opOps, true},
		{"not in the group", opDev, false},
		{"in the group, another domain", opPartner, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.browser(f.laptop, nil, true)
			// Raw markup in the path and the query: it must come back nowhere.
			resp, body := f.login(t, c, "/x/%3Cscript%3Ealert(1)%3C/script%3E?q=<script>alert(2)</script>", tc.user)
			if tc.allowed {
				if resp.StatusCode != http.StatusOK || f.session(c.Jar) == "" || assertionClaims(t, body)["email"] != tc.user.Email {
					t.Fatalf("allowed: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
				}
				return
			}
			if resp.StatusCode != http.StatusForbidden || f.session(c.Jar) != "" || resp.Request.URL.Path != pathCallback {
				t.Fatalf("denied: %d at %s, session %v: %s", resp.StatusCode, resp.Request.URL, f.session(c.Jar) != "", body)
			}
			if !strings.Contains(body, "<strong>console</strong>") || !requestID.MatchString(body) {
				t.Fatalf("the 403 page names neither the application nor a request id: %s", body)
			}
			for _, leak := range []string{"script", "%3C", "alert", "ops group", "email_domain", "group", "fleet.test", "partner"} {
				if strings.Contains(body, leak) {
					t.Fatalf("the 403 page says %q: %s", leak, body)
				}
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || resp.Header.Get("Content-Security-Policy") == "" {
				t.Fatalf("403 page headers: %v", resp.Header)
			}
		})
	}
}

func TestOIDCLoginExpiredIDToken(t *testing.T) {
	f := newOIDCFixture(t, opSetup{IDTokenLifetime: -time.Hour})
	c := f.browser(f.laptop, nil, true)
	resp, body := f.login(t, c, "/dash", opOps)
	if resp.StatusCode != http.StatusUnauthorized || resp.Request.URL.Path != pathCallback || !strings.Contains(body, "Sign-in failed") {
		t.Fatalf("expired ID token: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	if f.session(c.Jar) != "" {
		t.Fatal("a session after an expired ID token")
	}
	if !strings.Contains(f.h.logs.String(), "expired") {
		t.Fatalf("the log does not say why:\n%s", f.h.logs.String())
	}
}

func TestOIDCProviderDown(t *testing.T) {
	t.Run("before the login", func(t *testing.T) {
		f := newOIDCFixture(t, opSetup{})
		f.ops[0].p.Close()
		start := time.Now()
		resp, body := browse(t, f.browser(f.laptop, nil, false), f.consoleURL("/dash"))
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot be reached") || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("provider down: %d %q %s", resp.StatusCode, resp.Header.Get("Set-Cookie"), body)
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the failure took %v", time.Since(start))
		}
	})
	t.Run("between its form and the callback", func(t *testing.T) {
		f := newOIDCFixture(t, opSetup{})
		c := f.browser(f.laptop, nil, true)
		c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if req.URL.Path == pathCallback {
				return http.ErrUseLastResponse // stop at the provider's redirect back
			}
			return nil
		}
		resp, _ := f.login(t, c, "/dash", opOps)
		cb := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(cb, f.consoleURL(pathCallback)+"?") {
			t.Fatalf("the provider's redirect back: %d %q", resp.StatusCode, cb)
		}
		f.ops[0].p.Close()
		resp, body := browse(t, f.browser(f.laptop, c.Jar, false), cb)
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot be reached") ||
			strings.Contains(resp.Header.Get("Set-Cookie"), "CF_Authorization=ey") || f.session(c.Jar) != "" {
			t.Fatalf("provider down at the code exchange: %d %q %s", resp.StatusCode, resp.Header.Get("Set-Cookie"), body)
		}
	})
}

func TestOIDCLoginChooser(t *testing.T) {
	const second = `R&D "lab" <east>`
	f := newOIDCFixture(t, opSetup{Second: second})
	c := f.browser(f.laptop, nil, false)
	resp, body := browse(t, c, f.consoleURL("/dash?tab=2"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("chooser: %d %q %s", resp.StatusCode, resp.Header.Get("Set-Cookie"), body)
	}
	if strings.Contains(body, "<east>") || !strings.Contains(body, ">"+html.EscapeString(second)+"</a>") || !strings.Contains(body, ">"+loginIdPName+"</a>") {
		t.Fatalf("the chooser does not list both, escaped: %s", body)
	}
	links := regexp.MustCompile(`<a href="([^"]+)">([^<]+)</a>`).FindAllStringSubmatch(body, -1)
	if len(links) != 2 {
		t.Fatalf("%d links: %s", len(links), body)
	}
	var link string
	for _, l := range links {
		if html.UnescapeString(l[2]) == second {
			link = html.UnescapeString(l[1])
		}
	}
	if link == "" || !strings.HasPrefix(link, pathLoginPrefix) {
		t.Fatalf("no link to %q: %v", second, links)
	}
	// Choosing the second provider logs in there and returns to /dash?tab=2.
	c = f.browser(f.laptop, c.Jar, true)
	resp, body = browse(t, c, f.consoleURL(link))
	if !strings.HasPrefix(resp.Request.URL.String(), f.ops[1].issuer+"/login") {
		t.Fatalf("the second provider's form is not shown: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	resp, body = signIn(t, c, resp, body, opOps)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != f.consoleURL("/dash?tab=2") {
		t.Fatalf("after login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	if claims := assertionClaims(t, body); claims["idp"] != second || claims["email"] != opOps.Email {
		t.Fatalf("claims %v", claims)
	}
}

// TestOIDCLoginStrictCookie: under cookie_same_site = "strict" the callback
// answers with a page of the console that moves on to the path first asked
// for (escaped, no Referer), not a 302 a browser would follow without the
// new cookie (TestBrowserLoginStrictCookie shows the loop that was).
func TestOIDCLoginStrictCookie(t *testing.T) {
	f := newOIDCFixture(t, opSetup{SameSite: "strict"})
	c := f.browser(f.laptop, nil, true)
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == pathCallback {
			return http.ErrUseLastResponse
		}
		return nil
	}
	const asked = `/dash?a="b"&c=<i>`
	resp, _ := f.login(t, c, asked, opOps)
	cb := resp.Header.Get("Location")
	resp, body := browse(t, f.browser(f.laptop, c.Jar, false), cb)
	want := html.EscapeString(f.consoleURL(asked)[len(f.consoleURL("")):])
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<meta http-equiv="refresh" content="0;url=`+want+`">`) ||
		!strings.Contains(body, `<a href="`+want+`">`) || strings.Contains(body, "<i>") {
		t.Fatalf("callback under Strict: %d: %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") ||
		!strings.Contains(resp.Header.Get("Set-Cookie"), "SameSite=Strict") || f.session(c.Jar) == "" {
		t.Fatalf("callback under Strict: headers %v", resp.Header)
	}
	// The page's link, followed with the cookie: the origin.
	resp, body = browse(t, f.browser(f.laptop, c.Jar, false), f.consoleURL(html.UnescapeString(want)))
	if resp.StatusCode != http.StatusOK || assertionClaims(t, body)["email"] != opOps.Email {
		t.Fatalf("after the page: %d %s", resp.StatusCode, body)
	}
}

// toCallback logs user in at the provider with a new browser of the laptop
// and stops at the provider's redirect back: it returns the browser (its jar
// holds the login cookie) and the callback URL, not yet visited.
func (f *oidcFixture) toCallback(t *testing.T, path string, user oidcop.User) (*http.Client, string) {
	t.Helper()
	c := f.browser(f.laptop, nil, true)
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == pathCallback {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, body := f.login(t, c, path, user)
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(cb, f.consoleURL(pathCallback)+"?") {
		t.Fatalf("the provider's redirect back: %d %q: %s", resp.StatusCode, cb, body)
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, cb
}

// TestOIDCLoginReplayedAndForgedState: against the certified provider, a
// callback replayed after it succeeded (its URL and a copy of the login
// cookie) and a callback whose state is forged each get the error page and
// no session; the forged ones use nothing up, so the genuine callback that
// follows them still completes.
func TestOIDCLoginReplayedAndForgedState(t *testing.T) {
	f := newOIDCFixture(t, opSetup{})
	t.Run("replayed", func(t *testing.T) {
		c, cb := f.toCallback(t, "/dash", opOps)
		u, _ := url.Parse(cb)
		saved := c.Jar.Cookies(u)
		if len(saved) != 1 || !strings.HasPrefix(saved[0].Name, loginCookiePrefix) {
			t.Fatalf("login cookies %v", saved)
		}
		resp, body := browse(t, c, cb)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" || f.session(c.Jar) == "" {
			t.Fatalf("the callback: %d %q: %s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		jar, _ := cookiejar.New(nil)
		jar.SetCookies(u, saved) // the login cookie, copied before the callback
		resp, body = browse(t, f.browser(f.laptop, jar, false), cb)
		assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", jar, u.Query().Get("state"))
		if !strings.Contains(f.h.logs.String(), "login state replayed") {
			t.Fatalf("the log does not say the state was replayed:\n%s", f.h.logs.String())
		}
	})
	t.Run("forged", func(t *testing.T) {
		c, cb := f.toCallback(t, "/dash", opOps)
		u, _ := url.Parse(cb)
		state := u.Query().Get("state")
		for _, forged := range []string{
			strings.Repeat("A", 43),              // names no login cookie
			state[:16] + strings.Repeat("A", 27), // names the login's cookie, but is not its state
		} {
			bad := *u
			q := bad.Query()
			q.Set("state", forged)
			bad.RawQuery = q.Encode()
			// A copy of the browser's login cookie: a refused callback
			// clears the cookie its state names, so the real one is kept
			// for the genuine callback below.
			jar, _ := cookiejar.New(nil)
			jar.SetCookies(u, c.Jar.Cookies(u))
			resp, body := browse(t, f.browser(f.laptop, jar, false), bad.String())
			assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", jar, forged)
		}
		// The genuine state without its login cookie: another browser.
		jar, _ := cookiejar.New(nil)
		resp, body := browse(t, f.browser(f.laptop, jar, false), cb)
		assertNoSession(t, resp, body, http.StatusBadRequest, "Sign-in failed", jar, state)
		// The genuine callback still completes.
		resp, body = browse(t, c, cb)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash" || f.session(c.Jar) == "" {
			t.Fatalf("the genuine callback after the forged ones: %d %q: %s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
	})
}
