package crltest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// V1Options shape a list made by V1.
type V1Options struct {
	// NoNextUpdate leaves nextUpdate out (it is optional in both versions).
	NoNextUpdate bool
	// KeepExtensions keeps the list's extensions (authority key identifier,
	// CRL number): a malformed version 1 list, which RFC 5280 forbids. Entry
	// extensions (a ReasonCode of tmpl's entries) are always kept.
	KeepExtensions bool
}

// V1 returns a DER version 1 CRL of tmpl signed by ca: the encoding
// x509.CreateRevocationList makes (it writes version 2 only), without the
// version field and, as opts say, without nextUpdate and the list's
// extensions, signed again by ca's key. tmpl.Number may be nil.
func V1(ca *pki.Cert, tmpl x509.RevocationList, opts V1Options) ([]byte, error) {
	if tmpl.Number == nil {
		tmpl.Number = big.NewInt(1)
	}
	if opts.NoNextUpdate && tmpl.NextUpdate.IsZero() {
		tmpl.NextUpdate = tmpl.ThisUpdate.Add(1) // dropped below; CreateRevocationList wants one
	}
	der, err := x509.CreateRevocationList(rand.Reader, &tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	var outer, tbs, sigAlg asn1.RawValue
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		return nil, err
	}
	rest, err := asn1.Unmarshal(outer.Bytes, &tbs)
	if err != nil {
		return nil, err
	}
	if _, err := asn1.Unmarshal(rest, &sigAlg); err != nil {
		return nil, err
	}
	// TBSCertList v2: version, signature, issuer, thisUpdate, nextUpdate,
	// revokedCertificates (when not empty), [0] crlExtensions.
	var fields [][]byte
	for i, in := 0, tbs.Bytes; len(in) > 0; i++ {
		var f asn1.RawValue
		if in, err = asn1.Unmarshal(in, &f); err != nil {
			return nil, err
		}
		switch {
		case i == 0 && f.Tag == asn1.TagInteger:
			continue // version
		case i == 4 && opts.NoNextUpdate:
			continue
		case f.Class == asn1.ClassContextSpecific && f.Tag == 0 && !opts.KeepExtensions:
			continue
		}
		fields = append(fields, f.FullBytes)
	}
	newTBS := sequence(fields...)
	var digest []byte
	var hash crypto.Hash
	switch parsed.SignatureAlgorithm {
	case x509.ECDSAWithSHA256, x509.SHA256WithRSA:
		hash = crypto.SHA256
	case x509.ECDSAWithSHA384:
		hash = crypto.SHA384
	case x509.PureEd25519:
	default:
		return nil, fmt.Errorf("crltest: signature algorithm %v is not supported", parsed.SignatureAlgorithm)
	}
	digest = newTBS
	if hash != 0 {
		h := hash.New()
		h.Write(newTBS)
		digest = h.Sum(nil)
	}
	sig, err := ca.Key.Sign(rand.Reader, digest, hash)
	if err != nil {
		return nil, err
	}
	bits, err := asn1.Marshal(asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)})
	if err != nil {
		return nil, err
	}
	return sequence(newTBS, sigAlg.FullBytes, bits), nil
}

// sequence encodes a DER SEQUENCE of already encoded fields.
func sequence(fields ...[]byte) []byte {
	b, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(fields, nil)})
	if err != nil {
		panic(err) // cannot happen: raw content
	}
	return b
}

// CorruptSignature returns a copy of the DER CRL der whose signature's last
// byte is flipped: it parses, and no key verifies it.
func CorruptSignature(der []byte) ([]byte, error) {
	if len(der) < 8 {
		return nil, errors.New("crltest: too short to be a CRL")
	}
	out := bytes.Clone(der)
	out[len(out)-1] ^= 0x5a
	return out, nil
}
