package configs

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/fleetgate/fleetgate/policy"
)

// IdentityProvider is one [[identity_providers]] entry: an OpenID Connect
// provider people log in with (the authorization code flow with PKCE) on
// the applications that name it in identity_providers.
type IdentityProvider struct {
	// Name is what applications' identity_providers, the login_method
	// selector and the token's idp claim use.
	Name string
	// Type is "oidc", the only type.
	Type string
	// Issuer is the provider's issuer URL (https, or http on a loopback
	// address): discovery is at Issuer + "/.well-known/openid-configuration".
	Issuer string
	// ClientID is the gateway's client id at the provider.
	ClientID string
	// ClientSecretFile is client_secret_file as written.
	ClientSecretFile string
	// ClientSecret is the file's content without its trailing newline. It
	// never prints (Secret).
	ClientSecret Secret
	// Scopes (scopes = ["openid", "email", "profile"]) always include
	// "openid".
	Scopes []string
	// GroupsClaim is the ID token claim the group selector reads
	// (groups_claim = "groups").
	GroupsClaim string
	// OriginCAs, from origin_ca_file, are the roots the provider's TLS
	// certificate is verified against instead of the system's; nil: the
	// system's.
	OriginCAs *x509.CertPool
	// OriginCAsSum is the SHA-256 of origin_ca_file's contents.
	OriginCAsSum [32]byte
}

// Secret is a credential read from a file. It prints as "[redacted]"
// whatever the verb (%v, %+v, %#v, %s), in JSON and in slog, so that a
// configuration value can be logged or dumped without leaking it; Reveal
// is the only way to its value.
type Secret struct{ v string }

// NewSecret wraps a credential.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the credential: for the one place that sends it.
func (s Secret) Reveal() string { return s.v }

// Empty reports whether the secret is "".
func (s Secret) Empty() bool { return s.v == "" }

const redacted = "[redacted]"

// String returns "[redacted]".
func (Secret) String() string { return redacted }

// GoString returns "[redacted]".
func (Secret) GoString() string { return redacted }

// MarshalText returns "[redacted]".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue returns "[redacted]".
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// defaultScopes are an identity provider's scopes when the key is absent.
var defaultScopes = []string{"openid", "email", "profile"}

// identityProviders checks every [[identity_providers]] entry and fills
// cfg.IdentityProviders with those that load; l.idps records every name
// (even of an entry that failed, so applications naming it are not
// reported again).
func (l *loader) identityProviders(fps []fileIdentityProvider, cfg *Config) {
	for i := range fps {
		fp, path := &fps[i], indexPath("identity_providers", i)
		key := func(k string) string { return joinKey(path, k) }
		errs := len(l.errs)
		p := IdentityProvider{Name: fp.Name, Type: fp.Type, ClientID: fp.ClientID,
			ClientSecretFile: fp.ClientSecretFile, GroupsClaim: fp.GroupsClaim}
		switch j, dup := l.idps[fp.Name]; {
		case fp.Name == "":
			l.errorf(key("name"), "required: the provider's name (applications' identity_providers and login_method use it)")
		case dup:
			l.errorf(key("name"), "%q is also the name of identity_providers[%d]", fp.Name, j)
		default:
			l.idps[fp.Name] = i
		}
		if fp.Type != "oidc" {
			l.errorf(key("type"), "%q is not \"oidc\" (the only type)", fp.Type)
		}
		issuer := l.issuer(key("issuer"), fp.Issuer)
		if fp.ClientID == "" {
			l.errorf(key("client_id"), "required: the gateway's client id at the provider")
		}
		p.ClientSecret = l.clientSecret(key("client_secret_file"), fp.ClientSecretFile)
		p.Scopes = l.scopes(key("scopes"), fp.Scopes)
		if fp.GroupsClaim == "" {
			l.errorf(key("groups_claim"), "must not be empty (the default is \"groups\")")
		}
		if fp.OriginCAFile != "" {
			p.OriginCAs, p.OriginCAsSum = l.originCAs(key("origin_ca_file"), fp.OriginCAFile, issuer)
		}
		if issuer != nil {
			p.Issuer = fp.Issuer
		}
		if len(l.errs) == errs {
			cfg.IdentityProviders = append(cfg.IdentityProviders, p)
		}
	}
}

// issuer checks an issuer URL: https, or http on a loopback address (a
// provider on the same machine); a path is allowed (Keycloak's realms).
func (l *loader) issuer(path, s string) *url.URL {
	if s == "" {
		l.errorf(path, "required: the provider's issuer URL, such as \"https://idp.fleet.test\"")
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		l.errorf(path, "%q is not an https:// URL with a host and no query or fragment", s)
		return nil
	}
	switch u.Scheme {
	case "https":
		return u
	case "http":
		if h := u.Hostname(); h == "localhost" || net.ParseIP(h).IsLoopback() {
			return u
		}
		l.errorf(path, "%q: an issuer must be https:// (http:// only on a loopback address): the ID token and client secret cross this connection", s)
	default:
		l.errorf(path, "%q is not an https:// URL", s)
	}
	return nil
}

// clientSecret reads client_secret_file. Messages name the file, never its
// content.
func (l *loader) clientSecret(path, name string) Secret {
	if name == "" {
		l.errorf(path, "required: a file holding the client secret (kept out of this file)")
		return Secret{}
	}
	data, ok := l.readFileMax(path, name, 1<<20)
	if !ok {
		return Secret{}
	}
	data = bytes.TrimRight(data, "\r\n")
	switch {
	case len(data) == 0:
		l.errorf(path, "%s is empty", name)
		return Secret{}
	case bytes.ContainsAny(data, "\r\n"):
		l.errorf(path, "%s holds more than one line: write the client secret alone", name)
		return Secret{}
	}
	return NewSecret(string(data))
}

// scopes applies the default scopes and checks that openid is asked for.
func (l *loader) scopes(path string, s []string) []string {
	if len(s) == 0 {
		return slices.Clone(defaultScopes)
	}
	for i, v := range s {
		if v == "" || strings.ContainsAny(v, " \t\"") {
			l.errorf(indexPath(path, i), "%q is not a scope (a single word such as \"email\")", v)
		}
	}
	if !slices.Contains(s, "openid") {
		l.errorf(path, "must include \"openid\": without it the provider issues no ID token")
	}
	return slices.Clone(s)
}

// appIdentityProviders checks an application's identity_providers: known
// names, no repeats, and an application that can carry a login (an http
// application with sessions and an exact domain).
func (l *loader) appIdentityProviders(path string, names []string, app *Application, wildcard bool) {
	if len(names) == 0 {
		return
	}
	switch {
	case app.Protocol.Relayed():
		l.errorf(path, "not for a%s application: a person's login needs HTTP redirects; remove it", article(app.Protocol))
		return
	case app.SessionDuration == 0:
		l.errorf(path, "needs sessions: with session_duration = \"0s\" the login's result could never be kept")
	case wildcard:
		l.errorf(path, "not for a wildcard domain: the provider needs one registered redirect URI (https://<domain>/cdn-cgi/access/callback)")
	}
	for i, n := range names {
		switch {
		case slices.Contains(names[:i], n):
			l.errorf(indexPath(path, i), "%q is listed twice", n)
		case !l.hasIdP(n):
			l.errorf(indexPath(path, i), "unknown identity provider %q: add an [[identity_providers]] entry with that name", n)
		default:
			app.IdentityProviders = append(app.IdentityProviders, n)
		}
	}
	app.Login = true
}

// hasIdP reports whether an [[identity_providers]] entry has that name.
func (l *loader) hasIdP(name string) bool {
	_, ok := l.idps[name]
	return ok
}

// checkIdentitySelectors refuses identity selectors (email, group, …) on
// an application without identity providers, where nobody logs in, and a
// login_method naming a provider the application does not offer.
func (l *loader) checkIdentitySelectors(path string, app *Application) {
	for i := range app.Policies {
		p := &app.Policies[i]
		for _, list := range [...]struct {
			name string
			sels []policy.Selector
		}{{"include", p.Include}, {"require", p.Require}, {"exclude", p.Exclude}} {
			for j, s := range list.sels {
				sp := indexPath(joinKey(indexPath(path, i), list.name), j)
				if !policy.NeedsIdentity(s) {
					continue
				}
				if !app.Login {
					l.errorf(sp, "%s needs a logged-in person: add identity_providers to the application", s.Key())
				} else if m, ok := policy.LoginMethod(s); ok && !slices.Contains(app.IdentityProviders, m) {
					l.errorf(sp, "login_method %q is not one of the application's identity_providers", m)
				}
			}
		}
	}
}

// IdentityProvider returns the [[identity_providers]] entry called name,
// nil when none.
func (c *Config) IdentityProvider(name string) *IdentityProvider {
	for i := range c.IdentityProviders {
		if c.IdentityProviders[i].Name == name {
			return &c.IdentityProviders[i]
		}
	}
	return nil
}
