package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTokenVerify checks tokens minted by a running gateway (the binary:
// serve runs until a signal) with `fleetgate token verify`, in process.
func TestTokenVerify(t *testing.T) {
	f := newFleet(t)
	p := f.serve(t)

	// A session token (the cookie) and a no-duration token (what the origin got).
	s, _, resp := get(t, f.client(t, "pki", "sensor-0002"), "https://app.fleet.test/")
	if s != 200 {
		t.Fatalf("app: %d", s)
	}
	var session string
	for _, c := range resp.Cookies() {
		if c.Name == "CF_Authorization" {
			session = c.Value
		}
	}
	s, body, _ := get(t, f.client(t, "pki", "sensor-0001"), "https://devices.fleet.test/")
	if s != 200 {
		t.Fatalf("devices: %d %s", s, body)
	}
	var echo struct{ Assertion string }
	_ = json.Unmarshal([]byte(body), &echo)
	if session == "" || echo.Assertion == "" {
		t.Fatalf("no tokens: cookie %q, assertion %q", session, echo.Assertion)
	}
	_, jwks, _ := get(t, f.client(t, "", ""), "https://devices.fleet.test/cdn-cgi/access/certs")
	jwksFile := filepath.Join(f.dir, "jwks.json")
	if err := os.WriteFile(jwksFile, []byte(jwks), 0o600); err != nil {
		t.Fatal(err)
	}
	// The gateway's part is done: stop it (the JWKS was saved above).
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, jwks)
	}))
	defer jwksSrv.Close()

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"session token, file", []string{"--jwks", jwksFile, session}, 0, `"common_name": "sensor-0002"`},
		{"no-duration token, file", []string{"--jwks", jwksFile, echo.Assertion}, 0, `"no_duration": true`},
		{"session token, URL", []string{"--jwks", jwksSrv.URL + "/cdn-cgi/access/certs", session}, 0, "valid"},
		{"issuer checked", []string{"--jwks", jwksFile, "--iss", "https://access.fleet.test", session}, 0, "valid"},
		{"wrong issuer", []string{"--jwks", jwksFile, "--iss", "https://other.example", session}, 1, "invalid"},
		{"wrong aud", []string{"--jwks", jwksFile, "--aud", strings.Repeat("0", 64), session}, 1, "invalid"},
		{"tampered payload", []string{"--jwks", jwksFile, tamper(t, session)}, 1, "invalid"},
		{"truncated signature", []string{"--jwks", jwksFile, session[:len(session)-4]}, 1, "invalid"},
		{"not a token", []string{"--jwks", jwksFile, "hello"}, 1, "invalid"},
		{"missing JWKS file", []string{"--jwks", filepath.Join(f.dir, "nope.json"), session}, 1, "nope.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runInProcess(t, append([]string{"token", "verify"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", code, tc.code, tc.want, out, errOut)
			}
			if tc.code == 0 && !strings.HasPrefix(out, "valid\n") {
				t.Fatalf("stdout %q does not start with valid", out)
			}
		})
	}
}

// tamper changes a token's claims, keeping its signature.
func tamper(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte("sensor-0002"), []byte("sensor-9999"), 1)
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// TestTokenVerifyJWKSTooLong: a JWKS beyond the size token verify reads is
// refused as too long, not as malformed JSON (what its first MiB looks like).
func TestTokenVerifyJWKSTooLong(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(`{"keys":[`)
	for i := 0; b.Len() <= maxJWKSBytes; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"kty":"oct","kid":"k%d","use":"enc"}`, i)
	}
	b.WriteString(`]}`)
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runInProcess(t, "token", "verify", "--jwks", file, "a.b.c")
	if code != 1 || !strings.Contains(errOut, file+" is larger than") {
		t.Fatalf("exit %d, want 1 and %q\n%s%s", code, file+" is larger than", out, errOut)
	}
}

// TestTokenVerifyRefusesHTTPSDowngrade: an https:// JWKS that redirects to
// http:// is refused, so the keys never come over plain HTTP.
func TestTokenVerifyRefusesHTTPSDowngrade(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"keys":[]}`)
	}))
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
	}))
	t.Cleanup(secure.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pemCert(secure.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runInProcess(t, "token", "verify", "--jwks", secure.URL+"/jwks", "--cacert", ca, "a.b.c")
	if code != 1 || !strings.Contains(errOut, "the JWKS must stay on https") {
		t.Fatalf("exit %d, want 1 and a refused redirect\n%s%s", code, out, errOut)
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
