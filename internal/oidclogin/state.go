package oidclogin

import (
	"bytes"
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
	// Cert is the hex SHA-256 of the client certificate the login started
	// with, "" for none: the callback must present the same (why: a login
	// cookie planted from a sibling host then logs no other laptop in).
	Cert string `json:"c"`
	Exp  int64  `json:"e"` // Unix seconds after which the state is refused
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

// Seal returns st sealed, base64url: a cookie value. The JSON inside does
// not escape <, > and & (nothing reads it as HTML), so a return URL full of
// them does not grow sixfold.
func (s *Sealer) Seal(st State) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(st) // strings and an integer: cannot fail
	plain := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
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
