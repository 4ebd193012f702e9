package gateway

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
