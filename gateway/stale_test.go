package gateway

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/proxyv2"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestTCPRelayClosedWhenItsCRLGoesStale: under crl_stale = "reject", a CRL
// that passes its nextUpdate while a device's tcp relay is open closes the
// relay (reason revoked), as an HTTP keep-alive connection is refused on
// its next request.
func TestTCPRelayClosedWhenItsCRLGoesStale(t *testing.T) {
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	echo := startTCPOrigin(t, echoHandler)
	edit := func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-tcp", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{tEcho}})
		a := tcpApp("tcp-echo", tEcho, echo.url(), anyFleetDevice)
		a.IdleTimeout, a.RelayBuffer = "3h", "64KiB"
		c.Applications = append(c.Applications, a)
	}
	h := newHarness(t, func(p *cfgParams) { p.CRL, p.CRLStale, p.Now, p.Edit = true, "reject", clock, edit })
	h.writeCRLUntil(time.Now().Add(time.Hour))
	// The watch reloads the new list; no reload may come after it (one
	// would check the relays itself).
	testkit.WaitFor(t, "the watch to load the CRL", 3*crlWatchInterval, func() bool {
		return strings.Contains(h.logs.String(), "configuration reloaded")
	})
	f := &tcpFixture{harness: h}
	c, err := f.dialTCP(t, tEcho, h.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	echoed := func() error {
		if _, err := io.WriteString(c, "ping"); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err
	}
	if err := echoed(); err != nil {
		t.Fatalf("before nextUpdate: %v", err)
	}
	skew.Store(int64(2 * time.Hour)) // the list is an hour past its nextUpdate
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("device read %v, want close_notify once its CRL is stale", err)
	}
	if d := time.Since(start); d > 2*crlWatchInterval+time.Second {
		t.Errorf("closed %v after the list went stale, want within the watch interval", d)
	}
	f.closeLine(t, "tcp-echo", closeRevoked)
}

// TestCookieExpiresWithTheRootCRL: a session cookie names its leaf and root,
// so when it comes back only the lists of the leaf's issuer are checked.
// Under crl_stale = "reject", a root's CRL (covering the intermediate every
// device chains through) that passes its nextUpdate must still end the
// session: the cookie's token expires then.
func TestCookieExpiresWithTheRootCRL(t *testing.T) {
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h := newHarness(t, func(p *cfgParams) { p.CRL, p.CRLStale, p.Now = true, "reject", clock })
	now := time.Now()
	nextUpdate := now.Add(time.Hour)
	h.writeFile("root.crl", pki.CRLPEM(h.pki.root.MustCRL(nil, now.Add(-time.Minute), nextUpdate)))
	cfg := h.config()
	cfg.ClientCAs[0].CRLFiles = append(cfg.ClientCAs[0].CRLFiles, "root.crl")
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	first := h.get(t, h.client(h.pki.sensor2), href(hApp, "/"))
	if first.StatusCode != http.StatusOK {
		t.Fatalf("before nextUpdate: status %d: %s", first.StatusCode, first.body)
	}
	cookie := strings.SplitN(first.Header.Get("Set-Cookie"), ";", 2)[0]
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	if r := h.do(t, h.client(nil), "GET", href(hApp, "/"), http.Header{"Cookie": {cookie}}, ""); r.StatusCode != http.StatusOK {
		t.Fatalf("the cookie before nextUpdate: status %d", r.StatusCode)
	}
	skew.Store(int64(2 * time.Hour)) // the root's list is an hour past its nextUpdate
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "revocation status unknown") {
		t.Fatalf("a new connection after the root CRL's nextUpdate: status %d %q, want 403 revocation status unknown", r.StatusCode, r.body)
	}
	if r := h.do(t, h.client(nil), "GET", href(hApp, "/"), http.Header{"Cookie": {cookie}}, ""); r.StatusCode == http.StatusOK {
		t.Fatalf("the session cookie after the root CRL's nextUpdate: status %d, want a refusal", r.StatusCode)
	}
}

// TestWatchedCRLReplacedWithSameStamp: a CRL replaced by rename (as
// revocation.md asks) with a file of the same size whose modification time
// was kept (cp -p, rsync -t, tar) is a change: the watch applies it.
func TestWatchedCRLReplacedWithSameStamp(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	path := filepath.Join(h.dir, "fleet.crl")
	h.writeCRL(h.pki.sensor2)
	testkit.WaitFor(t, "the watched CRL to revoke sensor-0002", 4*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor2), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
	time.Sleep(crlWatchInterval + 500*time.Millisecond) // the watch settles on this file's stamp
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// The same list revoking sensor-0001 instead: the same size when the
	// two serials have the same length.
	data := pki.CRLPEM(h.pki.inter.MustCRL(pki.Serials(h.pki.sensor1.cert), time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour)))
	if int64(len(data)) != before.Size() {
		t.Skipf("the serials' lengths differ (%d and %d bytes): no replacement of the same size to test", len(data), before.Size())
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the replaced CRL to revoke sensor-0001", 3*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor1), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
}

// TestCookieNotCappedByTheLeafIssuersOwnCRL: with a root that issues
// device certificates itself (path leaf → root), the root's CRL is the list
// of the leaf's issuer, which is checked when the cookie comes back: it
// does not cap the session token (a 24h session stays 24h), and the cookie
// is still refused once that list is stale.
func TestCookieNotCappedByTheLeafIssuersOwnCRL(t *testing.T) {
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h := newHarness(t, func(p *cfgParams) { p.CRL, p.CRLStale, p.Now = true, "reject", clock })
	c := h.pki.root.MustIssue(pki.Device("sensor-direct"))
	direct := &device{name: "sensor-direct", cert: c, tls: c.TLSCertificate(h.pki.root)}
	now := time.Now()
	h.writeFile("root.crl", pki.CRLPEM(h.pki.root.MustCRL(nil, now.Add(-time.Minute), now.Add(time.Hour))))
	cfg := h.config()
	cfg.ClientCAs[0].CRLFiles = append(cfg.ClientCAs[0].CRLFiles, "root.crl")
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	r := h.get(t, h.client(direct), href(hApp, "/"))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	sc := r.Header.Get("Set-Cookie")
	m := regexp.MustCompile(`Max-Age=(\d+)`).FindStringSubmatch(sc)
	if m == nil {
		t.Fatalf("no Max-Age in %q", sc)
	}
	age, _ := strconv.Atoi(m[1])
	// The cookie, once the root's list is stale, is refused anyway (the
	// root is the leaf's issuer): the cap protects nothing here.
	cookie := strings.SplitN(sc, ";", 2)[0]
	skew.Store(int64(2 * time.Hour))
	if rr := h.do(t, h.client(nil), "GET", href(hApp, "/"), http.Header{"Cookie": {cookie}}, ""); rr.StatusCode == http.StatusOK {
		t.Fatalf("the cookie after the leaf issuer's CRL went stale: %d (tokenCertStatus should refuse it)", rr.StatusCode)
	}
	if age < 2*3600 {
		t.Errorf("session cookie Max-Age=%d: a 24h session was capped at the nextUpdate of the leaf issuer's own CRL, which the cookie's return already checks", age)
	}
}

// TestTCPTokenEndsWithItsCRL: under crl_stale = "reject", the token of a
// relayed connection's PROXY header expires no later than the nextUpdate of
// a CRL covering the device (before its usual five minutes).
func TestTCPTokenEndsWithItsCRL(t *testing.T) {
	p := sharedPKI()
	nextUpdate := time.Now().Add(2 * time.Minute).Truncate(time.Second)
	crl := filepath.Join(t.TempDir(), "fleet.crl")
	if err := os.WriteFile(crl, pki.CRLPEM(p.inter.MustCRL(nil, time.Now().Add(-time.Minute), nextUpdate)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newTCPFixture(t, func(c *fileConfig) {
		for i := range c.ClientCAs {
			if c.ClientCAs[i].Name == "fleet-tcp" {
				c.ClientCAs[i].CRLFiles, c.ClientCAs[i].CRLStale = []string{crl}, "reject"
			}
		}
	})
	c, err := f.dialTCP(t, tProxy, p.sensor2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	tlvs, err := f.headers.next(t).TLVs()
	if err != nil {
		t.Fatal(err)
	}
	var token string
	for _, tlv := range tlvs {
		if tlv.Type == proxyv2.TypeToken {
			token = string(tlv.Value)
		}
	}
	if token == "" {
		t.Fatal("no token in the PROXY header")
	}
	_, expUnix := tokenClaims(t, token)
	if exp := time.Unix(expUnix, 0); exp.After(nextUpdate) || exp.Before(nextUpdate.Add(-time.Second)) {
		t.Errorf("token expires %v, want the CRL's nextUpdate %v", exp, nextUpdate)
	}
}
