package gateway

// What a configuration snapshot holds: revocation (CRLs and their
// staleness) applied at once to every path, and the input bound the TLS
// engine keeps behind a handshake, raised by a reload.

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

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

// TestRaisedBodyLimitRightAfterHandshake: a reload that raises
// max_body_bytes raises what the engine holds behind the handshake too: a
// body larger than the old bound, sent with the client's Finished, is
// served, not cut off as inbound_overflow.
func TestRaisedBodyLimitRightAfterHandshake(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Gateway.MaxBodyBytes = "2MiB"
	// The origin echoes a megabyte as JSON: under the race detector on a
	// busy machine that takes longer than the harness's 1 s.
	cfg.Gateway.OriginTimeout = "20s"
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	body := strings.Repeat("x", 1<<20) // beyond the engine's start-time bound (256 KiB)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("POST /big HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	r := c.read("POST")
	if r.StatusCode != http.StatusOK || len(r.echo(t).Body) != len(body) {
		t.Fatalf("status %d, echoed %d bytes, want 200 and %d", r.StatusCode, len(r.body), len(body))
	}
}

// TestLargeBodyRightAfterHandshake: a TLS 1.3 client sends its request right
// behind its Finished, while the gateway is still finishing the handshake.
// Those bytes wait in the TLS engine, which must hold one whole request
// (header and body limits plus slack) there: a body within max_body_bytes is
// served, one above it gets 413 — never a dropped connection.
func TestLargeBodyRightAfterHandshake(t *testing.T) {
	h := newHarness(t)
	for i := range 10 {
		for _, tc := range []struct {
			size int
			want int
		}{{60_000, http.StatusOK}, {100_000, http.StatusRequestEntityTooLarge}} {
			req, _ := http.NewRequest("POST", href(hApp, "/up"), strings.NewReader(strings.Repeat("u", tc.size)))
			resp, err := h.client(h.pki.sensor1).Do(req) // a new connection each time
			if err != nil {
				t.Fatalf("upload %d of %d bytes: %v", i, tc.size, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("upload %d of %d bytes: status %d, want %d", i, tc.size, resp.StatusCode, tc.want)
			}
		}
	}
}

// TestReloadKeepsOneOriginClientPerApplication: applications that share an
// origin each have their own client (and their own max_conns_per_origin
// bound) at start; a reload that changes nothing keeps it so, and keeps
// each application's own client.
func TestReloadKeepsOneOriginClientPerApplication(t *testing.T) {
	h := newHarness(t)
	clients := func() map[string]*originClient {
		out := map[string]*originClient{}
		for _, a := range h.srv.snap.Load().apps {
			if a.origin != nil && a.originURL == h.params.Origin {
				out[a.name] = a.origin
			}
		}
		return out
	}
	before := clients()
	distinct := map[*originClient]bool{}
	for _, c := range before {
		distinct[c] = true
	}
	if len(before) < 2 || len(distinct) != len(before) {
		t.Fatalf("at start: %d applications on the origin with %d clients", len(before), len(distinct))
	}
	if err := h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	after := clients()
	for name, c := range before {
		if after[name] != c {
			t.Errorf("%s: a new or another application's client after an unchanged reload", name)
		}
	}
}
