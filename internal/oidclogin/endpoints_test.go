package oidclogin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDiscoverRefusesPlainEndpoints: an https issuer whose discovery
// names an http:// (or a relative) authorization, token or JWKS endpoint
// is refused: the person's password, the client secret and the code, or
// the signing keys would cross the network in the clear. Nothing is sent
// to the plain endpoint.
func TestDiscoverRefusesPlainEndpoints(t *testing.T) {
	var plainHits, secrets atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		if _, pw, _ := r.BasicAuth(); pw == "the-secret" || r.PostFormValue("client_secret") == "the-secret" {
			secrets.Add(1)
		}
		http.Error(w, "plain", http.StatusBadRequest)
	}))
	defer plain.Close()
	for _, tc := range []struct {
		name  string
		field string // the endpoint that is not https ("": none)
		value func(tls string) string
	}{
		{"all https", "", nil},
		{"http token endpoint", "token_endpoint", func(string) string { return plain.URL + "/token" }},
		{"http authorization endpoint", "authorization_endpoint", func(string) string { return plain.URL + "/authorize" }},
		{"http JWKS", "jwks_uri", func(string) string { return plain.URL + "/jwks" }},
		{"relative authorization endpoint", "authorization_endpoint", func(string) string { return "/authorize" }},
		{"no token endpoint", "token_endpoint", func(string) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plainHits.Store(0)
			secrets.Store(0)
			var srv *httptest.Server
			srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				u := srv.URL
				doc := map[string]any{"issuer": u, "authorization_endpoint": u + "/authorize",
					"token_endpoint": u + "/token", "jwks_uri": u + "/jwks"}
				if tc.field != "" {
					doc[tc.field] = tc.value(u)
				}
				_ = json.NewEncoder(w).Encode(doc)
			}))
			defer srv.Close()
			roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
			p := New(Config{Name: "corp", Issuer: srv.URL, ClientID: "fleetgate", ClientSecret: "the-secret",
				RootCAs: roots, Timeout: 5 * time.Second})
			defer p.Close()
			const redirect = "https://console.fleet.test/cdn-cgi/access/callback"
			_, st, err := p.Start(context.Background(), redirect)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Start: %v, want ErrUnavailable naming %s", err, tc.field)
			}
			st = State{Provider: "corp", State: "s", Nonce: "n", Verifier: "v"}
			_, _ = p.Finish(context.Background(), redirect, "code", "", st)
			if n := plainHits.Load(); n != 0 {
				t.Fatalf("%d requests reached the plain http endpoint, %d with the client secret", n, secrets.Load())
			}
		})
	}
}
