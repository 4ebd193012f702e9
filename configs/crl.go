package configs

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Revocation: crl_files and crl_stale of each [[client_cas]] entry, and the
// [revocation] deny-lists. Each CRL must be signed by a certificate of its
// entry's upload; tlsengine.NewRevocation turns the result into the lookup
// set the gateway checks every verified path against.

// maxCRLBytes bounds a CRL file: a 100,000-entry CRL is about 4 MiB of DER
// and 5.5 MiB of PEM.
const maxCRLBytes = 64 << 20

// maxSerialHex bounds a denied serial: 64 bytes, far beyond RFC 5280's 20
// octets, and what tlsengine accepts.
const maxSerialHex = 128

// CRL extensions fleetgate understands: a critical extension outside these
// makes a CRL unusable (RFC 5280 section 5.2). The Issuing Distribution
// Point may scope a CRL (to user or CA certificates, some reasons, one
// partition): whatever it lists is still revoked, so it is accepted. Entry
// extensions are checked separately: a Certificate Issuer entry extension
// (an indirect CRL) is refused.
var (
	oidAuthorityKeyID       = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber            = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRLIndicator    = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistPoint     = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidCertificateIssuer    = asn1.ObjectIdentifier{2, 5, 29, 29}
	oidReasonCode           = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidInvalidityDate       = asn1.ObjectIdentifier{2, 5, 29, 24}
	oidHoldInstruction      = asn1.ObjectIdentifier{2, 5, 29, 23}
	knownCRLExtensions      = []asn1.ObjectIdentifier{oidAuthorityKeyID, oidCRLNumber, oidDeltaCRLIndicator, oidIssuingDistPoint}
	knownCRLEntryExtensions = []asn1.ObjectIdentifier{oidReasonCode, oidInvalidityDate, oidHoldInstruction}
)

// crlFiles reads, parses and checks the crl_files of the client CA ca (whose
// certificates are loaded) at path (client_cas[i]) and fills ca.CRLs. It
// reports whether all of them loaded.
func (l *loader) crlFiles(path string, fc *fileClientCA, ca *ClientCA) bool {
	ok := true
	seen := make(map[string]int, len(fc.CRLFiles))
	for j, name := range fc.CRLFiles {
		p := indexPath(joinKey(path, "crl_files"), j)
		if name == "" {
			l.errorf(p, "empty file name")
			ok = false
			continue
		}
		// Its lists would be loaded (and reported in the metrics) twice.
		file := l.resolve(name)
		if first, dup := seen[file]; dup {
			l.errorf(p, "%s is already crl_files[%d]", name, first)
			ok = false
			continue
		}
		seen[file] = j
		data, read := l.readFileMax(p, name, maxCRLBytes)
		if !read {
			ok = false
			continue
		}
		lists, parsed := l.parseCRLs(p, name, data)
		if !parsed {
			ok = false
			continue
		}
		for k, list := range lists {
			c := CRL{File: name, Path: file, Index: k, List: list, NextUpdate: list.NextUpdate}
			if !l.checkCRL(p, &c, ca) {
				ok = false
				continue
			}
			list.RevokedCertificates = nil // deprecated duplicate of RevokedCertificateEntries
			ca.CRLs = append(ca.CRLs, c)
		}
	}
	return ok
}

// parseCRLs parses a CRL file: PEM "X509 CRL" blocks (one or more), or one
// DER CRL.
func (l *loader) parseCRLs(path, name string, data []byte) ([]*x509.RevocationList, bool) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		list, err := ParseCRL(data)
		if errors.Is(err, errVersion1) {
			l.errorf(path, "%s: %v", name, err)
			return nil, false
		}
		if err != nil {
			l.errorf(path, "%s is neither PEM nor a DER CRL: %s", name, strings.TrimPrefix(err.Error(), "x509: "))
			return nil, false
		}
		return []*x509.RevocationList{list}, true
	}
	var lists []*x509.RevocationList
	ok := true
	for rest, n := data, 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "X509 CRL" {
			l.errorf(path, "%s holds a %q PEM block: only X509 CRL blocks belong in crl_files", name, block.Type)
			ok = false
			continue
		}
		list, err := ParseCRL(block.Bytes)
		if err != nil {
			l.errorf(path, "%s: CRL %d: %s", name, n, strings.TrimPrefix(err.Error(), "x509: "))
			ok = false
			continue
		}
		lists = append(lists, list)
	}
	if len(lists) == 0 && ok {
		l.errorf(path, "%s holds no PEM X509 CRL block", name)
		ok = false
	}
	return lists, ok
}

// errVersion1 starts the errors of a malformed version 1 CRL.
var errVersion1 = errors.New("version 1 CRL")

// ParseCRL parses one DER certificate revocation list, version 2 or
// version 1. RFC 5280 section 5 requires relying parties to process both,
// and `openssl ca -gencrl` writes version 1 (no version field) unless
// crl_extensions, crlnumber or a revocation reason is configured: the shape
// of most small fleet CAs. x509.ParseRevocationList refuses version 1, so a
// version 1 list is parsed by that same parser from a copy with the version
// field (v2) inserted, then its Raw and RawTBSRevocationList are set back to
// the bytes as signed: CheckSignatureFrom verifies the issuer's signature
// over the original encoding, and both versions go through the same parser,
// signature check, issuer match and nextUpdate rules. A version 1 list
// carries no authority key identifier or CRL number (AuthorityKeyId and
// Number are nil), so it is matched to its CA by issuer name and signature.
// A version 1 list with extensions, or with entry extensions, is refused:
// RFC 5280 section 5.1.2.1 requires version 2 for them. A version 1 list
// keeps its bytes twice (the signed and the parsed encodings). Errors are
// crypto/x509's ("x509: malformed crl"), or start with "version 1 CRL".
func ParseCRL(der []byte) (*x509.RevocationList, error) {
	list, err := x509.ParseRevocationList(der)
	if err == nil {
		return list, nil
	}
	outer, tbs, after, v1 := splitV1CRL(der)
	if !v1 {
		return nil, err
	}
	seq := func(content ...[]byte) []byte {
		b, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(content, nil)})
		return b // cannot fail: a SEQUENCE of raw content
	}
	v2 := []byte{asn1.TagInteger, 1, 1} // version INTEGER v2 (1)
	list, err = x509.ParseRevocationList(seq(seq(v2, tbs.Bytes), after))
	if err != nil {
		return nil, err
	}
	list.Raw, list.RawTBSRevocationList = outer.FullBytes, tbs.FullBytes
	if len(list.Extensions) > 0 {
		return nil, fmt.Errorf("%w with extensions: RFC 5280 allows extensions only in version 2 CRLs", errVersion1)
	}
	for i := range list.RevokedCertificateEntries {
		if len(list.RevokedCertificateEntries[i].Extensions) > 0 {
			return nil, fmt.Errorf("%w: entry %d has extensions: RFC 5280 allows them only in version 2 CRLs", errVersion1, i+1)
		}
	}
	return list, nil
}

// splitV1CRL returns, when der is a CRL whose TBSCertList starts with its
// signature AlgorithmIdentifier (no version field: version 1), the outer
// CertificateList, the TBSCertList and the bytes after it in the outer
// SEQUENCE (signatureAlgorithm and signatureValue). Bytes after the outer
// SEQUENCE are ignored, as x509.ParseRevocationList ignores them.
func splitV1CRL(der []byte) (outer, tbs asn1.RawValue, after []byte, ok bool) {
	isSeq := func(v *asn1.RawValue) bool {
		return v.Class == asn1.ClassUniversal && v.Tag == asn1.TagSequence && v.IsCompound
	}
	var first asn1.RawValue
	if _, err := asn1.Unmarshal(der, &outer); err != nil || !isSeq(&outer) {
		return outer, tbs, nil, false
	}
	after, err := asn1.Unmarshal(outer.Bytes, &tbs)
	if err != nil || !isSeq(&tbs) {
		return outer, tbs, nil, false
	}
	if _, err := asn1.Unmarshal(tbs.Bytes, &first); err != nil || !isSeq(&first) {
		return outer, tbs, nil, false
	}
	return outer, tbs, after, true
}

// checkCRL finds the certificate of ca that signed c.List, checks the
// list's extensions and entries, and whether it is stale.
func (l *loader) checkCRL(path string, c *CRL, ca *ClientCA) bool {
	name, list := c.Name(), c.List
	issuer, err := crlIssuer(list, ca)
	if err != nil {
		l.errorf(path, "%s: %v", name, err)
		return false
	}
	c.Issuer = issuer
	if err := checkCRLExtensions(list); err != nil {
		l.errorf(path, "%s: %v", name, err)
		return false
	}
	if list.NextUpdate.IsZero() || l.now.Before(list.NextUpdate) {
		return true
	}
	since := list.NextUpdate.UTC().Format(time.RFC3339)
	if ca.CRLStale == "reject" {
		l.errorf(path, "%s is stale: its nextUpdate was %s; publish a newer CRL, or set crl_stale = \"warn\" to serve with it", name, since)
		return false
	}
	l.warnf(path, "%s is stale since %s: revocations issued after it are not known; publish a newer CRL", name, since)
	return true
}

// crlIssuer returns the certificate of ca's upload whose key signed list: a
// certificate named as the list's issuer, those whose key identifier
// matches the list's tried first.
func crlIssuer(list *x509.RevocationList, ca *ClientCA) (*x509.Certificate, error) {
	var named []*x509.Certificate
	for _, c := range slices.Concat(ca.Intermediates, ca.Roots) {
		if bytes.Equal(c.RawSubject, list.RawIssuer) {
			named = append(named, c)
		}
	}
	if len(named) == 0 {
		return nil, fmt.Errorf("issued by %q, which is not a certificate of this client CA", list.Issuer)
	}
	slices.SortStableFunc(named, func(a, b *x509.Certificate) int {
		am, bm := keyIDMatches(a, list), keyIDMatches(b, list)
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return 0
	})
	for _, c := range named {
		if list.CheckSignatureFrom(c) == nil {
			return c, nil
		}
	}
	c := named[0]
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("%s may not sign CRLs: its key usage lacks cRLSign", certLabel(c))
	}
	return nil, fmt.Errorf("signature does not verify with the key of %s: this CRL was not signed by this client CA", certLabel(c))
}

// keyIDMatches reports whether c's subject key identifier is the list's
// authority key identifier.
func keyIDMatches(c *x509.Certificate, list *x509.RevocationList) bool {
	return len(c.SubjectKeyId) > 0 && bytes.Equal(c.SubjectKeyId, list.AuthorityKeyId)
}

// certLabel names a CA certificate in messages.
func certLabel(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// checkCRLExtensions refuses a list with a critical extension fleetgate does
// not understand, an indirect CRL entry, and an entry fleetgate cannot look
// up.
func checkCRLExtensions(list *x509.RevocationList) error {
	for _, ext := range list.Extensions {
		if ext.Critical && !slices.ContainsFunc(knownCRLExtensions, ext.Id.Equal) {
			return fmt.Errorf("unsupported critical extension %s", ext.Id)
		}
	}
	for i := range list.RevokedCertificateEntries {
		e := &list.RevokedCertificateEntries[i]
		if (e.SerialNumber.BitLen()+7)/8 > maxSerialHex/2 {
			return fmt.Errorf("entry %d: serial number longer than %d bytes", i+1, maxSerialHex/2)
		}
		for _, ext := range e.Extensions {
			switch {
			case ext.Id.Equal(oidCertificateIssuer):
				return fmt.Errorf("entry %d names another certificate issuer: indirect CRLs are not supported", i+1)
			case ext.Critical && !slices.ContainsFunc(knownCRLEntryExtensions, ext.Id.Equal):
				return fmt.Errorf("entry %d: unsupported critical extension %s", i+1, ext.Id)
			}
		}
	}
	return nil
}

// revocation checks [revocation] and copies it into rev.
func (l *loader) revocation(fr *fileRevocation, rev *Revocation) {
	for i, s := range fr.DeniedSerials {
		n, err := parseSerial(s)
		if err != nil {
			l.errorf(indexPath("revocation.denied_serials", i), "%v", err)
			continue
		}
		rev.DeniedSerials = append(rev.DeniedSerials, n)
	}
	for i, s := range fr.DeniedFingerprints {
		f, err := parseFingerprint(s)
		if err != nil {
			l.errorf(indexPath("revocation.denied_fingerprints", i), "%v", err)
			continue
		}
		rev.DeniedFingerprints = append(rev.DeniedFingerprints, f)
	}
}

// parseSerial parses a serial number in hex, case-insensitive, with
// optional colons.
func parseSerial(s string) (*big.Int, error) {
	h := strings.ReplaceAll(s, ":", "")
	if h == "" || len(h) > maxSerialHex || strings.Trim(h, "0123456789abcdefABCDEF") != "" {
		return nil, fmt.Errorf("%q is not a serial number: want up to %d hex digits, optionally separated by colons, such as \"1a:2b:3c\"", s, maxSerialHex)
	}
	n, _ := new(big.Int).SetString(h, 16) // cannot fail: h is non-empty hex
	return n, nil
}

// parseFingerprint parses a SHA-256 fingerprint: 64 hex digits,
// case-insensitive, with optional colons.
func parseFingerprint(s string) ([sha256.Size]byte, error) {
	var f [sha256.Size]byte
	h := strings.ReplaceAll(s, ":", "")
	if len(h) != 2*sha256.Size {
		return f, fmt.Errorf("%q is not a SHA-256 fingerprint: want 64 hex digits, optionally separated by colons", s)
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return f, fmt.Errorf("%q is not a SHA-256 fingerprint: want 64 hex digits, optionally separated by colons", s)
	}
	return f, nil
}
