package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"reflect"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// TestJWKSWithGoJose checks our JWKS and tokens with an independent JOSE
// implementation: what an origin would do.
func TestJWKSWithGoJose(t *testing.T) {
	testKeys(t)
	tests := []struct {
		name string
		ks   *KeySet
	}{
		{"ES256 current, EdDSA and RS256 previous", mustKeySet(t, keyES, keyEd, keyRSA)},
		{"EdDSA current", mustKeySet(t, keyEd)},
		{"RS256 current, ES256 previous", mustKeySet(t, keyRSA, keyES)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(tt.ks.JWKS(), &set); err != nil {
				t.Fatalf("go-jose cannot read the JWKS: %v\n%s", err, tt.ks.JWKS())
			}
			if len(set.Keys) != len(tt.ks.keys) {
				t.Fatalf("%d keys, want %d", len(set.Keys), len(tt.ks.keys))
			}
			for i, k := range tt.ks.keys {
				jk := set.Keys[i]
				if jk.KeyID != k.kid || jk.Algorithm != k.alg || jk.Use != "sig" || !jk.Valid() || !jk.IsPublic() {
					t.Errorf("keys[%d] = kid %s alg %s use %s; want kid %s alg %s (current first)", i, jk.KeyID, jk.Algorithm, jk.Use, k.kid, k.alg)
				}
				var same bool
				switch pub := jk.Key.(type) {
				case *ecdsa.PublicKey:
					same = pub.Equal(k.signer.Public())
				case ed25519.PublicKey:
					same = pub.Equal(k.signer.Public())
				case *rsa.PublicKey:
					same = pub.Equal(k.signer.Public())
				}
				if !same {
					t.Errorf("keys[%d]: go-jose read a different public key (%T)", i, jk.Key)
				}
				// A token signed by this key (as current) verifies with go-jose.
				signer := mustKeySet(t, k.signer)
				tok := mustMint(t, signer, baseClaims())
				jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, jose.RS256})
				if err != nil {
					t.Fatalf("go-jose cannot parse our %s token: %v", k.alg, err)
				}
				if h := jws.Signatures[0].Header; h.KeyID != k.kid || h.Algorithm != k.alg {
					t.Errorf("go-jose header kid %s alg %s", h.KeyID, h.Algorithm)
				}
				keys := set.Key(jws.Signatures[0].Header.KeyID)
				if len(keys) != 1 {
					t.Fatalf("kid %s found %d times in the JWKS", k.kid, len(keys))
				}
				payload, err := jws.Verify(keys[0])
				if err != nil {
					t.Fatalf("go-jose rejects our %s signature: %v", k.alg, err)
				}
				var c Claims
				if err := json.Unmarshal(payload, &c); err != nil || !reflect.DeepEqual(&c, baseClaims()) {
					t.Errorf("payload %s, %v", payload, err)
				}
			}
		})
	}
}

// TestJWKSShape pins the document's members, as Cloudflare's certs endpoint
// spells them.
func TestJWKSShape(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES, keyEd, keyRSA)
	var doc map[string][]map[string]string
	if err := json.Unmarshal(ks.JWKS(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || len(doc["keys"]) != 3 {
		t.Fatalf("JWKS = %s", ks.JWKS())
	}
	tests := []struct {
		name    string
		i       int
		members map[string]int // member → decoded length, -1: any
		fixed   map[string]string
	}{
		{"EC", 0, map[string]int{"kid": -1, "kty": -1, "alg": -1, "use": -1, "crv": -1, "x": 32, "y": 32},
			map[string]string{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig"}},
		{"OKP", 1, map[string]int{"kid": -1, "kty": -1, "alg": -1, "use": -1, "crv": -1, "x": 32},
			map[string]string{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig"}},
		{"RSA", 2, map[string]int{"kid": -1, "kty": -1, "alg": -1, "use": -1, "n": 256, "e": 3},
			map[string]string{"kty": "RSA", "alg": "RS256", "use": "sig", "e": "AQAB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := doc["keys"][tt.i]
			if len(k) != len(tt.members) {
				t.Errorf("members %v, want %v", k, tt.members)
			}
			for m, n := range tt.members {
				v, ok := k[m]
				if !ok {
					t.Errorf("missing %q", m)
					continue
				}
				if n >= 0 {
					if b, err := b64Strict.DecodeString(v); err != nil || len(b) != n {
						t.Errorf("%s: %d bytes (%v), want %d", m, len(b), err, n)
					}
				}
			}
			for m, v := range tt.fixed {
				if k[m] != v {
					t.Errorf("%s = %q, want %q", m, k[m], v)
				}
			}
		})
	}
}
