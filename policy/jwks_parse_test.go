package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseJWKSVerifyAny(t *testing.T) {
	testKeys(t)
	signer := mustKeySet(t, keyES, keyEd, keyRSA)
	pk, err := ParseJWKS(signer.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(pk.KIDs(), ","), strings.Join(signer.KIDs(), ","); got != want {
		t.Errorf("KIDs %s, want %s", got, want)
	}
	if string(pk.ks.JWKS()) != string(signer.JWKS()) {
		t.Errorf("JWKS does not round-trip:\n%s\n%s", pk.ks.JWKS(), signer.JWKS())
	}
	noDur := baseClaims()
	noDur.NoDuration, noDur.Exp = true, noDur.Iat+10
	tests := []struct {
		name     string
		token    string
		aud, iss string
		now      time.Time
		want     error
	}{
		{name: "ES256", token: mustMint(t, signer, baseClaims()), aud: testAUD, iss: testIssuer},
		{name: "EdDSA", token: mustMint(t, mustKeySet(t, keyEd), baseClaims()), aud: testAUD},
		{name: "RS256", token: mustMint(t, mustKeySet(t, keyRSA), baseClaims())},
		{name: "no-duration token: an origin accepts it", token: mustMint(t, signer, noDur), aud: testAUD},
		{name: "no-duration token after its 10 s", token: mustMint(t, signer, noDur), now: t0.Add(41 * time.Second), want: ErrTokenExpired},
		{name: "wrong aud", token: mustMint(t, signer, baseClaims()), aud: DeriveAUD("other"), want: ErrAudience},
		{name: "wrong iss", token: mustMint(t, signer, baseClaims()), iss: "https://other", want: ErrIssuer},
		{name: "unknown key", token: mustMint(t, mustKeySet(t, keyES2), baseClaims()), want: ErrUnknownKey},
		{name: "alg none", token: b64.EncodeToString([]byte(`{"alg":"none","kid":"`+signer.KID()+`","typ":"JWT"}`)) + ".e30.", want: ErrAlgorithm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			_, err := pk.VerifyAny(tt.token, tt.aud, tt.iss, now)
			if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("VerifyAny: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseJWKSRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // "" : parses
	}{
		{"not JSON", `{`, "policy: JWKS: "},
		{"empty", `{"keys":[]}`, "no ES256, EdDSA or RS256 signing key"},
		{"only unsupported keys skipped", `{"keys":[{"kid":"a","kty":"EC","crv":"P-384","x":"AA","y":"AA"},{"kid":"b","kty":"oct","k":"AA"}]}`, "no ES256"},
		{"encryption key skipped", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","use":"enc","x":"AA"}]}`, "no ES256"},
		{"no kid", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`, "no kid"},
		{"short OKP", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","x":"AAAA"}]}`, "x: 3 bytes, want 32"},
		{"EC point not on the curve", `{"keys":[{"kid":"a","kty":"EC","crv":"P-256","x":"` + strings.Repeat("A", 43) + `","y":"` + strings.Repeat("A", 43) + `"}]}`, "keys[0]"},
		{"small RSA", `{"keys":[{"kid":"a","kty":"RSA","n":"AQAB","e":"AQAB"}]}`, "RSA modulus of 17 bits"},
		{"alg mismatch", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","alg":"HS256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`, `alg "HS256" for a EdDSA key`},
		{"duplicate kid", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},{"kid":"a","kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`, "listed twice"},
		{"extra members ignored", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}],"public_cert":{"kid":"a","cert":"x"}}`, ""},
		{"too long", `{"keys":[` + strings.Repeat(" ", MaxJWKSLen) + `]}`, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseJWKS([]byte(tt.doc))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
