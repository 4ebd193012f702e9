package oidcop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/url"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// opClient adapts a Client to op.Client: a confidential web client using the
// authorization code flow, authenticated with its secret.
type opClient struct {
	Client
	loginURL string
	idTTL    time.Duration
}

var _ op.Client = (*opClient)(nil)

func (c *opClient) GetID() string                    { return c.ID }
func (c *opClient) RedirectURIs() []string           { return c.Client.RedirectURIs }
func (c *opClient) PostLogoutRedirectURIs() []string { return c.Client.PostLogoutRedirectURIs }
func (c *opClient) ApplicationType() op.ApplicationType {
	return op.ApplicationTypeWeb
}
func (c *opClient) AuthMethod() oidc.AuthMethod { return oidc.AuthMethodBasic }
func (c *opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *opClient) GrantTypes() []oidc.GrantType { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *opClient) LoginURL(id string) string {
	return c.loginURL + "?authRequestID=" + url.QueryEscape(id)
}
func (c *opClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *opClient) IDTokenLifetime() time.Duration      { return c.idTTL }
func (c *opClient) DevMode() bool                       { return false }
func (c *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) IsScopeAllowed(string) bool { return false }

// IDTokenUserinfoClaimsAssertion is true so that the profile and email
// claims are in the ID token itself, which is all a gateway reads.
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *opClient) ClockSkew() time.Duration             { return 0 }

// authRequest is one authorization request, from /authorize to the code
// exchange. The op library reads it through op.AuthRequest.
type authRequest struct {
	id        string
	created   time.Time
	req       oidc.AuthRequest
	subject   string
	authTime  time.Time
	done      bool
	code      string
	sessionID string
}

var _ op.AuthRequest = (*authRequest)(nil)

func (a *authRequest) GetID() string         { return a.id }
func (a *authRequest) GetACR() string        { return "" }
func (a *authRequest) GetAMR() []string      { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string { return []string{a.req.ClientID} }
func (a *authRequest) GetAuthTime() time.Time {
	return a.authTime
}
func (a *authRequest) GetClientID() string { return a.req.ClientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.req.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.req.CodeChallenge, Method: a.req.CodeChallengeMethod}
}
func (a *authRequest) GetNonce() string                   { return a.req.Nonce }
func (a *authRequest) GetRedirectURI() string             { return a.req.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.req.ResponseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.req.ResponseMode }
func (a *authRequest) GetScopes() []string                { return a.req.Scopes }
func (a *authRequest) GetState() string                   { return a.req.State }
func (a *authRequest) GetSubject() string                 { return a.subject }
func (a *authRequest) Done() bool                         { return a.done }

// forcesLogin reports whether the request asks for a fresh login that a
// session authenticated at authTime must not answer: prompt=login, or a
// max_age that the session is older than (max_age=0 included).
func (a *authRequest) forcesLogin(authTime, now time.Time) bool {
	for _, p := range a.req.Prompt {
		if p == oidc.PromptLogin {
			return true
		}
	}
	return a.req.MaxAge != nil && now.Sub(authTime) >= time.Duration(*a.req.MaxAge)*time.Second
}

// promptNone reports whether the request forbids any interaction.
func (a *authRequest) promptNone() bool {
	for _, p := range a.req.Prompt {
		if p == oidc.PromptNone {
			return true
		}
	}
	return false
}

// signingKey is the provider's one key; it serves as op.SigningKey for
// signing and as op.Key for the JWKS.
type signingKey struct {
	id     string
	alg    jose.SignatureAlgorithm
	signer crypto.Signer
}

func newSigningKey(k crypto.Signer) (*signingKey, error) {
	if k == nil {
		var err error
		if k, err = rsa.GenerateKey(rand.Reader, minRSAKeyBits); err != nil {
			return nil, fmt.Errorf("oidcop: generate signing key: %w", err)
		}
	}
	alg := jose.RS256
	if _, ok := k.(*ecdsa.PrivateKey); ok {
		alg = jose.ES256
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return nil, fmt.Errorf("oidcop: signing key: %w", err)
	}
	sum := sha256.Sum256(der)
	return &signingKey{id: base64.RawURLEncoding.EncodeToString(sum[:12]), alg: alg, signer: k}, nil
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k *signingKey) Key() any                                    { return k.signer }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is the JWKS entry of a signingKey.
type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return p.k.alg }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.k.signer.Public() }
