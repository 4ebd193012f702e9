package gateway

// The same flows with the real curl binary: another TLS stack (OpenSSL),
// another HTTP client, and its cookie jar.

import (
	"bytes"
	"context"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// curlPath returns the curl binary, skipping the test when there is none.
func curlPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	return p
}

// writeDevice writes a device's certificate (with its chain) and key into
// the harness folder and returns their paths.
func (h *harness) writeDevice(t testing.TB, d *device, tag string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(h.dir, d.name+"-"+tag+".pem"), filepath.Join(h.dir, d.name+"-"+tag+"-key.pem")
	var chain bytes.Buffer
	for _, der := range d.tls.Certificate {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	h.writeFile(filepath.Base(cert), chain.Bytes())
	if err := pki.WriteKey(key, d.cert.Key); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestCurl(t *testing.T) {
	curl := curlPath(t)
	h := newHarness(t)
	p := h.pki
	_, port, _ := net.SplitHostPort(h.addr)
	s1c, s1k := h.writeDevice(t, p.sensor1, "fleet")
	s2c, s2k := h.writeDevice(t, p.sensor2, "fleet")
	fc, fk := h.writeDevice(t, p.foreign, "foreign")
	jar := filepath.Join(h.dir, "cookies.txt")
	body := filepath.Join(h.dir, "body.bin")
	h.writeFile("body.bin", bytes.Repeat([]byte("0123456789"), 300))
	big := filepath.Join(h.dir, "big.bin")
	h.writeFile("big.bin", bytes.Repeat([]byte("b"), 100_000))

	cert := func(c, k string) []string { return []string{"--cert", c, "--key", k} }
	tests := []struct {
		name   string
		domain string
		path   string
		args   []string
		want   string // curl's -w output: one status per URL
		inBody string // a string the body must hold
		format string // -w; the status code when ""
	}{
		{"no certificate", hIoT, "/", nil, "403", "no client certificate", ""},
		{"sensor-0001 on the IoT app", hIoT, "/x", cert(s1c, s1k), "200", `"path":"/x"`, ""},
		{"sensor-0002 not in the policy", hIoT, "/", cert(s2c, s2k), "403", "no policy matched", ""},
		{"another CA", hApp, "/", cert(fc, fk), "403", "unknown certificate authority", ""},
		{"service auth 401", hSvc, "/", cert(s2c, s2k), "401", "", ""},
		{"session: certificate, cookie saved", hApp, "/login", append(cert(s2c, s2k), "-c", jar), "200", "", ""},
		{"session: the cookie alone", hApp, "/again", []string{"-b", jar}, "200", `"Cf-Access-Jwt-Assertion"`, ""},
		{"session: cookie on another application", hFwd, "/", []string{"-b", jar}, "403", "", ""},
		{"keep-alive: two URLs, one connection", hApp, "/one", append(cert(s2c, s2k), "-o", os.DevNull, "https://"+hApp+":"+port+"/two"), "200 1\n200 0", "", `%{http_code} %{num_connects}\n`},
		{"Host differs from SNI", hApp, "/", append(cert(s2c, s2k), "-H", "Host: "+hIoT), "421", "does not match", ""},
		{"Host with another port", hApp, "/", append(cert(s2c, s2k), "-H", "Host: "+hApp+":1"), "200", "", ""},
		{"Expect: 100-continue", hApp, "/up", append(cert(s2c, s2k), "-H", "Expect: 100-continue", "--data-binary", "@"+body), "200", "0123456789012", ""},
		{"chunked upload", hApp, "/up", append(cert(s2c, s2k), "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+body), "200", "0123456789012", ""},
		{"body too large", hApp, "/up", append(cert(s2c, s2k), "--data-binary", "@"+big), "413", "request body too large", ""},
		{"header too large", hApp, "/", append(cert(s2c, s2k), "-H", "X-Big: "+strings.Repeat("a", 5000)), "431", "", ""},
		{"origin unreachable", hDown, "/", cert(s2c, s2k), "502", "", ""},
		{"JWKS without a certificate", hIoT, "/cdn-cgi/access/certs", nil, "200", `"keys"`, ""},
		{"get-identity without anything", hApp, "/cdn-cgi/access/get-identity", nil, "401", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			format := tc.format
			if format == "" {
				format = `%{http_code}\n`
			}
			args := []string{"-sS", "--max-time", "20", "-o", out, "-w", format,
				"--resolve", hIoT + ":" + port + ":127.0.0.1", "--resolve", hApp + ":" + port + ":127.0.0.1",
				"--resolve", hSvc + ":" + port + ":127.0.0.1", "--resolve", hFwd + ":" + port + ":127.0.0.1",
				"--resolve", hDown + ":" + port + ":127.0.0.1",
				"--cacert", filepath.Join(h.dir, "root.pem")}
			args = append(args, tc.args...)
			args = append(args, "https://"+tc.domain+":"+port+tc.path)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, curl, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("curl: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			if got := strings.TrimSpace(stdout.String()); got != tc.want {
				t.Fatalf("curl printed %q, want %q\n%s", got, tc.want, stderr.String())
			}
			b, _ := os.ReadFile(out)
			if tc.inBody != "" && !strings.Contains(string(b), tc.inBody) {
				t.Fatalf("body %q lacks %q", b, tc.inBody)
			}
		})
	}
	jarData, _ := os.ReadFile(jar)
	if !strings.Contains(string(jarData), "CF_Authorization") || !strings.Contains(string(jarData), "#HttpOnly_."+hApp) {
		t.Errorf("curl's jar does not hold an HttpOnly CF_Authorization cookie for %s:\n%s", hApp, jarData)
	}
}
