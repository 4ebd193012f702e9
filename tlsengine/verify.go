package tlsengine

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// defaultMaxIntermediates is the cap on device-sent intermediates when
// Site.MaxIntermediates is not set.
const defaultMaxIntermediates = 4

// clientAuthUsage is the ExtKeyUsage every device chain must allow. x509
// copies VerifyOptions and only reads KeyUsages, so one shared slice is safe.
var clientAuthUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

// anyUsage is used by the diagnostic re-verification, which looks only for a
// path, not for its usages.
var anyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}

// validity is the time span over which a verdict stays true: the intersection
// of the validity windows of the certificates it was computed from.
type validity struct {
	from, until time.Time
}

// VerifyChain checks a device's chain (as the client sent it, leaf first)
// against site at time now and returns the verdict, with the leaf's identity
// filled whenever the leaf is present, even for an invalid chain, so that
// logs can name the device.
//
// Only the site's roots are trusted; intermediates come from the site's
// upload and from the chain itself; the leaf and the path must allow
// ExtKeyUsage clientAuth; every certificate on the verified path must be
// within its validity window at now; the leaf of a verified path must not be
// a CA (basic constraints CA:TRUE) and, when it has a KeyUsage extension,
// must allow digitalSignature (else BadUsage, as for a missing clientAuth;
// a leaf without KeyUsage is fine; see leafUsageProblem); and no
// certificate of that path may be revoked by site.Revocation (else Revoked,
// with Detail naming which certificate and why; a Valid or Revoked verdict
// carries the path in Path, for Revocation.Recheck). A zero now means
// time.Now(). Device-sent certificates that are not on the verified path are
// ignored, as by crypto/x509 (a device that still bundles a superseded,
// expired intermediate keeps working when the site holds the renewed one).
func VerifyChain(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict {
	v, _ := verifyChain(site, chain, now)
	return v
}

// VerifyRawChain is VerifyChain over DER certificates (leaf first), as found
// in tls.ConnectionState or a forwarded header. A certificate that does not
// parse gives Malformed. The intermediate count is checked before parsing
// anything but the leaf.
func VerifyRawChain(site *Site, raw [][]byte, now time.Time) verdict.Verdict {
	if len(raw) == 0 {
		return verdict.Verdict{Kind: verdict.Missing}
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return verdict.Verdict{Kind: verdict.Malformed, Detail: "leaf certificate: " + err.Error()}
	}
	if v, tooMany := checkCount(site, len(raw), leaf); tooMany {
		return v
	}
	chain := make([]*x509.Certificate, len(raw))
	chain[0] = leaf
	for i := 1; i < len(raw); i++ {
		if chain[i], err = x509.ParseCertificate(raw[i]); err != nil {
			return verdict.Verdict{
				Kind:     verdict.Malformed,
				Identity: leafIdentity(leaf),
				Detail:   fmt.Sprintf("certificate %d of the chain: %v", i, err),
			}
		}
	}
	return VerifyChain(site, chain, now)
}

// verifyChain is VerifyChain that also returns the window over which the
// verdict holds (for the cache): for Valid and Revoked, that of the verified
// paths (Revocation.judge says which); otherwise that of the certificates
// the device sent.
func verifyChain(site *Site, chain []*x509.Certificate, now time.Time) (verdict.Verdict, validity) {
	if len(chain) == 0 {
		return verdict.Verdict{Kind: verdict.Missing}, validity{}
	}
	if now.IsZero() {
		now = time.Now()
	}
	leaf := chain[0]
	if leaf == nil || len(leaf.Raw) == 0 {
		return verdict.Verdict{Kind: verdict.Malformed, Detail: "leaf certificate is not a parsed certificate"}, validity{}
	}
	if v, tooMany := checkCount(site, len(chain), leaf); tooMany {
		return v, validity{}
	}
	leafSum := sha256.Sum256(leaf.Raw)
	v := verdict.Verdict{Identity: identityOf(leaf, leafSum)}
	for i, c := range chain[1:] {
		if c == nil || len(c.Raw) == 0 {
			v.Kind, v.Detail = verdict.Malformed, fmt.Sprintf("certificate %d of the chain is not a parsed certificate", i+1)
			return v, validity{}
		}
	}
	if site == nil {
		v.Kind, v.Detail = verdict.UnknownAuthority, "no site"
		return v, validity{}
	}
	if site.Roots == nil {
		v.Kind, v.Detail = verdict.UnknownAuthority, fmt.Sprintf("site %q has no client CAs", site.Name)
		return v, validity{}
	}
	sent := sentWindow(chain)
	// The leaf's window first: cheap, and it spares expired devices (the
	// commonest failure in a fleet) the signature checks.
	if k := windowKind(leaf, now); k != verdict.Valid {
		v.Kind, v.Detail = k, windowDetail("leaf certificate", leaf, now)
		return v, sent
	}
	opts := x509.VerifyOptions{
		Roots:         site.Roots,
		Intermediates: intermediatesFor(site, chain[1:]),
		CurrentTime:   now,
		KeyUsages:     clientAuthUsage,
	}
	chains, err := leaf.Verify(opts)
	if err == nil {
		if why := leafUsageProblem(leaf); why != "" {
			v.Kind, v.Detail = verdict.BadUsage, why
			return v, pathWindow(chains)
		}
		return site.Revocation.judge(v, chains, leafSum, now)
	}
	v.Kind, v.Detail = classifyChainError(leaf, chain, opts, err)
	return v, sent
}

// leafUsageProblem says why a device's leaf may not authenticate a TLS
// client, or returns "" when it may: a leaf must not be a CA (basic
// constraints CA:TRUE), and a KeyUsage extension, when present, must allow
// digitalSignature (RFC 5280 section 4.2.1.3; RFC 8446 and RFC 5246 sign
// CertificateVerify with the leaf's key). crypto/x509 checks neither on a
// leaf. Why refuse a CA leaf: a key that can issue certificates should not
// double as a device identity, and a CA of the site's own upload (an
// intermediate, even the root) would otherwise pass as a device. A leaf
// without a KeyUsage extension (KeyUsage 0) is accepted, as RFC 5280 allows.
func leafUsageProblem(leaf *x509.Certificate) string {
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return fmt.Sprintf("leaf certificate (%q) is a CA (basic constraints CA:TRUE): a device certificate must not be able to issue certificates", leaf.Subject.CommonName)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Sprintf("leaf certificate (%q) has a key usage without digitalSignature (%s): its key may not sign the TLS handshake", leaf.Subject.CommonName, keyUsageNames(leaf.KeyUsage))
	}
	return ""
}

// keyUsageNames lists the bits of ku by their RFC 5280 names, for details.
func keyUsageNames(ku x509.KeyUsage) string {
	names := [...]string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if ku&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// checkCount returns TooManyIntermediates when the device sent more
// intermediates than the site allows. Why before any other work: a long
// chain is the cheapest way to make a verifier burn CPU.
func checkCount(site *Site, n int, leaf *x509.Certificate) (verdict.Verdict, bool) {
	limit := defaultMaxIntermediates
	if site != nil && site.MaxIntermediates > 0 {
		limit = site.MaxIntermediates
	}
	if n-1 <= limit {
		return verdict.Verdict{}, false
	}
	v := verdict.Verdict{
		Kind:   verdict.TooManyIntermediates,
		Detail: fmt.Sprintf("device sent %d intermediate certificates; the limit is %d", n-1, limit),
	}
	if leaf != nil && len(leaf.Raw) > 0 {
		v.Identity = leafIdentity(leaf)
	}
	return v, true
}

// intermediatesFor returns the site's intermediates plus those the device
// sent, without touching the site's pool.
func intermediatesFor(site *Site, sent []*x509.Certificate) *x509.CertPool {
	if len(sent) == 0 {
		return site.Intermediates
	}
	var p *x509.CertPool
	if site.Intermediates != nil {
		p = site.Intermediates.Clone()
	} else {
		p = x509.NewCertPool()
	}
	for _, c := range sent {
		p.AddCert(c)
	}
	return p
}

// classifyChainError maps a crypto/x509 verification error to a verdict
// kind and a detail for logs. x509 reports a broken path either as a
// CertificateInvalidError about the last candidate parent it rejected, or,
// depending on the order it tried candidates in (a non-CA parent, an expired
// intermediate next to an untrusted cross-sign), as an UnknownAuthorityError
// whose cause it keeps private; the latter is examined further.
func classifyChainError(leaf *x509.Certificate, chain []*x509.Certificate, opts x509.VerifyOptions, err error) (verdict.Kind, string) {
	detail := err.Error()
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &invalid):
		switch invalid.Reason {
		case x509.Expired:
			if invalid.Cert != nil {
				if k := windowKind(invalid.Cert, opts.CurrentTime); k != verdict.Valid {
					return k, detail
				}
			}
			return verdict.Expired, detail
		case x509.NotAuthorizedToSign, x509.IncompatibleUsage, x509.CANotAuthorizedForExtKeyUsage,
			x509.TooManyIntermediates: // x509's TooManyIntermediates is a CA's path-length limit, not our count
			return verdict.BadUsage, detail
		}
		return verdict.UnknownAuthority, detail
	case errors.As(err, &unknown):
		sent, k, why := inspectSentPath(chain, opts.CurrentTime)
		if k != verdict.Valid {
			return k, why + "; " + detail
		}
		if k, why := probePath(leaf, sent, opts); k != verdict.Valid {
			return k, why + "; " + detail
		}
		return verdict.UnknownAuthority, detail
	}
	return verdict.UnknownAuthority, detail
}

// inspectSentPath looks at the certificates the device sent that can be
// reached from the leaf by issuer links (name and key identifier, no
// signature checks), nearest to the leaf first, and reports the first one
// outside its validity window at now (Expired / NotYetValid) or not allowed
// to sign certificates (BadUsage). Otherwise it returns Valid and the
// intersection of those certificates' windows, which contains now.
func inspectSentPath(chain []*x509.Certificate, now time.Time) (validity, verdict.Kind, string) {
	leaf := chain[0]
	w := validity{from: leaf.NotBefore, until: leaf.NotAfter}
	visited := make([]bool, len(chain))
	visited[0] = true
	queue := []int{0}
	for len(queue) > 0 {
		cur := chain[queue[0]]
		queue = queue[1:]
		for i := 1; i < len(chain); i++ {
			if visited[i] || !issuedBy(cur, chain[i]) {
				continue
			}
			visited[i] = true
			c := chain[i]
			if k := windowKind(c, now); k != verdict.Valid {
				return w, k, windowDetail(fmt.Sprintf("certificate %d of the chain (%q)", i, c.Subject.CommonName), c, now)
			}
			if !maySign(c) {
				return w, verdict.BadUsage, fmt.Sprintf("certificate %d of the chain (%q) is not a CA", i, c.Subject.CommonName)
			}
			if c.NotBefore.After(w.from) {
				w.from = c.NotBefore
			}
			if c.NotAfter.Before(w.until) {
				w.until = c.NotAfter
			}
			queue = append(queue, i)
		}
	}
	return w, verdict.Valid, ""
}

// probePath explains a path failure caused by a certificate of the site's
// own pools (an expired or not-yet-valid root or intermediate), which a
// CertPool does not let us enumerate: it re-runs the verification at the
// start and at the end of w, the window in which the certificates the device
// sent are all valid, and if a path exists then, reports the certificate on
// it that is outside its window now. It runs only after a failure, at most
// twice.
func probePath(leaf *x509.Certificate, w validity, opts x509.VerifyOptions) (verdict.Kind, string) {
	now := opts.CurrentTime
	opts.KeyUsages = anyUsage
	for i, at := range [2]time.Time{w.from, w.until} {
		if at.Equal(now) || (i == 1 && at.Equal(w.from)) {
			continue
		}
		opts.CurrentTime = at
		chains, err := leaf.Verify(opts)
		if err != nil {
			continue
		}
		kind, why := verdict.Valid, ""
		for _, ch := range chains {
			k, kwhy := chainTimeKind(ch, now)
			if k == verdict.Valid {
				return verdict.Valid, "" // a path in its window exists: not a time problem
			}
			if kind == verdict.Valid {
				kind, why = k, kwhy
			}
		}
		return kind, why
	}
	return verdict.Valid, ""
}

// chainTimeKind reports the first certificate of ch outside its window at now.
func chainTimeKind(ch []*x509.Certificate, now time.Time) (verdict.Kind, string) {
	for _, c := range ch {
		if k := windowKind(c, now); k != verdict.Valid {
			return k, windowDetail(fmt.Sprintf("CA certificate %q", c.Subject.CommonName), c, now)
		}
	}
	return verdict.Valid, ""
}

// issuedBy reports whether parent's subject (and key identifier, when both
// are present) matches child's issuer.
func issuedBy(child, parent *x509.Certificate) bool {
	if !bytes.Equal(child.RawIssuer, parent.RawSubject) {
		return false
	}
	return len(child.AuthorityKeyId) == 0 || len(parent.SubjectKeyId) == 0 ||
		bytes.Equal(child.AuthorityKeyId, parent.SubjectKeyId)
}

// maySign mirrors the constraints x509.CheckSignatureFrom puts on a parent:
// a CA in its basic constraints, and certSign if it has a key usage at all.
func maySign(c *x509.Certificate) bool {
	if c.Version == 3 && !c.BasicConstraintsValid || c.BasicConstraintsValid && !c.IsCA {
		return false
	}
	return c.KeyUsage == 0 || c.KeyUsage&x509.KeyUsageCertSign != 0
}

// windowKind places now relative to c's validity window (both ends
// inclusive, as crypto/x509 does).
func windowKind(c *x509.Certificate, now time.Time) verdict.Kind {
	switch {
	case now.Before(c.NotBefore):
		return verdict.NotYetValid
	case now.After(c.NotAfter):
		return verdict.Expired
	}
	return verdict.Valid
}

// windowDetail says which certificate is outside its window, for logs.
func windowDetail(what string, c *x509.Certificate, now time.Time) string {
	if now.Before(c.NotBefore) {
		return fmt.Sprintf("%s is not valid before %s (now %s)", what, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s expired at %s (now %s)", what, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
}

// sentWindow is the intersection of the windows of the certificates the
// device sent.
func sentWindow(chain []*x509.Certificate) validity {
	return pathWindow([][]*x509.Certificate{chain})
}

// pathWindow returns, among chains, the window of the one that stays valid
// longest; each chain's window is the intersection of its certificates'.
func pathWindow(chains [][]*x509.Certificate) validity {
	_, w := longestPath(chains)
	return w
}

// longestPath returns the index, among chains, of the one that stays valid
// longest, and its window: a Valid verdict names that path, so that the
// path it carries (its expiry, what a revocation recheck looks at) lives as
// long as the verdict and its cache entry do.
func longestPath(chains [][]*x509.Certificate) (int, validity) {
	var best validity
	at := 0
	for j, ch := range chains {
		var w validity
		for i, c := range ch {
			if i == 0 || c.NotBefore.After(w.from) {
				w.from = c.NotBefore
			}
			if i == 0 || c.NotAfter.Before(w.until) {
				w.until = c.NotAfter
			}
		}
		if len(ch) > 0 && (best.until.IsZero() || w.until.After(best.until)) {
			best, at = w, j
		}
	}
	return at, best
}

// leafIdentity extracts what policies and logs may know about the leaf. The
// slices and DER alias the certificate: treat them as read-only.
func leafIdentity(c *x509.Certificate) verdict.Identity {
	return identityOf(c, sha256.Sum256(c.Raw))
}

// identityOf is leafIdentity with the leaf's SHA-256 already computed.
func identityOf(c *x509.Certificate, sum [sha256.Size]byte) verdict.Identity {
	id := verdict.Identity{
		CommonName:   c.Subject.CommonName,
		Organization: c.Subject.Organization,
		OrgUnit:      c.Subject.OrganizationalUnit,
		DNSNames:     c.DNSNames,
		Emails:       c.EmailAddresses,
		IssuerCN:     c.Issuer.CommonName,
		NotBefore:    c.NotBefore,
		NotAfter:     c.NotAfter,
		DER:          c.Raw,
	}
	if len(c.URIs) > 0 {
		id.URIs = make([]string, 0, len(c.URIs))
		for _, u := range c.URIs {
			if u != nil {
				id.URIs = append(id.URIs, u.String())
			}
		}
	}
	if c.SerialNumber != nil {
		id.SerialHex = c.SerialNumber.Text(16)
	}
	id.SHA256 = hex.EncodeToString(sum[:])
	return id
}
