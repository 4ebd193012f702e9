package gateway

import (
	"net/http"
	"strings"
	"testing"
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

// TestNoSNIStaysOnItsSite: a connection without SNI lands on the wildcard
// default site; a Host that the wildcard covers but a more specific site
// serves (other policies, possibly other CAs) is refused with 421, not
// judged by the wildcard's policies and forwarded.
func TestNoSNIStaysOnItsSite(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.Wildcard = true })
	rc := h.dialUnverified(t, "", h.pki.sensor1) // no SNI
	rc.send(request("GET", "exact.wild.fleet.test", "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("no SNI, Host of the more specific site: %d, want 421: %s", r.StatusCode, r.body)
	}
	rc.send(request("GET", "other.wild.fleet.test", "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("no SNI, a host of the wildcard site: %d, want 200: %s", r.StatusCode, r.body)
	}
	// With SNI the exact site judges by its own policy: sensor-0001 is not
	// its device.
	direct := h.dialUnverified(t, "exact.wild.fleet.test", h.pki.sensor1) // the server certificate lacks the name
	direct.send(request("GET", "exact.wild.fleet.test", "/"))
	if r := direct.read("GET"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("SNI of the exact site, a device its policy does not admit: %d, want 403", r.StatusCode)
	}
}
