package main

// The console part of TestDemo: console.fleet.test sends a browser to the
// demo identity provider, a person logs in there with the laptop's
// certificate, and ends with the session cookie and the origin's answer.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/demo"
	"github.com/fleetgate/fleetgate/internal/oidcop"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// demoIdP is the demo's fixed identity provider (configs.DemoIdPListen).
const demoIdP = "127.0.0.1:9444"

// checkDemoConsole runs against a demo gateway listening on listen with its
// files in demoDir; stdout and stderr are what it printed so far.
func checkDemoConsole(t *testing.T, demoDir, listen string, stdout, stderr func() string) {
	t.Helper()
	if configs.DemoIdPListen != demoIdP {
		t.Fatalf("the demo IdP moved to %s: update demoIdP", configs.DemoIdPListen)
	}
	guide := demo.Console(demoDir, listen)
	out := stdout()
	for _, want := range []string{
		guide.URL, "\n    " + guide.HostsLines[0] + "\n", oidcop.DemoEmail, oidcop.DemoPassword,
		demo.LaptopP12Password, guide.Chromium[2], "# " + guide.Redirect.Title + "\n" + guide.Redirect.Cmd + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the walkthrough lacks %q:\n%s", want, out)
		}
	}
	if guide.URL != "https://console.fleet.test:"+portOf(t, listen)+"/" {
		t.Errorf("browser URL %q for a gateway on %s", guide.URL, listen)
	}

	// The client secret is private and printed nowhere.
	secretPath := filepath.Join(demoDir, configs.DemoIdPSecret)
	if fi, err := os.Stat(secretPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v", secretPath, err, fi.Mode())
	}
	raw, _ := os.ReadFile(secretPath)
	secret := strings.TrimSpace(string(raw))
	if len(secret) < 32 {
		t.Fatalf("client secret of %d characters", len(secret))
	}

	roots := x509.NewCertPool()
	rootPEM, err := os.ReadFile(filepath.Join(demoDir, demo.RootCA))
	if err != nil || !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("demo root: %v", err)
	}
	laptop, err := tls.LoadX509KeyPair(filepath.Join(demoDir, demo.LaptopCert), filepath.Join(demoDir, demo.LaptopKey))
	if err != nil {
		t.Fatal(err)
	}
	sensor, err := tls.LoadX509KeyPair(filepath.Join(demoDir, demo.DeviceCert("sensor-0001")), filepath.Join(demoDir, demo.DeviceKey("sensor-0001")))
	if err != nil {
		t.Fatal(err)
	}
	console, err := url.Parse(guide.URL)
	if err != nil {
		t.Fatal(err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// client is a browser-like client: the names resolve as the /etc/hosts
	// line says, the demo root is trusted, cert (if any) is sent when asked.
	client := func(cert *tls.Certificate, jar http.CookieJar) *http.Client {
		d := &net.Dialer{Timeout: 10 * time.Second}
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cert == nil {
					return &tls.Certificate{}, nil
				}
				return cert, nil
			}},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				switch addr {
				case console.Host:
					addr = listen
				case strings.TrimPrefix(configs.DemoIdPIssuer, "https://"):
					addr = demoIdP
				default:
					return nil, fmt.Errorf("unexpected address %s", addr)
				}
				return d.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true, // a fresh handshake each time: the certificate is checked on every request
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Jar: jar, Timeout: 20 * time.Second}
	}
	browser := client(&laptop, jar)
	get := func(c *http.Client, u, accept string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		return testkit.Fetch(t, c, req)
	}

	// A page asked for without a session ends on the IdP's login form.
	page := guide.URL + "ops/dashboard?tab=fleet"
	resp, body := get(browser, page, "text/html")
	if resp.StatusCode != 200 || resp.Request.URL.Host != "idp.fleet.test:9444" || resp.Request.URL.Path != "/login" {
		t.Fatalf("a browser without a session ended on %d %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	m := regexp.MustCompile(`name="authRequestID" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no authRequestID in the login form:\n%s", body)
	}
	loginURL := configs.DemoIdPIssuer + "/login"
	post := func(c *http.Client, password string) (*http.Response, string) {
		t.Helper()
		form := url.Values{"authRequestID": {m[1]}, "username": {oidcop.DemoEmail}, "password": {password}}
		req, _ := http.NewRequest(http.MethodPost, loginURL, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "text/html")
		return testkit.Fetch(t, c, req)
	}
	// A wrong password stays on the form, with no session.
	if resp, body := post(browser, "wrong"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong username or password") {
		t.Errorf("a wrong password: %d\n%s", resp.StatusCode, body)
	}
	if cookieNamed(jar, console, "CF_Authorization") != "" {
		t.Fatal("a session cookie after a wrong password")
	}

	// The right one: back through the callback to the page first asked
	// for, with the session cookie, and the origin's answer.
	resp, body = post(browser, oidcop.DemoPassword)
	if resp.StatusCode != 200 || resp.Request.URL.String() != page {
		t.Fatalf("after the login: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	var echo demo.Echo
	if err := json.Unmarshal([]byte(body), &echo); err != nil {
		t.Fatalf("not the echo origin's answer: %v\n%s", err, body)
	}
	cnf, _ := echo.Claims["cnf"].(map[string]any)
	if echo.Path != "/ops/dashboard?tab=fleet" || echo.Claims["email"] != oidcop.DemoEmail || echo.Claims["idp"] != configs.DemoIdP ||
		echo.Claims["common_name"] != demo.Laptop || cnf["x5t#S256"] == nil {
		t.Errorf("the origin saw %s with claims %v", echo.Path, echo.Claims)
	}
	session := cookieNamed(jar, console, "CF_Authorization")
	if session == "" {
		t.Fatal("no CF_Authorization cookie after the login")
	}

	// The cookie and the laptop, without the IdP: a second request.
	if resp, body := get(browser, guide.URL+"again", "text/html"); resp.StatusCode != 200 || resp.Request.URL.Host != console.Host || !strings.Contains(body, `"path": "/again"`) {
		t.Errorf("the session on the next request: %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	// The cookie is bound to the laptop's certificate: copied to a client
	// without it, or with a sensor's, it opens nothing.
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{{"no certificate", nil}, {"sensor-0001's certificate", &sensor}} {
		stolen, _ := cookiejar.New(nil)
		stolen.SetCookies(console, []*http.Cookie{{Name: "CF_Authorization", Value: session}})
		if resp, body := get(client(tc.cert, stolen), guide.URL, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the cookie with %s: %d\n%s", tc.name, resp.StatusCode, body)
		}
	}

	// The walkthrough's curl command, as printed: a 302 to the IdP.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	got, err := exec.CommandContext(ctx, "sh", "-c", guide.Redirect.Cmd).CombinedOutput()
	cancel()
	if err != nil || !strings.HasPrefix(string(got), guide.RedirectPrefix) {
		t.Errorf("%s\nprinted %q (%v), want a line starting with %q", guide.Redirect.Cmd, got, err, guide.RedirectPrefix)
	}
	if !strings.Contains(stdout(), guide.RedirectPrefix) {
		t.Errorf("the walkthrough does not show the outcome %q", guide.RedirectPrefix)
	}

	for name, s := range map[string]string{"stdout": stdout(), "stderr": stderr()} {
		if strings.Contains(s, secret) {
			t.Errorf("the client secret appears in fleetgate's %s", name)
		}
	}
}

func cookieNamed(jar http.CookieJar, u *url.URL, name string) string {
	for _, c := range jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func portOf(t *testing.T, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
