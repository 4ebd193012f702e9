package gateway

// The Access endpoints served on every application domain
// (/cdn-cgi/access/*): get-identity, certs (the JWKS), logout.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

const testIssuer = "https://access.fleet.test"

func certSHA256(d *device) string {
	sum := sha256.Sum256(d.cert.DER)
	return hex.EncodeToString(sum[:])
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
