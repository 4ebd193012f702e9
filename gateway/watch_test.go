package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// writeCRL writes fleet.crl, signed by the fleet intermediate, revoking the
// given devices. Each call moves thisUpdate forward so the file changes.
func (h *harness) writeCRL(revoked ...*device) {
	h.t.Helper()
	h.writeCRLUntil(time.Now().Add(24*time.Hour), revoked...)
}

// writeCRLUntil is writeCRL with the list's nextUpdate.
func (h *harness) writeCRLUntil(nextUpdate time.Time, revoked ...*device) {
	h.t.Helper()
	certs := make([]*pki.Cert, 0, len(revoked))
	for _, d := range revoked {
		certs = append(certs, d.cert)
	}
	now := time.Now()
	der := h.pki.inter.MustCRL(pki.Serials(certs...), now.Add(-time.Minute), nextUpdate)
	path := filepath.Join(h.dir, "fleet.crl")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pki.CRLPEM(der), 0o600); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // atomically, as operators are told to
		h.t.Fatal(err)
	}
}

// TestRevocationTakesEffect: a CRL applied by a reload refuses the revoked
// device at once — on a new connection, on the keep-alive connection it
// already holds, and through the session cookie it was given — while the
// other devices of the same CA pass.
func TestRevocationTakesEffect(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })

	// sensor-0002 holds a keep-alive connection and a session cookie.
	live := h.dial(t, hApp, h.pki.sensor2)
	live.send(request("GET", hApp, "/before"))
	first := live.read("GET")
	if first.StatusCode != http.StatusOK {
		t.Fatalf("before revocation: status %d: %s", first.StatusCode, first.body)
	}
	cookie := first.Header.Get("Set-Cookie")
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	cookie = strings.SplitN(cookie, ";", 2)[0]

	h.writeCRL(h.pki.sensor2)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}

	live.send(request("GET", hApp, "/after"))
	if r := live.read("GET"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "certificate revoked") {
		t.Fatalf("revoked device on its old connection: status %d %q, want 403 certificate revoked", r.StatusCode, r.body)
	}
	live.send(request("GET", hApp, "/cdn-cgi/access/get-identity"))
	if r := live.read("GET"); r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.body, "certificate revoked") {
		t.Fatalf("get-identity on the revoked device's old connection: status %d %q, want 401 certificate revoked", r.StatusCode, r.body)
	}
	if r := h.get(t, h.client(h.pki.sensor2), href(hApp, "/")); r.StatusCode != http.StatusForbidden {
		t.Fatalf("revoked device on a new connection: status %d, want 403", r.StatusCode)
	}
	r := h.do(t, h.client(nil), "GET", href(hApp, "/"), http.Header{"Cookie": {cookie}}, "")
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "revoked") {
		t.Fatalf("revoked device's cookie: status %d %q, want 403 naming the revocation", r.StatusCode, r.body)
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("another device of the same CA: status %d, want 200", r.StatusCode)
	}

	// Un-revoking (a new CRL without it) lets the device back in.
	h.writeCRL()
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if r := h.get(t, h.client(h.pki.sensor2), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("after the CRL dropped it: status %d, want 200", r.StatusCode)
	}
}

// TestRevocationFileWatch: replacing the CRL file is enough; no SIGHUP.
func TestRevocationFileWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the CRL watch interval")
	}
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("before: status %d", r.StatusCode)
	}
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	h.writeCRL(h.pki.sensor1)
	testkit.WaitFor(t, "the watched CRL to revoke sensor-0001", 4*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor1), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
	if r := h.get(t, h.client(h.pki.sensor2), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("a device the CRL does not list: status %d, want 200", r.StatusCode)
	}
}

// TestRevocationWatchRetriesAfterRefusedReload: a new CRL that lands while
// the main file is being edited (invalid) is not lost: fixing the file
// makes the watcher reload again, and the CRL applies.
func TestRevocationWatchRetriesAfterRefusedReload(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the CRL watch interval")
	}
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	h.writeFile("fleetgate.toml", []byte("[gateway\n")) // mid-edit
	time.Sleep(10 * time.Millisecond)
	h.writeCRL(h.pki.sensor1)
	testkit.WaitFor(t, "the refused reload", 4*crlWatchInterval, func() bool {
		return strings.Contains(h.logs.String(), "reload refused")
	})
	time.Sleep(10 * time.Millisecond)
	h.write(h.config()) // the edit is done; no SIGHUP
	testkit.WaitFor(t, "the CRL to apply once the file is fixed", 4*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor1), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
}

// TestRevocationBadCRLKeepsServing: a CRL signed by the wrong key is refused
// on reload with a config error, and the old configuration keeps serving.
func TestRevocationBadCRLKeepsServing(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	now := time.Now()
	bogus := h.pki.foreignRoot.MustCRL(pki.Serials(h.pki.sensor1.cert), now.Add(-time.Minute), now.Add(time.Hour))
	h.writeFile("fleet.crl", pki.CRLPEM(bogus))
	err := h.srv.Reload()
	if err == nil || !strings.Contains(err.Error(), "crl_files[0]") {
		t.Fatalf("reload with a foreign CRL: %v, want an error naming client_cas[0].crl_files[0]", err)
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("after the refused reload: status %d, want 200", r.StatusCode)
	}
}

// TestMetricsRevokedAndBadUsage: the refusal reasons the main metrics test
// cannot provoke move their counters too: a revoked certificate (CRL), a
// certificate without clientAuth usage, and a failed handshake (a client
// that only speaks TLS 1.1).
func TestMetricsRevokedAndBadUsage(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	h.writeCRL(h.pki.sensor2)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if r := h.rawGet(t, hIoT, hIoT, "/", h.pki.sensor2); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "certificate revoked") {
		t.Fatalf("revoked device: status %d %q", r.StatusCode, r.body)
	}
	srvOnly := h.pki.inter.MustIssue(pki.Options{CommonName: "sensor-0001", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	badUsage := &device{name: "sensor-0001", cert: srvOnly, tls: srvOnly.TLSCertificate(h.pki.inter)}
	if r := h.rawGet(t, hIoT, hIoT, "/", badUsage); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "client authentication") {
		t.Fatalf("certificate without clientAuth: status %d %q", r.StatusCode, r.body)
	}
	old := h.tlsConfig(hIoT, h.pki.sensor1)
	old.MinVersion, old.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	if c, err := tls.Dial("tcp", h.addr, old); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	expectMetrics(t, h, []want{
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "revoked"),
		w("fleetgate_handshakes_total", 1, "result", "ok", "reason", "revoked"),
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "bad_usage"),
		w("fleetgate_handshakes_total", 1, "result", "ok", "reason", "bad_usage"),
		w("fleetgate_handshakes_total", 1, "result", "error", "reason", "tls_error"),
		w("fleetgate_requests_total", 2, "app", "iot", "status", "403"),
	})
}

// TestMetricsHandshakeTimeout: a client that sends half a ClientHello and
// stalls is cut off at handshake_timeout and counted as a timeout.
func TestMetricsHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.HandshakeTimeout = "300ms" })
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A handshake record header announcing 512 bytes, and only 3 of them.
	if _, err := c.Write([]byte{22, 3, 1, 2, 0, 1, 0, 1}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the stalled connection was not closed: %v", err)
	}
	expectMetrics(t, h, []want{w("fleetgate_handshakes_total", 1, "result", "error", "reason", "timeout")})
}

// TestStaleCRLRejectAtRuntime: with crl_stale = "reject", a CRL that passes
// its nextUpdate while the gateway runs stops vouching for its CA's devices
// (as OpenSSL's "CRL has expired"): new connections, live keep-alive
// connections and session cookies are refused with the reason, until a
// newer list is loaded.
func TestStaleCRLRejectAtRuntime(t *testing.T) {
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h := newHarness(t, func(p *cfgParams) { p.CRL, p.CRLStale, p.Now = true, "reject", clock })
	h.writeCRLUntil(time.Now().Add(time.Hour))
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	live := h.dial(t, hApp, h.pki.sensor2)
	live.send(request("GET", hApp, "/before"))
	first := live.read("GET")
	if first.StatusCode != http.StatusOK {
		t.Fatalf("before nextUpdate: status %d: %s", first.StatusCode, first.body)
	}
	cookie := strings.SplitN(first.Header.Get("Set-Cookie"), ";", 2)[0]
	if cookie == "" {
		t.Fatal("no session cookie")
	}

	skew.Store(int64(2 * time.Hour)) // the list is an hour past its nextUpdate
	const why = "revocation status unknown"
	live.send(request("GET", hApp, "/after"))
	if r := live.read("GET"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, why) {
		t.Fatalf("live connection after nextUpdate: status %d %q, want 403 %s", r.StatusCode, r.body, why)
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, why) {
		t.Fatalf("new connection after nextUpdate: status %d %q, want 403 %s", r.StatusCode, r.body, why)
	}
	if r := h.do(t, h.client(nil), "GET", href(hApp, "/"), http.Header{"Cookie": {cookie}}, ""); r.StatusCode == http.StatusOK || !strings.Contains(r.body, why) {
		t.Fatalf("session cookie after nextUpdate: status %d %q, want a refusal naming it", r.StatusCode, r.body)
	}

	h.writeCRLUntil(clock().Add(24 * time.Hour)) // a newer list
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("after a newer CRL: status %d %q, want 200", r.StatusCode, r.body)
	}
}
