package tlsengine

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Revocation: which certificates are revoked, looked up in O(1) per
// certificate. One set is built per configuration snapshot and shared by all
// its sites (Site.Revocation); it is immutable and safe for concurrent use.
//
//	configs.Config ──▶ NewRevocation(CRLs, denied serials, denied fingerprints)
//	                        │  table: (issuer name, serial) → CRL entry,
//	                        │         (any issuer, serial)  → denied serial
//	                        │  fingerprints: SHA-256 → ∅
//	                        ▼
//	VerifyChain: after crypto/x509 found a path, every certificate of it
//	  (leaf, intermediates, root) is looked up → Valid (with Path) or Revoked
//	Recheck: the gateway, per request on a live connection, looks up the
//	  verdict's Path in the current snapshot's set

// CRL is one certificate revocation list given to NewRevocation.
type CRL struct {
	// Name identifies the list in verdict details and errors, such as
	// "fleet-root: pki/fleet.crl".
	Name string
	// List is the parsed list: version 2 (x509.ParseRevocationList) or
	// version 1 (configs.ParseCRL, whose Raw and RawTBSRevocationList are the
	// bytes as signed, so CheckSignatureFrom verifies it like a version 2
	// list). Both go through the same checks; a version 1 list has no
	// authority key identifier, and needs none: lists are keyed by issuer name.
	List *x509.RevocationList
	// Issuer is the CA certificate whose key signed List. Its subject must be
	// List's issuer; NewRevocation checks the signature again.
	Issuer *x509.Certificate
	// RejectAfter, when not zero, is when the list stops vouching for its
	// issuer's certificates: its nextUpdate, under crl_stale = "reject".
	// From then on a path through that issuer gets the verdict
	// RevocationUnknown (fail closed, as OpenSSL's "CRL has expired"), until
	// a reload brings a newer list.
	RejectAfter time.Time
}

// Revocation is an immutable set of revoked certificates: the entries of
// CRLs, keyed by issuer name and serial number (RFC 5280 section 5: a CRL
// lists serials of its issuer's certificates), plus serial numbers denied
// whatever the issuer and SHA-256 fingerprints denied. Looking up one
// certificate costs an issuer match and one or two probes of a hash table
// (revTable), plus a map probe when fingerprints are denied, and does not
// allocate.
//
// Why the issuer's name and not its key identifier: the Authority Key
// Identifier is optional in certificates and in CRLs (OpenSSL leaves it out
// of CRLs unless configured), so keying on it would silently miss
// revocations; the name is what scopes a CRL, and configs only accepts a CRL
// signed by a CA certificate of that name in the same client-CA upload.
//
// A nil *Revocation revokes nothing; all its methods may be called on it.
type Revocation struct {
	gen          uint64
	crls         []string // names, indexed by revEntry.crl
	issuers      []string // raw issuer names of the CRLs; revEntry.issuer is 1 + index
	issuerIndex  map[string]uint32
	table        revTable
	crlEntries   int
	serials      int
	fingerprints map[[sha256.Size]byte]struct{}
	// staleAt[issuer-1] is the earliest RejectAfter of the issuer's lists
	// (zero: none), staleCRL[issuer-1] that list's index in crls.
	staleAt  []time.Time
	staleCRL []uint32
}

// revocationGeneration numbers the sets NewRevocation builds.
var revocationGeneration atomic.Uint64

// linearIssuers is how many issuers are matched by comparing names one by
// one, faster than hashing a name for the few CAs a gateway trusts.
const linearIssuers = 8

// reasonRemoveFromCRL is the CRLReason of a delta-CRL entry that lifts a
// certificateHold: it revokes nothing.
const reasonRemoveFromCRL = 8

// oidCertificateIssuer is the CRL entry extension of indirect CRLs, whose
// entries may belong to another issuer than the list's.
var oidCertificateIssuer = asn1.ObjectIdentifier{2, 5, 29, 29}

// NewRevocation builds the revocation set of one snapshot from crls (each
// already signature-checked by the caller; NewRevocation checks again, so a
// set is never built from a list its Issuer did not sign), deniedSerials
// (revoked whatever their issuer) and deniedFingerprints (SHA-256 of the
// certificate DER). All three may be empty; the set then revokes nothing but
// still has its own Generation.
//
// Entries of a CRL apply to the certificates whose issuer name equals the
// list's issuer; several lists of one issuer add up. Entries with the reason
// removeFromCRL are skipped. It fails, naming the list and entry, on a nil
// List or Issuer, an Issuer whose subject is not the list's issuer, a
// signature that does not verify, an entry of an indirect CRL (one naming
// another certificate issuer), and a serial longer than 64 bytes (RFC 5280
// allows 20); and on a nil or over-long denied serial.
func NewRevocation(crls []CRL, deniedSerials []*big.Int, deniedFingerprints [][sha256.Size]byte) (*Revocation, error) {
	r := &Revocation{gen: revocationGeneration.Add(1), issuerIndex: map[string]uint32{}}
	total, words := len(deniedSerials), 0
	for i, c := range crls {
		if err := checkCRL(c); err != nil {
			return nil, fmt.Errorf("tlsengine: CRL %d (%s): %w", i, c.Name, err)
		}
		total += len(c.List.RevokedCertificateEntries)
		for j := range c.List.RevokedCertificateEntries {
			words += len(c.List.RevokedCertificateEntries[j].SerialNumber.Bits())
		}
		if total > maxTableEntries {
			return nil, fmt.Errorf("tlsengine: CRL %d (%s): more than %d entries in all", i, c.Name, maxTableEntries)
		}
	}
	for i, s := range deniedSerials {
		switch {
		case s == nil:
			return nil, fmt.Errorf("tlsengine: denied serial %d is nil", i)
		case !serialOK(s):
			return nil, fmt.Errorf("tlsengine: denied serial %d is longer than 64 bytes", i)
		}
		words += len(s.Bits())
	}
	r.table = newRevTable(total, words)
	for i, c := range crls {
		issuer, ok := r.issuerIndex[string(c.List.RawIssuer)]
		if !ok {
			r.issuers = append(r.issuers, string(c.List.RawIssuer))
			issuer = uint32(len(r.issuers))
			r.issuerIndex[r.issuers[issuer-1]] = issuer
		}
		r.crls = append(r.crls, c.Name)
		if !c.RejectAfter.IsZero() {
			for len(r.staleAt) < len(r.issuers) {
				r.staleAt, r.staleCRL = append(r.staleAt, time.Time{}), append(r.staleCRL, 0)
			}
			if at := &r.staleAt[issuer-1]; at.IsZero() || c.RejectAfter.Before(*at) {
				*at, r.staleCRL[issuer-1] = c.RejectAfter, uint32(i)
			}
		}
		for j := range c.List.RevokedCertificateEntries {
			e := &c.List.RevokedCertificateEntries[j]
			if e.ReasonCode == reasonRemoveFromCRL {
				continue
			}
			entry := revEntry{at: e.RevocationTime.Unix(), issuer: issuer, crl: uint32(i), reason: int16(e.ReasonCode)}
			if r.table.add(entry, r.table.key(e.SerialNumber)) {
				r.crlEntries++
			}
		}
	}
	for _, s := range deniedSerials {
		if r.table.add(revEntry{issuer: anyIssuer}, r.table.key(s)) {
			r.serials++
		}
	}
	if len(deniedFingerprints) > 0 {
		r.fingerprints = make(map[[sha256.Size]byte]struct{}, len(deniedFingerprints))
		for _, f := range deniedFingerprints {
			r.fingerprints[f] = struct{}{}
		}
	}
	return r, nil
}

// checkCRL checks that c is complete, that its Issuer signed it, and that
// the table can hold every entry.
func checkCRL(c CRL) error {
	switch {
	case c.List == nil:
		return errors.New("no list")
	case c.Issuer == nil:
		return errors.New("no issuer certificate")
	case !bytes.Equal(c.List.RawIssuer, c.Issuer.RawSubject):
		return fmt.Errorf("issued by %q, not by %q", c.List.Issuer, c.Issuer.Subject)
	}
	if err := c.List.CheckSignatureFrom(c.Issuer); err != nil {
		return fmt.Errorf("signature does not verify with the key of %q: %w", c.Issuer.Subject, err)
	}
	for i := range c.List.RevokedCertificateEntries {
		e := &c.List.RevokedCertificateEntries[i]
		switch {
		case e.SerialNumber == nil:
			return fmt.Errorf("entry %d has no serial number", i)
		case !serialOK(e.SerialNumber):
			return fmt.Errorf("entry %d: serial number longer than 64 bytes", i)
		case e.ReasonCode < math.MinInt16 || e.ReasonCode > math.MaxInt16:
			return fmt.Errorf("entry %d: reason code %d is out of range", i, e.ReasonCode)
		}
		for _, ext := range e.Extensions {
			if ext.Id.Equal(oidCertificateIssuer) {
				return fmt.Errorf("entry %d names another certificate issuer: indirect CRLs are not supported", i)
			}
		}
	}
	return nil
}

// issuerOf returns the table's issuer number of a raw issuer name.
func (r *Revocation) issuerOf(rawIssuer []byte) (uint32, bool) {
	if len(r.issuers) <= linearIssuers {
		for i, name := range r.issuers {
			if name == string(rawIssuer) {
				return uint32(i + 1), true
			}
		}
		return 0, false
	}
	i, ok := r.issuerIndex[string(rawIssuer)]
	return i, ok
}

// Generation identifies the set: every NewRevocation returns a new one, and
// nil has 0. The verdict cache keys its entries on it.
func (r *Revocation) Generation() uint64 {
	if r == nil {
		return 0
	}
	return r.gen
}

// Size returns the number of distinct CRL entries (per issuer), distinct
// denied serials and denied fingerprints, for logs and metrics.
func (r *Revocation) Size() (crlEntries, serials, fingerprints int) {
	if r == nil {
		return 0, 0, 0
	}
	return r.crlEntries, r.serials, len(r.fingerprints)
}

// empty reports whether r revokes nothing and no list of it can go stale.
func (r *Revocation) empty() bool {
	return r == nil || len(r.table.entries) == 0 && len(r.fingerprints) == 0 && len(r.staleAt) == 0
}

// staleLimit returns the earliest RejectAfter of the lists of the issuer
// named rawIssuer (zero: none) and that list's index in crls.
func (r *Revocation) staleLimit(rawIssuer []byte) (time.Time, int) {
	if len(r.staleAt) == 0 {
		return time.Time{}, 0
	}
	issuer, ok := r.issuerOf(rawIssuer)
	if !ok || int(issuer) > len(r.staleAt) {
		return time.Time{}, 0
	}
	return r.staleAt[issuer-1], int(r.staleCRL[issuer-1])
}

// staleFor returns, when the issuer named rawIssuer has a list that stopped
// vouching for its certificates at now (CRL.RejectAfter), that list's index.
func (r *Revocation) staleFor(rawIssuer []byte, now time.Time) (int, bool) {
	at, crl := r.staleLimit(rawIssuer)
	if at.IsZero() || now.Before(at) {
		return 0, false
	}
	return crl, true
}

// firstUnknown returns the first certificate of path whose issuer's list
// is stale at now under crl_stale = "reject", and that list's index.
func (r *Revocation) firstUnknown(path []verdict.CertRef, now time.Time) (at, crl int, ok bool) {
	for i := range path {
		if crl, stale := r.staleFor(path[i].RawIssuer, now); stale {
			return i, crl, true
		}
	}
	return 0, 0, false
}

// vouchedUntil is the earliest RejectAfter of the lists covering path's
// issuers (zero: none): a Valid verdict must not be cached past it.
func (r *Revocation) vouchedUntil(path []verdict.CertRef) time.Time {
	var until time.Time
	for i := range path {
		if at, _ := r.staleLimit(path[i].RawIssuer); !at.IsZero() && (until.IsZero() || at.Before(until)) {
			until = at
		}
	}
	return until
}

// VouchedUntil is when the first list covering a certificate of path
// stops vouching for it under crl_stale = "reject" (CRL.RejectAfter); zero
// when none does.
func (r *Revocation) VouchedUntil(path []verdict.CertRef) time.Time {
	if r == nil {
		return time.Time{}
	}
	return r.vouchedUntil(path)
}

// StaleBetween reports whether a list stopped vouching for its issuer's
// certificates (CRL.RejectAfter) after the instant after and no later than
// upTo: what a live connection admitted before then must be checked again
// for.
func (r *Revocation) StaleBetween(after, upTo time.Time) bool {
	if r == nil {
		return false
	}
	for _, at := range r.staleAt {
		if !at.IsZero() && at.After(after) && !at.After(upTo) {
			return true
		}
	}
	return false
}

// StaleRef reports whether the issuer of a certificate (reduced to a
// verdict.CertRef) has a list past its RejectAfter at now: its revocation
// status is unknown, and under crl_stale = "reject" it is refused.
func (r *Revocation) StaleRef(ref *verdict.CertRef, now time.Time) bool {
	if r == nil || ref == nil {
		return false
	}
	_, stale := r.staleFor(ref.RawIssuer, now)
	return stale
}

// Revoked reports whether cert is revoked: listed by a CRL of its issuer, or
// with a denied serial or fingerprint. It hashes the certificate only when
// fingerprints are denied; when the certificate's fingerprint is already
// known, use RevokedRef.
func (r *Revocation) Revoked(cert *x509.Certificate) bool {
	if r.empty() || cert == nil {
		return false
	}
	var sum *[sha256.Size]byte
	if len(r.fingerprints) > 0 {
		s := sha256.Sum256(cert.Raw)
		sum = &s
	}
	_, hit := r.find(cert.RawIssuer, cert.SerialNumber, sum)
	return hit
}

// RevokedRef is Revoked for a certificate already reduced to a
// verdict.CertRef (an element of Verdict.Path): no hashing, no allocation.
func (r *Revocation) RevokedRef(ref *verdict.CertRef) bool {
	if r.empty() || ref == nil {
		return false
	}
	_, hit := r.find(ref.RawIssuer, ref.Serial, &ref.SHA256)
	return hit
}

// Recheck re-checks a verdict computed earlier, possibly under another set
// (a live connection's), against r at now. When v is Valid and r revokes a
// certificate of v.Path, Recheck turns v into a Revoked verdict whose Detail
// names that certificate and why, and returns true; when a list covering
// v.Path has gone stale under crl_stale = "reject" (CRL.RejectAfter), it
// turns v into RevocationUnknown; otherwise it leaves v unchanged and
// returns false. A Valid verdict without Path (not made by
// this package) cannot be re-checked and is left alone. It never turns a
// verdict back to Valid (a device un-revoked by a reload gets Valid at its
// next handshake), and it checks revocation only, not the path against
// the current roots. v must not be read by another goroutine meanwhile.
//
// The gateway calls it on every request of a keep-alive connection with the
// current snapshot's set, so that a reload revokes live connections at
// once: one or two table probes per certificate of the path, and no
// allocation unless the verdict changes.
func (r *Revocation) Recheck(v *verdict.Verdict, now time.Time) bool {
	if v == nil || v.Kind != verdict.Valid || r.empty() {
		return false
	}
	if i, h, hit := r.firstRevoked(v.Path); hit {
		v.Kind, v.Detail = verdict.Revoked, r.describe(v.Path, i, h)
		return true
	}
	if i, crl, stale := r.firstUnknown(v.Path, now); stale {
		v.Kind, v.Detail = verdict.RevocationUnknown, r.describeStale(v.Path, i, crl)
		return true
	}
	return false
}

// hitKind says which list revoked a certificate.
type hitKind uint8

const (
	byCRL hitKind = iota + 1
	bySerial
	byFingerprint
)

// revHit is why a certificate is revoked.
type revHit struct {
	kind  hitKind
	entry *revEntry // for byCRL
}

// find looks up one certificate: its issuer's CRL entries, then the denied
// serials, then (when sum is not nil) the denied fingerprints.
func (r *Revocation) find(rawIssuer []byte, serial *big.Int, sum *[sha256.Size]byte) (revHit, bool) {
	if serial != nil && len(r.table.entries) > 0 {
		k := r.table.key(serial)
		if issuer, ok := r.issuerOf(rawIssuer); ok {
			if e := r.table.get(issuer, &k); e != nil {
				return revHit{kind: byCRL, entry: e}, true
			}
		}
		if r.serials > 0 && r.table.get(anyIssuer, &k) != nil {
			return revHit{kind: bySerial}, true
		}
	}
	if sum != nil && len(r.fingerprints) > 0 {
		if _, ok := r.fingerprints[*sum]; ok {
			return revHit{kind: byFingerprint}, true
		}
	}
	return revHit{}, false
}

// firstRevoked returns the first certificate of path that r revokes.
func (r *Revocation) firstRevoked(path []verdict.CertRef) (int, revHit, bool) {
	for i := range path {
		ref := &path[i]
		if h, hit := r.find(ref.RawIssuer, ref.Serial, &ref.SHA256); hit {
			return i, h, true
		}
	}
	return 0, revHit{}, false
}

// judge turns the paths crypto/x509 verified into a verdict: Valid, with the
// longest-lasting path on which r revokes nothing and no list is stale at
// now as v.Path, when there is one (the window is that path's, ending where
// a list covering such paths stops vouching); else Revoked, naming the first
// revoked certificate of the first path (the window is that of all paths:
// until one of them expires, the answer stays Revoked for this set); else
// RevocationUnknown, naming the stale list.
func (r *Revocation) judge(v verdict.Verdict, chains [][]*x509.Certificate, leafSum [sha256.Size]byte, now time.Time) (verdict.Verdict, validity) {
	if r.empty() {
		i, w := longestPath(chains)
		v.Kind, v.Path = verdict.Valid, pathRefs(chains[i], leafSum)
		return v, w
	}
	var good [][]*x509.Certificate
	var goodRefs [][]verdict.CertRef
	var revoked, unknown []verdict.CertRef
	var at, unknownAt, staleCRL int
	var why revHit
	var vouched time.Time
	for _, ch := range chains {
		refs := pathRefs(ch, leafSum)
		if i, h, hit := r.firstRevoked(refs); hit {
			if revoked == nil {
				revoked, at, why = refs, i, h
			}
			continue
		}
		if i, crl, stale := r.firstUnknown(refs, now); stale {
			if unknown == nil {
				unknown, unknownAt, staleCRL = refs, i, crl
			}
			continue
		}
		if u := r.vouchedUntil(refs); !u.IsZero() && (vouched.IsZero() || u.Before(vouched)) {
			vouched = u
		}
		good, goodRefs = append(good, ch), append(goodRefs, refs)
	}
	switch {
	case len(good) > 0:
		i, w := longestPath(good)
		v.Kind, v.Path = verdict.Valid, goodRefs[i]
		if !vouched.IsZero() && vouched.Before(w.until) {
			w.until = vouched
		}
		return v, w
	case revoked != nil:
		v.Kind, v.Path, v.Detail = verdict.Revoked, revoked, r.describe(revoked, at, why)
	default:
		v.Kind, v.Path, v.Detail = verdict.RevocationUnknown, unknown, r.describeStale(unknown, unknownAt, staleCRL)
	}
	return v, pathWindow(chains)
}

// pathRefs reduces a verified path (leaf first) to what revocation checks
// need; leafSum is the leaf's SHA-256, already computed for its Identity.
func pathRefs(ch []*x509.Certificate, leafSum [sha256.Size]byte) []verdict.CertRef {
	refs := make([]verdict.CertRef, len(ch))
	for i, c := range ch {
		ref := &refs[i]
		ref.Subject = c.Subject.CommonName
		if ref.Subject == "" {
			ref.Subject = c.Subject.String()
		}
		ref.RawIssuer, ref.Serial, ref.NotAfter = c.RawIssuer, c.SerialNumber, c.NotAfter
		if i == 0 {
			ref.SHA256 = leafSum
		} else {
			ref.SHA256 = sha256.Sum256(c.Raw)
		}
	}
	return refs
}

// describe says, for logs, which certificate of path is revoked and why:
//
//	leaf "sensor-0001" (serial 1f3a…) is revoked by CRL fleet-root: pki/fleet.crl since 2025-01-02T03:04:05Z (keyCompromise)
func (r *Revocation) describe(path []verdict.CertRef, i int, h revHit) string {
	ref := &path[i]
	what := certWhat(path, i)
	switch h.kind {
	case byCRL:
		name := ""
		if int(h.entry.crl) < len(r.crls) {
			name = r.crls[h.entry.crl]
		}
		return fmt.Sprintf("%s is revoked by CRL %s since %s (%s)", what, name,
			time.Unix(h.entry.at, 0).UTC().Format(time.RFC3339), reasonName(int(h.entry.reason)))
	case bySerial:
		return what + " is revoked: its serial number is denied"
	default:
		return fmt.Sprintf("%s is revoked: its SHA-256 fingerprint %s is denied", what, hex.EncodeToString(ref.SHA256[:]))
	}
}

// describeStale says, for logs, which certificate of path has an issuer
// whose list went stale:
//
//	leaf "sensor-0001" (serial 1f3a…): revocation status unknown: CRL fleet-root: pki/fleet.crl is past its nextUpdate 2025-01-02T03:04:05Z (crl_stale = "reject")
func (r *Revocation) describeStale(path []verdict.CertRef, i, crl int) string {
	name := ""
	if crl < len(r.crls) {
		name = r.crls[crl]
	}
	at, _ := r.staleLimit(path[i].RawIssuer)
	since := at.UTC().Format(time.RFC3339)
	return fmt.Sprintf("%s: revocation status unknown: CRL %s is past its nextUpdate %s (crl_stale = \"reject\")",
		certWhat(path, i), name, since)
}

// certWhat names certificate i of path for logs: `leaf "sensor-0001" (serial 1f3a)`.
func certWhat(path []verdict.CertRef, i int) string {
	ref := &path[i]
	role := "intermediate"
	switch {
	case i == 0:
		role = "leaf"
	case i == len(path)-1:
		role = "root"
	}
	serial := "none"
	if ref.Serial != nil {
		serial = ref.Serial.Text(16)
	}
	return fmt.Sprintf("%s %q (serial %s)", role, ref.Subject, serial)
}

// crlReasonNames are the CRLReason codes of RFC 5280 section 5.3.1.
var crlReasonNames = [...]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
	4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 7: "reason 7",
	8: "removeFromCRL", 9: "privilegeWithdrawn", 10: "aACompromise",
}

// reasonName names a CRLReason code.
func reasonName(code int) string {
	if code >= 0 && code < len(crlReasonNames) {
		return crlReasonNames[code]
	}
	return fmt.Sprintf("reason %d", code)
}
