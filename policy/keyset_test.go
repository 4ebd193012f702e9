package policy

import (
	"testing"
)

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
