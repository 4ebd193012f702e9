package gateway

// The login of people on applications with identity providers: the
// OpenID Connect authorization code flow (internal/oidclogin), its
// endpoints under /cdn-cgi/access/, and the decision made once the
// identity is known.
//
//	request, no identity ─▶ decide: LoginRequired ─▶ needLogin
//	    browser GET/HEAD: one provider ─▶ 302 to it (login cookie: sealed state)
//	                      several ─▶ chooser page ─▶ /cdn-cgi/access/login/<name>
//	    anything else ─▶ 401
//	/cdn-cgi/access/callback?code&state ─▶ state cookie opened, used once ─▶ code exchanged,
//	    ID token verified (nonce too) ─▶ policies with identity + certificate
//	    ─▶ CF_Authorization cookie, 302 to the path first asked for; or a 403 page

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/oidclogin"
	"github.com/fleetgate/fleetgate/policy"
)

// The login endpoints.
const (
	pathCallback    = "/cdn-cgi/access/callback"
	pathLoginPrefix = "/cdn-cgi/access/login/"
)

// loginLifetime is how long a login may take between the redirect to the
// provider and the callback.
const loginLifetime = 10 * time.Minute

// loginCookiePrefix names the login state cookies; the state's first 16
// characters complete the name, so that logins in two tabs do not clobber
// each other.
const loginCookiePrefix = "fleetgate_login_"

// logins is a snapshot's identity providers and the login state's keys.
type logins struct {
	providers map[string]*oidclogin.Provider
	keys      map[string]string // provider name → what it was built from (reuse across reloads)
	sealer    *oidclogin.Sealer
	used      *usedStates // carried across reloads
}

// provisionLogins builds the snapshot's providers, reusing those of old
// whose settings (secret included) did not change, so that their discovery
// survives a reload; a changed secret file makes a new provider.
func (s *snapshot) provisionLogins(cfg *configs.Config, old *snapshot) error {
	l := &logins{providers: map[string]*oidclogin.Provider{}, keys: map[string]string{}, used: &usedStates{m: map[string]int64{}}}
	if old != nil && old.logins != nil {
		l.used = old.logins.used
	}
	s.logins = l
	if len(cfg.IdentityProviders) == 0 {
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(cfg.Tokens.SigningKey)
	if err != nil {
		return fmt.Errorf("gateway: login state key: %w", err)
	}
	if l.sealer, err = oidclogin.NewSealer(der); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	for i := range cfg.IdentityProviders {
		ip := &cfg.IdentityProviders[i]
		key := providerKey(ip)
		l.keys[ip.Name] = key
		if old != nil && old.logins != nil && old.logins.keys[ip.Name] == key {
			l.providers[ip.Name] = old.logins.providers[ip.Name]
			continue
		}
		l.providers[ip.Name] = oidclogin.New(oidclogin.Config{
			Name: ip.Name, Issuer: ip.Issuer, ClientID: ip.ClientID, ClientSecret: ip.ClientSecret.Reveal(),
			Scopes: ip.Scopes, GroupsClaim: ip.GroupsClaim, RootCAs: ip.OriginCAs,
		})
	}
	return nil
}

// providerKey is what a provider is built from: equal keys, same provider.
func providerKey(ip *configs.IdentityProvider) string {
	sum := sha256.Sum256([]byte(ip.ClientSecret.Reveal()))
	return strings.Join([]string{ip.Issuer, ip.ClientID, hex.EncodeToString(sum[:]), strings.Join(ip.Scopes, " "),
		ip.GroupsClaim, hex.EncodeToString(ip.OriginCAsSum[:])}, "\x00")
}

// usedStates remembers the login states whose callback ran, until they
// expire: a replayed callback (its URL and cookie) fails even before the
// provider refuses the used code.
type usedStates struct {
	mu sync.Mutex
	m  map[string]int64 // state → expiry (Unix seconds)
}

// maxUsedStates bounds the memory of used states.
const maxUsedStates = 100_000

// claim marks state used and reports whether it was not already.
func (u *usedStates) claim(state string, exp int64, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.m[state]; ok {
		return false
	}
	if len(u.m) >= maxUsedStates {
		for k, e := range u.m {
			if e < now.Unix() {
				delete(u.m, k)
			}
		}
		if len(u.m) >= maxUsedStates {
			return false // a flood of logins: refuse rather than forget
		}
	}
	u.m[state] = exp
	return true
}

// provider returns the application's provider called name, nil if none.
func (a *application) provider(name string) *oidclogin.Provider {
	for _, p := range a.idps {
		if p.Name() == name {
			return p
		}
	}
	return nil
}

// loginEndpoint answers the login endpoints of an application with
// identity providers; ok is false for another path.
func (x *exchange) loginEndpoint(path string) (outcome, bool) {
	if len(x.app.idps) == 0 {
		return proceed, false
	}
	switch {
	case path == pathCallback:
		return x.callback(), true
	case strings.HasPrefix(path, pathLoginPrefix):
		p := x.app.provider(strings.TrimPrefix(path, pathLoginPrefix))
		ret, ok := safeReturn(string(x.req.URI().QueryArgs().Peek("redirect_url")))
		if p == nil || !ok {
			return x.loginPage(fasthttp.StatusBadRequest, "Login failed", "This login link is not valid.", "bad login link"), true
		}
		return x.startLogin(p, ret), true
	}
	return proceed, false
}

// needLogin answers a request that needs a logged-in person: a browser's
// page request goes to the provider (or the chooser), anything else gets
// 401, as a script cannot follow a login.
func (x *exchange) needLogin() outcome {
	if !browserNavigation(x.req) {
		o := x.refuse(fasthttp.StatusUnauthorized, policy.ReasonLoginRequired)
		x.resp.Header.Set("WWW-Authenticate", `Cookie realm="`+x.host+`"`)
		return o
	}
	ret, ok := safeReturn(string(x.req.URI().RequestURI()))
	if !ok {
		ret = "/"
	}
	if len(x.app.idps) == 1 {
		return x.startLogin(x.app.idps[0], ret)
	}
	return x.chooser(ret)
}

// browserNavigation reports whether a request is a browser loading a
// page: GET or HEAD accepting text/html (fetch and curl say */* or JSON).
func browserNavigation(req *fasthttp.Request) bool {
	return (req.Header.IsGet() || req.Header.IsHead()) && strings.Contains(string(req.Header.Peek("Accept")), "text/html")
}

// safeReturn accepts a return URL only when it is a path on this host:
// starting with one "/", no backslash (browsers read "/\evil" as
// "//evil"), no control characters, at most 2KiB.
func safeReturn(s string) (string, bool) {
	if s == "" {
		return "/", true
	}
	if len(s) > 2048 || s[0] != '/' || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\") {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] == 0x7f {
			return "", false
		}
	}
	return s, true
}

// callbackURL is the redirect URI on the host and port the device used.
func (x *exchange) callbackURL() (string, bool) {
	h := string(x.req.Header.Host())
	port := ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		port = h[i+1:]
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	u := "https://" + x.host
	if port != "" && port != "443" {
		u += ":" + port
	}
	return u + pathCallback, true
}

// startLogin sends the browser to provider p, with the login's state sealed
// in a cookie only the callback path receives.
func (x *exchange) startLogin(p *oidclogin.Provider, ret string) outcome {
	redirect, ok := x.callbackURL()
	if !ok {
		return x.refuse(fasthttp.StatusBadRequest, "malformed Host header")
	}
	ctx, cancel := context.WithTimeout(context.Background(), oidclogin.DefaultTimeout)
	defer cancel()
	authURL, st, err := p.Start(ctx, redirect)
	if err != nil {
		return x.providerFailed(p, err)
	}
	st.Return, st.Host, st.Exp = ret, x.host, x.now.Add(loginLifetime).Unix()
	x.redirect(authURL, "login started with "+p.Name())
	x.resp.Header.Add("Set-Cookie", loginCookie(st.State, x.cur.logins.sealer.Seal(st), x.now, loginLifetime))
	return respond
}

// callback completes a login: the state cookie must open, match the state
// parameter and be used for the first time; then the provider's code is
// exchanged and the ID token verified.
func (x *exchange) callback() outcome {
	q := x.req.URI().QueryArgs()
	state := string(q.Peek("state"))
	clear := loginCookie(state, "", x.now, 0) // every answer clears it: one use
	failed := func(o outcome) outcome {
		x.resp.Header.Add("Set-Cookie", clear)
		return o
	}
	st, err := x.loginState(state)
	if err != nil {
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "login state: "+err.Error()))
	}
	p := x.app.provider(st.Provider)
	switch {
	case p == nil:
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "login state names an unknown provider"))
	case !x.cur.logins.used.claim(st.State, st.Exp, x.now):
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "login state replayed"))
	case len(q.Peek("error")) > 0:
		return failed(x.loginFailed(fasthttp.StatusUnauthorized, "the provider returned error "+quote(string(q.Peek("error")))))
	}
	redirect, _ := x.callbackURL()
	ctx, cancel := context.WithTimeout(context.Background(), oidclogin.DefaultTimeout)
	defer cancel()
	id, err := p.Finish(ctx, redirect, string(q.Peek("code")), st)
	if err != nil {
		if errors.Is(err, oidclogin.ErrUnavailable) {
			return failed(x.providerFailed(p, err))
		}
		return failed(x.loginFailed(fasthttp.StatusUnauthorized, err.Error()))
	}
	return failed(x.loggedIn(&policy.Identity{Email: id.Email, Groups: id.Groups, IdP: p.Name(), Subject: id.Subject}, st.Return))
}

// loginState opens the login cookie of state.
func (x *exchange) loginState(state string) (oidclogin.State, error) {
	if len(state) < 16 || x.cur.logins.sealer == nil {
		return oidclogin.State{}, oidclogin.ErrState
	}
	v := x.req.Header.Cookie(loginCookiePrefix + state[:16])
	st, err := x.cur.logins.sealer.Open(string(v), x.now)
	if err != nil {
		return st, err
	}
	if len(st.State) != len(state) || subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1 || st.Host != x.host {
		return oidclogin.State{}, oidclogin.ErrState
	}
	if _, ok := safeReturn(st.Return); !ok {
		return oidclogin.State{}, oidclogin.ErrState
	}
	return st, nil
}

// loggedIn decides on the fresh identity with the certificate's verdict,
// and on an allow sets the session cookie and sends the browser back.
func (x *exchange) loggedIn(id *policy.Identity, ret string) outcome {
	// A cookie the browser still sent (another person's, or expired) and
	// the connection's session do not take part: this login decides.
	x.claims, x.token, x.tokenErr, x.c.session = nil, "", nil, nil
	x.input = x.policyInput()
	x.input.Identity = id
	x.decision = x.app.policy.Evaluate(&x.input)
	x.decided = true
	if !x.decision.Allowed {
		return x.identityDenied(x.decision.Reason)
	}
	if o := x.mint(); o != proceed {
		return o
	}
	if x.cookie == "" {
		return x.identityDenied("the allowing policy has no session duration: nothing can keep the login")
	}
	x.reason = x.decision.Reason
	x.redirect(ret, x.decision.Reason)
	x.resp.Header.Add("Set-Cookie", x.cookie)
	x.cookieSet = true
	return respond
}

// loginLogout ends the session at the provider too, when it advertises an
// end_session_endpoint: the provider of the session's token, or the only
// one. It returns "" when there is none.
func (x *exchange) loginLogout() string {
	var p *oidclogin.Provider
	if x.claims != nil && x.claims.IdP != "" {
		p = x.app.provider(x.claims.IdP)
	} else if len(x.app.idps) == 1 {
		p = x.app.idps[0]
	}
	if p == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), oidclogin.DefaultTimeout)
	defer cancel()
	return p.EndSessionURL(ctx)
}

// providerFailed answers a provider that could not be reached (502).
func (x *exchange) providerFailed(p *oidclogin.Provider, err error) outcome {
	x.c.srv.log.Warn("identity provider unavailable", "app", x.app.name, "idp", p.Name(), "err", err.Error())
	return x.loginPage(fasthttp.StatusBadGateway, "Sign-in unavailable",
		"The identity provider of this application cannot be reached. Try again in a moment.", "identity provider unavailable: "+p.Name())
}

// loginFailed answers a login that cannot be completed; why goes to the
// log only.
func (x *exchange) loginFailed(status int, why string) outcome {
	x.c.srv.log.Info("login failed", "app", x.app.name, "host", x.host, "why", why)
	return x.loginPage(status, "Sign-in failed", "The sign-in could not be completed. Go back to the application to sign in again.", "login failed: "+why)
}
