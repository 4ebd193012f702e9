package gateway

// fixtureOP is a TEST FIXTURE: a minimal OpenID Provider for the login
// tests, on go-jose, that the tests can make misbehave (a wrong nonce,
// another issuer or audience, an expired ID token, a JWKS that answers
// 503, a provider that is down). It serves discovery, JWKS, /authorize
// (auto-approves its one user, checks the PKCE challenge method) and
// /token (a single-use code, the client secret, the PKCE verifier), and an
// end_session_endpoint.
//
// It stays beside the certified OP of internal/oidcop (login_oidcop_test.go)
// rather than being replaced by it: a certified OP never issues an ID token
// with a wrong nonce, another issuer or another audience, nor serves a
// broken JWKS, so those failures can only be produced here. Everything an
// honest provider does (the flow, its form, replayed and forged states, an
// expired ID token, a provider that goes down) is tested against
// internal/oidcop too. The helpers that point an application at an issuer
// (loginSetup) work with either.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// opUser is who the fixture logs in.
type opUser struct {
	Sub, Email string
	Groups     []string
	Verified   bool
}

// fixtureOP is the test provider; its fields change how it answers.
type fixtureOP struct {
	srv      *httptest.Server
	key      *ecdsa.PrivateKey
	clientID string
	secret   string

	mu    sync.Mutex
	user  opUser
	codes map[string]opCode
	// Misbehaviour, for the failure tests.
	nonce    string        // when set, the ID token carries this nonce instead
	issuer   string        // when set, the ID token's iss
	audience string        // when set, the ID token's aud
	ttl      time.Duration // the ID token's lifetime (negative: expired)
	jwksDown int           // when set, /jwks answers this status

	authorizations atomic.Int32 // /authorize requests
	tokenRequests  atomic.Int32
}

type opCode struct {
	nonce, challenge, redirect string
}

// startFixtureOP starts the provider on loopback TLS.
func startFixtureOP(t testing.TB, clientID, secret string, user opUser) *fixtureOP {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	op := &fixtureOP{key: key, clientID: clientID, secret: secret, user: user, codes: map[string]opCode{}, ttl: 5 * time.Minute}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", op.discovery)
	mux.HandleFunc("/jwks", op.jwks)
	mux.HandleFunc("/authorize", op.authorize)
	mux.HandleFunc("/token", op.token)
	op.srv = httptest.NewTLSServer(mux)
	t.Cleanup(op.srv.Close)
	return op
}

// Issuer is the provider's issuer URL.
func (op *fixtureOP) Issuer() string { return op.srv.URL }

// CAPEM is the PEM of the provider's TLS certificate: an origin_ca_file.
func (op *fixtureOP) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: op.srv.Certificate().Raw})
}

func (op *fixtureOP) set(f func(*fixtureOP)) {
	op.mu.Lock()
	defer op.mu.Unlock()
	f(op)
}

func (op *fixtureOP) discovery(w http.ResponseWriter, _ *http.Request) {
	u := op.srv.URL
	writeJSON(w, map[string]any{
		"issuer": u, "authorization_endpoint": u + "/authorize", "token_endpoint": u + "/token",
		"jwks_uri": u + "/jwks", "end_session_endpoint": u + "/logout",
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

func (op *fixtureOP) jwks(w http.ResponseWriter, _ *http.Request) {
	op.mu.Lock()
	down := op.jwksDown
	op.mu.Unlock()
	if down != 0 {
		http.Error(w, "keys unavailable", down)
		return
	}
	writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &op.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
}

func (op *fixtureOP) authorize(w http.ResponseWriter, r *http.Request) {
	op.authorizations.Add(1)
	q := r.URL.Query()
	if q.Get("client_id") != op.clientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	op.set(func(op *fixtureOP) {
		op.codes[code] = opCode{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	})
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	v := back.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (op *fixtureOP) token(w http.ResponseWriter, r *http.Request) {
	op.tokenRequests.Add(1)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	} else {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	}
	op.mu.Lock()
	c, found := op.codes[r.PostForm.Get("code")]
	delete(op.codes, r.PostForm.Get("code")) // single use
	op.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case id != op.clientID || subtle.ConstantTimeCompare([]byte(secret), []byte(op.secret)) != 1:
		opError(w, http.StatusUnauthorized, "invalid_client")
	case !found || c.redirect != r.PostForm.Get("redirect_uri"):
		opError(w, http.StatusBadRequest, "invalid_grant")
	case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
		opError(w, http.StatusBadRequest, "invalid_grant")
	default:
		writeJSON(w, map[string]any{"access_token": rand.Text(), "token_type": "Bearer", "expires_in": 300, "id_token": op.idToken(c.nonce)})
	}
}

// idToken signs the ID token for the login whose nonce is nonce, with the
// misbehaviour set.
func (op *fixtureOP) idToken(nonce string) string {
	op.mu.Lock()
	defer op.mu.Unlock()
	iss, aud := op.srv.URL, op.clientID
	if op.issuer != "" {
		iss = op.issuer
	}
	if op.audience != "" {
		aud = op.audience
	}
	if op.nonce != "" {
		nonce = op.nonce
	}
	now := time.Now()
	claims := map[string]any{"iss": iss, "sub": op.user.Sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(op.ttl).Unix(),
		"nonce": nonce, "email": op.user.Email, "email_verified": op.user.Verified, "groups": op.user.Groups}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: op.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		panic(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	s, _ := jws.CompactSerialize()
	return s
}

func opError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
