package gateway

// The Access flow: refusals and their reasons, service auth 401, session
// cookies and the cf-access-token header, no-duration tokens, and the
// /cdn-cgi/access/* endpoints.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

const testIssuer = "https://access.fleet.test"

func certSHA256(d *device) string {
	sum := sha256.Sum256(d.cert.DER)
	return hex.EncodeToString(sum[:])
}

func TestRefusalReasons(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	tests := []struct {
		name   string
		domain string
		dev    *device
		status int
		body   string // the whole body, trimmed; "" to skip
	}{
		{"allowed by common_name", hIoT, p.sensor1, 200, ""},
		{"allowed by valid_certificate", hApp, p.sensor2, 200, ""},
		{"no certificate", hIoT, nil, 403, "no client certificate"},
		{"no certificate on the session app", hApp, nil, 403, "no client certificate"},
		{"certificate from another CA", hApp, p.foreign, 403, "unknown certificate authority"},
		{"certificate from another CA, same CN", hIoT, p.foreign, 403, "unknown certificate authority"},
		{"expired certificate", hIoT, p.expired, 403, "certificate expired"},
		{"CA not associated with the hostname", hApp, p.newFleet, 403, "unknown certificate authority"},
		{"deny policy", hIoT, p.retired, 403, `denied by policy "retired"`},
		{"no policy matched", hIoT, p.sensor2, 403, "no policy matched"},
		{"service auth: wrong device", hSvc, p.sensor2, 401, ""},
		{"service auth: no certificate", hSvc, nil, 401, "no client certificate"},
		{"service auth: allowed", hSvc, p.sensor1, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.get(t, h.client(tc.dev), href(tc.domain, "/data"))
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.status == 200 {
				if e := r.echo(t); e.Path != "/data" {
					t.Fatalf("origin saw %q", e.Path)
				}
				return
			}
			if tc.body != "" && strings.TrimSpace(r.body) != tc.body {
				t.Fatalf("body %q, want %q", r.body, tc.body)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			if r.Header.Get("Set-Cookie") != "" {
				t.Errorf("a refusal set a cookie: %s", r.Header.Get("Set-Cookie"))
			}
			if r.Header.Get("X-Origin") != "" {
				t.Errorf("a refused request reached the origin")
			}
		})
	}
}

// sessionCookieOf returns the CF_Authorization Set-Cookie of a response.
func sessionCookieOf(t testing.TB, r *response) (raw string, c *http.Cookie) {
	t.Helper()
	for _, v := range r.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "CF_Authorization=") {
			c, err := http.ParseSetCookie(v)
			if err != nil {
				t.Fatalf("Set-Cookie %q: %v", v, err)
			}
			return v, c
		}
	}
	t.Fatalf("no CF_Authorization Set-Cookie in %v", r.Header)
	return "", nil
}

func TestSessionCookie(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	start := time.Now()
	first := h.get(t, h.client(p.sensor2), href(hApp, "/login"))
	if first.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", first.StatusCode, first.body)
	}
	raw, ck := sessionCookieOf(t, first)
	for _, attr := range []string{"; Path=/", "; Domain=" + hApp, "; Expires=", "; Max-Age=86400", "; HttpOnly", "; Secure", "; SameSite=Lax"} {
		if !strings.Contains(raw, attr) {
			t.Errorf("Set-Cookie %q lacks %q", raw, attr)
		}
	}
	if ck.Value == "" || !ck.HttpOnly || !ck.Secure || ck.Path != "/" || ck.Domain != hApp || ck.MaxAge != 86400 || ck.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie parsed as %+v", ck)
	}
	if d := ck.Expires.Sub(start.Add(24 * time.Hour)); d < -time.Minute || d > time.Minute {
		t.Errorf("Expires %v is not 24h from now", ck.Expires)
	}
	tok := ck.Value
	if got := first.echo(t).Headers.Get("Cf-Access-Jwt-Assertion"); got != tok {
		t.Errorf("the origin got assertion %.20q…, not the session token", got)
	}

	tampered := tamperPayload(t, tok)
	resigned := tok[:strings.LastIndexByte(tok, '.')+1] + base64.RawURLEncoding.EncodeToString(make([]byte, 64))
	tests := []struct {
		name   string
		domain string
		dev    *device
		header http.Header
		status int
		body   string
	}{
		{"cookie alone, new connection", hApp, nil, http.Header{"Cookie": {"CF_Authorization=" + tok}}, 200, ""},
		{"cookie among others", hApp, nil, http.Header{"Cookie": {"theme=dark; CF_Authorization=" + tok + "; lang=en"}}, 200, ""},
		{"cf-access-token header", hApp, nil, http.Header{"Cf-Access-Token": {tok}}, 200, ""},
		{"cookie with a valid certificate", hApp, p.sensor1, http.Header{"Cookie": {"CF_Authorization=" + tok}}, 200, ""},
		{"cookie with a certificate of another CA", hApp, p.foreign, http.Header{"Cookie": {"CF_Authorization=" + tok}}, 403, "unknown certificate authority"},
		{"cookie with an expired certificate", hApp, p.expired, http.Header{"Cookie": {"CF_Authorization=" + tok}}, 403, "certificate expired"},
		{"header with a certificate of another CA", hApp, p.foreign, http.Header{"Cf-Access-Token": {tok}}, 403, "unknown certificate authority"},
		{"tampered payload", hApp, nil, http.Header{"Cookie": {"CF_Authorization=" + tampered}}, 403, ""},
		{"forged signature", hApp, nil, http.Header{"Cookie": {"CF_Authorization=" + resigned}}, 403, ""},
		{"garbage", hApp, nil, http.Header{"Cookie": {"CF_Authorization=not.a.jwt"}}, 403, ""},
		{"tampered header token", hApp, nil, http.Header{"Cf-Access-Token": {tampered}}, 403, ""},
		{"cookie of another application", hFwd, nil, http.Header{"Cookie": {"CF_Authorization=" + tok}}, 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := h.client(tc.dev) // a new client: a new connection
			r := h.do(t, cl, http.MethodGet, href(tc.domain, "/again"), tc.header, "")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.body != "" && strings.TrimSpace(r.body) != tc.body {
				t.Fatalf("body %q, want %q", r.body, tc.body)
			}
			if tc.status != 200 {
				if r.Header.Get("X-Origin") != "" {
					t.Fatal("a refused request reached the origin")
				}
				return
			}
			e := r.echo(t)
			if tc.dev == nil {
				if got := e.Headers.Get("Cf-Access-Jwt-Assertion"); got != tok {
					t.Errorf("origin got assertion %.20q…, want the session token", got)
				}
				if r.Header.Get("Set-Cookie") != "" {
					t.Errorf("a request admitted by its token got a new cookie")
				}
			}
			if strings.Contains(e.Headers.Get("Cookie"), "CF_Authorization") {
				t.Errorf("the session cookie reached the origin: %q", e.Headers.Get("Cookie"))
			}
			if e.Headers.Get("Cf-Access-Token") != "" {
				t.Errorf("cf-access-token reached the origin")
			}
		})
	}
}

// tamperPayload changes the common_name claim of a token, keeping its
// signature.
func tamperPayload(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["common_name"] = "sensor-9999"
	m["exp"] = float64(time.Now().Add(1000 * time.Hour).Unix())
	b, _ := json.Marshal(m)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestSessionExpires(t *testing.T) {
	var offset atomic.Int64 // the gateway's clock runs this far ahead
	h := newHarness(t, func(p *cfgParams) {
		p.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	r := h.get(t, h.client(h.pki.sensor2), href(hApp, "/"))
	_, ck := sessionCookieOf(t, r)
	hdr := http.Header{"Cookie": {"CF_Authorization=" + ck.Value}}
	if r := h.do(t, h.client(nil), "GET", href(hApp, "/"), hdr, ""); r.StatusCode != 200 {
		t.Fatalf("fresh cookie: status %d: %s", r.StatusCode, r.body)
	}
	offset.Store(int64(25 * time.Hour))
	r = h.do(t, h.client(nil), "GET", href(hApp, "/"), hdr, "")
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("cookie after 25h: status %d, want 403: %s", r.StatusCode, r.body)
	}
	if !strings.Contains(r.body, "expired") {
		t.Errorf("body %q does not say the token expired", r.body)
	}
}

func TestNoDurationToken(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	c := h.dial(t, hIoT, p.sensor1)
	c.send(request("GET", hIoT, "/reading"))
	r := c.read("GET")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	if v := r.Header.Values("Set-Cookie"); len(v) != 0 {
		t.Errorf("no-duration response sets a cookie: %v", v)
	}
	if !r.Close { // net/http folds "Connection: close" into Close
		t.Errorf("no-duration response lacks Connection: close")
	}
	c.expectEOF()

	tok := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	if tok == "" {
		t.Fatal("the origin got no Cf-Access-Jwt-Assertion")
	}
	jwks := h.get(t, h.client(nil), href(hIoT, "/cdn-cgi/access/certs"))
	if jwks.StatusCode != http.StatusOK {
		t.Fatalf("JWKS: status %d: %s", jwks.StatusCode, jwks.body)
	}
	keys, err := policy.ParseJWKS([]byte(jwks.body))
	if err != nil {
		t.Fatalf("ParseJWKS: %v", err)
	}
	claims, err := keys.VerifyAny(tok, policy.DeriveAUD("iot"), testIssuer, time.Now())
	if err != nil {
		t.Fatalf("the assertion does not verify against the JWKS: %v", err)
	}
	if !claims.NoDuration || claims.CommonName != "sensor-0001" || claims.CertSHA256 != certSHA256(p.sensor1) || claims.Policy != "sensor-0001 only" {
		t.Errorf("claims %+v", claims)
	}
	if _, err := keys.VerifyAny(tamperPayload(t, tok), "", "", time.Now()); err == nil {
		t.Error("a tampered assertion verifies")
	}

	// Presented back, it is refused.
	for _, hdr := range []http.Header{
		{"Cookie": {"CF_Authorization=" + tok}},
		{"Cf-Access-Token": {tok}},
	} {
		r := h.do(t, h.client(nil), "GET", href(hIoT, "/"), hdr, "")
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("no-duration token presented back (%v): status %d, want 403", hdr, r.StatusCode)
		}
	}

	// net/http makes a fresh connection (and handshake) for every request.
	cl := h.client(p.sensor1)
	for i := range 3 {
		req, _ := http.NewRequest("GET", href(hIoT, "/"), nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if info.Reused {
					t.Errorf("request %d reused a no-duration connection", i)
				}
			},
		}))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
}

func TestAccessEndpoints(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	login := h.get(t, h.client(p.sensor2), href(hApp, "/"))
	_, ck := sessionCookieOf(t, login)
	cookie := http.Header{"Cookie": {"CF_Authorization=" + ck.Value}}

	t.Run("certs on every domain, no auth", func(t *testing.T) {
		var first string
		for _, d := range harnessDomains {
			r := h.get(t, h.client(nil), href(d, "/cdn-cgi/access/certs"))
			if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s: status %d, type %q: %s", d, r.StatusCode, r.Header.Get("Content-Type"), r.body)
			}
			if _, err := policy.ParseJWKS([]byte(r.body)); err != nil {
				t.Fatalf("%s: %v", d, err)
			}
			if first == "" {
				first = r.body
			} else if r.body != first {
				t.Errorf("%s serves another JWKS", d)
			}
		}
		// The session token verifies with it.
		keys, _ := policy.ParseJWKS([]byte(first))
		if _, err := keys.VerifyAny(ck.Value, policy.DeriveAUD("app"), testIssuer, time.Now()); err != nil {
			t.Errorf("session token: %v", err)
		}
	})

	identity := []struct {
		name   string
		dev    *device
		header http.Header
		status int
		cn     string
		sha    string
		source string
	}{
		{"certificate", p.sensor2, nil, 200, "sensor-0002", certSHA256(p.sensor2), "certificate"},
		{"session cookie", nil, cookie, 200, "sensor-0002", certSHA256(p.sensor2), "token"},
		{"cf-access-token", nil, http.Header{"Cf-Access-Token": {ck.Value}}, 200, "sensor-0002", certSHA256(p.sensor2), "token"},
		{"nothing", nil, nil, 401, "", "", ""},
		{"certificate of another CA", p.foreign, nil, 401, "", "", ""},
		{"tampered cookie", nil, http.Header{"Cookie": {"CF_Authorization=" + tamperPayload(t, ck.Value)}}, 401, "", "", ""},
	}
	for _, tc := range identity {
		t.Run("get-identity: "+tc.name, func(t *testing.T) {
			r := h.do(t, h.client(tc.dev), "GET", href(hApp, "/cdn-cgi/access/get-identity"), tc.header, "")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.status != 200 {
				return
			}
			var id struct {
				CommonName string   `json:"common_name"`
				CertSHA256 string   `json:"cert_sha256"`
				Aud        []string `json:"aud"`
				Iss        string   `json:"iss"`
				Exp        int64    `json:"exp"`
				Source     string   `json:"source"`
			}
			if err := json.Unmarshal([]byte(r.body), &id); err != nil {
				t.Fatalf("%v: %s", err, r.body)
			}
			if id.CommonName != tc.cn || id.CertSHA256 != tc.sha || id.Source != tc.source || id.Iss != testIssuer ||
				len(id.Aud) != 1 || id.Aud[0] != policy.DeriveAUD("app") {
				t.Fatalf("identity %+v", id)
			}
			if tc.source == "token" && id.Exp <= time.Now().Unix() {
				t.Errorf("exp %d is not in the future", id.Exp)
			}
		})
	}

	t.Run("logout", func(t *testing.T) {
		r := h.do(t, h.client(nil), "GET", href(hApp, "/cdn-cgi/access/logout"), cookie, "")
		if r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, r.body)
		}
		raw, c := sessionCookieOf(t, r)
		if c.Value != "" || c.MaxAge >= 0 || !c.Expires.Before(time.Now()) || c.Domain != hApp || c.Path != "/" {
			t.Fatalf("logout cookie %q does not expire the session cookie (%+v)", raw, c)
		}
		for _, attr := range []string{"; Max-Age=0", "; HttpOnly", "; Secure"} {
			if !strings.Contains(raw, attr) {
				t.Errorf("logout Set-Cookie %q lacks %q", raw, attr)
			}
		}
	})

	t.Run("unknown endpoint", func(t *testing.T) {
		r := h.get(t, h.client(p.sensor2), href(hApp, "/cdn-cgi/access/nope"))
		if r.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", r.StatusCode)
		}
	})
}
