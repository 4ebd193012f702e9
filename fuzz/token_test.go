package fuzz

import (
	"bytes"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// Token target constants: the verifier's application and clock (policy
// never reads the clock).
const (
	tokAUD    = "7c1b3f0e2d4a59687b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c"
	tokIssuer = "https://access.fleet.test"
)

var tokNow = time.Unix(1_800_000_000, 0)

// FuzzTokenVerify verifies fuzzed strings with a KeySet whose current key
// (P-256, ES256) and previous key (Ed25519, EdDSA) are generated per run.
// The input is a template (see expandToken) so that committed seeds can
// splice this run's real tokens, headers, payloads and signatures.
//
// Invariants:
//   - a token not minted by us in this run is never accepted: whatever
//     KeySet.Verify, KeySet.VerifyCached or PublicKeys.VerifyAny (the
//     origin's view, from the served JWKS) accept is byte-identical to a
//     token minted here, carries the claims it was minted with, and is one
//     the checks should pass (right aud, iss, time, type, duration);
//   - VerifyCached agrees with Verify, hit or miss;
//   - an empty audience never verifies;
//   - every refusal wraps exactly one of policy's token sentinels.
func FuzzTokenVerify(f *testing.F) {
	ts := getTokenSet(f)
	// Static seeds: testdata/fuzz/FuzzTokenVerify (tokenSeeds).
	for _, m := range ts.minted {
		f.Add(m.token) // literal tokens, for byte-level mutation
	}
	for _, s := range ts.forged {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		countExec("FuzzTokenVerify")
		tok := ts.expand(tmpl)
		checkToken(t, ts, tok)
	})
}

// FuzzJWKSParse parses fuzzed JWKS documents with policy.ParseJWKS.
// Invariants: exactly one of keys and error; errors carry the "policy: "
// prefix; a parsed set has at least one key, with unique, non-empty kids;
// a token we minted verifies against it only if the document holds the
// public key that signed it; tokens with a canonical header for each parsed
// kid and a junk signature never verify (this drives the ES256, EdDSA and
// RS256 verifiers with fuzzed keys).
func FuzzJWKSParse(f *testing.F) {
	ts := getTokenSet(f)
	// Static seeds: testdata/fuzz/FuzzJWKSParse (jwksSeeds).
	f.Add(ts.ks.JWKS())
	f.Add(ts.rsaJWKS)
	f.Fuzz(func(t *testing.T, doc []byte) {
		countExec("FuzzJWKSParse")
		checkJWKS(t, ts, doc)
	})
}

// mintedToken is a token minted in this run and whether the verifier's
// checks (aud, iss, now, type, duration) should accept it.
type mintedToken struct {
	name      string
	token     string
	claims    policy.Claims
	sessionOK bool // KeySet.Verify(aud, iss, now) accepts it
	originOK  bool // PublicKeys.VerifyAny("", "", now) accepts it
	pubX      string
}

// tokenSet is the run's keys, verifiers and minted tokens.
type tokenSet struct {
	ks      *policy.KeySet // current ES256 + previous EdDSA
	pub     *policy.PublicKeys
	cache   *policy.TokenCache
	minted  []mintedToken
	byToken map[string]*mintedToken
	forged  []string // nasty tokens built at run time (alg none, HS256, swapped kid)
	rsaJWKS []byte

	headerCur, headerPrev string
	kidCur, kidPrev       string
}

var (
	tokOnce sync.Once
	tokSet  *tokenSet
	tokErr  error
)

func getTokenSet(tb testing.TB) *tokenSet {
	tb.Helper()
	fx := getFixture(tb)
	tokOnce.Do(func() { tokSet, tokErr = newTokenSet(fx) })
	if tokErr != nil {
		tb.Fatalf("token set: %v", tokErr)
	}
	return tokSet
}

func newTokenSet(fx *fixture) (*tokenSet, error) {
	ks, err := policy.NewKeySet(fx.tokenKey, fx.tokenKeyPrev)
	if err != nil {
		return nil, err
	}
	prev, err := policy.NewKeySet(fx.tokenKeyPrev)
	if err != nil {
		return nil, err
	}
	pub, err := policy.ParseJWKS(ks.JWKS())
	if err != nil {
		return nil, err
	}
	rsaKS, err := policy.NewKeySet(fx.rsaDevice.Key)
	if err != nil {
		return nil, err
	}
	ts := &tokenSet{ks: ks, pub: pub, cache: policy.NewTokenCache(64), byToken: map[string]*mintedToken{}, rsaJWKS: rsaKS.JWKS()}
	ts.kidCur, ts.kidPrev = ks.KIDs()[0], ks.KIDs()[1]
	ts.headerCur, ts.headerPrev = canonicalHeader(policy.AlgES256, ts.kidCur), canonicalHeader(policy.AlgEdDSA, ts.kidPrev)
	var jwks struct {
		Keys []struct{ Kid, X string }
	}
	if err := json.Unmarshal(ks.JWKS(), &jwks); err != nil {
		return nil, err
	}
	xOf := map[string]string{}
	for _, k := range jwks.Keys {
		xOf[k.Kid] = k.X
	}

	session := func(now time.Time, d time.Duration) *policy.Claims {
		return policy.NewClaims(policy.ClaimsParams{AUD: tokAUD, Issuer: tokIssuer, Duration: d, Now: now,
			CommonName: "sensor-0001", CertSHA256: strings.Repeat("ab", 32), Policy: "fleet devices"})
	}
	otherAUD := session(tokNow, time.Hour)
	otherAUD.Aud = []string{"someone-else"}
	wrongType := session(tokNow, time.Hour)
	wrongType.Type = "org"
	otherIss := session(tokNow, time.Hour)
	otherIss.Iss = "https://evil.example"
	multiAUD := session(tokNow, time.Hour)
	multiAUD.Aud = []string{"someone-else", tokAUD}
	for _, m := range []struct {
		name                string
		ks                  *policy.KeySet
		kid                 string
		c                   *policy.Claims
		sessionOK, originOK bool
	}{
		{"session", ks, ts.kidCur, session(tokNow, time.Hour), true, true},
		{"no-duration", ks, ts.kidCur, session(tokNow, 0), false, true},
		{"previous-key", prev, ts.kidPrev, session(tokNow, time.Hour), true, true},
		{"expired", ks, ts.kidCur, session(tokNow.Add(-2*time.Hour), time.Hour), false, false},
		{"not-yet-valid", ks, ts.kidCur, session(tokNow.Add(time.Hour), time.Hour), false, false},
		{"other-aud", ks, ts.kidCur, otherAUD, false, true},
		{"wrong-type", ks, ts.kidCur, wrongType, false, true},
		{"other-issuer", ks, ts.kidCur, otherIss, false, true},
		{"multi-aud", ks, ts.kidCur, multiAUD, true, true},
		{"expiring-within-skew", ks, ts.kidCur, session(tokNow.Add(-time.Hour), time.Hour+10*time.Second), true, true},
	} {
		tok, err := m.ks.Mint(m.c)
		if err != nil {
			return nil, fmt.Errorf("mint %s: %w", m.name, err)
		}
		ts.minted = append(ts.minted, mintedToken{name: m.name, token: tok, claims: *m.c, sessionOK: m.sessionOK, originOK: m.originOK, pubX: xOf[m.kid]})
	}
	for i := range ts.minted {
		ts.byToken[ts.minted[i].token] = &ts.minted[i]
	}
	for _, tmpl := range []string{
		"$<{\"alg\":\"none\",\"kid\":\"$K\",\"typ\":\"JWT\"}$>.$P0.",
		"$<{\"alg\":\"HS256\",\"kid\":\"$K\",\"typ\":\"JWT\"}$>.$P0.$S0",
		"$<{\"alg\":\"EdDSA\",\"kid\":\"$K\",\"typ\":\"JWT\"}$>.$P0.$S2",
		"$<{\"alg\":\"ES256\",\"kid\":\"$k\",\"typ\":\"JWT\"}$>.$P0.$S0",
	} {
		ts.forged = append(ts.forged, ts.expand(tmpl))
	}
	ts.forged = append(ts.forged, hs256Token(ts, []byte(ks.JWKS())), hs256Token(ts, []byte(ts.kidCur)))
	return ts, nil
}

// canonicalHeader is the header segment policy mints for alg and kid.
func canonicalHeader(alg, kid string) string {
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, kid, "JWT"})
	return base64.RawURLEncoding.EncodeToString(h)
}

// checkToken asserts FuzzTokenVerify's invariants for one token.
func checkToken(t *testing.T, ts *tokenSet, tok string) {
	t.Helper()
	m := ts.byToken[tok]
	c, err := ts.ks.Verify(tok, tokAUD, tokIssuer, tokNow)
	if err == nil {
		switch {
		case m == nil:
			t.Fatalf("KeySet.Verify accepted a token that was not minted in this run: %q", tok)
		case !m.sessionOK:
			t.Fatalf("KeySet.Verify accepted minted token %q, which its checks must refuse", m.name)
		case !sameClaims(c, &m.claims):
			t.Fatalf("KeySet.Verify returned claims %+v for token %q minted with %+v", c, m.name, m.claims)
		}
	} else {
		if m != nil && m.sessionOK {
			t.Fatalf("KeySet.Verify refused minted token %q: %v", m.name, err)
		}
		checkSentinel(t, "KeySet.Verify", err)
	}
	c2, err2 := ts.ks.VerifyCached(ts.cache, tok, tokAUD, tokIssuer, tokNow)
	if (err == nil) != (err2 == nil) || (err2 == nil && !sameClaims(c2, c)) {
		t.Fatalf("VerifyCached (%v) disagrees with Verify (%v) on %q", err2, err, tok)
	}
	if _, err := ts.ks.Verify(tok, "", tokIssuer, tokNow); err == nil {
		t.Fatalf("KeySet.Verify accepted %q for an empty audience", tok)
	}
	c3, err3 := ts.pub.VerifyAny(tok, "", "", tokNow)
	if err3 == nil {
		switch {
		case m == nil:
			t.Fatalf("PublicKeys.VerifyAny accepted a token that was not minted in this run: %q", tok)
		case !m.originOK:
			t.Fatalf("PublicKeys.VerifyAny accepted minted token %q, which its checks must refuse", m.name)
		case !sameClaims(c3, &m.claims):
			t.Fatalf("PublicKeys.VerifyAny returned claims %+v for token %q", c3, m.name)
		}
	} else {
		if m != nil && m.originOK {
			t.Fatalf("PublicKeys.VerifyAny refused minted token %q: %v", m.name, err3)
		}
		checkSentinel(t, "PublicKeys.VerifyAny", err3)
	}
}

// tokenSentinels are the errors every token refusal wraps exactly one of.
var tokenSentinels = []error{
	policy.ErrMalformedToken, policy.ErrUnknownKey, policy.ErrAlgorithm, policy.ErrSignature,
	policy.ErrTokenExpired, policy.ErrTokenNotYetValid, policy.ErrAudience, policy.ErrIssuer,
	policy.ErrTokenNoDuration, policy.ErrTokenType,
}

func checkSentinel(t *testing.T, who string, err error) {
	t.Helper()
	n := 0
	for _, s := range tokenSentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%s: error %q wraps %d token sentinels, want exactly 1", who, err, n)
	}
}

func sameClaims(a, b *policy.Claims) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// expandToken expands a FuzzTokenVerify template with this run's values:
//
//	$H, $h   header segment of the current (ES256) / previous (EdDSA) key
//	$K, $k   kid of the current / previous key
//	$Tn      minted token n (a digit, modulo the number minted; see newTokenSet)
//	$Pn, $Sn payload / signature segment of minted token n
//	$Mn      signature segment of token n with ECDSA's s replaced by N-s
//	         (the same signature's other valid encoding; EdDSA ones as is)
//	$< … $>  base64url (no padding) of the expansion in between
//	$$       a literal '$'
//
// Anything else is literal, so any string is a valid template.
func (ts *tokenSet) expand(tmpl string) string {
	if !strings.Contains(tmpl, "$") {
		return tmpl
	}
	stack := [][]byte{nil} // one buffer per open $<
	emit := func(b ...byte) { stack[len(stack)-1] = append(stack[len(stack)-1], b...) }
	emitS := func(s string) { stack[len(stack)-1] = append(stack[len(stack)-1], s...) }
	pop := func() {
		inner := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		emitS(base64.RawURLEncoding.EncodeToString(inner))
	}
	part := func(d byte, i int) string {
		m := ts.minted[int(d-'0')%len(ts.minted)]
		if i < 0 {
			return m.token
		}
		return strings.SplitN(m.token, ".", 3)[i]
	}
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		if c != '$' || i+1 == len(tmpl) {
			emit(c)
			continue
		}
		next := tmpl[i+1]
		digit := i+2 < len(tmpl) && tmpl[i+2] >= '0' && tmpl[i+2] <= '9'
		switch {
		case next == '$':
			emit('$')
		case next == 'H':
			emitS(ts.headerCur)
		case next == 'h':
			emitS(ts.headerPrev)
		case next == 'K':
			emitS(ts.kidCur)
		case next == 'k':
			emitS(ts.kidPrev)
		case next == 'T' && digit:
			emitS(part(tmpl[i+2], -1))
			i++
		case next == 'P' && digit:
			emitS(part(tmpl[i+2], 1))
			i++
		case next == 'S' && digit:
			emitS(part(tmpl[i+2], 2))
			i++
		case next == 'M' && digit:
			emitS(highS(part(tmpl[i+2], 2)))
			i++
		case next == '<' && len(stack) < 8:
			stack = append(stack, nil)
		case next == '>' && len(stack) > 1:
			pop()
		default:
			emit('$')
			continue // the next byte is literal
		}
		i++
	}
	for len(stack) > 1 { // an unclosed $< encodes what followed it
		pop()
	}
	return string(stack[0])
}

// tokenSeed is a static FuzzTokenVerify template.
type tokenSeed struct {
	name, tmpl string
}

func tokenSeeds() []tokenSeed {
	hdr := func(json string) string { return "$<" + json + "$>" }
	return []tokenSeed{
		{"minted-session", "$T0"},
		{"minted-no-duration", "$T1"},
		{"minted-previous-key", "$T2"},
		{"minted-expired", "$T3"},
		{"minted-other-aud", "$T5"},
		{"minted-wrong-type", "$T6"},
		{"spliced-payload", "$H.$P1.$S0"},
		{"spliced-signature", "$H.$P0.$S3"},
		{"previous-key-header-current-signature", "$h.$P0.$S0"},
		{"alg-none", hdr(`{"alg":"none","kid":"$K","typ":"JWT"}`) + ".$P0."},
		{"alg-none-signature", hdr(`{"alg":"none","kid":"$K","typ":"JWT"}`) + ".$P0.$S0"},
		{"alg-hs256", hdr(`{"alg":"HS256","kid":"$K","typ":"JWT"}`) + ".$P0.$S0"},
		{"alg-rs256-ec-kid", hdr(`{"alg":"RS256","kid":"$K","typ":"JWT"}`) + ".$P0.$S0"},
		{"alg-eddsa-ec-kid", hdr(`{"alg":"EdDSA","kid":"$K","typ":"JWT"}`) + ".$P0.$S2"},
		{"swapped-kid", hdr(`{"alg":"ES256","kid":"$k","typ":"JWT"}`) + ".$P0.$S0"},
		{"unknown-kid", hdr(`{"alg":"ES256","kid":"0000","typ":"JWT"}`) + ".$P0.$S0"},
		{"no-kid", hdr(`{"alg":"ES256","typ":"JWT"}`) + ".$P0.$S0"},
		{"reordered-header", hdr(`{"kid":"$K","alg":"ES256","typ":"JWT"}`) + ".$P0.$S0"},
		{"spaced-header", hdr(`{"alg": "ES256", "kid": "$K", "typ": "JWT"}`) + ".$P0.$S0"},
		{"extra-header-member", hdr(`{"alg":"ES256","kid":"$K","typ":"JWT","crit":["exp"]}`) + ".$P0.$S0"},
		{"duplicate-alg", hdr(`{"alg":"ES256","alg":"none","kid":"$K","typ":"JWT"}`) + ".$P0.$S0"},
		{"jku-header", hdr(`{"alg":"ES256","kid":"$K","typ":"JWT","jku":"https://evil.example/jwks"}`) + ".$P0.$S0"},
		{"typ-missing", hdr(`{"alg":"ES256","kid":"$K"}`) + ".$P0.$S0"},
		{"header-trailing-data", hdr(`{"alg":"ES256","kid":"$K","typ":"JWT"} {}`) + ".$P0.$S0"},
		{"forged-payload", "$H." + hdr(`{"aud":["`+tokAUD+`"],"iss":"`+tokIssuer+`","type":"app","iat":1800000000,"nbf":1800000000,"exp":1900000000}`) + ".$S0"},
		{"empty-signature", "$H.$P0."},
		{"truncated-signature", "$H.$P0.AAAA"},
		{"truncated-token", "$H.$P0"},
		{"two-dots", ".."},
		{"four-parts", "$T0.$S0"},
		{"padded-signature", "$T0=="},
		{"non-canonical-base64", "$T0A"},
		{"std-base64-chars", "$H.$P0.+/+/"},
		{"whitespace", " $T0 "},
		{"null-byte", "$T0\x00"},
		{"empty", ""},
		{"dollar-literal", "$$T0"},
		{"unclosed-base64", "$<{\"alg\":\"none\""},
		{"huge-part", "$H." + strings.Repeat("A", 9000) + ".$S0"},
	}
}

// highS returns an ES256 signature segment with s replaced by N-s: for
// ECDSA, (r, s) and (r, N-s) both verify, so a verifier that accepts both
// accepts a token we never minted. Other segments come back unchanged.
func highS(seg string) string {
	sig, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil || len(sig) != 64 {
		return seg
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	return base64.RawURLEncoding.EncodeToString(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// hmacSHA256 is HMAC-SHA256 of msg under key.
func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// hs256Token signs the first minted token's signing input with HMAC-SHA256
// keyed by secret (the classic "public key as HMAC secret" confusion).
func hs256Token(ts *tokenSet, secret []byte) string {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"` + ts.kidCur + `","typ":"JWT"}`))
	input := header + "." + strings.SplitN(ts.minted[0].token, ".", 3)[1]
	return input + "." + base64.RawURLEncoding.EncodeToString(hmacSHA256(secret, []byte(input)))
}

// checkJWKS asserts FuzzJWKSParse's invariants for one document.
func checkJWKS(t *testing.T, ts *tokenSet, doc []byte) {
	t.Helper()
	pk, err := policy.ParseJWKS(doc)
	if (pk == nil) == (err == nil) {
		t.Fatalf("ParseJWKS: keys %v and error %v", pk != nil, err)
	}
	if err != nil {
		if !strings.HasPrefix(err.Error(), "policy: ") {
			t.Fatalf("ParseJWKS error without the package prefix: %q", err)
		}
		return
	}
	kids := pk.KIDs()
	if len(kids) == 0 {
		t.Fatalf("ParseJWKS returned a key set without keys")
	}
	seen := map[string]bool{}
	for _, k := range kids {
		if k == "" || seen[k] {
			t.Fatalf("ParseJWKS kids %q: empty or duplicate", kids)
		}
		seen[k] = true
	}
	for _, m := range ts.minted {
		if _, err := pk.VerifyAny(m.token, "", "", tokNow); err == nil && !bytes.Contains(doc, []byte(m.pubX)) {
			t.Fatalf("minted token %q verified against a JWKS that does not hold its key (kids %q)", m.name, kids)
		}
	}
	payload := strings.SplitN(ts.minted[0].token, ".", 3)[1]
	junk := []string{"", b64(bytes.Repeat([]byte{0x5a}, 64)), b64(bytes.Repeat([]byte{0x5a}, 256)), b64(bytes.Repeat([]byte{0x5a}, 512))}
	for i, kid := range kids {
		if i == 4 {
			break
		}
		for _, alg := range []string{policy.AlgES256, policy.AlgEdDSA, policy.AlgRS256} {
			for _, sig := range junk {
				tok := canonicalHeader(alg, kid) + "." + payload + "." + sig
				if _, err := pk.VerifyAny(tok, "", "", tokNow); err == nil {
					t.Fatalf("a junk %s signature verified under fuzzed kid %q", alg, kid)
				}
			}
		}
	}
}

// jwksSeed is a static FuzzJWKSParse document.
type jwksSeed struct {
	name, doc string
}

func jwksSeeds() []jwksSeed {
	const (
		x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
		y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
	)
	ec := func(extra string) string {
		return `{"keys":[{"kid":"k1","kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"` + extra + `}]}`
	}
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	entry := `{"kid":"k1","kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}`
	ones := b64(bytes.Repeat([]byte{0xff}, 257))               // a 2056-bit odd modulus
	even := b64(append(bytes.Repeat([]byte{0xff}, 256), 0xfe)) // even
	rsa := func(n, e string) string {
		return `{"keys":[{"kid":"r1","kty":"RSA","n":"` + n + `","e":"` + e + `"}]}`
	}
	return []jwksSeed{
		{"ec", ec("")},
		{"ec-alg-use", ec(`,"alg":"ES256","use":"sig"`)},
		{"ec-use-enc", ec(`,"use":"enc"`)},
		{"ec-alg-mismatch", ec(`,"alg":"RS256"`)},
		{"ec-public-cert", ec(`,"public_cert":{"kid":"k1","cert":"-----BEGIN CERTIFICATE-----"}`)},
		{"ec-not-on-curve", `{"keys":[{"kid":"k1","kty":"EC","crv":"P-256","x":"` + x + `","y":"` + x + `"}]}`},
		{"ec-short-x", `{"keys":[{"kid":"k1","kty":"EC","crv":"P-256","x":"AAAA","y":"` + y + `"}]}`},
		{"ec-p384", `{"keys":[{"kid":"k1","kty":"EC","crv":"P-384","x":"` + x + `","y":"` + y + `"}]}`},
		{"ec-no-kid", `{"keys":[{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}]}`},
		{"duplicate-kid", `{"keys":[` + entry + `,` + entry + `]}`},
		{"okp", `{"keys":[{"kid":"e1","kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`},
		{"okp-short", `{"keys":[{"kid":"e1","kty":"OKP","crv":"Ed25519","x":"11qY"}]}`},
		{"okp-x25519", `{"keys":[{"kid":"e1","kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`},
		{"rsa-tiny", rsa("AQAB", "AQAB")},
		{"rsa-odd-modulus", rsa(ones, "AQAB")},
		{"rsa-e-even", rsa(ones, b64([]byte{1, 0}))},
		{"rsa-e-one", rsa(ones, "AQ")},
		{"rsa-e-three", rsa(ones, "Aw")},
		{"rsa-e-huge", rsa(ones, b64([]byte{0xff, 0xff, 0xff, 0xff}))},
		{"rsa-e-leading-zeros", rsa(ones, b64([]byte{0, 0, 0, 1, 0, 1}))},
		{"rsa-even-modulus", rsa(even, "AQAB")},
		{"rsa-16k-modulus", rsa(b64(bytes.Repeat([]byte{0xff}, 2048)), "AQAB")},
		{"rsa-over-16k-modulus", rsa(b64(bytes.Repeat([]byte{0xff}, 2049)), "AQAB")},
		{"oct", `{"keys":[{"kid":"h1","kty":"oct","k":"c2VjcmV0"}]}`},
		{"empty-keys", `{"keys":[]}`},
		{"null-keys", `{"keys":null}`},
		{"empty-object", `{}`},
		{"array", `[]`},
		{"keys-not-array", `{"keys":{"kid":"k1"}}`},
		{"wrong-types", `{"keys":[{"kid":1,"kty":true,"x":[],"y":{}}]}`},
		{"unicode-kid", `{"keys":[{"kid":"k\u0000\u2028","kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}]}`},
		{"deep-nesting", `{"keys":` + deep + `}`},
		{"trailing-garbage", ec("") + `garbage`},
		{"empty", ``},
		{"not-json", "\xff\xfe"},
	}
}
