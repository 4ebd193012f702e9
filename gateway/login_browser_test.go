package gateway

// The login as a person does it: Debian's headless chromium (through
// internal/browsertest) with the laptop's client certificate in its NSS
// database, the console behind the gateway, and internal/oidcop as the
// identity provider, everything on loopback sockets. The test is skipped
// only where chromium is not installed. TestBrowserLogin selects the
// certificate with the machine's AutoSelectCertificateForUrls policy when
// it may write the policy folder (root), and with the profile's
// preferences otherwise; browsertest serialises the browsers that use the
// machine's policy, across test processes.
//
// The console is console.fleet.test and the provider idp.fleet.test, on
// loopback ports: chromium maps *.fleet.test to 127.0.0.1
// (--host-resolver-rules), and the gateway dials the provider's socket
// through the provider's Resolve, as the embedded demo does.

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/browsertest"
	"github.com/fleetgate/fleetgate/internal/oidcop"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

func TestBrowserLogin(t *testing.T) {
	if _, ok := browsertest.Chromium(); !ok {
		browsertest.Start(t, browsertest.Options{}) // skips, saying what to install
	}
	start := time.Now()
	// ops in the group, from fleet.test, on an enrolled laptop (8h sessions).
	f := newOIDCFixture(t, opSetup{Policies: []policySection{{Name: "ops on enrolled laptops", Decision: "allow",
		Include: []selector{{"group": "ops"}}, Require: []selector{{"email_domain": "fleet.test"}, anyFleetDevice}}},
		IdPHost: "idp.fleet.test"})
	op := f.ops[0]
	// The laptop's certificate goes to the console without a dialog by
	// the AutoSelectCertificateForUrls policy, as an operator deploys it,
	// where this process may write the machine's policy folder (root, as
	// in CI); elsewhere by the same setting in the profile's preferences.
	// Only the console's origin: the policy file is read by every chromium
	// on the machine while it exists.
	via := browsertest.ManagedPolicy
	if err := browsertest.ManagedPolicyUsable(); err != nil {
		via = browsertest.ProfilePreferences
		t.Logf("falling back to the profile's preferences: %v", err)
	}
	var policyFile string
	t.Cleanup(func() { // runs after the browser's own cleanup
		if _, err := os.Stat(policyFile); policyFile != "" && !os.IsNotExist(err) {
			t.Errorf("the managed policy %s outlived the test: %v", policyFile, err)
		}
	})
	b := browsertest.Start(t, browsertest.Options{
		ClientCert:    &f.laptop.tls,
		TrustedCAs:    [][]byte{f.h.pki.root.CertPEM(), idpPKI().root.CertPEM()},
		HostRules:     "MAP *.fleet.test 127.0.0.1",
		AutoSelect:    []string{strings.TrimSuffix(f.consoleURL("/"), "/")},
		AutoSelectVia: via,
	})
	policyFile = b.PolicyFile()
	if (via == browsertest.ManagedPolicy) != (policyFile != "") {
		t.Fatalf("auto-selection via %v wrote the policy file %q", via, policyFile)
	}
	t.Logf("the certificate is selected (AutoSelectCertificateForUrls) through the %v %s", via, policyFile)

	// The console sends the browser to the provider's login page.
	b.Navigate(f.consoleURL("/some/path"))
	b.WaitURL(op.issuer + "/login?")
	signInBrowser(b, opOps)

	// Back on the page first asked for, with the origin's answer: the
	// assertion the gateway minted for ops@fleet.test.
	b.WaitURL(f.consoleURL("/some/path"))
	text := b.WaitText(`"path":"/some/path"`)
	if !strings.Contains(text, "Cf-Access-Jwt-Assertion") {
		t.Fatalf("the origin got no assertion: %s", text)
	}
	c := b.Cookie(f.consoleURL("/"), "CF_Authorization")
	if c == nil || !c.HTTPOnly || !c.Secure || strings.TrimPrefix(c.Domain, ".") != hConsole || c.SameSite != "Lax" {
		t.Fatalf("session cookie %+v", c)
	}
	if exp := time.Unix(int64(c.Expires), 0); exp.Before(time.Now().Add(7*time.Hour)) || exp.After(time.Now().Add(9*time.Hour)) {
		t.Fatalf("the session cookie expires at %v, not in 8h", exp)
	}
	// The cookie is the session: another page, no new login.
	b.Navigate(f.consoleURL("/other"))
	b.WaitText(`"path":"/other"`)

	// Logout clears the cookie and signs out at the provider too.
	waitQuiet(t, f.h)
	b.Navigate(f.consoleURL("/cdn-cgi/access/logout"))
	b.WaitURL(op.issuer)
	b.WaitText("Signed out")
	if c := b.Cookie(f.consoleURL("/"), "CF_Authorization"); c != nil {
		t.Fatalf("the session cookie survived the logout: %+v", c)
	}

	// Someone outside the group: the provider's form again, then the
	// gateway's 403 page naming the application, and no session.
	b.Navigate(f.consoleURL("/some/path"))
	b.WaitURL(op.issuer + "/login?")
	signInBrowser(b, opDev)
	b.WaitURL(f.consoleURL(pathCallback))
	text = b.WaitText("Access denied")
	if !strings.Contains(text, "console") || !strings.Contains(text, "Request id") || strings.Contains(text, "some/path") {
		t.Fatalf("403 page: %s", text)
	}
	if c := b.Cookie(f.consoleURL("/"), "CF_Authorization"); c != nil {
		t.Fatalf("a session cookie after the denial: %+v", c)
	}
	// The line is written just after the answer the browser shows: wait for it.
	denied := testkit.Eventually(5*time.Second, func() bool {
		for _, l := range f.h.accessLines(t) {
			if l["email"] == opDev.Email && l["status"] == float64(http.StatusForbidden) {
				return true
			}
		}
		return false
	})
	if !denied {
		t.Fatalf("no access log line of the denial:\n%s", f.h.logs.String())
	}
	t.Logf("browser login, logout and denial in %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserLoginStrictCookie: with cookie_same_site = "strict" the login
// ends on the page first asked for. (A 302 from the callback looped: the
// browser withheld the Strict cookie on the redirect chain that began at
// the provider, ERR_TOO_MANY_REDIRECTS.)
func TestBrowserLoginStrictCookie(t *testing.T) {
	if _, ok := browsertest.Chromium(); !ok {
		browsertest.Start(t, browsertest.Options{})
	}
	f := newOIDCFixture(t, opSetup{SameSite: "strict", IdPHost: "idp.fleet.test"})
	b := browsertest.Start(t, browsertest.Options{
		ClientCert: &f.laptop.tls,
		TrustedCAs: [][]byte{f.h.pki.root.CertPEM(), idpPKI().root.CertPEM()},
		HostRules:  "MAP *.fleet.test 127.0.0.1",
		Timeout:    10 * time.Second,
	})
	b.Navigate(f.consoleURL("/some/path?x=1"))
	b.WaitURL(f.ops[0].issuer + "/login?")
	signInBrowser(b, opOps)
	b.WaitURL(f.consoleURL("/some/path?x=1"))
	text := b.WaitText(`"path":"/some/path?x=1"`)
	if !strings.Contains(text, "Cf-Access-Jwt-Assertion") {
		t.Fatalf("the origin got no assertion: %s", text)
	}
	if c := b.Cookie(f.consoleURL("/"), "CF_Authorization"); c == nil || c.SameSite != "Strict" {
		t.Fatalf("session cookie %+v", c)
	}
	// The page's navigation carried no Referer with the provider's code.
	if strings.Contains(text, "code=") {
		t.Fatalf("the origin saw the callback's URL: %s", text)
	}
}

// waitQuiet waits, at most 5 s, until the gateway has answered no request
// for 500 ms. Chromium fetches a page's /favicon.ico a while after the
// page, with the session cookie; the answer re-mints the session (as every
// allowed request does), so one that arrives after the logout would set
// the session cookie again.
func waitQuiet(t *testing.T, h *harness) {
	t.Helper()
	n, since := len(h.accessLines(t)), time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := len(h.accessLines(t)); m != n {
			n, since = m, time.Now()
		} else if time.Since(since) >= 500*time.Millisecond {
			return
		}
	}
	t.Logf("the browser's requests did not pause for 500ms within 5s")
}

// signInBrowser fills the provider's login form with user and submits it.
func signInBrowser(b *browsertest.Browser, user oidcop.User) {
	b.Fill("#username", user.Email)
	b.Fill("#password", user.Password)
	b.Click("#submit")
}
