package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// TestSessionTokenReusedOnConnection: requests that follow on one keep-alive
// connection reuse the session token minted for the first (no signature per
// request); a new connection gets a token of its own.
func TestSessionTokenReusedOnConnection(t *testing.T) {
	h := newHarness(t)
	token := func(r *response) string {
		t.Helper()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", r.StatusCode, r.body)
		}
		c := r.Header.Get("Set-Cookie")
		if !strings.HasPrefix(c, "CF_Authorization=") || !strings.Contains(c, "Max-Age=") {
			t.Fatalf("no session cookie: %q", c)
		}
		return strings.TrimPrefix(strings.SplitN(c, ";", 2)[0], "CF_Authorization=")
	}
	rc := h.dial(t, hApp, h.pki.sensor1)
	rc.send(request("GET", hApp, "/one"))
	first := token(rc.read("GET"))
	rc.send(request("GET", hApp, "/two"))
	if second := token(rc.read("GET")); second != first {
		t.Errorf("second request on the connection got a new token")
	}
	other := h.dial(t, hApp, h.pki.sensor1)
	other.send(request("GET", hApp, "/three"))
	if third := token(other.read("GET")); third == first {
		t.Errorf("a new connection reused another connection's token")
	}
}
