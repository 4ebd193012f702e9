package demo

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/oidcop"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// prepared returns a demo folder made by Prepare, shared by the tests of
// this file that only read it.
func prepared(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo")
	if _, err := Prepare(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPrepareConsoleFiles: the client secret is random and private, the
// laptop's certificate is a client certificate of the demo CA, and its
// .p12 holds the same certificate and key, opened by the documented
// password only.
func TestPrepareConsoleFiles(t *testing.T) {
	dir := prepared(t)
	secret, err := os.ReadFile(filepath.Join(dir, configs.DemoIdPSecret))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, configs.DemoIdPSecret)); fi.Mode().Perm() != 0o600 {
		t.Errorf("the secret file has mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Dir(filepath.Join(dir, configs.DemoIdPSecret))); fi.Mode().Perm() != 0o700 {
		t.Errorf("the secret's folder has mode %v, want 0700", fi.Mode().Perm())
	}
	s := strings.TrimSuffix(string(secret), "\n")
	if len(s) != 43 || strings.ContainsAny(s, "\r\n+/=") {
		t.Errorf("secret %d characters %q: want 32 random bytes, base64url", len(s), s)
	}
	other, _ := os.ReadFile(filepath.Join(prepared(t), configs.DemoIdPSecret))
	if bytes.Equal(secret, other) {
		t.Error("two demo folders have the same client secret")
	}

	// The embedded configuration reads the same secret.
	cfg, err := configs.Parse(configs.DemoName, configs.Demo(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IdentityProviders[0].ClientSecret.Reveal() != s {
		t.Error("the demo configuration does not read the secret Prepare wrote")
	}

	rootPEM, _ := os.ReadFile(filepath.Join(dir, RootCA))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, LaptopCert), filepath.Join(dir, LaptopKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	if leaf.Subject.CommonName != Laptop || len(leaf.EmailAddresses) != 1 || leaf.EmailAddresses[0] != oidcop.DemoEmail {
		t.Errorf("laptop: CN %q, e-mail SANs %v", leaf.Subject.CommonName, leaf.EmailAddresses)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the laptop's certificate does not verify for client auth: %v", err)
	}

	p12, err := os.ReadFile(filepath.Join(dir, LaptopP12))
	if err != nil {
		t.Fatal(err)
	}
	key, cert, cas, err := pkcs12.DecodeChain(p12, LaptopP12Password)
	if err != nil {
		t.Fatalf("the .p12 does not open with %q: %v", LaptopP12Password, err)
	}
	if !cert.Equal(leaf) || len(cas) != 2 || cas[0].Subject.CommonName != "fleetgate demo intermediate CA" || !cas[1].Equal(mustRoot(t, rootPEM)) {
		t.Errorf(".p12: certificate %q, %d CA certificates", cert.Subject.CommonName, len(cas))
	}
	if k, ok := key.(interface{ Equal(crypto.PrivateKey) bool }); !ok || !k.Equal(pair.PrivateKey) {
		t.Error("the .p12's key is not the laptop's key")
	}
	if _, _, _, err := pkcs12.DecodeChain(p12, "wrong"); err == nil {
		t.Error("the .p12 opens with a wrong password")
	}

	// openssl, where installed, reads it too (browsers and pk12util read
	// the same PBES2 / AES-256 format).
	if _, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command("openssl", "pkcs12", "-in", filepath.Join(dir, LaptopP12), "-passin", "pass:"+LaptopP12Password, "-nokeys").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "CN = "+Laptop) && !strings.Contains(string(out), "CN="+Laptop) {
			t.Errorf("openssl pkcs12: %v\n%s", err, out)
		}
	}
}

func mustRoot(t *testing.T, rootPEM []byte) *x509.Certificate {
	t.Helper()
	chain := parseChain(t, rootPEM)
	if len(chain) != 1 {
		t.Fatalf("root: %d certificates", len(chain))
	}
	return chain[0]
}

// TestPrepareRenewsWithoutSecret: a folder made before the console (no
// secret, no laptop) is made anew, the secret private even over a file
// that was world-readable; a complete folder is left alone.
func TestPrepareRenewsWithoutSecret(t *testing.T) {
	dir := prepared(t)
	secretPath := filepath.Join(dir, configs.DemoIdPSecret)
	old, _ := os.ReadFile(secretPath)
	oldP12, _ := os.ReadFile(filepath.Join(dir, LaptopP12))
	for _, f := range []string{LaptopCert, LaptopKey, LaptopP12} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(secretPath, 0o644); err != nil {
		t.Fatal(err)
	}
	created, err := Prepare(dir)
	if err != nil || !created {
		t.Fatalf("Prepare without the laptop's files: created %v, err %v", created, err)
	}
	now, _ := os.ReadFile(secretPath)
	if bytes.Equal(now, old) {
		t.Error("the secret was kept when the folder was made anew")
	}
	if fi, _ := os.Stat(secretPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("the secret written over a 0644 file has mode %v", fi.Mode().Perm())
	}
	if p12, _ := os.ReadFile(filepath.Join(dir, LaptopP12)); len(p12) == 0 || bytes.Equal(p12, oldP12) {
		t.Error("the .p12 was not made anew")
	}
	if _, err := configs.Parse(configs.DemoName, configs.Demo(), dir); err != nil {
		t.Fatalf("the demo configuration does not load after Prepare: %v", err)
	}

	// Complete again: a third Prepare changes nothing.
	if created, err := Prepare(dir); err != nil || created {
		t.Fatalf("Prepare on a complete folder: created %v, err %v", created, err)
	}
	if again, _ := os.ReadFile(secretPath); !bytes.Equal(again, now) {
		t.Error("Prepare on a complete folder changed the secret")
	}
	// No temporary file is left beside the private files.
	for _, d := range []string{filepath.Dir(secretPath), filepath.Join(dir, filepath.Dir(LaptopP12))} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("left behind: %s", filepath.Join(d, e.Name()))
			}
		}
	}
}

func TestStartIdPRefuses(t *testing.T) {
	dir := prepared(t)
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:9444", "localhost:9444", "nonsense"} {
		if p, err := StartIdP(dir, addr, "https://console.fleet.test:8443/cdn-cgi/access/callback", nil); err == nil {
			p.Close()
			t.Errorf("StartIdP(%q) accepted an address that is not loopback", addr)
		} else if !strings.HasPrefix(err.Error(), "demo: identity provider: ") {
			t.Errorf("StartIdP(%q): %v", addr, err)
		}
	}
	if p, err := StartIdP(dir, "127.0.0.1:0", "not a URL", nil); err == nil {
		p.Close()
		t.Error("StartIdP accepted a redirect URI that is not absolute")
	}
	empty := t.TempDir()
	if p, err := StartIdP(empty, "127.0.0.1:0", "https://console.fleet.test:8443/cdn-cgi/access/callback", nil); err == nil {
		p.Close()
		t.Error("StartIdP started without the demo files")
	}
	if err := os.WriteFile(filepath.Join(dir, configs.DemoIdPSecret), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := StartIdP(dir, "127.0.0.1:0", "https://console.fleet.test:8443/cdn-cgi/access/callback", nil); err == nil || !strings.Contains(err.Error(), "empty") {
		if p != nil {
			p.Close()
		}
		t.Errorf("StartIdP with an empty secret: %v", err)
	}
}

// TestStartIdP: the provider answers discovery over TLS, with a certificate
// for idp.fleet.test from the demo CA and the demo issuer; a busy port is
// an error; Close stops it.
func TestStartIdP(t *testing.T) {
	dir := prepared(t)
	addr := testkit.FreePort(t)
	p, err := StartIdP(dir, addr, CallbackURL("127.0.0.1:8443"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p2, err := StartIdP(dir, addr, CallbackURL("127.0.0.1:8443"), nil); err == nil {
		p2.Close()
		t.Error("a second provider started on the same port")
	}
	rootPEM, _ := os.ReadFile(filepath.Join(dir, RootCA))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: configs.DemoIdPDomain},
		DialContext:     (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + addr + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disc struct {
		Issuer                string `json:"issuer"`
		AuthorizationEndpoint string `json:"authorization_endpoint"`
	}
	err = json.NewDecoder(resp.Body).Decode(&disc)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery: %d %v", resp.StatusCode, err)
	}
	if disc.Issuer != configs.DemoIdPIssuer || disc.AuthorizationEndpoint != configs.DemoIdPIssuer+"/authorize" {
		t.Errorf("discovery: issuer %q, authorization endpoint %q", disc.Issuer, disc.AuthorizationEndpoint)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the provider still accepts connections after Close")
	}
}

func TestConsole(t *testing.T) {
	tests := []struct {
		name, dir, listen string
		url               string
		hosts             []string
		resolve           string
	}{
		{"loopback", "/tmp/demo", "127.0.0.1:8443", "https://console.fleet.test:8443/",
			[]string{"127.0.0.1 console.fleet.test idp.fleet.test"}, "--resolve console.fleet.test:8443:127.0.0.1 "},
		{"all interfaces", "/tmp/demo", ":9443", "https://console.fleet.test:9443/",
			[]string{"127.0.0.1 console.fleet.test idp.fleet.test"}, "--resolve console.fleet.test:9443:127.0.0.1 "},
		{"port 443", "/tmp/demo", "0.0.0.0:443", "https://console.fleet.test/",
			[]string{"127.0.0.1 console.fleet.test idp.fleet.test"}, "--resolve console.fleet.test:443:127.0.0.1 "},
		{"another loopback address", "/tmp/demo", "127.0.0.2:8443", "https://console.fleet.test:8443/",
			[]string{"127.0.0.2 console.fleet.test", "127.0.0.1 idp.fleet.test"}, "--resolve console.fleet.test:8443:127.0.0.2 "},
		{"folder with a space", "/tmp/my demo", "127.0.0.1:8443", "https://console.fleet.test:8443/",
			[]string{"127.0.0.1 console.fleet.test idp.fleet.test"}, "--resolve console.fleet.test:8443:127.0.0.1 "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Console(tc.dir, tc.listen)
			if c.URL != tc.url || ConsoleURL(tc.listen) != tc.url || CallbackURL(tc.listen) != tc.url+"cdn-cgi/access/callback" {
				t.Errorf("URL %q, callback %q, want %q", c.URL, CallbackURL(tc.listen), tc.url)
			}
			if strings.Join(c.HostsLines, "|") != strings.Join(tc.hosts, "|") {
				t.Errorf("hosts lines %q, want %q", c.HostsLines, tc.hosts)
			}
			if c.User != oidcop.DemoEmail || c.Password != oidcop.DemoPassword {
				t.Errorf("user %q password %q", c.User, c.Password)
			}
			p12 := shellQuote(filepath.Join(tc.dir, LaptopP12))
			ca := shellQuote(filepath.Join(tc.dir, RootCA))
			if len(c.Chromium) != 3 || !strings.Contains(c.Chromium[0], "certutil -d sql:$HOME/.pki/nssdb -N") ||
				!strings.HasPrefix(c.Chromium[1], "certutil -d sql:$HOME/.pki/nssdb -A -t C,, ") || !strings.HasSuffix(c.Chromium[1], " -i "+ca) ||
				c.Chromium[2] != "pk12util -d sql:$HOME/.pki/nssdb -i "+p12+" -W "+LaptopP12Password {
				t.Errorf("Chromium commands: %q", c.Chromium)
			}
			if !strings.Contains(c.Firefox, p12) || !strings.Contains(c.Firefox, ca) || !strings.Contains(c.Firefox, LaptopP12Password) {
				t.Errorf("Firefox: %q", c.Firefox)
			}
			r := c.Redirect
			for _, want := range []string{"curl ", tc.resolve, " --cacert " + ca, " --cert " + shellQuote(filepath.Join(tc.dir, LaptopCert)),
				" --key " + shellQuote(filepath.Join(tc.dir, LaptopKey)), " -H 'Accept: text/html' ", "%{redirect_url}"} {
				if !strings.Contains(r.Cmd, want) {
					t.Errorf("redirect command %q lacks %q", r.Cmd, want)
				}
			}
			if !strings.HasSuffix(r.Cmd, " "+tc.url) || r.Status != 302 || !strings.HasPrefix(c.RedirectPrefix, "302 https://idp.fleet.test:9444/authorize?") {
				t.Errorf("redirect step %+v, prefix %q", r, c.RedirectPrefix)
			}
		})
	}
}
