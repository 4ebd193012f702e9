package gateway

// Session cookies: set with the Domain the device asked for, once per
// connection and host, reused on a keep-alive connection, expiring with the
// session, resent after a failed response, and ended by logout.

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSessionTokenReusedOnConnection: requests that follow on one keep-alive
// connection reuse the session token minted for the first (no signature per
// request), and its cookie is set once per connection, not with every
// response; a new connection gets a token of its own.
func TestSessionTokenReusedOnConnection(t *testing.T) {
	h := newHarness(t)
	// token returns the assertion the origin received and the Set-Cookie.
	token := func(r *response) (assertion, cookie string) {
		t.Helper()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", r.StatusCode, r.body)
		}
		assertion = r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
		if assertion == "" {
			t.Fatal("the origin got no assertion")
		}
		return assertion, r.Header.Get("Set-Cookie")
	}
	rc := h.dial(t, hApp, h.pki.sensor1)
	rc.send(request("GET", hApp, "/one"))
	first, cookie := token(rc.read("GET"))
	if !strings.HasPrefix(cookie, "CF_Authorization="+first+";") || !strings.Contains(cookie, "Max-Age=") {
		t.Fatalf("first response's cookie %q does not carry the session token", cookie)
	}
	rc.send(request("GET", hApp, "/two"))
	second, cookie := token(rc.read("GET"))
	if second != first {
		t.Errorf("second request on the connection got a new token")
	}
	if cookie != "" {
		t.Errorf("second response on the connection set the cookie again: %q", cookie)
	}
	other := h.dial(t, hApp, h.pki.sensor1)
	other.send(request("GET", hApp, "/three"))
	third, cookie := token(other.read("GET"))
	if third == first {
		t.Errorf("a new connection reused another connection's token")
	}
	if !strings.HasPrefix(cookie, "CF_Authorization="+third+";") {
		t.Errorf("a new connection's first response has no cookie of its own: %q", cookie)
	}
}

// TestSessionCookieAfterFailedResponse: when the response that carried a
// new session's cookie is replaced by an error (the origin died within the
// body), the cookie goes out with the next response on the connection.
func TestSessionCookieAfterFailedResponse(t *testing.T) {
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	rc := h.dial(t, hApp, h.pki.sensor1)
	rc.send(request("GET", hApp, "/cut?n=10000&k=3000"))
	failed := rc.read("GET")
	if failed.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %.100s", failed.StatusCode, failed.body)
	}
	if c := failed.Header.Get("Set-Cookie"); c != "" {
		t.Fatalf("the 502 carries a cookie: %q", c)
	}
	rc.send(request("GET", hApp, "/"))
	ok := rc.read("GET")
	if ok.StatusCode != http.StatusOK {
		t.Fatalf("status %d after the 502: %.100s", ok.StatusCode, ok.body)
	}
	if c := ok.Header.Get("Set-Cookie"); !strings.HasPrefix(c, "CF_Authorization=") {
		t.Errorf("the first complete response on the connection has no session cookie: %q", c)
	}
}

// TestLogoutEndsConnectionSession: after /cdn-cgi/access/logout, the next
// request on the same connection starts a new session (a new token, and its
// cookie), instead of reusing the token the device just logged out of.
func TestLogoutEndsConnectionSession(t *testing.T) {
	h := newHarness(t)
	rc := h.dial(t, hApp, h.pki.sensor1)
	rc.send(request("GET", hApp, "/before"))
	before := rc.read("GET")
	first := before.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	if first == "" || !strings.HasPrefix(before.Header.Get("Set-Cookie"), "CF_Authorization="+first+";") {
		t.Fatalf("first response: assertion %q, cookie %q", first, before.Header.Get("Set-Cookie"))
	}
	rc.send(request("GET", hApp, "/cdn-cgi/access/logout"))
	if out := rc.read("GET"); out.StatusCode != http.StatusOK || !strings.HasPrefix(out.Header.Get("Set-Cookie"), "CF_Authorization=;") {
		t.Fatalf("logout: status %d, cookie %q", out.StatusCode, out.Header.Get("Set-Cookie"))
	}
	rc.send(request("GET", hApp, "/after"))
	after := rc.read("GET")
	second := after.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	if second == "" || second == first {
		t.Fatalf("after logout the origin got the logged-out token again")
	}
	if !strings.HasPrefix(after.Header.Get("Set-Cookie"), "CF_Authorization="+second+";") {
		t.Fatalf("after logout the new session's cookie is missing: %q", after.Header.Get("Set-Cookie"))
	}
}

// TestSessionCookiePerHostWithoutSNI: a connection without SNI lands on the
// wildcard default site and may reach several of its hosts; each host gets
// the session cookie (its Domain) once, not only the first.
func TestSessionCookiePerHostWithoutSNI(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.Wildcard = true })
	rc := h.dialUnverified(t, "", h.pki.sensor1) // no SNI
	for i, step := range []struct {
		host   string
		cookie bool
	}{
		{"a.wild.fleet.test", true},
		{"a.wild.fleet.test", false},
		{"b.wild.fleet.test", true},
		{"b.wild.fleet.test", false},
	} {
		rc.send(request("GET", step.host, "/"))
		r := rc.read("GET")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("request %d to %s: status %d: %s", i, step.host, r.StatusCode, r.body)
		}
		got := r.Header.Get("Set-Cookie")
		if step.cookie && !strings.Contains(got, "Domain="+step.host) {
			t.Errorf("request %d to %s: cookie %q, want one for that host", i, step.host, got)
		}
		if !step.cookie && got != "" {
			t.Errorf("request %d to %s: the cookie again: %q", i, step.host, got)
		}
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
