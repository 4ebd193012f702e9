package oidclogin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// keysOP is a provider for the classification tests: discovery, a JWKS
// and a token endpoint whose answers the test sets.
type keysOP struct {
	srv    *httptest.Server
	key    *ecdsa.PrivateKey // the key the JWKS publishes
	signer *ecdsa.PrivateKey // the key ID tokens are signed with

	mu          sync.Mutex
	nonce       string
	jwksStatus  int    // 0: 200
	jwksBody    string // "": the key set
	tokenStatus int    // 0: 200 with an ID token
	jwksURI     string // "": the server's /jwks
	issParam    bool   // discovery says authorization responses carry iss
	aud         any    // nil: "fleetgate"
	azp         string // "": no azp claim
	exchanges   int    // codes exchanged at the token endpoint
}

func newKeysOP(t *testing.T) *keysOP {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	op := &keysOP{key: key, signer: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		u := op.srv.URL
		op.mu.Lock()
		jwks, issParam := op.jwksURI, op.issParam
		op.mu.Unlock()
		if jwks == "" {
			jwks = u + "/jwks"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": u, "authorization_endpoint": u + "/authorize",
			"token_endpoint": u + "/token", "jwks_uri": jwks, "id_token_signing_alg_values_supported": []string{"ES256", "HS256"},
			"authorization_response_iss_parameter_supported": issParam})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		op.mu.Lock()
		status, body := op.jwksStatus, op.jwksBody
		op.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
		}
		if body != "" {
			_, _ = w.Write([]byte(body))
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &op.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, _ *http.Request) {
		op.mu.Lock()
		op.exchanges++
		status, nonce, signer, aud, azp := op.tokenStatus, op.nonce, op.signer, op.aud, op.azp
		op.mu.Unlock()
		if aud == nil {
			aud = "fleetgate"
		}
		w.Header().Set("Content-Type", "application/json")
		if status != 0 {
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		}
		c := map[string]any{"iss": op.srv.URL, "aud": aud, "sub": "u1", "nonce": nonce,
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}
		if azp != "" {
			c["azp"] = azp
		}
		claims, _ := json.Marshal(c)
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: signer}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		if err != nil {
			panic(err)
		}
		jws, err := s.Sign(claims)
		if err != nil {
			panic(err)
		}
		raw, _ := jws.CompactSerialize()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "a", "token_type": "Bearer", "id_token": raw})
	})
	op.srv = httptest.NewServer(mux)
	t.Cleanup(op.srv.Close)
	return op
}

func (op *keysOP) set(f func(*keysOP)) {
	op.mu.Lock()
	defer op.mu.Unlock()
	f(op)
}

// login runs Start and Finish against op with a new provider (so no key is
// cached yet).
func (op *keysOP) login(t *testing.T) (Identity, error) {
	t.Helper()
	return op.loginIss(t, "")
}

// loginIss is login with iss as the callback's iss parameter ("": none).
func (op *keysOP) loginIss(t *testing.T, iss string) (Identity, error) {
	t.Helper()
	p := New(Config{Name: "corp", Issuer: op.srv.URL, ClientID: "fleetgate", ClientSecret: "s", Timeout: 5 * time.Second})
	defer p.Close()
	const redirect = "https://console.fleet.test/cdn-cgi/access/callback"
	_, st, err := p.Start(context.Background(), redirect)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	op.set(func(op *keysOP) { op.nonce = st.Nonce })
	return p.Finish(context.Background(), redirect, "code", iss, st)
}

// TestFinishClassifiesProviderFailures: a provider whose keys or token
// endpoint cannot be had is unavailable (ErrUnavailable: the gateway's
// 502), while a token that fails verification, or a refused code, is a
// refused login (ErrLogin: 401).
func TestFinishClassifiesProviderFailures(t *testing.T) {
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  func(*keysOP)
		want error
	}{
		{"JWKS answers 503", func(op *keysOP) { op.jwksStatus = http.StatusServiceUnavailable }, ErrUnavailable},
		{"JWKS answers 404", func(op *keysOP) { op.jwksStatus = http.StatusNotFound }, ErrUnavailable},
		{"JWKS answers an HTML page", func(op *keysOP) { op.jwksBody = "<html>bad gateway</html>" }, ErrUnavailable},
		{"JWKS answers JSON without keys", func(op *keysOP) { op.jwksBody = `{"error":"down"}` }, ErrUnavailable},
		{"token endpoint answers 503", func(op *keysOP) { op.tokenStatus = http.StatusServiceUnavailable }, ErrUnavailable},
		{"token endpoint refuses the code", func(op *keysOP) { op.tokenStatus = http.StatusBadRequest }, ErrLogin},
		{"ID token signed with another key", func(op *keysOP) { op.signer = other }, ErrLogin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := newKeysOP(t)
			op.set(tc.set)
			_, err := op.login(t)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Finish: %v, want %v", err, tc.want)
			}
			if tc.want == ErrLogin && errors.Is(err, ErrUnavailable) {
				t.Fatalf("Finish: %v is both", err)
			}
		})
	}
	t.Run("JWKS unreachable", func(t *testing.T) {
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close() // its port refuses connections now
		op := newKeysOP(t)
		op.set(func(op *keysOP) { op.jwksURI = closed.URL + "/jwks" })
		if _, err := op.login(t); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Finish: %v, want ErrUnavailable", err)
		}
	})
	// After the keys come back, the same provider logs in: nothing of the
	// failure is kept.
	t.Run("recovers", func(t *testing.T) {
		op := newKeysOP(t)
		op.set(func(op *keysOP) { op.jwksStatus = http.StatusServiceUnavailable })
		p := New(Config{Name: "corp", Issuer: op.srv.URL, ClientID: "fleetgate", ClientSecret: "s", Timeout: 5 * time.Second})
		defer p.Close()
		const redirect = "https://console.fleet.test/cdn-cgi/access/callback"
		login := func() (Identity, error) {
			_, st, err := p.Start(context.Background(), redirect)
			if err != nil {
				t.Fatal(err)
			}
			op.set(func(op *keysOP) { op.nonce = st.Nonce })
			return p.Finish(context.Background(), redirect, "code", "", st)
		}
		if id, err := login(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("login while the keys answer 503: %+v, %v; want ErrUnavailable", id, err)
		}
		op.set(func(op *keysOP) { op.jwksStatus = 0 })
		// go-oidc hands a finished fetch's result to a caller that arrives
		// before the fetch's goroutine has let go of it (a busy machine can
		// stretch that moment): such a login shares the 503. Within a
		// moment the next one fetches the keys anew.
		var (
			id  Identity
			err error
		)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if id, err = login(); err == nil || !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || id.Subject != "u1" {
			t.Fatalf("login after the keys came back: %+v, %v; want u1", id, err)
		}
	})
}

// TestFinishChecksTheResponseIssuer: an authorization response that names
// another issuer (RFC 9207), or names none where discovery promised it
// would, is refused before its code reaches the token endpoint; one that
// names this provider, or a provider that does not name itself, logs in.
func TestFinishChecksTheResponseIssuer(t *testing.T) {
	for _, c := range []struct {
		name     string
		issParam bool
		iss      string // "" + "self": the provider's own issuer
		ok       bool
	}{
		{"no iss, not promised", false, "", true},
		{"own iss, not promised", false, "self", true},
		{"own iss, promised", true, "self", true},
		{"another issuer", false, "https://idp.attacker.test", false},
		{"another issuer, promised", true, "https://idp.attacker.test", false},
		{"no iss, promised", true, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			op := newKeysOP(t)
			op.set(func(op *keysOP) { op.issParam = c.issParam })
			iss := c.iss
			if iss == "self" {
				iss = op.srv.URL
			}
			_, err := op.loginIss(t, iss)
			op.mu.Lock()
			exchanged := op.exchanges
			op.mu.Unlock()
			switch {
			case c.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !c.ok && (!errors.Is(err, ErrLogin) || !strings.Contains(err.Error(), "iss")):
				t.Fatalf("err = %v, want a refused login naming the issuer", err)
			case !c.ok && exchanged != 0:
				t.Fatalf("the code was exchanged %d times: a mixed-up response's code went to the token endpoint", exchanged)
			}
		})
	}
}

// TestFinishChecksTheAuthorizedParty: an ID token whose azp names another
// client, or that has several audiences and no azp, was not issued to this
// client's login, even though this client is in its audience.
func TestFinishChecksTheAuthorizedParty(t *testing.T) {
	for _, c := range []struct {
		name string
		aud  any
		azp  string
		ok   bool
	}{
		{"one audience", "fleetgate", "", true},
		{"azp is this client", []string{"fleetgate", "api"}, "fleetgate", true},
		{"azp is another client", "fleetgate", "other-app", false},
		{"several audiences, azp another", []string{"other-app", "fleetgate"}, "other-app", false},
		{"several audiences, no azp", []string{"other-app", "fleetgate"}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			op := newKeysOP(t)
			op.set(func(op *keysOP) { op.aud, op.azp = c.aud, c.azp })
			_, err := op.login(t)
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && (!errors.Is(err, ErrLogin) || !strings.Contains(err.Error(), "authorized party")) {
				t.Fatalf("err = %v, want a refused login naming the authorized party", err)
			}
		})
	}
}
