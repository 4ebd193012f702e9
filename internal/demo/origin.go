package demo

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Echo is what the demo origin answers: the request as the origin saw it,
// with the claims of Cf-Access-Jwt-Assertion decoded (not verified: a real
// origin verifies them with the gateway's JWKS).
type Echo struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host"`
	Headers map[string]string `json:"headers"`
	Claims  map[string]any    `json:"claims,omitempty"`
}

// EchoHandler answers every request with its Echo as JSON.
func EchoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := Echo{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Headers: map[string]string{}}
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			e.Headers[k] = strings.Join(r.Header[k], ", ")
		}
		if tok := r.Header.Get("Cf-Access-Jwt-Assertion"); tok != "" {
			e.Claims = decodeClaims(tok)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e)
	})
}

func decodeClaims(tok string) map[string]any {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// StartOrigin serves EchoHandler on addr until the returned server is closed.
func StartOrigin(addr string) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: EchoHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
