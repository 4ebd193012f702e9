package policy

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Claims are the JWT claims fleetgate mints and verifies. The JSON names
// follow Cloudflare Access tokens, so origins written for Access work as-is.
type Claims struct {
	Aud           []string `json:"aud"`
	Iss           string   `json:"iss"`
	Sub           string   `json:"sub"`
	Type          string   `json:"type"`
	Iat           int64    `json:"iat"`
	Nbf           int64    `json:"nbf"`
	Exp           int64    `json:"exp"`
	IdentityNonce string   `json:"identity_nonce"`
	CommonName    string   `json:"common_name,omitempty"`
	CertSHA256    string   `json:"cert_sha256,omitempty"`
	// CertSerial (lower-case hex) and CertIssuer (the leaf's issuer name,
	// DER, base64url) name the certificate the way a CRL does, so that a
	// session token dies with its certificate when a CRL revokes it.
	CertSerial string `json:"cert_serial,omitempty"`
	CertIssuer string `json:"cert_issuer,omitempty"`
	// CertRoot is the lower-case hex SHA-256 of the root the certificate's
	// verified chain ended at, so that a session token stops working where
	// that root is no longer trusted (a CA removed from the application).
	CertRoot string `json:"cert_root,omitempty"`
	// ServiceTokenName names the [[service_tokens]] entry the request
	// presented; CommonName is then its client id, as in Access's service
	// tokens, and the token names no certificate.
	ServiceTokenName string `json:"service_token_name,omitempty"`
	// Policy names the policy that admitted the request that minted the token.
	Policy string `json:"policy,omitempty"`
	// Email, Groups and IdP are the identity of a person who logged in
	// with an identity provider (IdP is its [[identity_providers]] name;
	// Sub is then the IdP's subject). Empty for devices.
	Email  string   `json:"email,omitempty"`
	Groups []string `json:"groups,omitempty"`
	// GroupSet names the group rules the person's session was judged under
	// (Application.GroupSet when the token was minted): the token records
	// only the groups those rules name, so under other rules it cannot be
	// judged, and the person logs in again.
	GroupSet string `json:"group_set,omitempty"`
	IdP      string `json:"idp,omitempty"`
	// AuthTime is when the person logged in at the identity provider
	// (Unix seconds, OpenID Connect's auth_time): a re-minted session
	// token never expires later than AuthTime + the session duration.
	AuthTime int64 `json:"auth_time,omitempty"`
	// Cnf binds the token to the certificate the request that minted it
	// presented (RFC 8705 section 3.1): the gateway accepts it back only
	// on a connection presenting that same certificate (BoundTo).
	Cnf *Confirmation `json:"cnf,omitempty"`
	// NoDuration marks a token minted for one request only: it goes to the
	// origin and is refused if ever presented back.
	NoDuration bool `json:"no_duration,omitempty"`
}

// CertRef names the certificate behind the token the way revocation looks
// certificates up: by fingerprint, and by issuer and serial when the token
// carries them. ok is false for a token that names no certificate (minted
// from a token, or before the claims existed); a token whose certificate
// claims do not decode returns ErrMalformedToken: the gateway minted it, so
// it must fail closed.
func (c *Claims) CertRef() (ref verdict.CertRef, ok bool, err error) {
	if c.CertSHA256 == "" {
		return verdict.CertRef{}, false, nil
	}
	ref.Subject = c.CommonName
	if n, err := hex.Decode(ref.SHA256[:], []byte(c.CertSHA256)); err != nil || n != len(ref.SHA256) {
		return verdict.CertRef{}, false, fmt.Errorf("%w: cert_sha256", ErrMalformedToken)
	}
	if c.CertSerial != "" && c.CertIssuer != "" {
		serial, okSerial := new(big.Int).SetString(c.CertSerial, 16)
		issuer, err := base64.RawURLEncoding.DecodeString(c.CertIssuer)
		if !okSerial || err != nil {
			return verdict.CertRef{}, false, fmt.Errorf("%w: cert_serial or cert_issuer", ErrMalformedToken)
		}
		ref.Serial, ref.RawIssuer = serial, issuer
	}
	return ref, true, nil
}
