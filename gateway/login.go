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
//	    ─▶ CF_Authorization cookie, 302 to the path first asked for (with SameSite=Strict
//	       a page that moves on: a redirect chain from the provider would not carry it);
//	       or a 403 page

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
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

// maxCookieBytes bounds a Set-Cookie the login sends: browsers keep
// cookies of up to 4,096 bytes (name, value and attributes).
const maxCookieBytes = 4000

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
	l := &logins{providers: map[string]*oidclogin.Provider{}, keys: map[string]string{}, used: &usedStates{}}
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
			Scopes: ip.Scopes, GroupsClaim: ip.GroupsClaim, RootCAs: ip.OriginCAs, Resolve: ip.Resolve,
		})
	}
	return nil
}

// closeReplaced closes the providers of old that l does not reuse: their
// idle connections to the identity provider go now, not after the idle
// timeout. A login in flight on an older connection may still use one (it
// just dials again).
func (l *logins) closeReplaced(old *logins) {
	if l == nil || old == nil {
		return
	}
	for name, p := range old.providers {
		if l.providers[name] != p {
			p.Close()
		}
	}
}

// providerKey is what a provider is built from: equal keys, same provider.
func providerKey(ip *configs.IdentityProvider) string {
	sum := sha256.Sum256([]byte(ip.ClientSecret.Reveal()))
	return strings.Join([]string{ip.Issuer, ip.ClientID, hex.EncodeToString(sum[:]), strings.Join(ip.Scopes, " "),
		ip.GroupsClaim, hex.EncodeToString(ip.OriginCAsSum[:]), ip.Resolve}, "\x00")
}

// usedStates remembers the login states whose callback ran, until they
// expire: a replayed callback (its URL and cookie) fails even before the
// provider refuses the used code. Two generations, each loginLifetime
// long: a state claimed in cur is still in old for a whole generation
// after, which outlasts the state's own expiry, and the old generation is
// dropped whole. Each claim is O(1). A flood never refuses a login: a full
// generation rotates early, forgetting the oldest states (their codes are
// still single-use at the provider).
type usedStates struct {
	mu      sync.Mutex
	cur     map[string]struct{}
	old     map[string]struct{}
	rotated time.Time // when cur began
}

// maxUsedStates bounds each generation of used states.
const maxUsedStates = 100_000

// claim marks state, valid until exp (Unix seconds), used and reports
// whether it was not already; an expired state is never claimed.
func (u *usedStates) claim(state string, exp int64, now time.Time) bool {
	if exp < now.Unix() {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch since := now.Sub(u.rotated); {
	case u.cur == nil || since >= 2*loginLifetime:
		u.cur, u.old, u.rotated = make(map[string]struct{}), nil, now
	case since >= loginLifetime:
		u.cur, u.old, u.rotated = make(map[string]struct{}), u.cur, now
	}
	if _, ok := u.cur[state]; ok {
		return false
	}
	if _, ok := u.old[state]; ok {
		return false
	}
	if len(u.cur) >= maxUsedStates {
		u.cur, u.old, u.rotated = make(map[string]struct{}), u.cur, now
	}
	u.cur[state] = struct{}{}
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
			return x.loginPage(fasthttp.StatusBadRequest, "Sign-in failed", "This sign-in link is not valid.", "bad login link"), true
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
	st.Return, st.Host, st.Cert, st.Exp = ret, x.host, x.presentedSHA256(), x.now.Add(loginLifetime).Unix()
	cookie := loginCookie(st.State, x.cur.logins.sealer.Seal(st), x.now, loginLifetime)
	if len(cookie) > maxCookieBytes {
		// A browser would drop it and the callback fail: return to the
		// application's root instead of the (long) URL first asked for.
		st.Return = "/"
		cookie = loginCookie(st.State, x.cur.logins.sealer.Seal(st), x.now, loginLifetime)
	}
	x.redirect(authURL, "login started with "+p.Name())
	x.resp.Header.Add("Set-Cookie", cookie)
	return respond
}

// callback completes a login: the state cookie must open, match the state
// parameter and be used for the first time; then the provider's code is
// exchanged and the ID token verified.
func (x *exchange) callback() outcome {
	q := x.req.URI().QueryArgs()
	state := string(q.Peek("state"))
	failed := func(o outcome) outcome {
		if validState(state) { // only then may it name a cookie
			x.resp.Header.Add("Set-Cookie", loginCookie(state, "", x.now, 0)) // every answer clears it: one use
		}
		return o
	}
	st, err := x.loginState(state)
	if err != nil {
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "login state: "+err.Error()))
	}
	p := x.app.provider(st.Provider)
	// The state is used up only by a callback that can complete: one with
	// the provider's error, or without code, costs nothing to remember.
	switch {
	case p == nil:
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "login state names an unknown provider"))
	case len(q.Peek("error")) > 0:
		return failed(x.loginFailed(fasthttp.StatusUnauthorized, "the provider returned error "+quote(string(q.Peek("error")))))
	case len(q.Peek("code")) == 0:
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "callback without code"))
	case !x.cur.logins.used.claim(st.State, st.Exp, x.now):
		return failed(x.loginFailed(fasthttp.StatusBadRequest, "login state replayed"))
	}
	redirect, _ := x.callbackURL()
	ctx, cancel := context.WithTimeout(context.Background(), oidclogin.DefaultTimeout)
	defer cancel()
	id, err := p.Finish(ctx, redirect, string(q.Peek("code")), string(q.Peek("iss")), st)
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
	if !validState(state) || x.cur.logins.sealer == nil {
		return oidclogin.State{}, oidclogin.ErrState
	}
	v := x.req.Header.Cookie(loginCookiePrefix + state[:16])
	st, err := x.cur.logins.sealer.Open(string(v), x.now)
	if err != nil {
		return st, err
	}
	if subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1 || st.Host != x.host {
		return oidclogin.State{}, oidclogin.ErrState
	}
	if cert := x.presentedSHA256(); subtle.ConstantTimeCompare([]byte(cert), []byte(st.Cert)) != 1 {
		return oidclogin.State{}, fmt.Errorf("%w: the login started with another client certificate", oidclogin.ErrState)
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
	if len(x.cookie) > maxCookieBytes {
		// A browser drops a larger cookie, and the login would loop.
		n := len(x.cookie)
		x.cookie, x.c.session = "", nil
		return x.loginPage(fasthttp.StatusForbidden, "Sign-in failed",
			"Your identity is too large to keep in a session cookie (too many groups, or too long a name). Ask the administrator of this application.",
			"login failed: session cookie of "+strconv.Itoa(n)+" bytes is too large")
	}
	x.reason = x.decision.Reason
	if sameSiteAttr(x.app.snap.sameSite) == "Strict" {
		// A browser withholds a Strict cookie on a redirect chain that
		// began at another site (the provider), so a 302 would find no
		// session and start the login again, in a loop: a page of this
		// host sends the browser on instead, a same-site navigation.
		x.continuePage(ret, x.decision.Reason)
	} else {
		x.redirect(ret, x.decision.Reason)
	}
	x.resp.Header.Add("Set-Cookie", x.cookie)
	x.cookieSet = true
	return respond
}

// validState reports whether s has the shape of the states Start draws:
// 43 base64url characters (32 random bytes).
func validState(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
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
