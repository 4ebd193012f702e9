package oidclogin

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// verifiedToken signs claims as an ID token of https://idp.test for client
// "fleetgate" and verifies it, as Finish would.
func verifiedToken(t *testing.T, extra map[string]any) *oidc.IDToken {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": "https://idp.test", "aud": "fleetgate", "sub": "u1",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := jws.CompactSerialize()
	v := oidc.NewVerifier("https://idp.test", &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&key.PublicKey}},
		&oidc.Config{ClientID: "fleetgate", SupportedSigningAlgs: []string{"ES256"}})
	idt, err := v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	return idt
}

// TestIdentityEmailVerified: only an email the provider says is verified
// (email_verified true) is the person's email; without that the identity
// has no email (groups still count).
func TestIdentityEmailVerified(t *testing.T) {
	p := New(Config{Name: "corp", GroupsClaim: "groups"})
	for _, tc := range []struct {
		name  string
		extra map[string]any
		email string
	}{
		{"verified", map[string]any{"email": "ops@fleet.test", "email_verified": true}, "ops@fleet.test"},
		{"email_verified missing", map[string]any{"email": "ops@fleet.test"}, ""},
		{"email_verified false", map[string]any{"email": "ops@fleet.test", "email_verified": false}, ""},
		{"email_verified a string", map[string]any{"email": "ops@fleet.test", "email_verified": "true"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.extra["groups"] = []string{"ops"}
			id, err := p.identity(verifiedToken(t, tc.extra))
			if err != nil {
				t.Fatal(err)
			}
			if id.Email != tc.email || len(id.Groups) != 1 || id.Subject != "u1" {
				t.Fatalf("identity %+v, want email %q", id, tc.email)
			}
		})
	}
}
