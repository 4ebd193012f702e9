package policy

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strconv"
	"time"
)

// The TOML keys of the service-token selectors (HTTP applications only).
const (
	keyServiceToken         = "service_token"
	keyAnyValidServiceToken = "any_valid_service_token"
)

// Reasons of a refused service token, for the access log and the 403 body.
// They never name the client id or the secret.
const (
	ReasonServiceTokenInvalid = "invalid service token"
	ReasonServiceTokenExpired = "service token expired"
)

// ServiceToken is one [[service_tokens]] entry: Access's credential for
// machines without certificates, presented in the CF-Access-Client-Id and
// CF-Access-Client-Secret request headers.
type ServiceToken struct {
	Name     string
	ClientID string
	// SecretSHA256 is the SHA-256 of the client secret; the secret itself
	// is never stored.
	SecretSHA256 [sha256.Size]byte
	// Expires is when the token stops working; zero never.
	Expires time.Time
}

// ServiceTokens are the configured service tokens, looked up by client id.
type ServiceTokens struct {
	byID map[string]*ServiceToken
}

// NewServiceTokens indexes tokens by client id; a duplicate id is an error
// (the configuration refuses it before).
func NewServiceTokens(tokens []ServiceToken) (*ServiceTokens, error) {
	s := &ServiceTokens{byID: make(map[string]*ServiceToken, len(tokens))}
	for i := range tokens {
		t := tokens[i]
		if _, dup := s.byID[t.ClientID]; dup {
			return nil, fmt.Errorf("policy: service token %q: client id used twice", t.Name)
		}
		s.byID[t.ClientID] = &t
	}
	return s, nil
}

// Len returns the number of tokens.
func (s *ServiceTokens) Len() int {
	if s == nil {
		return 0
	}
	return len(s.byID)
}

// Check returns the token whose client id is id when secret is its secret
// and it has not expired at now; otherwise nil and the reason to refuse
// (ReasonServiceTokenInvalid or ReasonServiceTokenExpired). The secret's
// SHA-256 is compared in constant time; an unknown id costs the same hash,
// so the answer's timing does not tell ids apart.
func (s *ServiceTokens) Check(id, secret []byte, now time.Time) (*ServiceToken, string) {
	sum := sha256.Sum256(secret)
	var t *ServiceToken
	if s != nil {
		t = s.byID[string(id)]
	}
	want := [sha256.Size]byte{}
	if t != nil {
		want = t.SecretSHA256
	}
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || t == nil {
		return nil, ReasonServiceTokenInvalid
	}
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return nil, ReasonServiceTokenExpired
	}
	return t, ""
}

// serviceToken is { service_token = "backend-job" }: the request presented
// that service token, valid.
type serviceToken string

func parseServiceToken(v any, env *Env) (Selector, error) {
	if env.NoHTTP {
		return nil, errHTTPOnly
	}
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	if !env.ServiceTokens[s] {
		return nil, fmt.Errorf("no [[service_tokens]] entry is named %q", s)
	}
	return serviceToken(s), nil
}

var errHTTPOnly = fmt.Errorf("only for http applications: a service token travels in HTTP headers")

func (serviceToken) Key() string            { return keyServiceToken }
func (serviceToken) NeedsCertificate() bool { return false }
func (t serviceToken) String() string       { return keyServiceToken + " = " + strconv.Quote(string(t)) }
func (t serviceToken) Match(in *Input) bool {
	return in.ServiceToken != nil && in.ServiceToken.Name == string(t)
}

// anyValidServiceToken is { any_valid_service_token = true }.
type anyValidServiceToken struct{}

func parseAnyValidServiceToken(v any, env *Env) (Selector, error) {
	if env.NoHTTP {
		return nil, errHTTPOnly
	}
	if err := parseTrue(v); err != nil {
		return nil, err
	}
	return anyValidServiceToken{}, nil
}

func (anyValidServiceToken) Key() string            { return keyAnyValidServiceToken }
func (anyValidServiceToken) NeedsCertificate() bool { return false }
func (anyValidServiceToken) String() string         { return keyAnyValidServiceToken + " = true" }
func (anyValidServiceToken) Match(in *Input) bool   { return in.ServiceToken != nil }
