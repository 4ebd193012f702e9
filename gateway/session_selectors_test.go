package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// setCookieValue returns the name=value of the session cookie a response set.
func setCookieValue(t *testing.T, r *response) string {
	t.Helper()
	c := r.Header.Get("Set-Cookie")
	v, _, _ := strings.Cut(c, ";")
	if !strings.HasPrefix(v, "CF_Authorization=") || v == "CF_Authorization=" {
		t.Fatalf("no session cookie: %q", c)
	}
	return v
}

// ensureFile creates a file the configuration names, once: the edit that
// names it runs again each time the test rewrites the configuration.
func ensureFile(t *testing.T, name, data string) {
	if _, err := os.Stat(name); err == nil {
		return
	}
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRecalledURIRefusesCookie: a device whose SPIFFE URI is added to a
// san_uri list that an exclude uses is refused when it presents only its
// session cookie: the cookie does not carry the URI, and a selector that
// cannot be evaluated must never let a device in. Such an exclude makes the
// cookie alone useless even before the recall: the device must present its
// certificate, which is checked against the newest list on every request.
func TestRecalledURIRefusesCookie(t *testing.T) {
	const domain = "recall.sel.fleet.test"
	h, s, _ := newSelHarness(t, "", func(c *fileConfig, e selEnv) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "sel-recall", PEMFile: "ca-chain.pem", AssociatedHostnames: []string{domain}})
		ensureFile(t, filepath.Join(e.dir, "recalled.txt"), "# recalled devices\n")
		c.Lists = append(c.Lists, listSection{Name: "recalled", Kind: "san_uri", File: filepath.Join(e.dir, "recalled.txt")})
		a := e.app("sel-recall", domain, policySection{Name: "meters", Decision: "allow",
			Include: []selector{{"valid_certificate": true}}, Exclude: []selector{{"list": "recalled"}}})
		a.SessionDuration = "1h"
		c.Applications = append(c.Applications, a)
	})
	r := h.get(t, h.client(s.meter), href(domain, "/"))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("with the certificate: status %d %s", r.StatusCode, r.body)
	}
	cookie := http.Header{"Cookie": {setCookieValue(t, r)}}
	bare := h.client(nil)
	if r := h.do(t, bare, "GET", href(domain, "/before"), cookie, ""); r.StatusCode != http.StatusForbidden ||
		!strings.Contains(r.body, "needs the certificate") {
		t.Fatalf("the cookie alone before the recall: status %d %s, want 403", r.StatusCode, r.body)
	}
	if r := h.get(t, h.client(s.meter), href(domain, "/before")); r.StatusCode != http.StatusOK {
		t.Fatalf("the certificate before the recall: status %d %s", r.StatusCode, r.body)
	}
	h.writeSel("recalled.txt", []byte("spiffe://fleet.test/meter/17\n"))
	if err := h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := h.do(t, bare, "GET", href(domain, "/after"), cookie, ""); r.StatusCode != http.StatusForbidden {
		t.Fatalf("the cookie alone after the recall: status %d %s, want 403", r.StatusCode, r.body)
	}
	if r := h.get(t, h.client(s.meter), href(domain, "/after")); r.StatusCode != http.StatusForbidden {
		t.Fatalf("the certificate after the recall: status %d, want 403", r.StatusCode)
	}
}

// TestServiceTokenNeverASession: a decision made on a service token sets no
// cookie (each request presents the headers); a session token that names a
// service token is refused when presented back; and a session a connection
// minted for a service token never serves a request of the same connection
// that comes without the headers.
func TestServiceTokenNeverASession(t *testing.T) {
	const (
		id     = "11112222333344445555666677778888.access"
		secret = "s3cret-of-the-backend-job"
		domain = "svc-session.sel.fleet.test"
		open   = "svc-open.sel.fleet.test"
	)
	sum := sha256.Sum256([]byte(secret))
	h, s, _ := newSelHarness(t, "", func(c *fileConfig, e selEnv) {
		c.ServiceTokens = append(c.ServiceTokens,
			serviceTokenSection{Name: "backend-job", ClientID: id, ClientSecretSHA256: hex.EncodeToString(sum[:])})
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "sel-svc", PEMFile: "ca-chain.pem", AssociatedHostnames: []string{domain, open}})
		a := e.app("svc-session", domain, policySection{Name: "machines or devices", Decision: "allow",
			Include: []selector{{"service_token": "backend-job"}, {"valid_certificate": true}}})
		a.SessionDuration = "1h"
		b := e.app("svc-open", open, policySection{Name: "everyone", Decision: "allow", Include: []selector{{"everyone": true}}})
		b.SessionDuration = "1h"
		c.Applications = append(c.Applications, a, b)
	})
	creds := http.Header{"Cf-Access-Client-Id": {id}, "Cf-Access-Client-Secret": {secret}}

	// No cookie for a service token.
	r := h.do(t, h.client(nil), "GET", href(domain, "/job"), creds, "")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("service token: status %d %s", r.StatusCode, r.body)
	}
	if c := r.Header.Get("Set-Cookie"); c != "" {
		t.Errorf("a decision made on a service token set a cookie: %q", c)
	}
	if claims := jwtClaims(t, r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")); claims["service_token_name"] != "backend-job" {
		t.Errorf("the origin's token: %v", claims)
	}

	// A session token naming a service token, presented back, is refused:
	// the origin gets a token of its own for the request, not that one.
	snap := h.srv.snap.Load()
	now := time.Now()
	forged, err := snap.keys.Mint(&policy.Claims{Aud: []string{policy.DeriveAUD("svc-open")}, Iss: snap.issuer,
		Type: policy.TokenType, Iat: now.Unix(), Nbf: now.Unix(), Exp: now.Add(time.Hour).Unix(),
		IdentityNonce: strings.Repeat("cd", 16), CommonName: id, ServiceTokenName: "backend-job", Policy: "everyone"})
	if err != nil {
		t.Fatal(err)
	}
	r = h.do(t, h.client(nil), "GET", href(open, "/"), http.Header{"Cookie": {"CF_Authorization=" + forged}}, "")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("everyone: status %d %s", r.StatusCode, r.body)
	}
	if got := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion"); got == forged || jwtClaims(t, got)["service_token_name"] != nil {
		t.Errorf("a presented service-token session went to the origin: %v", jwtClaims(t, got))
	}

	// One connection, with the device's certificate: the headers, then no
	// headers, then the headers again. Only the requests with the headers
	// carry the service identity.
	rc := h.dial(t, domain, s.meter)
	for i, withCreds := range []bool{true, false, true} {
		extra := []string{}
		if withCreds {
			extra = []string{"CF-Access-Client-Id: " + id, "CF-Access-Client-Secret: " + secret}
		}
		rc.send(request("GET", domain, "/"+strconv.Itoa(i), extra...))
		r := rc.read("GET")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d %s", i, r.StatusCode, r.body)
		}
		claims := jwtClaims(t, r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion"))
		if withCreds && (claims["service_token_name"] != "backend-job" || claims["common_name"] != id) {
			t.Errorf("request %d with the headers: token %v", i, claims)
		}
		if !withCreds && (claims["service_token_name"] != nil || claims["common_name"] != "meter-0017") {
			t.Errorf("request %d without the headers carried %v", i, claims)
		}
		if withCreds && r.Header.Get("Set-Cookie") != "" {
			t.Errorf("request %d with the headers set a cookie", i)
		}
	}
}
