// Package verdict holds the result of checking a device's certificate chain:
// the Kind (valid, or why not) and the leaf's Identity. tlsengine produces a
// Verdict for every connection; policy consumes it. Keeping the type in its own
// leaf package lets both use it without policy importing the TLS engine.
package verdict

import (
	"crypto/sha256"
	"math/big"
	"time"
)

// Kind says whether a client chain was accepted, and if not, why. The zero
// value is Missing: a connection with no verdict computed is never trusted.
type Kind uint8

// The verdict kinds. Their String forms are stable: they appear in access
// logs, metrics labels and 403 bodies.
const (
	Missing              Kind = iota // no client certificate presented
	Valid                            // chains to the site's roots, usable for clientAuth, in its validity window
	UnknownAuthority                 // does not chain to the site's roots
	Expired                          // some certificate in the chain is past its NotAfter
	NotYetValid                      // some certificate in the chain is before its NotBefore
	BadUsage                         // leaf lacks ExtKeyUsage clientAuth, is itself a CA or has a KeyUsage without digitalSignature, or an intermediate is not a CA
	Malformed                        // a certificate could not be parsed
	TooManyIntermediates             // more intermediates than the site allows
	Revoked                          // a certificate in the chain is revoked (CRL or deny-list)
	RevocationUnknown                // an issuer's CRL is past its nextUpdate under crl_stale = "reject"
)

var kindNames = [...]string{
	Missing:              "missing",
	Valid:                "valid",
	UnknownAuthority:     "unknown_authority",
	Expired:              "expired",
	NotYetValid:          "not_yet_valid",
	BadUsage:             "bad_usage",
	Malformed:            "malformed",
	TooManyIntermediates: "too_many_intermediates",
	Revoked:              "revoked",
	RevocationUnknown:    "revocation_unknown",
}

var kindReasons = [...]string{
	Missing:              "no client certificate",
	Valid:                "valid certificate",
	UnknownAuthority:     "unknown certificate authority",
	Expired:              "certificate expired",
	NotYetValid:          "certificate not yet valid",
	BadUsage:             "certificate not valid for client authentication",
	Malformed:            "malformed certificate",
	TooManyIntermediates: "too many intermediate certificates",
	Revoked:              "certificate revoked",
	RevocationUnknown:    "certificate revocation status unknown (stale CRL)",
}

// String returns the kind's machine name, such as "unknown_authority".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Reason returns the short human text used in a 403 body, such as
// "certificate expired".
func (k Kind) Reason() string {
	if int(k) < len(kindReasons) {
		return kindReasons[k]
	}
	return "invalid certificate"
}

// Identity is what policies may know about the leaf certificate. It is filled
// whenever a leaf could be parsed, even when the chain is not valid, so that
// logs can name the device that was refused.
type Identity struct {
	CommonName   string
	Organization []string
	OrgUnit      []string
	DNSNames     []string
	URIs         []string
	Emails       []string // rfc822Name SANs
	SerialHex    string   // lower-case hex, no separators
	SHA256       string   // lower-case hex fingerprint of the leaf DER
	IssuerCN     string
	NotBefore    time.Time
	NotAfter     time.Time
	// DER is the leaf certificate as presented, for forwarding to origins
	// (Cf-Client-Cert-Der-Base64, RFC 9440 Client-Cert). Never logged.
	DER []byte
}

// Verdict is the outcome of checking one presented chain.
type Verdict struct {
	Kind     Kind
	Identity Identity
	// Detail is an optional diagnostic for logs (never shown to the device),
	// such as the x509 error text.
	Detail string
	// Path is the verified certification path, leaf first and root last,
	// reduced to what a revocation check needs. It is set on Valid and
	// Revoked verdicts only. Why it is kept: a reload can revoke a device
	// that holds a live connection, and the gateway re-checks the path of
	// that connection's verdict on every request (tlsengine's
	// Revocation.Recheck) without the certificates themselves.
	Path []CertRef
}

// CertRef identifies one certificate of a verified path for revocation
// checks. Its slices and big.Int alias the certificate: treat them as
// read-only.
type CertRef struct {
	// Subject names the certificate in details: its subject common name, or
	// its whole subject when it has none.
	Subject string
	// RawIssuer is the DER of the certificate's issuer name: a CRL lists
	// serials of the certificates of its issuer (RFC 5280 section 5).
	RawIssuer []byte
	// Serial is the certificate's serial number.
	Serial *big.Int
	// SHA256 is the SHA-256 of the certificate's DER, its fingerprint.
	SHA256 [sha256.Size]byte
	// NotAfter is when the certificate expires.
	NotAfter time.Time
}

// PathNotAfter returns when the verified path stops being valid: the
// earliest NotAfter on it (an intermediate may expire before the leaf), or
// the zero time without a path. A connection outliving it, or a token
// minted from it, must not outlive it.
func (v *Verdict) PathNotAfter() time.Time {
	var t time.Time
	for i := range v.Path {
		if n := v.Path[i].NotAfter; !n.IsZero() && (t.IsZero() || n.Before(t)) {
			t = n
		}
	}
	return t
}

// OK reports whether the chain was accepted.
func (v *Verdict) OK() bool { return v.Kind == Valid }

// Presented reports whether the device sent a certificate at all.
func (v *Verdict) Presented() bool { return v.Kind != Missing }
