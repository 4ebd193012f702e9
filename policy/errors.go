package policy

import "errors"

// Sentinel errors. The gateway maps them with errors.Is; every error this
// package returns for a token wraps exactly one of the Err*Token ones or
// ErrTokenExpired / ErrTokenNotYetValid / ErrTokenNoDuration.
var (
	// ErrUnknownSelector: a rule uses a key no selector is registered under.
	ErrUnknownSelector = errors.New("policy: unknown selector")
	// ErrSelectorValue: a selector's value has the wrong type or range.
	ErrSelectorValue = errors.New("policy: bad selector value")

	// ErrUnsupportedKey: NewKeySet got a key that is not P-256, Ed25519 or
	// RSA >= 2048 bits.
	ErrUnsupportedKey = errors.New("policy: unsupported signing key")

	// ErrMalformedToken: not three base64url parts, bad JSON, too long, or
	// a header that is not exactly {alg, kid, typ}.
	ErrMalformedToken = errors.New("policy: malformed token")
	// ErrUnknownKey: the header's kid names neither the current nor a
	// previous key.
	ErrUnknownKey = errors.New("policy: unknown token key")
	// ErrAlgorithm: the header's alg is not the one of the key named by kid
	// (this covers "none" and HMAC algorithms).
	ErrAlgorithm = errors.New("policy: token algorithm not allowed")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("policy: bad token signature")
	// ErrTokenExpired: now is past exp (plus the skew).
	ErrTokenExpired = errors.New("policy: token expired")
	// ErrTokenNotYetValid: now is before nbf or iat (minus the skew).
	ErrTokenNotYetValid = errors.New("policy: token not yet valid")
	// ErrAudience: aud does not contain this application's tag.
	ErrAudience = errors.New("policy: token audience mismatch")
	// ErrIssuer: iss is not this gateway's issuer.
	ErrIssuer = errors.New("policy: token issuer mismatch")
	// ErrTokenNoDuration: a "no duration" token was presented back; such a
	// token is for the origin only, one request, never a session.
	ErrTokenNoDuration = errors.New("policy: no-duration token presented back")
	// ErrTokenType: the type claim is not "app".
	ErrTokenType = errors.New("policy: wrong token type")
)
