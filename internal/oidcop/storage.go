package oidcop

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// errNotFound is what the storage answers for an unknown or expired auth
// request, code, token or client.
var errNotFound = errors.New("oidcop: not found")

// accessToken is an issued (opaque) access token, kept for userinfo and
// introspection.
type accessToken struct {
	subject  string
	clientID string
	scopes   []string
	expires  time.Time
}

// session is a single-sign-on session at the provider, named by the
// session cookie.
type session struct {
	subject  string
	authTime time.Time
	expires  time.Time
}

// storage is the in-memory op.Storage: clients and users are fixed at New;
// auth requests, codes, access tokens and sessions live in maps under one
// mutex, and expire.
type storage struct {
	opts    Options
	key     *signingKey
	clients map[string]*opClient
	users   map[string]*User // by subject
	byName  map[string]*User // by subject and by e-mail
	now     func() time.Time

	mu       sync.Mutex
	requests map[string]*authRequest
	codes    map[string]string // code → auth request id
	tokens   map[string]*accessToken
	sessions map[string]*session
}

var (
	_ op.Storage                   = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest = (*storage)(nil)
)

func newStorage(opts Options, key *signingKey, loginURL string) *storage {
	s := &storage{
		opts:     opts,
		key:      key,
		clients:  map[string]*opClient{},
		users:    map[string]*User{},
		byName:   map[string]*User{},
		now:      time.Now,
		requests: map[string]*authRequest{},
		codes:    map[string]string{},
		tokens:   map[string]*accessToken{},
		sessions: map[string]*session{},
	}
	for _, c := range opts.Clients {
		s.clients[c.ID] = &opClient{Client: c, loginURL: loginURL, idTTL: opts.IDTokenLifetime}
	}
	for i := range opts.Users {
		u := &opts.Users[i]
		s.users[u.Subject] = u
		s.byName[u.Subject] = u
		if u.Email != "" {
			s.byName[u.Email] = u
		}
	}
	return s
}

// randomID returns 32 random bytes, base64url: unguessable identifiers for
// auth requests, tokens and sessions.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkPassword returns the user whose subject or e-mail is name when
// password matches; every comparison is constant-time.
func (s *storage) checkPassword(name, password string) (*User, bool) {
	u, ok := s.byName[name]
	if !ok {
		// Compare anyway, so that an unknown name costs the same time.
		subtle.ConstantTimeCompare([]byte(password), []byte(password))
		return nil, false
	}
	return u, subtle.ConstantTimeCompare([]byte(password), []byte(u.Password)) == 1
}

// gcLocked drops what has expired. The caller holds s.mu.
func (s *storage) gcLocked(now time.Time) {
	for id, r := range s.requests {
		if now.Sub(r.created) > DefaultAuthRequestLife {
			delete(s.requests, id)
			if r.code != "" {
				delete(s.codes, r.code)
			}
		}
	}
	for id, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, id)
		}
	}
	for id, ss := range s.sessions {
		if now.After(ss.expires) {
			delete(s.sessions, id)
		}
	}
}

// CreateAuthRequest stores a validated authorization request. It refuses a
// plain PKCE challenge, and a request without one when RequirePKCE is set.
func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	if req.CodeChallenge == "" && s.opts.RequirePKCE {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE is required: send a code_challenge with code_challenge_method S256")
	}
	now := s.now()
	a := &authRequest{id: randomID(), created: now, req: *req}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gcLocked(now)
	s.requests[a.id] = a
	return a, nil
}

// authRequestByID returns the stored request itself, for the login page.
func (s *storage) authRequestByID(id string) (*authRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[id]
	if !ok || s.now().Sub(a.created) > DefaultAuthRequestLife {
		return nil, fmt.Errorf("%w: auth request", errNotFound)
	}
	return a, nil
}

// approve marks the auth request done for subject, binding it to the SSO
// session sessionID.
func (s *storage) approve(id, subject, sessionID string, authTime time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[id]
	if !ok || s.now().Sub(a.created) > DefaultAuthRequestLife {
		return fmt.Errorf("%w: auth request", errNotFound)
	}
	if a.done {
		return errors.New("oidcop: auth request already approved")
	}
	a.subject, a.authTime, a.sessionID, a.done = subject, authTime, sessionID, true
	return nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	return s.authRequestByID(id)
}

func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.codes[code]
	if !ok {
		return nil, fmt.Errorf("%w: code", errNotFound)
	}
	a, ok := s.requests[id]
	if !ok || s.now().Sub(a.created) > DefaultAuthRequestLife {
		return nil, fmt.Errorf("%w: code", errNotFound)
	}
	return a, nil
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[id]
	if !ok {
		return fmt.Errorf("%w: auth request", errNotFound)
	}
	if a.code != "" {
		return errors.New("oidcop: a code was already issued for this auth request")
	}
	a.code = code
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest is called once the code is exchanged: the code can never
// be used again.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.requests[id]; ok && a.code != "" {
		delete(s.codes, a.code)
	}
	delete(s.requests, id)
	return nil
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	var clientID string
	if c, ok := req.(interface{ GetClientID() string }); ok {
		clientID = c.GetClientID()
	}
	t := &accessToken{subject: req.GetSubject(), clientID: clientID, scopes: slices.Clone(req.GetScopes()),
		expires: s.now().Add(DefaultAccessTokenLife)}
	id := randomID()
	s.mu.Lock()
	s.tokens[id] = t
	s.mu.Unlock()
	return id, t.expires, nil
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType().WithDescription("refresh tokens are not issued")
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

// TerminateSession ends every SSO session of userID (known when the logout
// carried an id_token_hint). The session named by the browser's cookie is
// ended by the end_session wrapper in login.go.
func (s *storage) TerminateSession(_ context.Context, userID, _ string) error {
	if userID == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ss := range s.sessions {
		if ss.subject == userID {
			delete(s.sessions, id)
		}
	}
	return nil
}

func (s *storage) RevokeToken(_ context.Context, tokenOrID, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[tokenOrID]
	if !ok {
		return nil // RFC 7009: an unknown token is not an error
	}
	if t.clientID != clientID {
		return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
	}
	delete(s.tokens, tokenOrID)
	return nil
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{s.key.alg}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.key}}, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("%w: client %q", errNotFound, id)
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	c, ok := s.clients[id]
	if !ok || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
		return errors.New("oidcop: unknown client or wrong client secret")
	}
	return nil
}

// SetUserinfoFromScopes is left empty, as the op library asks: the claims
// are set by SetUserinfoFromRequest.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the ID token's claims.
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.fillUserinfo(info, req.GetSubject(), scopes)
}

// liveToken is the access token tokenID, issued to subject and not
// expired, or the error the userinfo and introspection endpoints answer.
func (s *storage) liveToken(tokenID, subject string) (*accessToken, error) {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || t.subject != subject || s.now().After(t.expires) {
		return nil, errors.New("oidcop: access token unknown or expired")
	}
	return t, nil
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	t, err := s.liveToken(tokenID, subject)
	if err != nil {
		return err
	}
	return s.fillUserinfo(info, subject, t.scopes)
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	t, err := s.liveToken(tokenID, subject)
	if err != nil {
		return err
	}
	info := new(oidc.UserInfo)
	if err := s.fillUserinfo(info, subject, t.scopes); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.Active = true
	resp.Scope = t.scopes
	resp.ClientID = t.clientID
	resp.Expiration = oidc.FromTime(t.expires)
	return nil
}

// fillUserinfo sets sub, the profile claims (scope profile), the e-mail
// claims (scope email) and the groups claim (always) of subject.
func (s *storage) fillUserinfo(info *oidc.UserInfo, subject string, scopes []string) error {
	u, ok := s.users[subject]
	if !ok {
		return fmt.Errorf("%w: user %q", errNotFound, subject)
	}
	info.Subject = u.Subject
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeProfile:
			info.Name = u.Name
			info.PreferredUsername = u.Email
		case oidc.ScopeEmail:
			info.Email = u.Email
			info.EmailVerified = oidc.Bool(u.EmailVerified)
		}
	}
	info.AppendClaims(s.opts.GroupsClaim, append([]string{}, u.Groups...))
	return nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("oidcop: JWT client authentication is not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("oidcop: JWT profile grant is not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// newSession starts an SSO session for subject and returns its id.
func (s *storage) newSession(subject string, authTime time.Time) string {
	id := randomID()
	s.mu.Lock()
	s.sessions[id] = &session{subject: subject, authTime: authTime, expires: authTime.Add(DefaultSessionLifetime)}
	s.mu.Unlock()
	return id
}

// sessionByID returns a live SSO session.
func (s *storage) sessionByID(id string) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok || s.now().After(ss.expires) {
		return nil, false
	}
	return ss, true
}

func (s *storage) endSession(id string) {
	s.mu.Lock()
	delete(s.sessions, id)
	s.mu.Unlock()
}
