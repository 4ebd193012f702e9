package policy

import (
	"strings"
	"testing"
)

// FuzzVerify: no input panics Verify or VerifyCached, and nothing but the
// token we minted verifies (the header and base64 are canonical, so a token
// has one spelling).
func FuzzVerify(f *testing.F) {
	testKeys(f)
	ks := mustKeySet(f, keyEd, keyES)
	good := mustMint(f, ks, baseClaims())
	for _, s := range []string{good, "", "..", "a.b.c", good + ".", strings.ToUpper(good), good[:len(good)/2]} {
		f.Add(s)
	}
	cache := NewTokenCache(64)
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := ks.Verify(tok, testAUD, testIssuer, t0)
		if err == nil && (tok != good || c == nil) {
			t.Fatalf("accepted %q", tok)
		}
		c2, err2 := ks.VerifyCached(cache, tok, testAUD, testIssuer, t0)
		if (err == nil) != (err2 == nil) || (err2 == nil && c2 == nil) {
			t.Fatalf("Verify %v, VerifyCached %v", err, err2)
		}
	})
}

func TestNilSafety(t *testing.T) {
	var ks *KeySet
	if ks.Alg() != "" || ks.KID() != "" || ks.KIDs() != nil || ks.JWKS() != nil {
		t.Error("nil KeySet accessors")
	}
	if _, err := ks.Mint(baseClaims()); err == nil {
		t.Error("nil KeySet Mint: no error")
	}
	if _, err := (&KeySet{}).Mint(baseClaims()); err == nil {
		t.Error("zero KeySet Mint: no error")
	}
	if _, err := ks.Verify("a.b.c", testAUD, testIssuer, t0); err == nil {
		t.Error("nil KeySet Verify: no error")
	}
	a := app(0, pol("open", Allow, sels(selEveryone), nil, nil))
	if d := a.Evaluate(nil); d.Allowed || d.Reason != "no client certificate" {
		t.Errorf("Evaluate(nil) = %+v", d)
	}
	if _, err := a.NewClaims(testIssuer, nil, Decision{Mint: true}); err == nil {
		t.Error("NewClaims(nil input): no error")
	}
}
