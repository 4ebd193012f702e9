// Package oidclogin is the gateway's OpenID Connect relying party: the
// authorization code flow with state, nonce and PKCE (S256) against one
// provider, and the sealed login state a browser carries between the
// redirect to the provider and the callback. The protocol is
// github.com/coreos/go-oidc (discovery, JWKS, ID token verification) and
// golang.org/x/oauth2 (authorization URL, code exchange, PKCE); this
// package only wires them, adds what they leave to the caller (the nonce
// comparison, email_verified, the groups claim) and bounds every call to
// the provider in time.
//
//	request without session ─▶ Provider.Start ─▶ 302 to the provider (state, nonce, S256 challenge)
//	                              │ State sealed into a cookie (Sealer)
//	callback ?code&state ─▶ Sealer.Open ─▶ Provider.Finish ─▶ Identity
//	                              code + verifier ─▶ token endpoint ─▶ ID token: signature, iss, aud, exp, nonce
//
// Discovery is lazy and never blocks forever: the first login discovers
// the provider (bounded by Config.Timeout); a failure is remembered for
// retryAfter, so a provider that is down costs one timeout, not one per
// request, and is tried again afterwards.
package oidclogin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Errors, by source: the provider could not be reached or answered
// nonsense (ErrUnavailable: 502), or the login itself is not valid
// (ErrLogin: 401).
var (
	ErrUnavailable = errors.New("oidclogin: identity provider unavailable")
	ErrLogin       = errors.New("oidclogin: login refused")
)

// DefaultTimeout bounds each call to the provider when Config.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// retryAfter is how long a failed discovery is remembered.
const retryAfter = 5 * time.Second

// Config is one provider, as configured.
type Config struct {
	Name         string // the [[identity_providers]] name
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string
	GroupsClaim  string
	// RootCAs verify the provider's TLS certificate; nil: the system's.
	RootCAs *x509.CertPool
	// Timeout bounds each call to the provider (discovery, JWKS, token).
	Timeout time.Duration
	// Resolve, when not empty, is the host:port dialed for connections to
	// the issuer's host and port, as curl's --resolve does; TLS still
	// verifies the issuer's name. Connections to other hosts dial as usual.
	Resolve string
	// Now is the clock ID tokens are checked against; nil: time.Now.
	Now func() time.Time
}

// Identity is what a verified ID token says about the person.
type Identity struct {
	Subject string
	Email   string
	Groups  []string
}

// Provider is one OpenID provider. It is safe for concurrent use.
type Provider struct {
	cfg    Config
	client *http.Client
	// keys fetches the JWKS: the same connections as client, but an answer
	// that is not a JWK set (a 5xx, a proxy's error page) is a transport
	// error, so that a key set that cannot be had is told from a signature
	// that does not verify (see keySet).
	keys *http.Client

	mu       sync.Mutex
	disc     *discovered   // nil until discovery succeeded
	fetching chan struct{} // non-nil while a discovery runs; closed when it ends
	failedAt time.Time     // when the last discovery failed
	lastErr  error
}

// discovered is what discovery gave.
type discovered struct {
	op         *oidc.Provider
	verifier   *oidc.IDTokenVerifier
	endSession string
	issParam   bool // the provider names itself in every authorization response (RFC 9207)
}

// New returns a provider; nothing is fetched until the first login.
func New(c Config) *Provider {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12}
	if c.Resolve != "" {
		tr.DialContext = resolveDialer(c.Issuer, c.Resolve, tr.DialContext)
	}
	return &Provider{cfg: c, client: &http.Client{Transport: limitTransport{tr}, Timeout: c.Timeout},
		keys: &http.Client{Transport: jwksTransport{tr}, Timeout: c.Timeout}}
}

// maxAnswerBytes bounds every answer read from the provider: the
// discovery document and the token endpoint's answer (Provider.client),
// and the JWKS (jwksTransport). go-oidc reads a discovery document whole,
// however large.
const maxAnswerBytes = 1 << 20

// limitTransport fails the reading of an answer's body past maxAnswerBytes.
type limitTransport struct{ base *http.Transport }

// RoundTrip implements http.RoundTripper.
func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: maxAnswerBytes, url: req.URL.Redacted()}
	return resp, nil
}

// CloseIdleConnections closes the transport's idle connections (Close).
func (t limitTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// limitedBody is an answer's body whose reading fails once more than left
// bytes were read.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
	url  string
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return 0, fmt.Errorf("oidclogin: %s: the answer is larger than %d bytes", b.url, maxAnswerBytes)
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// resolveDialer returns a dial function that connects to resolve instead
// of the issuer's host and port (the default port of its scheme when it
// names none), and to every other address with dial.
func resolveDialer(issuer, resolve string, dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	from := ""
	if u, err := url.Parse(issuer); err == nil && u.Host != "" {
		port := u.Port()
		if port == "" {
			port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
		}
		from = net.JoinHostPort(u.Hostname(), port)
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == from {
			addr = resolve
		}
		return dial(ctx, network, addr)
	}
}

// Name is the provider's configured name.
func (p *Provider) Name() string { return p.cfg.Name }

// Close releases the provider's idle connections.
func (p *Provider) Close() { p.client.CloseIdleConnections() }

// ctx returns a context that carries the provider's HTTP client and is
// bounded by its timeout.
func (p *Provider) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, p.cfg.Timeout)
	return oidc.ClientContext(ctx, p.client), cancel
}

// discover returns the discovered provider, discovering it now when it has
// not been, or when the last failure ended more than retryAfter ago. One
// discovery runs at a time, outside the lock and bounded by the provider's
// timeout; every caller waits for it at most until its own context ends.
func (p *Provider) discover(parent context.Context) (*discovered, error) {
	for {
		p.mu.Lock()
		if p.disc != nil {
			d := p.disc
			p.mu.Unlock()
			return d, nil
		}
		if p.fetching == nil {
			if p.lastErr != nil && time.Since(p.failedAt) < retryAfter {
				err := p.lastErr
				p.mu.Unlock()
				return nil, err
			}
			p.fetching = make(chan struct{})
			go p.fetch(p.fetching)
		}
		done := p.fetching
		p.mu.Unlock()
		select {
		case <-done:
			// Look again: the discovery succeeded, or failed (lastErr).
		case <-parent.Done():
			return nil, fmt.Errorf("%w: %s: discovery: %v", ErrUnavailable, p.cfg.Name, parent.Err())
		}
	}
}

// fetch runs one discovery, not bound to any caller's context (a caller
// that gives up does not fail the others'), and closes done when it ends.
func (p *Provider) fetch(done chan struct{}) {
	ctx, cancel := p.ctx(context.Background())
	defer cancel()
	op, err := oidc.NewProvider(ctx, p.cfg.Issuer)
	var d *discovered
	var extra struct {
		EndSession string   `json:"end_session_endpoint"`
		JWKS       string   `json:"jwks_uri"`
		Algs       []string `json:"id_token_signing_alg_values_supported"`
		IssParam   bool     `json:"authorization_response_iss_parameter_supported"`
	}
	if err == nil {
		_ = op.Claims(&extra) // NewProvider parsed the same document
		err = checkEndpoints(p.cfg.Issuer, op.Endpoint().AuthURL, op.Endpoint().TokenURL, extra.JWKS)
	}
	if err == nil {
		// go-oidc's remote key set, fetched through p.keys and wrapped so
		// that a fetch failure is reported apart (keySet); the algorithms
		// are those discovery advertises that go-oidc verifies, as
		// op.Verifier would take them.
		remote := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), p.keys), extra.JWKS)
		d = &discovered{
			op: op,
			verifier: oidc.NewVerifier(p.cfg.Issuer, keySet{remote},
				&oidc.Config{ClientID: p.cfg.ClientID, Now: p.cfg.Now, SupportedSigningAlgs: signingAlgs(extra.Algs)}),
			endSession: extra.EndSession,
			issParam:   extra.IssParam,
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d != nil {
		p.disc, p.lastErr = d, nil
	} else {
		// Remembered from when it ended, not began: a discovery that
		// took retryAfter or longer (a provider that hangs) would else be
		// forgotten at once, and every login would wait for another.
		p.lastErr = fmt.Errorf("%w: %s: discovery: %v", ErrUnavailable, p.cfg.Name, err)
		p.failedAt = time.Now()
	}
	p.fetching = nil
	close(done)
}

// checkEndpoints checks the endpoints discovery named: absolute URLs, and
// https, or http only when the issuer is (the configuration allows that on
// a loopback address alone) and the endpoint is on a loopback address too.
// Why: the person's password, the client secret and the code, the ID
// token and the keys that sign it cross them.
func checkEndpoints(issuer, auth, token, jwks string) error {
	iu, err := url.Parse(issuer)
	plainOK := err == nil && iu.Scheme == "http"
	for _, e := range [...]struct{ name, url string }{
		{"authorization_endpoint", auth}, {"token_endpoint", token}, {"jwks_uri", jwks},
	} {
		u, err := url.Parse(e.url)
		switch {
		case e.url == "":
			return fmt.Errorf("the discovery document has no %s", e.name)
		case err != nil || u.Host == "" || u.User != nil:
			return fmt.Errorf("%s %q is not an absolute URL", e.name, e.url)
		case u.Scheme == "https":
		case u.Scheme == "http" && plainOK && loopback(u.Hostname()):
		default:
			return fmt.Errorf("%s %q is not an https:// URL (the issuer is %q)", e.name, e.url, issuer)
		}
	}
	return nil
}

// loopback reports whether host is localhost or a loopback address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// oauth returns the OAuth 2.0 client for redirectURL.
func (p *Provider) oauth(d *discovered, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     d.op.Endpoint(),
		RedirectURL:  redirectURL,
		Scopes:       p.cfg.Scopes,
	}
}

// Start begins a login: it returns the provider's authorization URL and
// the state (with fresh state, nonce and PKCE verifier) to seal into the
// browser's login cookie.
func (p *Provider) Start(ctx context.Context, redirectURL string) (authURL string, st State, err error) {
	d, err := p.discover(ctx)
	if err != nil {
		return "", State{}, err
	}
	st = State{Provider: p.cfg.Name, State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier()}
	authURL = p.oauth(d, redirectURL).AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier))
	return authURL, st, nil
}

// Finish completes a login: it checks the callback's iss parameter (""
// when absent), exchanges code with the PKCE verifier, verifies the ID
// token (signature, issuer, audience, authorized party, expiry) and
// compares its nonce with st's (go-oidc leaves that to the caller). The
// identity has an email only when the ID token says email_verified: true:
// an email selector must not admit an address nobody proved to own.
func (p *Provider) Finish(parent context.Context, redirectURL, code, iss string, st State) (Identity, error) {
	d, err := p.discover(parent)
	if err != nil {
		return Identity{}, err
	}
	// RFC 9207: a response that names another issuer, or none from a
	// provider that always names itself, may come from another provider
	// (a mix-up attack); its code is not sent to this one's token endpoint.
	switch {
	case iss != "" && iss != p.cfg.Issuer:
		return Identity{}, fmt.Errorf("%w: %s: the authorization response's issuer %q is not %q", ErrLogin, p.cfg.Name, clip(iss), p.cfg.Issuer)
	case iss == "" && d.issParam:
		return Identity{}, fmt.Errorf("%w: %s: the authorization response has no iss, which the provider's discovery promises", ErrLogin, p.cfg.Name)
	}
	ctx, cancel := p.ctx(parent)
	defer cancel()
	tok, err := p.oauth(d, redirectURL).Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return Identity{}, fmt.Errorf("%w: %s: code exchange: %s", ErrLogin, p.cfg.Name, re.ErrorCode)
		}
		return Identity{}, fmt.Errorf("%w: %s: code exchange: %v", ErrUnavailable, p.cfg.Name, err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return Identity{}, fmt.Errorf("%w: %s: the token response has no id_token", ErrLogin, p.cfg.Name)
	}
	fetch := &keysFetch{}
	idt, err := d.verifier.Verify(context.WithValue(ctx, keysFetchKey{}, fetch), raw)
	if err != nil {
		if fetch.err != nil { // the provider's keys could not be had: not the token's fault
			return Identity{}, fmt.Errorf("%w: %s: ID token signing keys: %v", ErrUnavailable, p.cfg.Name, fetch.err)
		}
		return Identity{}, fmt.Errorf("%w: %s: ID token: %v", ErrLogin, p.cfg.Name, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return Identity{}, fmt.Errorf("%w: %s: ID token nonce does not match the login's", ErrLogin, p.cfg.Name)
	}
	return p.identity(idt)
}

// identity reads the person's claims from a verified ID token.
func (p *Provider) identity(idt *oidc.IDToken) (Identity, error) {
	var c struct {
		Email         string `json:"email"`
		EmailVerified any    `json:"email_verified"` // only the JSON true counts
		AZP           string `json:"azp"`
	}
	var all map[string]any
	if err := idt.Claims(&c); err != nil {
		return Identity{}, fmt.Errorf("%w: %s: ID token claims: %v", ErrLogin, p.cfg.Name, err)
	}
	if err := idt.Claims(&all); err != nil {
		return Identity{}, fmt.Errorf("%w: %s: ID token claims: %v", ErrLogin, p.cfg.Name, err)
	}
	// OpenID Connect Core 3.1.3.7: a token issued to another client that
	// also names this one in its audience is not this client's login.
	if c.AZP != "" && c.AZP != p.cfg.ClientID || c.AZP == "" && len(idt.Audience) > 1 {
		return Identity{}, fmt.Errorf("%w: %s: ID token authorized party %q is not client %q (audience %q)",
			ErrLogin, p.cfg.Name, c.AZP, p.cfg.ClientID, idt.Audience)
	}
	if c.EmailVerified != true {
		c.Email = "" // missing, false, or "true": not proven, so no email
	}
	return Identity{Subject: idt.Subject, Email: c.Email, Groups: groups(all[p.cfg.GroupsClaim])}, nil
}

// groups reads a groups claim: an array of strings, or one string.
func groups(v any) []string {
	switch g := v.(type) {
	case string:
		return []string{g}
	case []any:
		out := make([]string, 0, len(g))
		for _, e := range g {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// EndSessionURL returns the provider's end_session_endpoint with the
// client_id parameter (OpenID Connect RP-Initiated Logout) when its
// discovery advertised one (discovering it now if need be), else "".
func (p *Provider) EndSessionURL(ctx context.Context) string {
	d, err := p.discover(ctx)
	if err != nil || d.endSession == "" {
		return ""
	}
	u, err := url.Parse(d.endSession)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	q := u.Query()
	q.Set("client_id", p.cfg.ClientID)
	u.RawQuery = q.Encode()
	return u.String()
}

// clip shortens what the browser sent to 100 bytes for an error message:
// the log line it ends in stays short whatever the callback carried.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// random is 32 random bytes, base64url: a state or a nonce.
func random() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
