package policy

import (
	"crypto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// t0 is the fixed "now" of the tests: policy never reads the clock.
var t0 = time.Unix(1_800_000_000, 0)

const (
	testIssuer = "https://access.fleet.test"
	fp1        = "1111111111111111111111111111111111111111111111111111111111111111"
	fp2        = "2222222222222222222222222222222222222222222222222222222222222222"
)

func mustSel(key string, v any) Selector {
	s, err := ParseSelector(key, v)
	if err != nil {
		panic(err)
	}
	return s
}

var (
	selValid    = mustSel("valid_certificate", true)
	selEveryone = mustSel("everyone", true)
)

func selCN(cn string) Selector { return mustSel("common_name", cn) }

func sels(s ...Selector) []Selector { return s }

func validCert(cn, fp string) *verdict.Verdict {
	return &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: cn, SHA256: fp}}
}

func badCert(k verdict.Kind, cn string) *verdict.Verdict {
	return &verdict.Verdict{Kind: k, Identity: verdict.Identity{CommonName: cn, SHA256: fp2}}
}

// sessionToken returns the claims of a verified session token for app aud,
// minted after a valid certificate.
func sessionToken(aud, cn, fp string) *Claims {
	return &Claims{Aud: []string{aud}, Iss: testIssuer, Type: TokenType, Iat: t0.Unix() - 60,
		Nbf: t0.Unix() - 60, Exp: t0.Unix() + 3600, CommonName: cn, CertSHA256: fp}
}

// Test keys, generated once per test binary (RSA generation is slow).
var (
	keysOnce sync.Once
	keyES    crypto.Signer
	keyES2   crypto.Signer
	keyEd    crypto.Signer
	keyRSA   crypto.Signer
)

func testKeys(tb testing.TB) {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		for _, k := range []struct {
			dst *crypto.Signer
			t   pki.KeyType
		}{{&keyES, pki.ECDSAP256}, {&keyES2, pki.ECDSAP256}, {&keyEd, pki.Ed25519}, {&keyRSA, pki.RSA2048}} {
			if *k.dst, err = pki.NewKey(k.t); err != nil {
				panic(err)
			}
		}
	})
}

func mustKeySet(tb testing.TB, cur crypto.Signer, prev ...crypto.Signer) *KeySet {
	tb.Helper()
	ks, err := NewKeySet(cur, prev...)
	if err != nil {
		tb.Fatal(err)
	}
	return ks
}

// algKeys lists one KeySet per algorithm.
func algKeys(tb testing.TB) []struct {
	alg string
	ks  *KeySet
} {
	testKeys(tb)
	return []struct {
		alg string
		ks  *KeySet
	}{
		{AlgES256, mustKeySet(tb, keyES)},
		{AlgEdDSA, mustKeySet(tb, keyEd)},
		{AlgRS256, mustKeySet(tb, keyRSA)},
	}
}

var testAUD = DeriveAUD("telemetry")

// baseClaims are valid session claims for testAUD at t0.
func baseClaims() *Claims {
	return &Claims{Aud: []string{testAUD}, Iss: testIssuer, Type: TokenType, Iat: t0.Unix(), Nbf: t0.Unix(),
		Exp: t0.Unix() + 3600, IdentityNonce: strings.Repeat("ab", 16), CommonName: "sensor-0001", CertSHA256: fp1,
		Policy: "fleet devices"}
}

func mustMint(tb testing.TB, ks *KeySet, c *Claims) string {
	tb.Helper()
	tok, err := ks.Mint(c)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}
