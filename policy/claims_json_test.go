package policy

import (
	"encoding/json"
	mrand "math/rand/v2"
	"reflect"
	"testing"
)

// TestClaimsAppendJSON pins appendJSON to json.Marshal, byte for byte, for
// claims of every shape and strings that need escaping.
func TestClaimsAppendJSON(t *testing.T) {
	odd := []string{"", "plain", `quo"te`, `back\slash`, "<b>&amp;</b>", "tab\there\nnl\r\x00\x1f\x7f",
		"é ünïcödé 设备", "line\u2028sep\u2029", "bad\xffutf8\xc3", "emoji 🛰"}
	cases := []struct {
		name string
		c    *Claims
	}{
		{"zero", &Claims{}},
		{"base", baseClaims()},
		{"empty aud", &Claims{Aud: []string{}}},
		{"everything", &Claims{Aud: []string{"a", "b"}, Iss: "https://gw.example", Sub: "s", Type: TokenType,
			Iat: -5, Nbf: 1 << 40, Exp: 1<<63 - 1, IdentityNonce: "n", CommonName: "cn", CertSHA256: fp1,
			CertSerial: "0a", CertIssuer: "aXNz", CertRoot: fp2, ServiceTokenName: "svc", Policy: "p",
			Email: "a@b.c", Groups: []string{"g1", "g2"}, GroupSet: "0123456789abcdef", IdP: "idp", AuthTime: 1700000000,
			Cnf: &Confirmation{X5tS256: "x5t"}, NoDuration: true}},
		{"empty groups, empty cnf", &Claims{Groups: []string{}, Cnf: &Confirmation{}}},
	}
	for i, s := range odd {
		cases = append(cases, struct {
			name string
			c    *Claims
		}{"odd " + s, &Claims{Aud: []string{s}, Iss: s, CommonName: s, Policy: s, Groups: []string{s, "x"},
			Cnf: &Confirmation{X5tS256: s}, IdentityNonce: s, Email: s, Iat: int64(i)}})
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.c.appendJSON(nil); string(got) != string(want) {
				t.Errorf("appendJSON:\n got %s\nwant %s", got, want)
			}
		})
	}
	// Random strings over bytes that need escaping, valid UTF-8 or not.
	r := mrand.New(mrand.NewPCG(1, 2))
	alphabet := []byte("aZ09-_.\"\\<>&\x00\x01\n\x7f\xc3\xa9\xe2\x80\xa8\xff ")
	for range 2000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		c := &Claims{Aud: []string{string(b)}, CommonName: string(b), Policy: string(b)}
		want, _ := json.Marshal(c)
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON(%q):\n got %s\nwant %s", b, got, want)
		}
	}
}

// TestMintRoundTripOddClaims: claims that need escaping survive Mint and
// Verify unchanged.
func TestMintRoundTripOddClaims(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	want := baseClaims()
	want.CommonName = "sensor \"7\" <é>\n\u2028"
	want.Groups = []string{"a&b", `c\d`}
	want.Cnf = &Confirmation{X5tS256: Thumbprint(fp1)}
	got, err := ks.Verify(mustMint(t, ks, want), testAUD, testIssuer, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims:\n got %+v\nwant %+v", got, want)
	}
}

// TestES256FromDER checks the DER to r||s conversion against encoding/asn1
// and math/big, low-s included, and that malformed signatures are refused.
