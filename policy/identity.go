package policy

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
)

// Identity is a person's identity, from an identity provider's ID token at
// login (Input.Identity) or from the session token minted after it.
type Identity struct {
	// Email is the ID token's email claim, as the IdP wrote it.
	Email string
	// Groups are the values of the provider's groups claim.
	Groups []string
	// IdP is the [[identity_providers]] name the person logged in with:
	// what login_method matches and the token's idp claim.
	IdP string
	// Subject is the ID token's sub: the person's id at the IdP.
	Subject string
	// Nonce is the identity nonce: set once at login, kept by every token
	// re-minted for the same session (the token's identity_nonce). ""
	// at login: NewClaims then draws one.
	Nonce string
	// AuthTime is when the person logged in (Unix seconds), kept by every
	// token re-minted for the same session (the token's auth_time): no
	// re-mint outlives AuthTime + the session duration, so the identity
	// provider is asked again at least that often. 0 at login:
	// Application.NewClaims takes the request's time.
	AuthTime int64
}

// LoggedIn returns the identity of the request and whether there is one:
// Identity when set (the login's callback), else the one a verified session
// token carries (its idp claim is set only by a login).
func (in *Input) LoggedIn() (Identity, bool) {
	if in.Identity != nil {
		return *in.Identity, true
	}
	if t := in.Token; t != nil && t.IdP != "" && !t.NoDuration {
		return Identity{Email: t.Email, Groups: t.Groups, IdP: t.IdP, Subject: t.Sub, Nonce: t.IdentityNonce, AuthTime: t.AuthTime}, true
	}
	return Identity{}, false
}

// Confirmation is a token's cnf claim (RFC 7800): the certificate the token
// is bound to (RFC 8705 section 3.1).
type Confirmation struct {
	// X5tS256 is the base64url (no padding) SHA-256 of the leaf
	// certificate's DER.
	X5tS256 string `json:"x5t#S256"`
}

// Thumbprint returns the x5t#S256 of a certificate whose DER SHA-256 is
// sha256Hex (lower-case hex, as verdicts and tokens carry it), "" when it
// does not decode.
func Thumbprint(sha256Hex string) string {
	b, err := hex.DecodeString(sha256Hex)
	if err != nil || len(b) != 32 {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// BoundTo reports whether the token may be used on a connection whose
// certificate's DER SHA-256 is sha256Hex ("" when none was presented): true
// for a token without cnf; for a bound one, only when the thumbprints are
// equal (compared in constant time).
func (c *Claims) BoundTo(sha256Hex string) bool {
	if c.Cnf == nil {
		return true
	}
	got := Thumbprint(sha256Hex)
	return got != "" &&
		subtle.ConstantTimeCompare([]byte(got), []byte(c.Cnf.X5tS256)) == 1
}

// The TOML keys of the identity selectors.
const (
	keyEmail       = "email"
	keyEmailDomain = "email_domain"
	keyGroup       = "group"
	keyLoginMethod = "login_method"
)

// IdentitySelector is implemented by the selectors that test a logged-in
// identity (email, email_domain, group, login_method): configs allows them
// only on an application with identity providers.
type IdentitySelector interface {
	NeedsIdentity() bool
}

// NeedsIdentity reports whether s tests a logged-in identity.
func NeedsIdentity(s Selector) bool {
	i, ok := s.(IdentitySelector)
	return ok && i.NeedsIdentity()
}

// email is { email = "ops@fleet.test" }: the identity's email, compared
// case-insensitively in ASCII (mail domains are, and IdPs differ in case).
// Only ASCII is compared: Unicode case folding maps other letters onto
// ASCII ones (ſ onto s, the Kelvin sign onto k), which would let an IdP
// account "ops@fleet.teſt" pass for "ops@fleet.test".
type email string

func parseEmail(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	if i := strings.IndexByte(s, '@'); i <= 0 || i == len(s)-1 || strings.Count(s, "@") != 1 {
		return nil, errors.New(strconv.Quote(s) + " is not an email address such as \"ops@fleet.test\"")
	}
	if !isASCII(s) {
		return nil, errors.New(strconv.Quote(s) + " is not ASCII (write an internationalized domain as its xn-- A-label)")
	}
	return email(strings.ToLower(s)), nil
}

func (email) Key() string            { return keyEmail }
func (email) NeedsCertificate() bool { return false }
func (email) NeedsIdentity() bool    { return true }
func (e email) String() string       { return "email = " + strconv.Quote(string(e)) }

func (e email) Match(in *Input) bool {
	id, ok := in.LoggedIn()
	return ok && id.Email != "" && asciiEqualFold(id.Email, string(e))
}

// isASCII reports whether s is all ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// asciiEqualFold reports whether a and b are equal ignoring ASCII case;
// any byte outside ASCII makes them different (no Unicode folding: on
// ASCII strings strings.EqualFold folds A–Z only, so "ſ" never matches "s"
// nor "K" (Kelvin) "k").
func asciiEqualFold(a, b string) bool {
	return isASCII(a) && isASCII(b) && strings.EqualFold(a, b)
}

// emailDomain is { email_domain = "fleet.test" }: the part of the identity's
// email after its @, compared case-insensitively in ASCII (see email).
type emailDomain string

func parseEmailDomain(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(s, "@ /*") || strings.HasPrefix(s, ".") {
		return nil, errors.New(strconv.Quote(s) + " is not a domain such as \"fleet.test\" (no @, no wildcard: the domain is matched exactly)")
	}
	if !isASCII(s) {
		return nil, errors.New(strconv.Quote(s) + " is not ASCII (write an internationalized domain as its xn-- A-label)")
	}
	return emailDomain(strings.ToLower(s)), nil
}

func (emailDomain) Key() string            { return keyEmailDomain }
func (emailDomain) NeedsCertificate() bool { return false }
func (emailDomain) NeedsIdentity() bool    { return true }
func (d emailDomain) String() string       { return "email_domain = " + strconv.Quote(string(d)) }

func (d emailDomain) Match(in *Input) bool {
	id, ok := in.LoggedIn()
	if !ok {
		return false
	}
	i := strings.LastIndexByte(id.Email, '@')
	return i > 0 && asciiEqualFold(id.Email[i+1:], string(d))
}

// group is { group = "ops" }: one of the identity's groups (from the
// provider's groups_claim) is exactly this (case-sensitive, as IdPs name
// groups).
type group string

func parseGroup(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	return group(s), nil
}

func (group) Key() string            { return keyGroup }
func (group) NeedsCertificate() bool { return false }
func (group) NeedsIdentity() bool    { return true }
func (g group) String() string       { return "group = " + strconv.Quote(string(g)) }

func (g group) Match(in *Input) bool {
	id, ok := in.LoggedIn()
	if !ok {
		return false
	}
	for _, v := range id.Groups {
		if v == string(g) {
			return true
		}
	}
	return false
}

// loginMethod is { login_method = "corp" }: the person logged in with the
// [[identity_providers]] entry of that name.
type loginMethod string

func parseLoginMethod(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	return loginMethod(s), nil
}

func (loginMethod) Key() string            { return keyLoginMethod }
func (loginMethod) NeedsCertificate() bool { return false }
func (loginMethod) NeedsIdentity() bool    { return true }
func (m loginMethod) String() string       { return "login_method = " + strconv.Quote(string(m)) }

// LoginMethod returns the provider name of a login_method selector, and
// whether s is one: configs checks it names a provider of the application.
func LoginMethod(s Selector) (string, bool) {
	m, ok := s.(loginMethod)
	return string(m), ok
}

func (m loginMethod) Match(in *Input) bool {
	id, ok := in.LoggedIn()
	return ok && id.IdP == string(m)
}
