package browsertest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// testPKI is a root, an intermediate that issues the laptop certificate,
// and a server certificate for portal.fleet.test.
type testPKI struct {
	root, inter, server, laptop *pki.Cert
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	root := pki.MustRoot(pki.Root("browsertest Root"))
	inter := root.MustIssue(pki.Intermediate("browsertest Laptops"))
	return testPKI{
		root:   root,
		inter:  inter,
		server: root.MustIssue(pki.Server("portal.fleet.test")),
		laptop: inter.MustIssue(pki.Device("laptop-0042")),
	}
}

// portal is a TLS server on a loopback port with pages for the browser:
// "/" echoes the client certificate's CN and sets an HttpOnly cookie,
// "/form" holds a form that "/submit" answers with a cookie and a
// redirect to "/done".
type portal struct {
	url    string          // https://portal.fleet.test:PORT
	errors *testkit.Buffer // the server's log: refused handshakes
}

func startPortal(t *testing.T, p testPKI, clientAuth tls.ClientAuthType) portal {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		cn := "none"
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		http.SetCookie(w, &http.Cookie{Name: "portal_session", Value: "cn-" + cn, Path: "/",
			Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		fmt.Fprintf(w, "<!doctype html><title>portal</title><p>client certificate: %s</p>", html.EscapeString(cn))
	})
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>form</title><form method=post action=/submit>`+
			`<input id=user name=user><input id=pass name=pass type=password>`+
			`<button id=go type=submit>log in</button></form>`)
	})
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("pass") != "correct horse" {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		user := r.PostForm.Get("user")
		http.SetCookie(w, &http.Cookie{Name: "who", Value: user, Path: "/", Secure: true})
		http.Redirect(w, r, "/done", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		who, err := r.Cookie("who")
		if err != nil {
			http.Error(w, "no cookie", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "<!doctype html><p>welcome %s</p>", html.EscapeString(who.Value))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := &testkit.Buffer{}
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{p.server.TLSCertificate()},
			ClientCAs:    pki.Pool(p.root),
			ClientAuth:   clientAuth,
			MinVersion:   tls.VersionTLS12,
		},
		ErrorLog:          log.New(errs, "", 0),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return portal{url: fmt.Sprintf("https://portal.fleet.test:%d", ln.Addr().(*net.TCPAddr).Port), errors: errs}
}

// noLeftovers checks, after the browser has closed, that none of its
// processes runs on.
func noLeftovers(t *testing.T, b *Browser) {
	t.Helper()
	b.Close()
	if pids := processesUsing(b.home); len(pids) > 0 {
		t.Errorf("chromium processes %v still run after Close", pids)
	}
}

// TestClientCertificate drives chromium to a server that requires a client
// certificate: it presents the laptop's (chain through an intermediate),
// trusts the server through the imported CA, fills and posts a form, and
// keeps the server's cookies.
func TestClientCertificate(t *testing.T) {
	p := newTestPKI(t)
	srv := startPortal(t, p, tls.RequireAndVerifyClientCert)
	laptop := p.laptop.TLSCertificate(p.inter)
	b := Start(t, Options{
		ClientCert: &laptop,
		TrustedCAs: [][]byte{p.root.CertPEM()},
		HostRules:  "MAP *.fleet.test 127.0.0.1",
		AutoSelect: []string{"https://[*.]fleet.test"},
	})

	b.Navigate(srv.url + "/")
	if got := b.Text(); !strings.Contains(got, "client certificate: laptop-0042") {
		t.Fatalf("page text = %q, want the laptop's CN", got)
	}
	if got := b.URL(); got != srv.url+"/" {
		t.Errorf("URL = %q, want %q", got, srv.url+"/")
	}
	c := b.Cookie(srv.url+"/", "portal_session")
	if c == nil || c.Value != "cn-laptop-0042" || !c.HTTPOnly || !c.Secure {
		t.Errorf("portal_session cookie = %+v, want cn-laptop-0042, HttpOnly, Secure", c)
	}

	b.Navigate(srv.url + "/form")
	b.Fill("#user", "ops@fleet.test")
	b.Fill("#pass", "correct horse")
	b.Click("#go")
	if got := b.WaitURL(srv.url + "/done"); got != srv.url+"/done" {
		t.Errorf("after the form, URL = %q", got)
	}
	b.WaitText("welcome ops@fleet.test")
	if c := b.Cookie(srv.url+"/", "who"); c == nil || c.Value != "ops@fleet.test" {
		t.Errorf("who cookie = %+v, want ops@fleet.test", c)
	}
	// The helpers' escape hatch: any chromedp action.
	title, err := chromedp.Run(b.Context(), chromedp.Title())
	if err != nil || title != "" {
		t.Errorf("title of /done = %q, %v; want none", title, err)
	}
	noLeftovers(t, b)
}

// TestManagedPolicy selects the certificate through the machine's policy
// folder, as an operator would, with the certificate given as PEM files;
// the policy file is gone when the test that wrote it ends, and a policy
// file left behind by a killed test is removed before it can steer the
// browser.
func TestManagedPolicy(t *testing.T) {
	p := newTestPKI(t)
	srv := startPortal(t, p, tls.RequireAndVerifyClientCert)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "laptop.pem"), filepath.Join(dir, "laptop-key.pem")
	if err := p.laptop.WriteFiles(certFile, keyFile, p.inter); err != nil {
		t.Fatal(err)
	}
	if err := ManagedPolicyUsable(); err != nil {
		t.Skipf("%v", err)
	}
	// What a test killed before its cleanup leaves: a policy that would
	// send no certificate to the portal (its filter matches no issuer).
	stale := filepath.Join(ManagedPolicyDir, policyFilePrefix+"stale-test.json")
	rule, _ := json.Marshal(autoSelectRule{Pattern: srv.url, Filter: selectFilter{Issuer: &nameFilter{CN: "no such CA"}}})
	data, _ := json.Marshal(map[string][]string{"AutoSelectCertificateForUrls": {string(rule)}})
	// Written under the lock, as no live browser's policy may change
	// under it (another test process may run one).
	unlock, err := lockFile(managedLock, managedLockWait)
	if err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(stale, data, 0o644)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stale) })
	var policy string
	t.Run("browse", func(t *testing.T) {
		b := Start(t, Options{
			ClientCertFile: certFile,
			ClientKeyFile:  keyFile,
			TrustedCAs:     [][]byte{p.root.CertPEM()},
			HostRules:      "MAP portal.fleet.test 127.0.0.1",
			AutoSelect:     []string{srv.url},
			AutoSelectVia:  ManagedPolicy,
		})
		policy = b.PolicyFile()
		if _, err := os.Stat(stale); !os.IsNotExist(err) {
			t.Errorf("the stale policy %s is still there: %v", stale, err)
		}
		if fi, err := os.Stat(policy); err != nil || !strings.HasPrefix(filepath.Base(policy), policyFilePrefix) || fi.Mode().Perm() != 0o644 {
			t.Fatalf("the policy file %q: %v", policy, err)
		}
		b.Navigate(srv.url + "/")
		b.WaitText("client certificate: laptop-0042")
		noLeftovers(t, b)
	})
	if _, err := os.Stat(policy); policy == "" || !os.IsNotExist(err) {
		t.Errorf("the policy file %q outlived its test: %v", policy, err)
	}
}

// TestManagedPolicyLock: the lock that serialises the browsers with a
// managed policy excludes a second holder, in the same process too, until
// the first releases it.
func TestManagedPolicyLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := lockFile(path, 300*time.Millisecond); err == nil {
		t.Fatal("a second holder got the lock")
	} else if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the second holder gave up after %v, want about 300ms", d)
	}
	got := make(chan error, 1)
	go func() {
		u, err := lockFile(path, 5*time.Second)
		if err == nil {
			u()
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("the waiting holder after the release: %v", err)
	}
}

// TestWithoutCertificate shows both sides of the server's demand: a
// browser with no client certificate reaches a server that only asks for
// one (the CA import alone makes the server trusted), and fails the
// handshake with one that requires it.
func TestWithoutCertificate(t *testing.T) {
	p := newTestPKI(t)
	optional := startPortal(t, p, tls.VerifyClientCertIfGiven)
	required := startPortal(t, p, tls.RequireAndVerifyClientCert)
	b := Start(t, Options{
		TrustedCAs: [][]byte{p.root.CertPEM()},
		HostRules:  "MAP *.fleet.test 127.0.0.1",
	})

	b.Navigate(optional.url + "/")
	b.WaitText("client certificate: none")

	// Under TLS 1.3 the client's side of the handshake is over before the
	// server refuses, so chromium names a socket error rather than the
	// certificate; the server's log says why.
	err := b.Do(chromedp.Navigate(required.url + "/"))
	if err == nil || !strings.Contains(err.Error(), "net::ERR_") {
		t.Errorf("navigation to a server that requires a certificate: %v, want a net:: error", err)
	}
	testkit.WaitFor(t, "the server to log the refused handshake", 5*time.Second, func() bool {
		return strings.Contains(required.errors.String(), "client didn't provide a certificate")
	})
	noLeftovers(t, b)
}

// TestUntrustedServer: without the CA import the server's certificate is
// refused, so the trust in the other tests comes from the import and not
// from a bypass.
func TestUntrustedServer(t *testing.T) {
	p := newTestPKI(t)
	srv := startPortal(t, p, tls.VerifyClientCertIfGiven)
	b := Start(t, Options{HostRules: "MAP *.fleet.test 127.0.0.1"})
	err := b.Do(chromedp.Navigate(srv.url + "/"))
	if err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
		t.Errorf("navigation to a server from an unknown CA: %v, want net::ERR_CERT_AUTHORITY_INVALID", err)
	}
	noLeftovers(t, b)
}

// TestSkipWithoutChromium: a machine without chromium skips, and says what
// to install.
func TestSkipWithoutChromium(t *testing.T) {
	t.Setenv("CHROMIUM", filepath.Join(t.TempDir(), "no-chromium"))
	skipped := false
	t.Run("start", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Start(t, Options{})
		t.Error("Start returned without chromium")
	})
	if !skipped {
		t.Error("Start did not skip the test without chromium")
	}
}

// TestNoAutoSelect pins why the auto-selection matters: with a certificate
// in the database and no rule for the URL, chromium waits for a choice in a
// dialog that a headless browser never shows, so the page never loads.
func TestNoAutoSelect(t *testing.T) {
	p := newTestPKI(t)
	srv := startPortal(t, p, tls.RequireAndVerifyClientCert)
	laptop := p.laptop.TLSCertificate(p.inter)
	b := Start(t, Options{
		ClientCert:   &laptop,
		TrustedCAs:   [][]byte{p.root.CertPEM()},
		HostRules:    "MAP *.fleet.test 127.0.0.1",
		NoAutoSelect: true,
		Timeout:      3 * time.Second,
	})
	err := b.Do(chromedp.Navigate(srv.url + "/"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("navigation without an auto-selection rule: %v, want it to wait until the timeout", err)
	}
	noLeftovers(t, b)
}

// TestAutoSelectEverywhere: with no pattern the certificate goes to every
// URL.
func TestAutoSelectEverywhere(t *testing.T) {
	p := newTestPKI(t)
	srv := startPortal(t, p, tls.RequireAndVerifyClientCert)
	laptop := p.laptop.TLSCertificate(p.inter)
	b := Start(t, Options{
		ClientCert: &laptop,
		TrustedCAs: [][]byte{p.root.CertPEM()},
		HostRules:  "MAP *.fleet.test 127.0.0.1",
	})
	b.Navigate(srv.url + "/")
	b.WaitText("client certificate: laptop-0042")
	noLeftovers(t, b)
}
