package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

func TestNewKeySet(t *testing.T) {
	testKeys(t)
	for _, tt := range algKeys(t) {
		t.Run(tt.alg, func(t *testing.T) {
			ks := tt.ks
			if ks.Alg() != tt.alg {
				t.Errorf("Alg() = %q", ks.Alg())
			}
			der, err := x509.MarshalPKIXPublicKey(ks.keys[0].signer.Public())
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(der)
			if ks.KID() != hex.EncodeToString(sum[:]) {
				t.Errorf("KID() = %s, want hex SHA-256 of the PKIX key", ks.KID())
			}
			tok := mustMint(t, ks, baseClaims())
			hdr, err := b64.DecodeString(strings.Split(tok, ".")[0])
			if err != nil {
				t.Fatal(err)
			}
			want := `{"alg":"` + tt.alg + `","kid":"` + ks.KID() + `","typ":"JWT"}`
			if string(hdr) != want {
				t.Errorf("header = %s, want %s", hdr, want)
			}
		})
	}
}

type opaqueSigner struct{ crypto.Signer }

func (opaqueSigner) Public() crypto.PublicKey { return "not a key" }

func TestNewKeySetRejects(t *testing.T) {
	testKeys(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		current crypto.Signer
		prev    []crypto.Signer
		want    string
	}{
		{"nil key", nil, nil, "current key: no key"},
		{"P-384", p384, nil, "ECDSA curve P-384"},
		{"RSA 1024", rsa1024, nil, "RSA key of 1024 bits"},
		{"unknown type", opaqueSigner{}, nil, "key type string"},
		{"bad previous", keyES, []crypto.Signer{p384}, "previous key 0: ECDSA curve P-384"},
		{"duplicate", keyES, []crypto.Signer{keyEd, keyES}, "previous key 1: same key listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewKeySet(tt.current, tt.prev...)
			if !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrUnsupportedKey with %q", err, tt.want)
			}
		})
	}
}

func TestMintVerifyRoundTrip(t *testing.T) {
	for _, tt := range algKeys(t) {
		t.Run(tt.alg, func(t *testing.T) {
			want := baseClaims()
			tok := mustMint(t, tt.ks, want)
			if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, "=+/") {
				t.Fatalf("not a compact base64url JWS: %s", tok)
			}
			got, err := tt.ks.Verify(tok, testAUD, testIssuer, t0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("claims:\n got %+v\nwant %+v", got, want)
			}
			sig, _ := b64.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
			wantLen := map[string]int{AlgES256: 64, AlgEdDSA: 64, AlgRS256: 256}[tt.alg]
			if len(sig) != wantLen {
				t.Errorf("signature is %d bytes, want %d", len(sig), wantLen)
			}
		})
	}
}

// forge builds a token from raw header and payload JSON, signed by sign.
func forge(header, payload string, sign func(input []byte) []byte) string {
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	return in + "." + b64.EncodeToString(sign([]byte(in)))
}

func signWith(t *testing.T, alg string, s crypto.Signer) func([]byte) []byte {
	return func(in []byte) []byte {
		sig, err := (&tokenKey{alg: alg, signer: s}).sign(in)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
}

func claimsJSON(mut func(*Claims)) string {
	c := baseClaims()
	if mut != nil {
		mut(c)
	}
	b, _ := json.Marshal(c)
	return string(b)
}

func TestVerifyRejects(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	kid := ks.KID()
	good := mustMint(t, ks, baseClaims())
	parts := strings.Split(good, ".")
	esHeader := `{"alg":"ES256","kid":"` + kid + `","typ":"JWT"}`

	pubDER, _ := x509.MarshalPKIXPublicKey(keyES.Public())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func(secret []byte) func([]byte) []byte {
		return func(in []byte) []byte {
			m := hmac.New(sha256.New, secret)
			m.Write(in)
			return m.Sum(nil)
		}
	}
	derSig := func(in []byte) []byte {
		d := sha256.Sum256(in)
		sig, err := keyES.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		return sig // ASN.1 DER, as crypto.Signer returns it
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	mint := func(mut func(*Claims)) string {
		c := baseClaims()
		mut(c)
		return mustMint(t, ks, c)
	}
	exp := t0.Unix() + 3600

	tests := []struct {
		name  string
		token string
		now   time.Time
		aud   string
		iss   string
		want  error // nil: must verify
	}{
		{name: "good", token: good},
		{name: "tampered payload", token: parts[0] + "." + b64.EncodeToString([]byte(claimsJSON(func(c *Claims) { c.CommonName = "sensor-0002" }))) + "." + parts[2], want: ErrSignature},
		{name: "tampered signature", token: flip(good, len(good)-10), want: ErrSignature},
		{name: "signature truncated", token: parts[0] + "." + parts[1] + "." + b64.EncodeToString(mustB64(t, parts[2])[:63]), want: ErrSignature},
		{name: "signature non-canonical base64", token: nonCanonical(good), want: ErrMalformedToken},
		{name: "empty signature", token: parts[0] + "." + parts[1] + ".", want: ErrSignature},
		{name: "wrong key, our kid", token: forge(esHeader, claimsJSON(nil), signWith(t, AlgES256, keyES2)), want: ErrSignature},
		{name: "wrong key, its own kid", token: mustMint(t, mustKeySet(t, keyES2), baseClaims()), want: ErrUnknownKey},
		{name: "DER-encoded ES256 signature", token: forge(esHeader, claimsJSON(nil), derSig), want: ErrSignature},
		{name: "alg none, empty signature", token: b64.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`","typ":"JWT"}`)) + "." + parts[1] + ".", want: ErrAlgorithm},
		{name: "alg none without kid", token: b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".", want: ErrMalformedToken},
		{name: "HS256 keyed with the public key PEM", token: forge(`{"alg":"HS256","kid":"`+kid+`","typ":"JWT"}`, claimsJSON(nil), hs256(pubPEM)), want: ErrAlgorithm},
		{name: "HS256 keyed with the public key DER", token: forge(`{"alg":"HS256","kid":"`+kid+`","typ":"JWT"}`, claimsJSON(nil), hs256(pubDER)), want: ErrAlgorithm},
		{name: "alg/kid mismatch: RS256 under an ES256 kid", token: forge(`{"alg":"RS256","kid":"`+kid+`","typ":"JWT"}`, claimsJSON(nil), signWith(t, AlgRS256, keyRSA)), want: ErrAlgorithm},
		{name: "alg/kid mismatch: EdDSA under an ES256 kid", token: forge(`{"alg":"EdDSA","kid":"`+kid+`","typ":"JWT"}`, claimsJSON(nil), signWith(t, AlgEdDSA, keyEd)), want: ErrAlgorithm},
		{name: "unknown kid", token: forge(`{"alg":"ES256","kid":"00","typ":"JWT"}`, claimsJSON(nil), signWith(t, AlgES256, keyES)), want: ErrUnknownKey},
		{name: "header with an extra member", token: forge(`{"alg":"ES256","kid":"`+kid+`","typ":"JWT","jku":"https://evil"}`, claimsJSON(nil), signWith(t, AlgES256, keyES)), want: ErrMalformedToken},
		{name: "header members reordered", token: forge(`{"kid":"`+kid+`","alg":"ES256","typ":"JWT"}`, claimsJSON(nil), signWith(t, AlgES256, keyES)), want: ErrMalformedToken},
		{name: "header with duplicate alg", token: forge(`{"alg":"none","alg":"ES256","kid":"`+kid+`","typ":"JWT"}`, claimsJSON(nil), signWith(t, AlgES256, keyES)), want: ErrMalformedToken},
		{name: "header typ missing", token: forge(`{"alg":"ES256","kid":"`+kid+`"}`, claimsJSON(nil), signWith(t, AlgES256, keyES)), want: ErrMalformedToken},
		{name: "header not an object", token: forge(`["ES256"]`, claimsJSON(nil), signWith(t, AlgES256, keyES)), want: ErrMalformedToken},
		{name: "payload not JSON but signed", token: forge(esHeader, `not json`, signWith(t, AlgES256, keyES)), want: ErrMalformedToken},
		{name: "padded base64", token: parts[0] + "=." + parts[1] + "." + parts[2], want: ErrMalformedToken},
		{name: "wrong type", token: mint(func(c *Claims) { c.Type = "org" }), want: ErrTokenType},
		{name: "no-duration token presented back", token: mint(func(c *Claims) { c.NoDuration = true; c.Exp = c.Iat + 10 }), want: ErrTokenNoDuration},
		{name: "expired: exactly exp+skew", token: good, now: time.Unix(exp+30, 0), want: ErrTokenExpired},
		{name: "expired: long ago", token: good, now: time.Unix(exp+86400, 0), want: ErrTokenExpired},
		{name: "skew edge: exp+29s still valid", token: good, now: time.Unix(exp+29, 999_000_000)},
		{name: "skew edge: at exp still valid", token: good, now: time.Unix(exp, 0)},
		{name: "not yet valid: nbf-31s", token: good, now: t0.Add(-31 * time.Second), want: ErrTokenNotYetValid},
		{name: "skew edge: nbf-30s valid", token: good, now: t0.Add(-30 * time.Second)},
		{name: "iat in the future", token: mint(func(c *Claims) { c.Nbf = 0; c.Iat = t0.Unix() + 3000 }), want: ErrTokenNotYetValid},
		{name: "no exp", token: mint(func(c *Claims) { c.Exp = 0 }), want: ErrTokenExpired},
		{name: "wrong aud", token: good, aud: DeriveAUD("other"), want: ErrAudience},
		{name: "aud among several", token: mint(func(c *Claims) { c.Aud = []string{DeriveAUD("other"), testAUD} })},
		{name: "wrong iss", token: good, iss: "https://evil.test", want: ErrIssuer},
		{name: "oversized", token: parts[0] + "." + strings.Repeat("A", MaxTokenLen) + "." + parts[2], want: ErrMalformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now, aud, iss := tt.now, tt.aud, tt.iss
			if now.IsZero() {
				now = t0
			}
			if aud == "" {
				aud = testAUD
			}
			if iss == "" {
				iss = testIssuer
			}
			c, err := ks.Verify(tt.token, aud, iss, now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || c != nil {
				t.Fatalf("Verify = %v, %v; want %v", c, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("error %q lacks the policy: prefix", err)
			}
		})
	}
}

func TestVerifyGarbage(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	good := mustMint(t, ks, baseClaims())
	garbage := []string{"", ".", "..", "...", "a", "a.b", "a.b.c", "a.b.c.d", "!!.!!.!!", "\x00.\x00.\x00",
		strings.Repeat(".", 100), strings.Repeat("A", MaxTokenLen+1), good + ".", "." + good, good + good}
	for i := range len(good) { // every single-byte change of a good token
		b := []byte(good)
		b[i] ^= 0x01
		garbage = append(garbage, string(b))
	}
	for _, g := range garbage {
		if c, err := ks.Verify(g, testAUD, testIssuer, t0); err == nil || c != nil {
			t.Errorf("Verify(%.40q) = %v, %v; want an error", g, c, err)
		}
	}
}

func TestPreviousKey(t *testing.T) {
	testKeys(t)
	old := mustKeySet(t, keyES2)
	rotated := mustKeySet(t, keyEd, keyES2, keyRSA)
	if got := rotated.KIDs(); len(got) != 3 || got[0] != rotated.KID() || got[1] != old.KID() {
		t.Fatalf("KIDs() = %v", got)
	}
	oldTok := mustMint(t, old, baseClaims())
	if _, err := rotated.Verify(oldTok, testAUD, testIssuer, t0); err != nil {
		t.Errorf("previous key not accepted: %v", err)
	}
	newTok := mustMint(t, rotated, baseClaims())
	if !strings.HasPrefix(newTok, rotated.keys[0].header+".") {
		t.Error("the rotated set does not sign with its current key")
	}
	if _, err := old.Verify(newTok, testAUD, testIssuer, t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old set verifying the new key's token: %v, want ErrUnknownKey", err)
	}
	dropped := mustKeySet(t, keyEd)
	if _, err := dropped.Verify(oldTok, testAUD, testIssuer, t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("dropped key: %v, want ErrUnknownKey", err)
	}
}

func TestNewClaims(t *testing.T) {
	a := app(24*time.Hour, pol("fleet", Allow, sels(selValid), nil, nil))
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name      string
		in        Input
		d         Decision
		wantCN    string
		wantFP    string
		wantExp   int64
		wantNoDur bool
		wantErr   bool
	}{
		{name: "session from a certificate", in: Input{Cert: validCert("sensor-0001", fp1), Now: t0},
			d:      Decision{Mint: true, Allowed: true, Policy: "fleet", SessionDuration: 24 * time.Hour},
			wantCN: "sensor-0001", wantFP: fp1, wantExp: t0.Unix() + 86400},
		{name: "no duration", in: Input{Cert: validCert("sensor-0001", fp1), Now: t0},
			d:      Decision{Mint: true, Allowed: true, Policy: "fleet"},
			wantCN: "sensor-0001", wantFP: fp1, wantExp: t0.Unix() + 10, wantNoDur: true},
		{name: "identity from a token", in: Input{Token: sessionToken(a.AUD, "sensor-0002", fp2), Now: t0},
			d:      Decision{Mint: true, Allowed: true, Policy: "fleet", SessionDuration: 90 * time.Minute},
			wantCN: "sensor-0002", wantFP: fp2, wantExp: t0.Unix() + 5400},
		{name: "everyone without a certificate", in: Input{Cert: &verdict.Verdict{}, Now: t0},
			d:       Decision{Mint: true, Allowed: true, Policy: "open", SessionDuration: time.Hour},
			wantExp: t0.Unix() + 3600},
		{name: "sub-second duration rounds up", in: Input{Now: t0},
			d:       Decision{Mint: true, Allowed: true, SessionDuration: 1500 * time.Millisecond},
			wantExp: t0.Unix() + 2},
		{name: "decision that does not mint", in: Input{Now: t0}, d: Decision{Allowed: true, Action: Bypass}, wantErr: true},
		{name: "negative duration", in: Input{Now: t0}, d: Decision{Mint: true, SessionDuration: -time.Second}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.NewClaims(testIssuer, &tt.in, tt.d)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Aud, []string{a.AUD}) || c.Iss != testIssuer || c.Sub != "" || c.Type != "app" ||
				c.Iat != t0.Unix() || c.Nbf != t0.Unix() || c.Exp != tt.wantExp || c.NoDuration != tt.wantNoDur ||
				c.CommonName != tt.wantCN || c.CertSHA256 != tt.wantFP || c.Policy != tt.d.Policy || !hex32.MatchString(c.IdentityNonce) {
				t.Errorf("claims = %+v", c)
			}
		})
	}
	in := Input{Now: t0}
	c1, _ := a.NewClaims(testIssuer, &in, Decision{Mint: true, SessionDuration: time.Hour})
	c2, _ := a.NewClaims(testIssuer, &in, Decision{Mint: true, SessionDuration: time.Hour})
	if c1.IdentityNonce == c2.IdentityNonce {
		t.Error("identity_nonce repeats")
	}
	if _, err := (&Application{Name: "x"}).NewClaims(testIssuer, &in, Decision{Mint: true}); err == nil {
		t.Error("NewClaims without AUD: no error")
	}
}

// TestNewClaimsFromThePath: a token minted from a certificate names the
// path's root (cert_root) and ends no later than the path's earliest
// expiry, here an intermediate's, well before the leaf's and the session's.
func TestNewClaimsFromThePath(t *testing.T) {
	a := app(24*time.Hour, pol("fleet", Allow, sels(selValid), nil, nil))
	v := validCert("sensor-0001", fp1)
	v.Identity.NotAfter = t0.Add(10 * 24 * time.Hour)
	root := [32]byte{1, 2, 3}
	v.Path = []verdict.CertRef{
		{NotAfter: t0.Add(10 * 24 * time.Hour)},
		{NotAfter: t0.Add(2 * time.Hour)},
		{NotAfter: t0.Add(10 * 365 * 24 * time.Hour), SHA256: root},
	}
	c, err := a.NewClaims(testIssuer, &Input{Cert: v, Now: t0}, Decision{Mint: true, Allowed: true, Policy: "fleet", SessionDuration: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(2 * time.Hour).Unix(); c.Exp != want {
		t.Errorf("exp %d, want the intermediate's expiry %d", c.Exp, want)
	}
	if want := hex.EncodeToString(root[:]); c.CertRoot != want {
		t.Errorf("cert_root %q, want %q", c.CertRoot, want)
	}
}

func TestNoDurationTokenRefusedBack(t *testing.T) {
	for _, tt := range algKeys(t) {
		t.Run(tt.alg, func(t *testing.T) {
			a := app(0, pol("fleet", Allow, sels(selValid), nil, nil))
			in := Input{Cert: validCert("sensor-0001", fp1), Now: t0}
			d := a.Evaluate(&in)
			if !d.Mint || d.SessionDuration != 0 {
				t.Fatalf("decision %+v", d)
			}
			c, err := a.NewClaims(testIssuer, &in, d)
			if err != nil {
				t.Fatal(err)
			}
			tok := mustMint(t, tt.ks, c)
			_, err = tt.ks.Verify(tok, a.AUD, testIssuer, t0.Add(time.Second))
			if !errors.Is(err, ErrTokenNoDuration) {
				t.Errorf("presented back: %v, want ErrTokenNoDuration", err)
			}
			cache := NewTokenCache(16)
			if _, err := tt.ks.VerifyCached(cache, tok, a.AUD, testIssuer, t0); !errors.Is(err, ErrTokenNoDuration) {
				t.Errorf("VerifyCached: %v, want ErrTokenNoDuration", err)
			}
			if s := cache.Stats(); s.Entries != 0 {
				t.Errorf("no-duration token cached: %+v", s)
			}
		})
	}
}

func TestMintErrors(t *testing.T) {
	testKeys(t)
	if _, err := mustKeySet(t, keyES).Mint(nil); err == nil {
		t.Error("Mint(nil): no error")
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewClaimsParams(t *testing.T) {
	tests := []struct {
		name      string
		p         ClaimsParams
		wantExp   int64
		wantNoDur bool
	}{
		{"session", ClaimsParams{AUD: testAUD, Issuer: testIssuer, CommonName: "s", CertSHA256: fp1, Policy: "p", Duration: time.Hour, Now: t0}, t0.Unix() + 3600, false},
		{"zero duration", ClaimsParams{AUD: testAUD, Duration: 0, Now: t0}, t0.Unix() + 10, true},
		{"negative duration is no duration", ClaimsParams{AUD: testAUD, Duration: -time.Hour, Now: t0}, t0.Unix() + 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClaims(tt.p)
			if c.Exp != tt.wantExp || c.NoDuration != tt.wantNoDur || c.Iat != t0.Unix() || c.Nbf != t0.Unix() ||
				c.Type != TokenType || c.Sub != "" || len(c.IdentityNonce) != 32 || !reflect.DeepEqual(c.Aud, []string{tt.p.AUD}) ||
				c.Iss != tt.p.Issuer || c.CommonName != tt.p.CommonName || c.CertSHA256 != tt.p.CertSHA256 || c.Policy != tt.p.Policy {
				t.Errorf("NewClaims(%+v) = %+v", tt.p, c)
			}
		})
	}
}

// nonCanonical returns tok with the unused low bits of its last base64url
// character set: the same bytes, a non-canonical encoding. (Cutting
// characters off instead leaves a canonical encoding one time in sixteen.)
func nonCanonical(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[i|1])
}
