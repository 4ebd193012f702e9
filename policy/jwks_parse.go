package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// MaxJWKSLen bounds the document ParseJWKS reads.
const MaxJWKSLen = 1 << 20

// PublicKeys is a verify-only key set read from a JWKS, as an origin (or
// `fleetgate token verify`) sees the gateway's keys. Safe for concurrent use.
type PublicKeys struct {
	ks *KeySet
}

// ParseJWKS reads a JWKS document such as the one served at
// /cdn-cgi/access/certs. Keys it cannot use for ES256, EdDSA or RS256
// (other kty or crv, use other than "sig") are skipped; other members
// (public_cert, public_certs) are ignored. A supported key that is
// malformed, a duplicate kid, or no usable key at all is an error.
func ParseJWKS(data []byte) (*PublicKeys, error) {
	if len(data) > MaxJWKSLen {
		return nil, fmt.Errorf("policy: JWKS longer than %d bytes", MaxJWKSLen)
	}
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("policy: JWKS: %w", err)
	}
	ks := &KeySet{}
	seen := map[string]bool{}
	for i, j := range doc.Keys {
		k, err := keyFromJWK(j)
		if err != nil {
			return nil, fmt.Errorf("policy: JWKS keys[%d] (kid %q): %w", i, j.Kid, err)
		}
		if k == nil {
			continue
		}
		if seen[k.kid] {
			return nil, fmt.Errorf("policy: JWKS keys[%d]: kid %q listed twice", i, j.Kid)
		}
		seen[k.kid] = true
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("policy: JWKS has no ES256, EdDSA or RS256 signing key")
	}
	ks.jwks = ks.buildJWKS()
	return &PublicKeys{ks: ks}, nil
}

// keyFromJWK returns the verification key of j, nil (no error) for a key of
// a kind fleetgate does not verify with.
func keyFromJWK(j jwk) (*tokenKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, nil
	}
	if j.Kid == "" {
		return nil, errors.New("no kid")
	}
	k := &tokenKey{kid: j.Kid}
	dec := func(name, v string, size int) ([]byte, error) {
		b, err := b64Strict.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		if size > 0 && len(b) != size {
			return nil, fmt.Errorf("%s: %d bytes, want %d", name, len(b), size)
		}
		return b, nil
	}
	switch {
	case j.Kty == "EC" && j.Crv == "P-256":
		x, err := dec("x", j.X, 32)
		if err != nil {
			return nil, err
		}
		y, err := dec("y", j.Y, 32)
		if err != nil {
			return nil, err
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, err
		}
		k.alg, k.ec = AlgES256, pub
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		x, err := dec("x", j.X, ed25519.PublicKeySize)
		if err != nil {
			return nil, err
		}
		k.alg, k.ed = AlgEdDSA, ed25519.PublicKey(x)
	case j.Kty == "RSA":
		n, err := dec("n", j.N, 0)
		if err != nil {
			return nil, err
		}
		e, err := dec("e", j.E, 0)
		if err != nil {
			return nil, err
		}
		N := new(big.Int).SetBytes(n)
		E := new(big.Int).SetBytes(e)
		if N.BitLen() < MinRSABits || N.BitLen() > 16384 {
			return nil, fmt.Errorf("RSA modulus of %d bits", N.BitLen())
		}
		if !E.IsInt64() || E.Int64() < 3 || E.Int64() > 1<<31-1 || E.Bit(0) == 0 {
			return nil, errors.New("bad RSA exponent")
		}
		k.alg, k.rsa = AlgRS256, &rsa.PublicKey{N: N, E: int(E.Int64())}
	default:
		return nil, nil
	}
	if j.Alg != "" && j.Alg != k.alg {
		return nil, fmt.Errorf("alg %q for a %s key", j.Alg, k.alg)
	}
	h, err := json.Marshal(joseHeader{Alg: k.alg, Kid: k.kid, Typ: "JWT"})
	if err != nil {
		return nil, err
	}
	k.header = b64.EncodeToString(h)
	k.jwk, err = publicJWK(k)
	return k, err
}

// KIDs returns the key ids of the usable keys, in document order.
func (pk *PublicKeys) KIDs() []string { return pk.ks.KIDs() }

// VerifyAny verifies token as an origin does: the signature with the key its
// kid names (same form, header and algorithm rules as KeySet.Verify), exp
// and nbf with ClockSkew, aud only when aud is not "", iss only when iss is
// not "". Unlike KeySet.Verify it accepts "no duration" tokens (an origin
// receives exactly those) and does not require type "app".
func (pk *PublicKeys) VerifyAny(token, aud, iss string, now time.Time) (*Claims, error) {
	if pk == nil {
		return nil, ErrUnknownKey
	}
	c, err := pk.ks.verifySignature(token)
	if err != nil {
		return nil, err
	}
	if err := c.checkTime(now); err != nil {
		return nil, err
	}
	if aud != "" && !c.hasAudience(aud) {
		return nil, ErrAudience
	}
	if iss != "" && c.Iss != iss {
		return nil, ErrIssuer
	}
	return c, nil
}
