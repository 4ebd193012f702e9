package policy

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	mrand "math/rand/v2"
	"reflect"
	"strings"
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
			Email: "a@b.c", Groups: []string{"g1", "g2"}, IdP: "idp", Cnf: &Confirmation{X5tS256: "x5t"}, NoDuration: true}},
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
func TestES256FromDER(t *testing.T) {
	testKeys(t)
	priv := keyES.(*ecdsa.PrivateKey)
	n := priv.Curve.Params().N
	highS := 0
	for i := range 300 {
		d := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		der, err := ecdsa.SignASN1(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			t.Fatal(err)
		}
		if rs.S.Cmp(p256HalfOrder) > 0 {
			highS++
			rs.S.Sub(n, rs.S)
		}
		want := make([]byte, 64)
		rs.R.FillBytes(want[:32])
		rs.S.FillBytes(want[32:])
		got := make([]byte, 64)
		if !es256FromDER(got, der) {
			t.Fatalf("refused a signature from ecdsa.SignASN1: %x", der)
		}
		if string(got) != string(want) {
			t.Fatalf("es256FromDER(%x) = %x, want %x", der, got, want)
		}
		if !ecdsa.Verify(&priv.PublicKey, d[:], new(big.Int).SetBytes(got[:32]), new(big.Int).SetBytes(got[32:])) {
			t.Fatal("the converted signature does not verify")
		}
	}
	if highS == 0 {
		t.Fatal("no high-s signature in 300: the low-s branch went untested")
	}
	enc := func(r, s []byte) []byte {
		body := append(append([]byte{0x02, byte(len(r))}, r...), append([]byte{0x02, byte(len(s))}, s...)...)
		return append([]byte{0x30, byte(len(body))}, body...)
	}
	one, big32 := []byte{1}, append([]byte{0}, []byte(strings.Repeat("\xff", 32))...)
	for _, tt := range []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"not a sequence", append([]byte{0x31}, enc(one, one)[1:]...)},
		{"length too long", append([]byte{0x30, 7}, enc(one, one)[2:]...)},
		{"trailing byte", append(enc(one, one), 0)},
		{"trailing inside", []byte{0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00, 0x00}},
		{"negative r", enc([]byte{0x80}, one)},
		{"zero r", enc([]byte{0}, one)},
		{"empty s", enc(one, nil)},
		{"needless zero", enc([]byte{0, 1}, one)},
		{"r of 33 bytes", enc(append([]byte{1}, make([]byte, 32)...), one)},
		{"s over 32 bytes after its zero", enc(one, append([]byte{0}, big32...))},
		{"not integers", func() []byte { b := enc(one, one); b[2] = 0x04; return b }()},
		{"truncated", enc(one, one)[:6]},
	} {
		if es256FromDER(make([]byte, 64), tt.der) {
			t.Errorf("%s: accepted %x", tt.name, tt.der)
		}
	}
	// The largest valid magnitude (32 bytes with its sign byte) is accepted.
	if !es256FromDER(make([]byte, 64), enc(big32, one)) {
		t.Error("refused a 32-byte r with its leading zero")
	}
}
