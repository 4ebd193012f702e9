package policy

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// TokenType is the "type" claim of every token fleetgate mints, as in
// Cloudflare Access application tokens.
const TokenType = "app"

// NoDurationLifetime is how long a "no duration" token lives: long enough for
// the origin to check the one request it travels with, never a session.
const NoDurationLifetime = 10 * time.Second

// ClaimsParams are the inputs of NewClaims.
type ClaimsParams struct {
	AUD    string // the application's audience tag; aud = [AUD]
	Issuer string // iss: the gateway's issuer URL
	// CommonName and CertSHA256 identify the device: set them only from a
	// valid certificate, or from the session token that stood in for one
	// (Input.Subject gives exactly that). A token whose CertSHA256 is empty
	// never satisfies a certificate selector when presented back.
	CommonName string
	CertSHA256 string
	CertSerial string // lower-case hex
	CertIssuer string // the leaf's issuer name, DER, base64url
	CertRoot   string // hex SHA-256 of the verified chain's root
	Policy     string // the name of the policy that admitted the request
	// ServiceTokenName is set for a request admitted with a service token:
	// CommonName is then the token's client id, and no certificate is named.
	ServiceTokenName string
	Duration         time.Duration // the session length; 0 (or less): no duration
	Now              time.Time     // iat and nbf; policy never reads the clock
	// NotAfter, when set, caps exp: the certificate's own expiry, so that a
	// session token never outlives the certificate it stands in for.
	NotAfter time.Time
	// Identity, when set, is the logged-in person: email, groups, idp and
	// sub claims, and its Nonce (when set) as identity_nonce.
	Identity *Identity
	// GroupSet, with Identity, is the group_set claim: the application's
	// group rules the identity's groups were filtered by.
	GroupSet string
	// Cnf, when set, binds the token to a certificate (RFC 8705).
	Cnf *Confirmation
}

// NewClaims returns the claims of a token to mint: aud = [p.AUD], iss, sub
// "", type "app", iat = nbf = p.Now, exp = p.Now + p.Duration (rounded up
// to a second), a random 128-bit identity_nonce (hex), common_name,
// cert_sha256 and policy. When p.Duration is 0 the token is a "no duration"
// one: NoDuration set and exp NoDurationLifetime after iat; it is for the
// origin only and refused when presented back. exp never passes
// p.NotAfter, when set, nor, for a person, Identity.AuthTime + p.Duration.
//
// The nonce comes from crypto/rand, which never fails (since Go 1.24 a
// broken system random source aborts the program instead).
func NewClaims(p ClaimsParams) *Claims {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	now := p.Now.Unix()
	c := &Claims{
		Aud:           []string{p.AUD},
		Iss:           p.Issuer,
		Sub:           "",
		Type:          TokenType,
		Iat:           now,
		Nbf:           now,
		IdentityNonce: hex.EncodeToString(nonce[:]),
		CommonName:    p.CommonName,
		CertSHA256:    p.CertSHA256,
		CertSerial:    p.CertSerial,
		CertIssuer:    p.CertIssuer,
		CertRoot:      p.CertRoot,
		Policy:        p.Policy,

		ServiceTokenName: p.ServiceTokenName,
		Cnf:              p.Cnf,
	}
	if id := p.Identity; id != nil {
		c.Email, c.Groups, c.IdP, c.Sub, c.AuthTime = id.Email, id.Groups, id.IdP, id.Subject, id.AuthTime
		c.GroupSet = p.GroupSet
		if id.Nonce != "" {
			c.IdentityNonce = id.Nonce // the session's, kept across re-mints
		}
	}
	if p.Duration <= 0 {
		c.NoDuration = true
		c.Exp = now + int64(NoDurationLifetime/time.Second)
	} else {
		c.Exp = now + int64((p.Duration+time.Second-1)/time.Second)
		if c.AuthTime != 0 && c.Exp > c.AuthTime+int64((p.Duration+time.Second-1)/time.Second) {
			// A login's session ends session_duration after the login,
			// however often it is re-minted.
			c.Exp = c.AuthTime + int64((p.Duration+time.Second-1)/time.Second)
		}
	}
	if !p.NotAfter.IsZero() && c.Exp > p.NotAfter.Unix() {
		c.Exp = p.NotAfter.Unix()
	}
	return c
}

// NewClaims is NewClaims for a request this application admitted: the
// identity is in.Subject() (the certificate's, or that of the session token
// that stood in for it, so a token re-minted for a cookie-only request keeps
// the device's identity), the policy and duration are d's, the time is
// in.Now. A person's session keeps its login time (auth_time; a fresh
// login's is in.Now), so re-minting never extends it past the login plus
// the session duration; a presented token without auth_time is never
// extended past its own exp. It refuses a decision that does not mint (d.Mint false), a nil
// input, a negative duration and an application without AUD.
func (a *Application) NewClaims(issuer string, in *Input, d Decision) (*Claims, error) {
	if in == nil {
		return nil, errors.New("policy: NewClaims: nil input")
	}
	if !d.Mint {
		return nil, errors.New("policy: NewClaims: the decision does not mint a token")
	}
	if a.AUD == "" {
		return nil, fmt.Errorf("policy: NewClaims: application %q has no AUD", a.Name)
	}
	if d.SessionDuration < 0 {
		return nil, fmt.Errorf("policy: NewClaims: negative session duration %s", d.SessionDuration)
	}
	p := ClaimsParams{AUD: a.AUD, Issuer: issuer, Policy: d.Policy, Duration: d.SessionDuration, Now: in.Now}
	var tokenExp int64 // a session token of a login from before auth_time: its end
	if id, ok := in.LoggedIn(); ok {
		switch {
		case in.Identity != nil && id.AuthTime == 0:
			id.AuthTime = in.Now.Unix() // the login is now
		case in.Identity == nil && id.AuthTime == 0:
			tokenExp = in.Token.Exp
		}
		id.Groups = a.namedGroups(id.Groups)
		p.Identity, p.GroupSet = &id, a.GroupSet()
	}
	if st := in.ServiceToken; st != nil {
		// A machine's credential: the token says which, not a certificate
		// (a session token from it never stands in for one).
		p.CommonName, p.ServiceTokenName = st.ClientID, st.Name
		if !st.Expires.IsZero() {
			p.NotAfter = st.Expires
		}
	} else if s, ok := in.Subject(); ok {
		p.CommonName, p.CertSHA256, p.CertSerial, p.CertIssuer, p.CertRoot = s.CommonName, s.CertSHA256, s.CertSerial, s.CertIssuer, s.CertRoot
		if !s.FromToken {
			if path := in.Cert.Path; len(path) > 0 {
				p.CertIssuer = base64.RawURLEncoding.EncodeToString(path[0].RawIssuer)
				p.CertRoot = hex.EncodeToString(path[len(path)-1].SHA256[:])
			}
			p.NotAfter = in.Cert.PathNotAfter() // an intermediate may expire first
			if p.NotAfter.IsZero() {
				p.NotAfter = in.Cert.Identity.NotAfter
			}
		}
		if d.BindCertificate {
			if t := Thumbprint(s.CertSHA256); t != "" {
				p.Cnf = &Confirmation{X5tS256: t}
			}
		}
	}
	if t := in.Token; p.Cnf == nil && in.Identity == nil && t != nil && t.Cnf != nil && !t.NoDuration {
		// A session once bound stays bound, whichever policy re-mints it
		// (why: otherwise a policy without certificate selectors would
		// turn the laptop's session into a cookie that works anywhere).
		cnf := *t.Cnf
		p.Cnf = &cnf
	}
	c := NewClaims(p)
	if tokenExp != 0 && c.Exp > tokenExp {
		c.Exp = tokenExp
	}
	return c, nil
}

// namedGroups returns the groups of gs that a group selector of a's
// policies names (include, require or exclude, of any action), in gs's
// order: all the token needs to decide again, and a provider's long groups
// claim would otherwise make a cookie browsers drop.
func (a *Application) namedGroups(gs []string) []string {
	named := a.groupNames()
	var out []string
	for _, g := range gs {
		if _, ok := slices.BinarySearch(named, g); ok {
			out = append(out, g)
		}
	}
	return out
}

// GroupSet names the application's group rules: a digest of the groups its
// policies' group selectors name (any action, include, require or
// exclude), "" when none does. A session token records the person's groups
// among those only, and this digest with them (group_set): when a reload
// names other groups, a token minted before cannot say whether the person
// is in them, and the person logs in again (Evaluate).
func (a *Application) GroupSet() string {
	if a.plan != nil {
		return a.plan.groupSet
	}
	return groupSetOf(groupNames(a.Policies))
}

// groupNames is what Compile keeps of groupNames(a.Policies), or that.
func (a *Application) groupNames() []string {
	if a.plan != nil {
		return a.plan.groups
	}
	return groupNames(a.Policies)
}

// groupNames returns the groups the group selectors of policies name, of
// any action, in include, require or exclude: sorted, each once.
func groupNames(policies []Policy) []string {
	var names []string
	for i := range policies {
		p := &policies[i]
		for _, list := range [...][]Selector{p.Include, p.Require, p.Exclude} {
			for _, s := range list {
				if v, ok := s.(group); ok {
					names = append(names, string(v))
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// groupSetOf is the GroupSet of the sorted group names names.
func groupSetOf(names []string) string {
	if len(names) == 0 {
		return ""
	}
	sum := sha256.Sum256([]byte(strings.Join(names, "\n")))
	return hex.EncodeToString(sum[:8])
}

// Mint signs c with the current key and returns the compact JWS
// (header.payload.signature, base64url). The claims are used as given.
func (ks *KeySet) Mint(c *Claims) (string, error) {
	if c == nil {
		return "", errors.New("policy: Mint: nil claims")
	}
	if ks == nil || len(ks.keys) == 0 {
		return "", errors.New("policy: Mint: empty KeySet (use NewKeySet)")
	}
	var scratch [1024]byte
	payload := c.appendJSON(scratch[:0])
	k := ks.keys[0]
	n := len(k.header) + 1 + b64.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+b64.EncodedLen(k.sigLen()))
	buf = append(buf, k.header...)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	sig, err := k.sign(buf)
	if err != nil {
		return "", fmt.Errorf("policy: Mint: %w", err)
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), nil
}

// sign returns the JWS signature over the signing input: raw r||s for
// ES256 (RFC 7518 §3.4, not DER), Ed25519 over the message for EdDSA,
// PKCS #1 v1.5 for RS256.
func (k *tokenKey) sign(input []byte) ([]byte, error) {
	switch k.alg {
	case AlgEdDSA:
		return k.signer.Sign(rand.Reader, input, crypto.Hash(0))
	case AlgRS256:
		d := sha256.Sum256(input)
		return k.signer.Sign(rand.Reader, d[:], crypto.SHA256)
	case AlgES256:
		d := sha256.Sum256(input)
		der, err := k.signer.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		var rs struct{ R, S *big.Int }
		rest, err := asn1.Unmarshal(der, &rs)
		if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil ||
			rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
			return nil, errors.New("ECDSA signer returned a malformed signature")
		}
		if rs.S.Cmp(p256HalfOrder) > 0 {
			rs.S.Sub(elliptic.P256().Params().N, rs.S) // low-s: the only form Verify accepts
		}
		out := make([]byte, 64)
		rs.R.FillBytes(out[:32])
		rs.S.FillBytes(out[32:])
		return out, nil
	}
	return nil, fmt.Errorf("unknown algorithm %q", k.alg)
}

// sigLen is the length of the key's signatures: what Mint reserves for one.
func (k *tokenKey) sigLen() int {
	if k.alg == AlgRS256 && k.rsa != nil {
		return k.rsa.Size()
	}
	return 64 // ES256 r||s, Ed25519
}
