package policy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// ClockSkew is the tolerance applied to exp, nbf and iat when a token is
// verified (and when Evaluate re-checks a token's exp): 30 s, enough for
// gateways behind one issuer whose clocks are NTP-synchronised, small enough
// not to extend a session noticeably. A token is refused from exp+30s on and
// before nbf-30s.
const ClockSkew = 30 * time.Second

const skewSeconds = int64(ClockSkew / time.Second)

// MaxTokenLen is the longest token Verify looks at; longer input is refused
// before any decoding. Tokens fleetgate mints are well under 1 KiB.
const MaxTokenLen = 8 << 10

// Verify checks a compact JWS token and returns its claims. In order:
//   - at most MaxTokenLen bytes, three base64url parts (canonical, no padding);
//   - the header is exactly {"alg","kid","typ":"JWT"} (strict JSON, no other
//     members); kid names the current or a previous key (ErrUnknownKey) and
//     alg is that key's algorithm (ErrAlgorithm: so "none", HS256 keyed with
//     the public key, or RS256 under an EC kid are all refused);
//   - the signature verifies with that key (ErrSignature); an ES256
//     signature is the 64-byte JOSE r||s form, never DER;
//   - only then is the payload decoded; type is "app" (ErrTokenType);
//   - a no-duration token is refused (ErrTokenNoDuration): it is for one
//     request to the origin, never presented back;
//   - exp and nbf (and iat) with ClockSkew of tolerance (ErrTokenExpired,
//     ErrTokenNotYetValid);
//   - aud contains aud (ErrAudience) and iss equals iss (ErrIssuer).
//
// Every error wraps one sentinel from errors.go. The returned claims are the
// caller's.
func (ks *KeySet) Verify(token, aud, iss string, now time.Time) (*Claims, error) {
	c, err := ks.verifySignature(token)
	if err != nil {
		return nil, err
	}
	if err := c.check(aud, iss, now); err != nil {
		return nil, err
	}
	return c, nil
}

// verifySignature checks the token's form, header and signature and returns
// its decoded claims, unchecked.
func (ks *KeySet) verifySignature(token string) (*Claims, error) {
	if len(token) > MaxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformedToken, MaxTokenLen)
	}
	// Only the base64url alphabet and the two dots: Go's decoder skips CR
	// and LF even in strict mode, which would let one minted token be
	// presented in many spellings (and defeat byte-exact caches and lists).
	for i := 0; i < len(token); i++ {
		if !isTokenByte(token[i]) {
			return nil, fmt.Errorf("%w: byte %#02x at offset %d", ErrMalformedToken, token[i], i)
		}
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, fmt.Errorf("%w: not three parts", ErrMalformedToken)
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(s, '.') >= 0 || h == "" || p == "" {
		return nil, fmt.Errorf("%w: not three parts", ErrMalformedToken)
	}
	k, err := ks.headerKey(h)
	if err != nil {
		return nil, err
	}
	sig, err := b64Strict.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformedToken, err)
	}
	if !k.verify(token[:len(h)+1+len(p)], sig) {
		return nil, ErrSignature
	}
	payload, err := b64Strict.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformedToken, err)
	}
	c := new(Claims)
	if err := json.Unmarshal(payload, c); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformedToken, err)
	}
	return c, nil
}

// check applies the claim rules shared by Verify and the token cache.
func (c *Claims) check(aud, iss string, now time.Time) error {
	if c.Type != TokenType {
		return fmt.Errorf("%w: %q", ErrTokenType, c.Type)
	}
	if c.NoDuration {
		return ErrTokenNoDuration
	}
	if err := c.checkTime(now); err != nil {
		return err
	}
	if aud == "" || !c.hasAudience(aud) {
		return ErrAudience
	}
	if c.Iss != iss {
		return ErrIssuer
	}
	return nil
}

// checkTime applies exp, nbf and iat with ClockSkew.
func (c *Claims) checkTime(now time.Time) error {
	t := now.Unix()
	if t >= c.Exp+skewSeconds {
		return ErrTokenExpired
	}
	if t < c.Nbf-skewSeconds || t < c.Iat-skewSeconds {
		return ErrTokenNotYetValid
	}
	return nil
}

// headerKey returns the key a token's header segment names. The fast path
// is a byte comparison with the headers fleetgate mints; anything else is
// parsed strictly only to say precisely why it is refused.
func (ks *KeySet) headerKey(h string) (*tokenKey, error) {
	if ks == nil {
		return nil, ErrUnknownKey
	}
	for _, k := range ks.keys {
		if h == k.header {
			return k, nil
		}
	}
	raw, err := b64Strict.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformedToken, err)
	}
	var hdr struct {
		Alg *string `json:"alg"`
		Kid *string `json:"kid"`
		Typ *string `json:"typ"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformedToken, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: header: trailing data", ErrMalformedToken)
	}
	if hdr.Alg == nil || hdr.Kid == nil {
		return nil, fmt.Errorf("%w: header: alg and kid are required", ErrMalformedToken)
	}
	k := ks.key(*hdr.Kid)
	if k == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, *hdr.Kid)
	}
	if *hdr.Alg != k.alg {
		return nil, fmt.Errorf("%w: %q for a %s key", ErrAlgorithm, *hdr.Alg, k.alg)
	}
	if hdr.Typ == nil || *hdr.Typ != "JWT" {
		return nil, fmt.Errorf("%w: header: typ must be \"JWT\"", ErrMalformedToken)
	}
	// A well-formed header for a known key that is not byte-identical to
	// the one we mint (other member order or spacing): we never produce it,
	// so refuse it rather than accept two spellings of one token.
	return nil, fmt.Errorf("%w: header: not in canonical form", ErrMalformedToken)
}

// verify checks sig over input with the key's algorithm.
func (k *tokenKey) verify(input string, sig []byte) bool {
	switch k.alg {
	case AlgES256:
		if len(sig) != 64 {
			return false
		}
		d := sha256.Sum256([]byte(input))
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		// Only the low-s form (s <= N/2) that Mint emits: (r, N-s) is just
		// as valid mathematically, and accepting it would give every token
		// a second spelling.
		if s.Cmp(p256HalfOrder) > 0 {
			return false
		}
		return ecdsa.Verify(k.ec, d[:], r, s)
	case AlgEdDSA:
		if len(sig) != ed25519.SignatureSize {
			return false
		}
		return ed25519.Verify(k.ed, []byte(input), sig)
	case AlgRS256:
		d := sha256.Sum256([]byte(input))
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, d[:], sig) == nil
	}
	return false
}

// isTokenByte reports whether b may appear in a compact JWS: base64url
// characters and the dot.
func isTokenByte(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.'
}

// p256HalfOrder is N/2 of P-256, the ES256 curve: the largest low-s value.
var p256HalfOrder = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

// hasAudience reports whether aud is one of the token's audiences.
func (c *Claims) hasAudience(aud string) bool {
	for _, a := range c.Aud {
		if a == aud {
			return true
		}
	}
	return false
}
