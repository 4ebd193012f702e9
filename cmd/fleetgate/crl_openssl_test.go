package main

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/crltest"
)

// withCRLFiles adds crl_files (and crl_stale = "reject") to the "fleet"
// client CA of the serve configuration at path.
func withCRLFiles(t testing.TB, path, crlFile string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "pem_file = \"pki/ca-chain.pem\"\nassociated_hostnames = [\"devices.fleet.test\", \"app.fleet.test\"]\n"
	if strings.Count(string(b), anchor) != 1 {
		t.Fatalf("the serve configuration no longer has the fleet client CA this test extends:\n%s", b)
	}
	s := strings.Replace(string(b), anchor, anchor+"crl_files = [\""+crlFile+"\"]\ncrl_stale = \"reject\"\n", 1)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes data to path atomically, as operators are told to.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// keepAlive is one TLS connection of a device to the gateway, carrying
// several requests.
type keepAlive struct {
	conn *tls.Conn
	r    *bufio.Reader
}

// dialDevice opens a TLS connection to the gateway for host, presenting the
// device certificate pki/devices/<cn>.pem.
func (f *fleet) dialDevice(t testing.TB, host, cn string) *keepAlive {
	t.Helper()
	cert := f.deviceCert(t, "pki", cn)
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", f.listen, &tls.Config{ServerName: host, RootCAs: f.roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &keepAlive{conn: conn, r: bufio.NewReader(conn)}
}

// get sends a GET on the connection and returns the status and body.
func (k *keepAlive) get(t testing.TB, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = k.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := req.Write(k.conn); err != nil {
		t.Fatalf("GET %s on the kept-alive connection: %v", url, err)
	}
	resp, err := http.ReadResponse(k.r, req)
	if err != nil {
		t.Fatalf("GET %s on the kept-alive connection: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeOpenSSLCRLReload, through the real binary, for a version 1 and a
// version 2 CRL of the real `openssl ca`: the gateway starts with the CA's
// list revoking nothing; the device gets in on a keep-alive connection; the
// CA revokes it, the file is replaced and fleetgate gets SIGHUP; then the
// device is refused with 403 "certificate revoked" on a new connection and
// on the connection it opened before the reload, while another device of the
// same CA still gets in.
func TestServeOpenSSLCRLReload(t *testing.T) {
	crltest.Binary(t)
	for _, v := range []crltest.Version{crltest.Version1, crltest.Version2} {
		t.Run(v.String(), func(t *testing.T) {
			f := newFleet(t)
			pkiDir := filepath.Join(f.dir, "pki")
			ca := crltest.OpenSSL(t, t.TempDir(), filepath.Join(pkiDir, "intermediate.pem"), filepath.Join(pkiDir, "intermediate-key.pem"), v)
			crlPath := filepath.Join(pkiDir, "fleet.crl")
			genCRL := func() []byte {
				crl := ca.GenCRL()
				if got := ca.Version(crl); got != v.Want() {
					t.Fatalf("openssl crl -text says %q, want %q", got, v.Want())
				}
				return crl
			}
			replaceFile(t, crlPath, genCRL())
			withCRLFiles(t, f.cfg, "pki/fleet.crl")

			p := f.serve(t)
			const app = "https://app.fleet.test/"
			if s, body, _ := get(t, f.client(t, "pki", "sensor-0001"), app); s != 200 {
				t.Fatalf("before revocation, new connection: %d %s", s, body)
			}
			live := f.dialDevice(t, "app.fleet.test", "sensor-0001")
			if s, body := live.get(t, app+"before"); s != 200 {
				t.Fatalf("before revocation, kept-alive connection: %d %s", s, body)
			}

			ca.Revoke(filepath.Join(pkiDir, "devices", "sensor-0001.pem"))
			replaceFile(t, crlPath, genCRL())
			reloads := strings.Count(p.stderr.String(), "configuration reloaded")
			p.signal(t, syscall.SIGHUP)
			p.waitLog(t, "configuration reloaded", reloads+1) // the CRL watch may reload too: either applies this file
			if strings.Contains(p.stderr.String(), "reload refused") {
				t.Fatalf("the reload with the %s CRL was refused:\n%s", v, p.stderr)
			}

			if s, body, _ := get(t, f.client(t, "pki", "sensor-0001"), app); s != 403 || !strings.Contains(body, "certificate revoked") {
				t.Errorf("revoked device, new connection: %d %q, want 403 certificate revoked", s, body)
			}
			if s, body := live.get(t, app+"after"); s != 403 || !strings.Contains(body, "certificate revoked") {
				t.Errorf("revoked device, connection opened before the reload: %d %q, want 403 certificate revoked", s, body)
			}
			if s, body, _ := get(t, f.client(t, "pki", "sensor-0002"), app); s != 200 {
				t.Errorf("another device of the same CA: %d %s, want 200", s, body)
			}
			// The access log records the verdict of the kept-alive request.
			var after string
			for _, l := range strings.Split(p.stderr.String(), "\n") {
				if strings.Contains(l, `"path":"/after"`) {
					after = l
				}
			}
			if !strings.Contains(after, `"cert_verdict":"revoked"`) || !strings.Contains(after, `"status":403`) {
				t.Errorf("access log of the kept-alive request after the reload: %q, want status 403, verdict revoked", after)
			}
		})
	}
}
