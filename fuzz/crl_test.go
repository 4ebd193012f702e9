package fuzz

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/crltest"
)

// FuzzParseCRL parses fuzzed DER with configs.ParseCRL, which reads version
// 2 and version 1 lists. Invariants: no input panics it; a list it returns
// is the bytes it was given (Raw a prefix of them, RawTBSRevocationList
// inside Raw), so the signature is always checked over what was read.
func FuzzParseCRL(f *testing.F) {
	fx := getFixture(f)
	now := time.Now()
	v2, err := fx.inter.CRL([]*big.Int{big.NewInt(7)}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v2)
	for _, opts := range []crltest.V1Options{{}, {NoNextUpdate: true}} {
		tmpl := x509.RevocationList{ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: now}}}
		v1, err := crltest.V1(fx.inter, tmpl, opts)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v1)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		countExec("FuzzParseCRL")
		list, err := configs.ParseCRL(der)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(der, list.Raw) || !bytes.Contains(list.Raw, list.RawTBSRevocationList) {
			t.Fatalf("Raw or RawTBSRevocationList is not the input")
		}
	})
}
