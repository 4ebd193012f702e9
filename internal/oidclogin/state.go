package oidclogin

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// State is what a browser carries, sealed, between the redirect to the
// provider and the callback.
type State struct {
	Provider string `json:"p"` // the provider's name
	State    string `json:"s"` // the OAuth 2.0 state sent to the provider
	Nonce    string `json:"n"` // the OpenID Connect nonce the ID token must carry
	Verifier string `json:"v"` // the PKCE code verifier
	Return   string `json:"r"` // the path (and query) first asked for
	Host     string `json:"h"` // the application host the login started on
	Exp      int64  `json:"e"` // Unix seconds after which the state is refused
}

// ErrState refuses a login state cookie that is missing, forged, expired,
// or for another host or state.
var ErrState = errors.New("oidclogin: login state invalid or expired")

// stateAAD binds a sealed state to its use.
const stateAAD = "fleetgate login state v1"

// Sealer seals login states with AES-256-GCM: confidential (the PKCE
// verifier and nonce never show in the browser) and authenticated (a
// changed byte fails to open).
type Sealer struct{ aead cipher.AEAD }

// NewSealer derives the sealing key from secret with HKDF-SHA256, so that
// gateways sharing the token signing key (secret) open each other's login
// states; secret must be at least 32 bytes.
func NewSealer(secret []byte) (*Sealer, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("oidclogin: sealing secret of %d bytes, want at least 32", len(secret))
	}
	key, err := hkdf.Key(sha256.New, secret, nil, stateAAD, 32)
	if err != nil {
		return nil, fmt.Errorf("oidclogin: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("oidclogin: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("oidclogin: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns st sealed, base64url: a cookie value.
func (s *Sealer) Seal(st State) string {
	plain, _ := json.Marshal(st) // strings and an integer: cannot fail
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(stateAAD)))
}

// Open returns the state sealed in v, refusing one that does not open or
// expired before now.
func (s *Sealer) Open(v string, now time.Time) (State, error) {
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return State{}, ErrState
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(stateAAD))
	if err != nil {
		return State{}, ErrState
	}
	var st State
	if json.Unmarshal(plain, &st) != nil || now.Unix() > st.Exp {
		return State{}, ErrState
	}
	return st, nil
}
