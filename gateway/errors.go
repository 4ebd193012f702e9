package gateway

import (
	"errors"

	"github.com/fleetgate/fleetgate/policy"
)

// The gateway's sentinel errors, in one place. Each names where it comes
// from: the device (its input, its reading), the origin, or a token.
var (
	// errBareLF is awaitHeader's refusal of a line that ends in LF without CR.
	errBareLF = errors.New("gateway: bare LF line ending in the request header")
	// errStaleConn is returned instead of writing a request on a pooled origin
	// connection that cannot carry it: the origin has closed it, or an
	// earlier answer left its next bytes unknown (originConn). Nothing was
	// sent, so the request may go out again on another connection, whatever
	// its method.
	errStaleConn = errors.New("gateway: the pooled origin connection cannot carry a request (closed by the origin, or after an answer that leaves its next bytes unknown)")
	// errLoopWouldBlock is a read of the plaintext pipe on the event loop
	// that found nothing buffered: the loop never waits for a device.
	errLoopWouldBlock = errors.New("gateway: no plaintext buffered for a read on the event loop")
	// errInputOverflow is returned by plainPipe.push when a client sends more
	// than the pipe may hold while its current request is being served.
	errInputOverflow = errors.New("gateway: too much pipelined input")
	// errReadTimeout is returned by plainPipe.Read when the worker's deadline
	// passes before bytes arrive (header timeout → 408, idle body → 408).
	errReadTimeout = errors.New("gateway: read timeout")
	// errTokenUntrustedRoot refuses a session token whose certificate chained
	// to a root the application no longer trusts.
	errTokenUntrustedRoot = errors.New("certificate authority no longer trusted for this application")
	// errTokenRevoked refuses a session token whose certificate was revoked
	// after the token was minted.
	errTokenRevoked = errors.New("certificate revoked")
	// errTokenRevocationUnknown refuses a session token whose certificate's
	// issuer has a CRL past its nextUpdate under crl_stale = "reject".
	errTokenRevocationUnknown = errors.New("certificate revocation status unknown (stale CRL)")
	// errTokenServiceToken refuses a presented token minted for a service
	// token: a service token never makes a session, its headers come with
	// every request.
	errTokenServiceToken = errors.New("token minted for a service token")
	// errTokenUnbound refuses a session token bound (cnf) to a certificate
	// the connection did not present.
	errTokenUnbound = errors.New("token bound to another certificate")
)

// tokenReasons are what a refused session token's 403 and access-log line
// say, by the sentinel its error wraps.
var tokenReasons = []struct {
	err  error
	text string
}{
	{policy.ErrMalformedToken, "malformed token"},
	{policy.ErrUnknownKey, "unknown token key"},
	{policy.ErrAlgorithm, "token algorithm not allowed"},
	{policy.ErrSignature, "bad token signature"},
	{policy.ErrTokenExpired, "token expired"},
	{policy.ErrTokenNotYetValid, "token not yet valid"},
	{policy.ErrAudience, "token audience mismatch"},
	{policy.ErrIssuer, "token issuer mismatch"},
	{policy.ErrTokenNoDuration, "no-duration token presented back"},
	{policy.ErrTokenType, "wrong token type"},
	{errTokenUntrustedRoot, errTokenUntrustedRoot.Error()},
	{errTokenRevoked, errTokenRevoked.Error()},
	{errTokenRevocationUnknown, errTokenRevocationUnknown.Error()},
	{errTokenServiceToken, errTokenServiceToken.Error()},
	{errTokenUnbound, errTokenUnbound.Error()},
}

// tokenRefusal says why a session token was refused, mapping the error
// with errors.Is (a wrapped detail, such as a parser's, is not shown).
func tokenRefusal(err error) string {
	for _, r := range tokenReasons {
		if errors.Is(err, r.err) {
			return r.text
		}
	}
	return "token refused"
}
