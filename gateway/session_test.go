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
