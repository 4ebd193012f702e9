package oidcop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultGroupsClaim       = "groups"
	DefaultIDTokenLifetime   = 5 * time.Minute
	DefaultAccessTokenLife   = 5 * time.Minute
	DefaultAuthRequestLife   = 10 * time.Minute
	DefaultSessionLifetime   = 8 * time.Hour
	minRSAKeyBits            = 2048
	defaultLoginPath         = "/login"
	defaultLoggedOutPath     = "/logged-out"
	defaultSessionCookieName = "oidcop_session"
)

// Options configures a Provider. Issuer, at least one client and at least one
// user are required; every other field has a safe default.
type Options struct {
	// Issuer is the provider's URL, exactly as it appears in the ID token's
	// iss claim and in discovery: https://host[:port], or http://host[:port]
	// for tests. It must have no path, query or fragment.
	Issuer string
	// TLSCertificate is the server certificate served by Start. It is
	// required when Issuer is https and refused when Issuer is http: the
	// scheme the clients are told is the one they get.
	TLSCertificate *tls.Certificate
	// Clients are the registered Relying Parties.
	Clients []Client
	// Users are the accounts that can log in.
	Users []User
	// GroupsClaim names the ID token and userinfo claim that lists a user's
	// groups. Default "groups".
	GroupsClaim string
	// IDTokenLifetime is how long an ID token is valid. Zero means
	// DefaultIDTokenLifetime. A negative value issues tokens that have
	// already expired by that much, for tests of how a client refuses them.
	IDTokenLifetime time.Duration
	// SigningKey signs ID tokens: an *rsa.PrivateKey (RS256, at least 2048
	// bits) or an ECDSA P-256 key (ES256). Nil generates a fresh RSA 2048
	// key, RS256 being the algorithm every client supports.
	SigningKey crypto.Signer
	// RequirePKCE refuses authorization requests without a code_challenge.
	// Whatever it says, a code_challenge must use S256: plain is refused.
	RequirePKCE bool
	// AutoLogin, when set, is the subject (or e-mail) of a user who is
	// logged in at once, without the login form, on every authorization
	// request that has no session yet. For headless tests; never for a
	// provider anyone else can reach.
	AutoLogin string
	// Logger receives the provider's own messages and its HTTP server's
	// errors. Nil discards them. No password or secret is ever logged.
	// (The OP library itself logs through slog.Default.)
	Logger *slog.Logger
}

// Client is a registered Relying Party: a confidential web client that
// authenticates at the token endpoint with its secret (client_secret_basic or
// client_secret_post) and uses the authorization code flow.
type Client struct {
	ID     string
	Secret string
	// RedirectURIs are matched exactly, as OpenID Connect requires.
	RedirectURIs []string
	// PostLogoutRedirectURIs are the only targets end_session redirects to;
	// any other post_logout_redirect_uri is refused.
	PostLogoutRedirectURIs []string
}

// User is an account of the provider.
type User struct {
	// Subject is the stable sub claim.
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	Groups        []string
	// Password is compared in constant time. The login form accepts the
	// Subject or the Email as the username.
	Password string
}

// validate checks opts and fills in defaults, returning a copy.
func (o Options) validate() (Options, error) {
	u, err := url.Parse(o.Issuer)
	if err != nil || o.Issuer == "" {
		return o, fmt.Errorf("oidcop: issuer %q: not a URL", o.Issuer)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return o, fmt.Errorf("oidcop: issuer %q: want scheme://host[:port] with no path, query or user", o.Issuer)
	}
	switch u.Scheme {
	case "https":
		if o.TLSCertificate == nil {
			return o, fmt.Errorf("oidcop: issuer %q is https but no TLSCertificate is given", o.Issuer)
		}
	case "http":
		if o.TLSCertificate != nil {
			return o, fmt.Errorf("oidcop: issuer %q is http but a TLSCertificate is given: use an https issuer", o.Issuer)
		}
	default:
		return o, fmt.Errorf("oidcop: issuer %q: scheme must be https or http", o.Issuer)
	}
	o.Issuer = u.Scheme + "://" + u.Host

	if len(o.Clients) == 0 {
		return o, errors.New("oidcop: no clients")
	}
	ids := map[string]bool{}
	for i, c := range o.Clients {
		switch {
		case c.ID == "":
			return o, fmt.Errorf("oidcop: clients[%d]: empty ID", i)
		case ids[c.ID]:
			return o, fmt.Errorf("oidcop: clients[%d]: duplicate ID %q", i, c.ID)
		case c.Secret == "":
			return o, fmt.Errorf("oidcop: clients[%d] (%s): empty Secret", i, c.ID)
		case len(c.RedirectURIs) == 0:
			return o, fmt.Errorf("oidcop: clients[%d] (%s): no RedirectURIs", i, c.ID)
		}
		ids[c.ID] = true
		for j, r := range append(append([]string{}, c.RedirectURIs...), c.PostLogoutRedirectURIs...) {
			ru, err := url.Parse(r)
			if err != nil || (ru.Scheme != "https" && ru.Scheme != "http") || ru.Host == "" || ru.Fragment != "" {
				return o, fmt.Errorf("oidcop: clients[%d] (%s): redirect URI %d %q: want an absolute http(s) URL without fragment", i, c.ID, j, r)
			}
		}
	}

	if len(o.Users) == 0 {
		return o, errors.New("oidcop: no users")
	}
	names := map[string]bool{}
	for i, usr := range o.Users {
		if usr.Subject == "" {
			return o, fmt.Errorf("oidcop: users[%d]: empty Subject", i)
		}
		if usr.Password == "" {
			return o, fmt.Errorf("oidcop: users[%d] (%s): empty Password", i, usr.Subject)
		}
		for _, n := range []string{usr.Subject, usr.Email} {
			if n == "" {
				continue
			}
			if names[n] {
				return o, fmt.Errorf("oidcop: users[%d]: username %q is used twice (subjects and e-mails must be unique)", i, n)
			}
			names[n] = true
		}
	}
	if o.AutoLogin != "" && !names[o.AutoLogin] {
		return o, fmt.Errorf("oidcop: AutoLogin %q: no such user", o.AutoLogin)
	}

	if o.GroupsClaim == "" {
		o.GroupsClaim = DefaultGroupsClaim
	}
	if o.IDTokenLifetime == 0 {
		o.IDTokenLifetime = DefaultIDTokenLifetime
	}
	switch k := o.SigningKey.(type) {
	case nil:
	case *rsa.PrivateKey:
		if k.N.BitLen() < minRSAKeyBits {
			return o, fmt.Errorf("oidcop: SigningKey: RSA key of %d bits, want at least %d", k.N.BitLen(), minRSAKeyBits)
		}
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return o, fmt.Errorf("oidcop: SigningKey: ECDSA curve %s, want P-256 (ES256)", k.Curve.Params().Name)
		}
	default:
		return o, fmt.Errorf("oidcop: SigningKey: unsupported key type %T, want *rsa.PrivateKey or *ecdsa.PrivateKey", o.SigningKey)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
