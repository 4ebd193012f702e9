package oidcop

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/fleetgate/fleetgate/internal/pki"
)

const (
	testClientID     = "fleetgate"
	testClientSecret = "client-secret-for-tests"
	testRedirect     = "https://console.fleet.test/cdn-cgi/access/callback"
	testPostLogout   = "https://console.fleet.test/"
	testPassword     = "correct horse"
)

// testPKI is a CA and a server certificate for the loopback address.
type testPKI struct {
	root *pki.Cert
	cert tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	root := pki.MustRoot(pki.Root("oidcop test root"))
	srv := root.MustIssue(pki.Server("127.0.0.1", "idp.fleet.test"))
	return testPKI{root: root, cert: srv.TLSCertificate()}
}

func testUsers() []User {
	return []User{
		{Subject: "u-ops", Email: "ops@fleet.test", EmailVerified: true, Name: "Olga Ops",
			Groups: []string{"ops", "oncall"}, Password: testPassword},
		{Subject: "u-dev", Email: "dev@fleet.test", Name: "Dev", Groups: []string{"dev"}, Password: "other"},
	}
}

// startTLS starts a provider over TLS on a loopback socket, with the test
// client and users unless opts already has some. It is closed at the end of
// the test.
func startTLS(t *testing.T, p testPKI, opts Options) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Issuer = "https://" + ln.Addr().String()
	opts.TLSCertificate = &p.cert
	if opts.Clients == nil {
		opts.Clients = []Client{{ID: testClientID, Secret: testClientSecret,
			RedirectURIs: []string{testRedirect}, PostLogoutRedirectURIs: []string{testPostLogout}}}
	}
	if opts.Users == nil {
		opts.Users = testUsers()
	}
	prov, err := New(opts)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	if err := prov.Start(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	return prov
}

// rp is a Relying Party as the gateway will be one: go-oidc for discovery
// and verification, x/oauth2 for the code flow, and an HTTP client with a
// cookie jar that plays the browser, stopping at the redirect URI.
type rp struct {
	t        *testing.T
	ctx      context.Context
	browser  *http.Client
	provider *gooidc.Provider
	conf     oauth2.Config
	verifier *gooidc.IDTokenVerifier
}

func newRP(t *testing.T, issuer string, roots testPKI, redirect string) *rp {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool(roots.root)}}
	t.Cleanup(transport.CloseIdleConnections)
	browser := &http.Client{
		Jar:       jar,
		Transport: transport,
		Timeout:   10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), "https://console.fleet.test/") {
				return http.ErrUseLastResponse // the RP's own host: not dialled
			}
			if len(via) > 10 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
	ctx := gooidc.ClientContext(context.Background(), &http.Client{Transport: transport, Timeout: 10 * time.Second})
	provider, err := gooidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	return &rp{
		t: t, ctx: ctx, browser: browser, provider: provider,
		conf: oauth2.Config{
			ClientID: testClientID, ClientSecret: testClientSecret,
			Endpoint: provider.Endpoint(), RedirectURL: redirect,
			Scopes: []string{gooidc.ScopeOpenID, "profile", "email"},
		},
		verifier: provider.Verifier(&gooidc.Config{ClientID: testClientID}),
	}
}

func randomString(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// flow is one authorization request in progress.
type flow struct {
	state, nonce, verifier string
}

func (r *rp) newFlow() flow {
	return flow{state: randomString(r.t), nonce: randomString(r.t), verifier: oauth2.GenerateVerifier()}
}

func (r *rp) authURL(f flow, extra ...oauth2.AuthCodeOption) string {
	opts := append([]oauth2.AuthCodeOption{gooidc.Nonce(f.nonce), oauth2.S256ChallengeOption(f.verifier)}, extra...)
	return r.conf.AuthCodeURL(f.state, opts...)
}

func (r *rp) get(u string) (*http.Response, string) {
	r.t.Helper()
	resp, err := r.browser.Get(u)
	if err != nil {
		r.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, string(body)
}

var hiddenID = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// postLogin submits the login form found in page, as a browser would.
func (r *rp) postLogin(page *http.Response, body, username, password string) (*http.Response, string) {
	r.t.Helper()
	m := hiddenID.FindStringSubmatch(body)
	if m == nil {
		r.t.Fatalf("no login form at %s (status %d): %s", page.Request.URL, page.StatusCode, body)
	}
	action := page.Request.URL.ResolveReference(&url.URL{Path: defaultLoginPath})
	resp, err := r.browser.PostForm(action.String(), url.Values{
		"authRequestID": {m[1]}, "username": {username}, "password": {password},
	})
	if err != nil {
		r.t.Fatalf("POST login: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, string(b)
}

// codeFrom checks that resp redirects to the redirect URI with f's state and
// returns the code.
func (r *rp) codeFrom(resp *http.Response, f flow) string {
	r.t.Helper()
	loc, err := resp.Location()
	if err != nil {
		r.t.Fatalf("status %d, no redirect to the client: %v", resp.StatusCode, err)
	}
	if !strings.HasPrefix(loc.String(), r.conf.RedirectURL+"?") {
		r.t.Fatalf("redirect to %s, want %s", loc, r.conf.RedirectURL)
	}
	q := loc.Query()
	if q.Get("error") != "" {
		r.t.Fatalf("authorization error %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != f.state {
		r.t.Fatalf("state %q, want %q", q.Get("state"), f.state)
	}
	if q.Get("code") == "" {
		r.t.Fatal("no code")
	}
	return q.Get("code")
}

// login runs the browser part of the flow with the form and returns the code.
func (r *rp) login(f flow, username, password string) string {
	r.t.Helper()
	page, body := r.get(r.authURL(f))
	resp, _ := r.postLogin(page, body, username, password)
	return r.codeFrom(resp, f)
}

// exchange trades the code and verifies the ID token, its nonce included
// (go-oidc does not compare the nonce).
func (r *rp) exchange(code string, f flow) (*gooidc.IDToken, idClaims, error) {
	tok, err := r.conf.Exchange(r.ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		return nil, idClaims{}, fmt.Errorf("exchange: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, idClaims{}, errors.New("no id_token in the token response")
	}
	idt, err := r.verifier.Verify(r.ctx, raw)
	if err != nil {
		return nil, idClaims{}, fmt.Errorf("verify: %w", err)
	}
	if idt.Nonce != f.nonce {
		return nil, idClaims{}, fmt.Errorf("nonce %q, want %q", idt.Nonce, f.nonce)
	}
	var c idClaims
	if err := idt.Claims(&c); err != nil {
		return nil, idClaims{}, err
	}
	c.accessToken = tok.AccessToken
	return idt, c, nil
}

type idClaims struct {
	Email         string   `json:"email"`
	EmailVerified bool     `json:"email_verified"`
	Name          string   `json:"name"`
	Groups        []string `json:"groups"`
	accessToken   string
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
