package oidclogin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDiscoverBoundsTheDocument: a discovery answer far larger than any
// provider's (a misdirected issuer, a provider gone wrong) is refused once
// the bound is read, instead of being read whole into memory for as long
// as the provider's timeout lets it stream.
func TestDiscoverBoundsTheDocument(t *testing.T) {
	for _, tc := range []struct {
		name    string
		endless bool
	}{
		{"a document padded to 8 MiB", false},
		{"an answer that never ends (6 MB/s)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				u := srv.URL
				doc, _ := json.Marshal(map[string]any{"issuer": u, "authorization_endpoint": u + "/authorize",
					"token_endpoint": u + "/token", "jwks_uri": u + "/jwks"})
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(doc)
				pad := []byte(strings.Repeat(" ", 64<<10)) // JSON allows trailing white space
				for i := 0; i < 128; i++ {
					if _, err := w.Write(pad); err != nil {
						return
					}
					if tc.endless { // a steady trickle, for as long as the client reads
						i = 0
						time.Sleep(10 * time.Millisecond)
					}
				}
			}))
			defer srv.Close()
			p := New(Config{Name: "corp", Issuer: srv.URL, ClientID: "fleetgate", Timeout: 5 * time.Second})
			defer p.Close()
			start := time.Now()
			_, _, err := p.Start(context.Background(), "https://console.fleet.test/cdn-cgi/access/callback")
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Start: %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("Start took %v: the answer was read until the provider's timeout", d)
			}
		})
	}
}
