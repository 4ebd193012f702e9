package policy

import "github.com/fleetgate/fleetgate/internal/verdict"

// Subject is the device identity that selectors match on.
type Subject struct {
	CommonName string // the leaf certificate's CN
	CertSHA256 string // lower-case hex SHA-256 of the leaf DER
	CertSerial string // lower-case hex serial of the leaf
	// CertIssuer is the leaf's issuer name (DER, base64url) when the
	// identity comes from a token; NewClaims takes it from the verdict's
	// path otherwise (Subject itself never allocates).
	CertIssuer string
	CertRoot   string // from a token: the root its certificate chained to (hex SHA-256)
	// FromToken is true when the identity comes from a token that stands in
	// for a certificate not presented on this request.
	FromToken bool
}

// Subject returns the identity selectors match on, and whether there is one:
//   - the certificate's, when the verdict is Valid;
//   - else, when no certificate was presented and Token is a session token
//     minted after a valid certificate (CertSHA256 set, not a no-duration
//     token), the token's: a session cookie stands in for the certificate;
//   - else none. A certificate presented but not valid never falls back to a
//     token (why: a device whose certificate was revoked or expired must not
//     keep access through an older cookie).
//
// A token minted by an `everyone` policy for a device without certificate
// carries no CertSHA256, so it never satisfies a certificate selector. Nor
// does a person's session token (idp set), whatever it names: the policy
// that minted it may not have required the certificate (no cnf), so
// replayed without the laptop it must not pass for the laptop.
func (in *Input) Subject() (Subject, bool) {
	if c := in.Cert; c != nil && c.Kind != verdict.Missing {
		if c.Kind != verdict.Valid {
			return Subject{}, false
		}
		return Subject{CommonName: c.Identity.CommonName, CertSHA256: c.Identity.SHA256, CertSerial: c.Identity.SerialHex}, true
	}
	if t := in.Token; t.standsIn() {
		return Subject{CommonName: t.CommonName, CertSHA256: t.CertSHA256, CertSerial: t.CertSerial, CertIssuer: t.CertIssuer, CertRoot: t.CertRoot, FromToken: true}, true
	}
	return Subject{}, false
}

// standsIn reports whether a session token may stand in for the
// certificate it names on a request that presents none: a device's session
// token minted after a valid certificate, never a person's (see Subject).
func (t *Claims) standsIn() bool {
	return t != nil && !t.NoDuration && t.CertSHA256 != "" && t.IdP == ""
}
