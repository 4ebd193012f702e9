package oidclogin

// The provider's signing keys, and telling "the keys could not be had"
// (the provider is unavailable: 502) from "the token's signature does not
// verify" (the login is refused: 401).
//
// go-oidc's verifier formats its key set's error with %v, so the error's
// chain is lost on the way out of Verify. keySet wraps go-oidc's remote key
// set and, when the key set failed to fetch the keys, notes that in a
// keysFetch that Finish put in the context of Verify; jwksTransport makes
// every answer of the JWKS endpoint that is not a JWK set a transport error,
// so that a fetch failure is always in the error chain as a *url.Error
// (http.Client's), never only in a message. No error text is matched.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/coreos/go-oidc/v3/oidc"
)

// keysFetchKey is the context key of the keysFetch of one Verify.
type keysFetchKey struct{}

// keysFetch is where keySet notes, for one Verify, that the keys could not
// be fetched.
type keysFetch struct{ err error }

// keySet is go-oidc's remote key set with fetch failures noted apart.
type keySet struct{ remote oidc.KeySet }

// VerifySignature verifies jwt with the remote key set; when that failed
// because the keys could not be fetched, the failure is also noted in the
// context's keysFetch.
func (k keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if err != nil && fetchFailed(err) {
		if f, ok := ctx.Value(keysFetchKey{}).(*keysFetch); ok {
			f.err = err
		}
	}
	return payload, err
}

// fetchFailed reports whether a key set's error is a failure to fetch the
// keys: the HTTP client's error (connection, TLS, timeout, or an answer
// jwksTransport refused), or the verification's own deadline while waiting
// for the fetch.
func fetchFailed(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// jwksTransport refuses, as a transport error, an answer of the JWKS
// endpoint that is not 200 with a JSON object that has a "keys" array (a
// 5xx, a proxy's error page), so that http.Client returns it as a
// *url.Error.
type jwksTransport struct{ base http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (t jwksTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("oidclogin: JWKS %s answered %s", req.URL.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("oidclogin: JWKS %s: %w", req.URL.Redacted(), err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if len(body) > maxAnswerBytes || json.Unmarshal(body, &set) != nil || set.Keys == nil {
		return nil, fmt.Errorf("oidclogin: JWKS %s: the answer is not a JWK set", req.URL.Redacted())
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

// signingAlgs returns the algorithms of algs (the provider's
// id_token_signing_alg_values_supported) that go-oidc verifies, as
// oidc.Provider.Verifier takes them; none: go-oidc's default (RS256).
func signingAlgs(algs []string) []string {
	var out []string
	for _, a := range algs {
		switch a {
		case oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA:
			out = append(out, a)
		}
	}
	return out
}
