package oidcop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

func TestDiscovery(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{})
	r := newRP(t, p.Issuer(), pk, testRedirect)

	var d struct {
		Issuer           string   `json:"issuer"`
		EndSession       string   `json:"end_session_endpoint"`
		JWKS             string   `json:"jwks_uri"`
		PKCEMethods      []string `json:"code_challenge_methods_supported"`
		SigningAlgs      []string `json:"id_token_signing_alg_values_supported"`
		Claims           []string `json:"claims_supported"`
		ResponseTypes    []string `json:"response_types_supported"`
		TokenAuthMethods []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := r.provider.Claims(&d); err != nil {
		t.Fatal(err)
	}
	if d.Issuer != p.Issuer() {
		t.Errorf("issuer %q, want %q", d.Issuer, p.Issuer())
	}
	if d.EndSession != p.Issuer()+"/end_session" {
		t.Errorf("end_session_endpoint %q", d.EndSession)
	}
	if !slices.Equal(d.PKCEMethods, []string{"S256"}) {
		t.Errorf("code_challenge_methods_supported %v, want [S256]", d.PKCEMethods)
	}
	if !slices.Equal(d.SigningAlgs, []string{"RS256"}) {
		t.Errorf("id_token_signing_alg_values_supported %v, want [RS256]", d.SigningAlgs)
	}
	if !slices.Contains(d.Claims, "groups") {
		t.Errorf("claims_supported %v lacks groups", d.Claims)
	}
	if !slices.Contains(d.TokenAuthMethods, "client_secret_basic") {
		t.Errorf("token_endpoint_auth_methods_supported %v", d.TokenAuthMethods)
	}

	resp, body := r.get(d.JWKS)
	var jwks struct {
		Keys []struct {
			Kid, Kty, Alg, Use string
			D                  string `json:"d"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &jwks); err != nil || resp.StatusCode != 200 {
		t.Fatalf("jwks: status %d, %v: %s", resp.StatusCode, err, body)
	}
	if len(jwks.Keys) != 1 || jwks.Keys[0].Kty != "RSA" || jwks.Keys[0].Use != "sig" || jwks.Keys[0].Kid == "" {
		t.Fatalf("jwks keys %+v", jwks.Keys)
	}
	if jwks.Keys[0].D != "" || strings.Contains(body, `"d"`) {
		t.Fatal("jwks publishes private key material")
	}
}

func TestCodeFlow(t *testing.T) {
	pk := newTestPKI(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		opts     Options
		username string
		alg      string
	}{
		{name: "RS256 generated key, e-mail as username", username: "ops@fleet.test", alg: "RS256"},
		{name: "ES256 given key, subject as username", opts: Options{SigningKey: ecKey, RequirePKCE: true}, username: "u-ops", alg: "ES256"},
		{name: "custom groups claim", opts: Options{GroupsClaim: "roles"}, username: "ops@fleet.test", alg: "RS256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startTLS(t, pk, tc.opts)
			r := newRP(t, p.Issuer(), pk, testRedirect)
			f := r.newFlow()
			code := r.login(f, tc.username, testPassword)
			idt, c, err := r.exchange(code, f)
			if err != nil {
				t.Fatal(err)
			}
			if idt.Issuer != p.Issuer() || idt.Subject != "u-ops" || !slices.Equal(idt.Audience, []string{testClientID}) {
				t.Errorf("iss %q sub %q aud %v", idt.Issuer, idt.Subject, idt.Audience)
			}
			if c.Email != "ops@fleet.test" || !c.EmailVerified || c.Name != "Olga Ops" {
				t.Errorf("claims %+v", c)
			}
			var all map[string]any
			if err := idt.Claims(&all); err != nil {
				t.Fatal(err)
			}
			claim := tc.opts.GroupsClaim
			if claim == "" {
				claim = "groups"
			}
			groups, _ := all[claim].([]any)
			if len(groups) != 2 || groups[0] != "ops" || groups[1] != "oncall" {
				t.Errorf("claim %q = %v, want [ops oncall]; all claims %v", claim, all[claim], all)
			}
			// A second flow is answered by the SSO session, without the form.
			if alg := tokenAlg(t, rawIDToken(t, r)); alg != tc.alg {
				t.Errorf("alg %s, want %s", alg, tc.alg)
			}
			if time.Until(idt.Expiry) > DefaultIDTokenLifetime+time.Second || time.Until(idt.Expiry) < DefaultIDTokenLifetime-time.Minute {
				t.Errorf("expiry in %v, want about %v", time.Until(idt.Expiry), DefaultIDTokenLifetime)
			}

			// The access token works at userinfo.
			ui, err := r.provider.UserInfo(r.ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: c.accessToken}))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			if ui.Subject != "u-ops" || ui.Email != "ops@fleet.test" {
				t.Errorf("userinfo %+v", ui)
			}

			// A code is good once.
			if _, _, err := r.exchange(code, f); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
				t.Errorf("second exchange of a code: %v, want invalid_grant", err)
			}
		})
	}
}

// rawIDToken runs a flow that the SSO session answers without the form and
// returns its raw ID token.
func rawIDToken(t *testing.T, r *rp) string {
	t.Helper()
	f := r.newFlow()
	resp, _ := r.get(r.authURL(f))
	code := r.codeFrom(resp, f)
	tok, err := r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Extra("id_token").(string)
}

func tokenAlg(t *testing.T, raw string) string {
	t.Helper()
	hdr, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(hdr)
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Alg string }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Alg
}

func TestWrongPasswordRefused(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{})
	r := newRP(t, p.Issuer(), pk, testRedirect)
	f := r.newFlow()
	page, body := r.get(r.authURL(f))

	tests := []struct{ name, username, password string }{
		{"wrong password", "ops@fleet.test", "wrong"},
		{"another user's password", "ops@fleet.test", "other"},
		{"unknown user", "nobody@fleet.test", testPassword},
		{"empty password", "ops@fleet.test", ""},
		{"password of the right length, one byte off", "ops@fleet.test", "correct horsf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, got := r.postLogin(page, body, tc.username, tc.password)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if _, err := resp.Location(); err == nil {
				t.Fatal("a refused login redirects")
			}
			if !strings.Contains(got, "Wrong username or password") || !hiddenID.MatchString(got) {
				t.Fatalf("refusal page: %s", got)
			}
			if strings.Contains(got, tc.password) && tc.password != "" {
				t.Fatal("the page reflects the password")
			}
			for _, c := range r.browser.Jar.Cookies(page.Request.URL) {
				if c.Name == defaultSessionCookieName {
					t.Fatal("a refused login got a session cookie")
				}
			}
		})
	}

	// The same request still logs in with the right password.
	resp, _ := r.postLogin(page, body, "ops@fleet.test", testPassword)
	code := r.codeFrom(resp, f)
	if _, _, err := r.exchange(code, f); err != nil {
		t.Fatal(err)
	}
	// And once used, the form's request id is no longer accepted.
	resp, got := r.postLogin(page, body, "ops@fleet.test", testPassword)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(got, "unknown") {
		t.Fatalf("reused login request: status %d: %s", resp.StatusCode, got)
	}
}

func TestTokenRequestsRefused(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{})
	tests := []struct {
		name   string
		change func(r *rp, f *flow)
		want   string
	}{
		{"wrong PKCE verifier", func(_ *rp, f *flow) { f.verifier = oauth2.GenerateVerifier() }, "invalid_grant"},
		{"wrong client secret", func(r *rp, _ *flow) { r.conf.ClientSecret = "nope" }, "invalid_client"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRP(t, p.Issuer(), pk, testRedirect)
			f := r.newFlow()
			code := r.login(f, "ops@fleet.test", testPassword)
			tc.change(r, &f)
			if _, _, err := r.exchange(code, f); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("exchange: %v, want %s", err, tc.want)
			}
		})
	}
}

func TestAuthorizationRequestsRefused(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{RequirePKCE: true})
	r := newRP(t, p.Issuer(), pk, testRedirect)
	f := r.newFlow()
	tests := []struct {
		name    string
		url     string
		wantErr string // error sent back to the redirect URI; "" means a page at the OP
	}{
		{"no PKCE when required", r.conf.AuthCodeURL(f.state, gooidc.Nonce(f.nonce)), "invalid_request"},
		{"plain PKCE", r.conf.AuthCodeURL(f.state, gooidc.Nonce(f.nonce),
			oauth2.SetAuthURLParam("code_challenge", f.verifier), oauth2.SetAuthURLParam("code_challenge_method", "plain")), "invalid_request"},
		{"unregistered redirect URI", strings.Replace(r.authURL(f), url.QueryEscape(testRedirect), url.QueryEscape("https://evil.test/cb"), 1), ""},
		{"unknown client", strings.Replace(r.authURL(f), "client_id="+testClientID, "client_id=stranger", 1), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.get(tc.url)
			if tc.wantErr == "" {
				if loc, err := resp.Location(); err == nil {
					t.Fatalf("redirected to %s", loc)
				}
				if resp.StatusCode < 400 || hiddenID.MatchString(body) {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				return
			}
			loc, err := resp.Location()
			if err != nil {
				t.Fatalf("status %d, no redirect: %s", resp.StatusCode, body)
			}
			if got := loc.Query().Get("error"); got != tc.wantErr || loc.Query().Get("code") != "" {
				t.Fatalf("redirect %s, want error=%s", loc, tc.wantErr)
			}
		})
	}
}

func TestEndSession(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{})
	r := newRP(t, p.Issuer(), pk, testRedirect)
	var endSession struct {
		URL string `json:"end_session_endpoint"`
	}
	if err := r.provider.Claims(&endSession); err != nil {
		t.Fatal(err)
	}

	f := r.newFlow()
	r.login(f, "ops@fleet.test", testPassword)
	// The SSO session answers the next request without the form.
	f = r.newFlow()
	resp, _ := r.get(r.authURL(f))
	r.codeFrom(resp, f)

	logout := func(q url.Values) *http.Response {
		resp, _ := r.get(endSession.URL + "?" + q.Encode())
		return resp
	}
	t.Run("unregistered post_logout_redirect_uri", func(t *testing.T) {
		resp := logout(url.Values{"client_id": {testClientID}, "post_logout_redirect_uri": {"https://evil.test/"}})
		if loc, err := resp.Location(); err == nil {
			t.Fatalf("redirected to %s", loc)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})

	// Log in again (the refused logout above still ended the session).
	f = r.newFlow()
	r.login(f, "ops@fleet.test", testPassword)

	t.Run("registered post_logout_redirect_uri", func(t *testing.T) {
		resp := logout(url.Values{"client_id": {testClientID}, "post_logout_redirect_uri": {testPostLogout}, "state": {"xyz"}})
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("status %d, no redirect", resp.StatusCode)
		}
		if want := testPostLogout + "?state=xyz"; loc.String() != want {
			t.Fatalf("redirect to %s, want %s", loc, want)
		}
		// The session is over: the next request shows the form again.
		f := r.newFlow()
		_, body := r.get(r.authURL(f))
		if !hiddenID.MatchString(body) {
			t.Fatalf("after logout, no login form: %s", body)
		}
	})
	t.Run("no redirect asked", func(t *testing.T) {
		resp, body := r.get(endSession.URL)
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != defaultLoggedOutPath || !strings.Contains(body, "Signed out") {
			t.Fatalf("status %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
		}
	})
}

func TestPromptLoginAndNone(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{})
	r := newRP(t, p.Issuer(), pk, testRedirect)

	f := r.newFlow()
	resp, _ := r.get(r.authURL(f, oauth2.SetAuthURLParam("prompt", "none")))
	loc, err := resp.Location()
	if err != nil || loc.Query().Get("error") != "login_required" || loc.Query().Get("state") != f.state {
		t.Fatalf("prompt=none without a session: %v %v", loc, err)
	}

	r.login(r.newFlow(), "ops@fleet.test", testPassword)
	f = r.newFlow()
	_, body := r.get(r.authURL(f, oauth2.SetAuthURLParam("prompt", "login")))
	if !hiddenID.MatchString(body) {
		t.Fatal("prompt=login with a session: no login form")
	}
	f = r.newFlow()
	_, body = r.get(r.authURL(f, oauth2.SetAuthURLParam("max_age", "0")))
	if !hiddenID.MatchString(body) {
		t.Fatal("max_age=0 with a session: no login form")
	}
	f = r.newFlow()
	resp, _ = r.get(r.authURL(f, oauth2.SetAuthURLParam("max_age", "3600")))
	r.codeFrom(resp, f)
	f = r.newFlow()
	resp, _ = r.get(r.authURL(f, oauth2.SetAuthURLParam("prompt", "none")))
	r.codeFrom(resp, f)
}

func TestExpiredIDToken(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{IDTokenLifetime: -time.Minute})
	r := newRP(t, p.Issuer(), pk, testRedirect)
	f := r.newFlow()
	code := r.login(f, "ops@fleet.test", testPassword)
	_, _, err := r.exchange(code, f)
	var expired *gooidc.TokenExpiredError
	if !errors.As(err, &expired) {
		t.Fatalf("exchange: %v, want a TokenExpiredError", err)
	}
}

func TestAutoLogin(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{AutoLogin: "dev@fleet.test"})
	r := newRP(t, p.Issuer(), pk, testRedirect)
	f := r.newFlow()
	resp, _ := r.get(r.authURL(f))
	idt, c, err := r.exchange(r.codeFrom(resp, f), f)
	if err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "u-dev" || c.EmailVerified || !slices.Equal(c.Groups, []string{"dev"}) {
		t.Fatalf("sub %q claims %+v", idt.Subject, c)
	}
}

func TestClosedProviderIsDown(t *testing.T) {
	pk := newTestPKI(t)
	p := startTLS(t, pk, Options{})
	r := newRP(t, p.Issuer(), pk, testRedirect)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	r.browser.Transport.(*http.Transport).CloseIdleConnections()
	if _, err := r.browser.Get(p.Issuer() + "/.well-known/openid-configuration"); err == nil {
		t.Fatal("a closed provider still answers")
	}
	if _, err := gooidc.NewProvider(r.ctx, p.Issuer()); err == nil {
		t.Fatal("discovery works against a closed provider")
	}
	if err := p.Start(nil); err == nil {
		t.Fatal("a closed provider starts again")
	}
}

func TestHTTPIssuer(t *testing.T) {
	ln := mustListen(t)
	p, err := New(Options{
		Issuer:  "http://" + ln.Addr().String(),
		Clients: []Client{{ID: testClientID, Secret: testClientSecret, RedirectURIs: []string{"http://127.0.0.1:1/cb"}}},
		Users:   testUsers(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ln); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	prov, err := gooidc.NewProvider(t.Context(), p.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	if prov.Endpoint().TokenURL != p.Issuer()+"/oauth/token" {
		t.Fatalf("token URL %s", prov.Endpoint().TokenURL)
	}
}

func TestOptionsRefused(t *testing.T) {
	pk := newTestPKI(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := func() Options {
		return Options{
			Issuer: "https://idp.fleet.test", TLSCertificate: &pk.cert,
			Clients: []Client{{ID: "c", Secret: "s", RedirectURIs: []string{testRedirect}}},
			Users:   testUsers(),
		}
	}
	tests := []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"empty issuer", func(o *Options) { o.Issuer = "" }, "not a URL"},
		{"issuer with a path", func(o *Options) { o.Issuer = "https://idp.fleet.test/realm" }, "no path"},
		{"issuer with a query", func(o *Options) { o.Issuer = "https://idp.fleet.test?x=1" }, "no path"},
		{"ftp issuer", func(o *Options) { o.Issuer = "ftp://idp.fleet.test" }, "scheme"},
		{"https without a certificate", func(o *Options) { o.TLSCertificate = nil }, "no TLSCertificate"},
		{"http with a certificate", func(o *Options) { o.Issuer = "http://idp.fleet.test" }, "is http"},
		{"no clients", func(o *Options) { o.Clients = nil }, "no clients"},
		{"client without secret", func(o *Options) { o.Clients[0].Secret = "" }, "empty Secret"},
		{"duplicate client", func(o *Options) { o.Clients = append(o.Clients, o.Clients[0]) }, "duplicate"},
		{"client without redirect", func(o *Options) { o.Clients[0].RedirectURIs = nil }, "no RedirectURIs"},
		{"relative redirect", func(o *Options) { o.Clients[0].RedirectURIs = []string{"/cb"} }, "absolute"},
		{"custom-scheme logout redirect", func(o *Options) { o.Clients[0].PostLogoutRedirectURIs = []string{"app://x"} }, "absolute"},
		{"no users", func(o *Options) { o.Users = nil }, "no users"},
		{"user without password", func(o *Options) { o.Users[0].Password = "" }, "empty Password"},
		{"user without subject", func(o *Options) { o.Users[0].Subject = "" }, "empty Subject"},
		{"duplicate e-mail", func(o *Options) { o.Users[1].Email = o.Users[0].Email }, "used twice"},
		{"unknown AutoLogin", func(o *Options) { o.AutoLogin = "ghost" }, "no such user"},
		{"short RSA key", func(o *Options) { o.SigningKey = small }, "1024 bits"},
		{"P-384 key", func(o *Options) { o.SigningKey = p384 }, "P-256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			o.Users = testUsers()
			tc.change(&o)
			_, err := New(o)
			if err == nil || !strings.HasPrefix(err.Error(), "oidcop: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("good options: %v", err)
	}
}

func TestDemo(t *testing.T) {
	pk := newTestPKI(t)
	ln := mustListen(t)
	issuer := "https://" + ln.Addr().String()
	p, err := NewDemo(issuer, testClientSecret, testRedirect, &pk.cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ln); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := newRP(t, issuer, pk, testRedirect)
	f := r.newFlow()
	code := r.login(f, DemoEmail, DemoPassword)
	idt, c, err := r.exchange(code, f)
	if err != nil {
		t.Fatal(err)
	}
	if idt.Subject != DemoSubject || c.Email != DemoEmail || !c.EmailVerified || !slices.Equal(c.Groups, []string{DemoGroup}) {
		t.Fatalf("sub %q claims %+v", idt.Subject, c)
	}
	if _, err := NewDemo(issuer, testClientSecret, "not a url", &pk.cert); err == nil {
		t.Fatal("NewDemo accepted a relative redirect URI")
	}
}
