package gateway

// Session tokens presented back: which one counts, which keys verify them,
// and how long they live.

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// sessionToken returns a fresh session token for hApp, minted for dev.
func sessionToken(t *testing.T, h *harness, dev *device) string {
	t.Helper()
	rc := h.dial(t, hApp, dev)
	rc.send(request("GET", hApp, "/mint"))
	r := rc.read("GET")
	tok := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	if r.StatusCode != http.StatusOK || tok == "" {
		t.Fatalf("minting a session token: status %d, assertion %q", r.StatusCode, tok)
	}
	return tok
}

// tokenClaims decodes a token's header and payload (no verification).
func tokenClaims(t *testing.T, tok string) (kid string, exp int64) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	var body struct {
		Exp int64 `json:"exp"`
	}
	for i, v := range []any{&hdr, &body} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(raw, v) != nil {
			t.Fatalf("token part %d does not decode: %v", i, err)
		}
	}
	return hdr.Kid, body.Exp
}

// TestTokenKeyRotationReachesOpenConnections: after a reload that replaces
// the signing key, a connection opened before it no longer accepts a token
// signed by the old key, mints with the new key, and serves the new JWKS.
func TestTokenKeyRotationReachesOpenConnections(t *testing.T) {
	h := newHarness(t)
	old := sessionToken(t, h, h.pki.sensor1)
	oldKid, _ := tokenClaims(t, old)

	bare := h.dial(t, hApp, nil)               // no certificate: the cookie is the credential
	withCert := h.dial(t, hApp, h.pki.sensor1) // opened before the reload too
	bare.send(request("GET", hApp, "/before", "Cookie: CF_Authorization="+old))
	if r := bare.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("before the rotation the cookie gets %d: %s", r.StatusCode, r.body)
	}
	withCert.send(request("GET", hApp, "/before"))
	withCert.read("GET")

	key, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	h.writeFile("token.pem", (&pki.Cert{Key: key}).KeyPEM())
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}

	bare.send(request("GET", hApp, "/after", "Cookie: CF_Authorization="+old))
	if r := bare.read("GET"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("a token of the rotated-out key on an open connection: %d, want 403: %s", r.StatusCode, r.body)
	}
	withCert.send(request("GET", hApp, "/after"))
	r := withCert.read("GET")
	tok := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	kid, _ := tokenClaims(t, tok)
	if kid == oldKid {
		t.Fatalf("an open connection still signs with the rotated-out key %s", kid)
	}
	withCert.send(request("GET", hApp, "/cdn-cgi/access/certs"))
	jwks := withCert.read("GET").body
	if !strings.Contains(jwks, kid) || strings.Contains(jwks, oldKid) {
		t.Fatalf("the open connection's JWKS does not serve the new key only: %s", jwks)
	}
}

// TestTokenCandidates: a browser may send several cookies of the name (a
// parent domain's first); the first that verifies counts, then the
// cf-access-token header; at most three are tried.
func TestTokenCandidates(t *testing.T) {
	h := newHarness(t)
	good := sessionToken(t, h, h.pki.sensor1)
	junk := "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"
	for _, tc := range []struct {
		name   string
		extra  []string
		status int
	}{
		{"junk cookie, then the good one", []string{"Cookie: CF_Authorization=" + junk + "; CF_Authorization=" + good}, 200},
		{"two Cookie headers, junk first", []string{"Cookie: CF_Authorization=" + junk, "Cookie: CF_Authorization=" + good}, 200},
		{"junk cookie, good header", []string{"Cookie: CF_Authorization=" + junk, "Cf-Access-Token: " + good}, 200},
		{"three junk cookies before the good one", []string{"Cookie: CF_Authorization=" + junk + "; CF_Authorization=" + junk + "; CF_Authorization=" + junk + "; CF_Authorization=" + good}, 403},
		{"junk only", []string{"Cookie: CF_Authorization=" + junk}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := h.dial(t, hApp, nil)
			rc.send(request("GET", hApp, "/", tc.extra...))
			r := rc.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.status == 200 {
				e := r.echo(t)
				if e.Headers.Get("Cf-Access-Jwt-Assertion") != good {
					t.Errorf("the origin did not get the token that verified")
				}
				if strings.Contains(e.Headers.Get("Cookie"), "CF_Authorization") {
					t.Errorf("a session cookie reached the origin: %q", e.Headers.Get("Cookie"))
				}
			}
		})
	}
}

// TestGetIdentityBadCertificateWithToken: a bad certificate never falls back
// to a token, on get-identity as on every other path.
func TestGetIdentityBadCertificateWithToken(t *testing.T) {
	h := newHarness(t)
	good := sessionToken(t, h, h.pki.sensor1)
	rc := h.dial(t, hApp, h.pki.expired)
	rc.send(request("GET", hApp, "/cdn-cgi/access/get-identity", "Cookie: CF_Authorization="+good))
	r := rc.read("GET")
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Fatalf("get-identity with an expired certificate and a valid cookie: %d %q, want 401 naming the certificate", r.StatusCode, r.body)
	}
}

// TestSessionTokenCappedAtCertificateExpiry: a 24h session for a
// certificate that expires in an hour gets a token and a cookie that end
// with the certificate.
func TestSessionTokenCappedAtCertificateExpiry(t *testing.T) {
	h := newHarness(t)
	o := pki.Device("sensor-0001")
	o.NotBefore, o.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	c := h.pki.inter.MustIssue(o)
	short := &device{name: o.CommonName, cert: c, tls: c.TLSCertificate(h.pki.inter)}

	rc := h.dial(t, hApp, short)
	rc.send(request("GET", hApp, "/"))
	r := rc.read("GET")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	_, exp := tokenClaims(t, r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion"))
	if exp > o.NotAfter.Unix() {
		t.Errorf("token exp %d is after the certificate's NotAfter %d", exp, o.NotAfter.Unix())
	}
	var cookie *http.Cookie
	for _, ck := range r.Cookies() {
		if ck.Name == "CF_Authorization" {
			cookie = ck
		}
	}
	if cookie == nil || cookie.MaxAge <= 0 || cookie.MaxAge > 3600 {
		t.Fatalf("cookie %v: Max-Age must end with the certificate (at most 3600)", cookie)
	}
}

// TestTokenOfRemovedCARefused: once a reload takes a CA away from an
// application, a session token minted for one of that CA's devices no
// longer opens it, on a new connection without a certificate.
func TestTokenOfRemovedCARefused(t *testing.T) {
	h := newHarness(t)
	tok := sessionToken(t, h, h.pki.sensor1)
	use := func() *response {
		rc := h.dial(t, hApp, nil)
		rc.send(request("GET", hApp, "/", "Cookie: CF_Authorization="+tok))
		return rc.read("GET")
	}
	if r := use(); r.StatusCode != http.StatusOK {
		t.Fatalf("before the reload: %d: %s", r.StatusCode, r.body)
	}
	cfg := h.config()
	cfg.trustOnlySecondCA()
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r := use(); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "no longer trusted") {
		t.Fatalf("after the CA was removed: %d %q, want 403 naming the CA", r.StatusCode, r.body)
	}
}

// TestCertificateExpiresDuringConnection: a keep-alive connection outliving
// its certificate is refused on its next request (the verdict is re-judged
// per request, as for revocation), and a token minted from a path whose
// intermediate expires before the leaf ends with the intermediate.
func TestCertificateExpiresDuringConnection(t *testing.T) {
	var offset atomic.Int64 // the gateway's clock runs this far ahead
	h := newHarness(t, func(p *cfgParams) {
		p.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	o := pki.Device("sensor-0001")
	o.NotBefore, o.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	c := h.pki.inter.MustIssue(o)
	dev := &device{name: o.CommonName, cert: c, tls: c.TLSCertificate(h.pki.inter)}

	rc := h.dial(t, hApp, dev)
	rc.send(request("GET", hApp, "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("before expiry: %d: %s", r.StatusCode, r.body)
	}
	offset.Store(int64(2 * time.Hour))
	rc.send(request("GET", hApp, "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "expired") {
		t.Fatalf("after the certificate expired, same connection: %d %q, want 403 expired", r.StatusCode, r.body)
	}
}
