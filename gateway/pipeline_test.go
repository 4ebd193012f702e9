package gateway

// A request's way through the pipeline: the header and body limits,
// Expect: 100-continue, chunked bodies, the Host / SNI check, the policies'
// decision and the reasons of its refusals, and session tokens (which one
// counts, which keys verify them, how long they live, when the certificate
// behind them stops counting).

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/policy"
)

// sessionToken returns a fresh session token for hApp, minted for dev.
func sessionToken(t *testing.T, h *harness, dev *device) string {
	t.Helper()
	rc := h.dial(t, hApp, dev)
	rc.send(request("GET", hApp, "/mint"))
	r := rc.read("GET")
	tok := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	if r.StatusCode != http.StatusOK || tok == "" {
		t.Fatalf("minting a session token: status %d, assertion %q", r.StatusCode, tok)
	}
	return tok
}

// tokenClaims decodes a token's header and payload (no verification).
func tokenClaims(t *testing.T, tok string) (kid string, exp int64) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	var body struct {
		Exp int64 `json:"exp"`
	}
	for i, v := range []any{&hdr, &body} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(raw, v) != nil {
			t.Fatalf("token part %d does not decode: %v", i, err)
		}
	}
	return hdr.Kid, body.Exp
}

// TestTokenKeyRotationReachesOpenConnections: after a reload that replaces
// the signing key, a connection opened before it no longer accepts a token
// signed by the old key, mints with the new key, and serves the new JWKS.
func TestTokenKeyRotationReachesOpenConnections(t *testing.T) {
	h := newHarness(t)
	old := sessionToken(t, h, h.pki.sensor1)
	oldKid, _ := tokenClaims(t, old)

	bare := h.dial(t, hApp, nil)               // no certificate: the cookie is the credential
	withCert := h.dial(t, hApp, h.pki.sensor1) // opened before the reload too
	bare.send(request("GET", hApp, "/before", "Cookie: CF_Authorization="+old))
	if r := bare.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("before the rotation the cookie gets %d: %s", r.StatusCode, r.body)
	}
	withCert.send(request("GET", hApp, "/before"))
	withCert.read("GET")

	key, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	h.writeFile("token.pem", (&pki.Cert{Key: key}).KeyPEM())
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}

	bare.send(request("GET", hApp, "/after", "Cookie: CF_Authorization="+old))
	if r := bare.read("GET"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("a token of the rotated-out key on an open connection: %d, want 403: %s", r.StatusCode, r.body)
	}
	withCert.send(request("GET", hApp, "/after"))
	r := withCert.read("GET")
	tok := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	kid, _ := tokenClaims(t, tok)
	if kid == oldKid {
		t.Fatalf("an open connection still signs with the rotated-out key %s", kid)
	}
	withCert.send(request("GET", hApp, "/cdn-cgi/access/certs"))
	jwks := withCert.read("GET").body
	if !strings.Contains(jwks, kid) || strings.Contains(jwks, oldKid) {
		t.Fatalf("the open connection's JWKS does not serve the new key only: %s", jwks)
	}
}

// TestTokenCandidates: a browser may send several cookies of the name (a
// parent domain's first); the first that verifies counts, then the
// cf-access-token header; at most three are tried.
func TestTokenCandidates(t *testing.T) {
	h := newHarness(t)
	good := sessionToken(t, h, h.pki.sensor1)
	junk := "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"
	for _, tc := range []struct {
		name   string
		extra  []string
		status int
	}{
		{"junk cookie, then the good one", []string{"Cookie: CF_Authorization=" + junk + "; CF_Authorization=" + good}, 200},
		{"two Cookie headers, junk first", []string{"Cookie: CF_Authorization=" + junk, "Cookie: CF_Authorization=" + good}, 200},
		{"junk cookie, good header", []string{"Cookie: CF_Authorization=" + junk, "Cf-Access-Token: " + good}, 200},
		{"three junk cookies before the good one", []string{"Cookie: CF_Authorization=" + junk + "; CF_Authorization=" + junk + "; CF_Authorization=" + junk + "; CF_Authorization=" + good}, 403},
		{"junk only", []string{"Cookie: CF_Authorization=" + junk}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := h.dial(t, hApp, nil)
			rc.send(request("GET", hApp, "/", tc.extra...))
			r := rc.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.status == 200 {
				e := r.echo(t)
				if e.Headers.Get("Cf-Access-Jwt-Assertion") != good {
					t.Errorf("the origin did not get the token that verified")
				}
				if strings.Contains(e.Headers.Get("Cookie"), "CF_Authorization") {
					t.Errorf("a session cookie reached the origin: %q", e.Headers.Get("Cookie"))
				}
			}
		})
	}
}

// TestSessionTokenCappedAtCertificateExpiry: a 24h session for a
// certificate that expires in an hour gets a token and a cookie that end
// with the certificate.
func TestSessionTokenCappedAtCertificateExpiry(t *testing.T) {
	h := newHarness(t)
	o := pki.Device("sensor-0001")
	o.NotBefore, o.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	c := h.pki.inter.MustIssue(o)
	short := &device{name: o.CommonName, cert: c, tls: c.TLSCertificate(h.pki.inter)}

	rc := h.dial(t, hApp, short)
	rc.send(request("GET", hApp, "/"))
	r := rc.read("GET")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	_, exp := tokenClaims(t, r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion"))
	if exp > o.NotAfter.Unix() {
		t.Errorf("token exp %d is after the certificate's NotAfter %d", exp, o.NotAfter.Unix())
	}
	var cookie *http.Cookie
	for _, ck := range r.Cookies() {
		if ck.Name == "CF_Authorization" {
			cookie = ck
		}
	}
	if cookie == nil || cookie.MaxAge <= 0 || cookie.MaxAge > 3600 {
		t.Fatalf("cookie %v: Max-Age must end with the certificate (at most 3600)", cookie)
	}
}

// TestTokenOfRemovedCARefused: once a reload takes a CA away from an
// application, a session token minted for one of that CA's devices no
// longer opens it, on a new connection without a certificate.
func TestTokenOfRemovedCARefused(t *testing.T) {
	h := newHarness(t)
	tok := sessionToken(t, h, h.pki.sensor1)
	use := func() *response {
		rc := h.dial(t, hApp, nil)
		rc.send(request("GET", hApp, "/", "Cookie: CF_Authorization="+tok))
		return rc.read("GET")
	}
	if r := use(); r.StatusCode != http.StatusOK {
		t.Fatalf("before the reload: %d: %s", r.StatusCode, r.body)
	}
	cfg := h.config()
	cfg.trustOnlySecondCA()
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r := use(); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "no longer trusted") {
		t.Fatalf("after the CA was removed: %d %q, want 403 naming the CA", r.StatusCode, r.body)
	}
}

// TestCertificateExpiresDuringConnection: a keep-alive connection outliving
// its certificate is refused on its next request (the verdict is re-judged
// per request, as for revocation), and a token minted from a path whose
// intermediate expires before the leaf ends with the intermediate.
func TestCertificateExpiresDuringConnection(t *testing.T) {
	var offset atomic.Int64 // the gateway's clock runs this far ahead
	h := newHarness(t, func(p *cfgParams) {
		p.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	o := pki.Device("sensor-0001")
	o.NotBefore, o.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	c := h.pki.inter.MustIssue(o)
	dev := &device{name: o.CommonName, cert: c, tls: c.TLSCertificate(h.pki.inter)}

	rc := h.dial(t, hApp, dev)
	rc.send(request("GET", hApp, "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("before expiry: %d: %s", r.StatusCode, r.body)
	}
	offset.Store(int64(2 * time.Hour))
	rc.send(request("GET", hApp, "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "expired") {
		t.Fatalf("after the certificate expired, same connection: %d %q, want 403 expired", r.StatusCode, r.body)
	}
}

func TestRefusalReasons(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	tests := []struct {
		name   string
		domain string
		dev    *device
		status int
		body   string // the whole body, trimmed; "" to skip
	}{
		{"allowed by common_name", hIoT, p.sensor1, 200, ""},
		{"allowed by valid_certificate", hApp, p.sensor2, 200, ""},
		{"no certificate", hIoT, nil, 403, "no client certificate"},
		{"no certificate on the session app", hApp, nil, 403, "no client certificate"},
		{"certificate from another CA", hApp, p.foreign, 403, "unknown certificate authority"},
		{"certificate from another CA, same CN", hIoT, p.foreign, 403, "unknown certificate authority"},
		{"expired certificate", hIoT, p.expired, 403, "certificate expired"},
		{"CA not associated with the hostname", hApp, p.newFleet, 403, "unknown certificate authority"},
		{"deny policy", hIoT, p.retired, 403, `denied by policy "retired"`},
		{"no policy matched", hIoT, p.sensor2, 403, "no policy matched"},
		{"service auth: wrong device", hSvc, p.sensor2, 401, ""},
		{"service auth: no certificate", hSvc, nil, 401, "no client certificate"},
		{"service auth: allowed", hSvc, p.sensor1, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.get(t, h.client(tc.dev), href(tc.domain, "/data"))
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.status == 200 {
				if e := r.echo(t); e.Path != "/data" {
					t.Fatalf("origin saw %q", e.Path)
				}
				return
			}
			if tc.body != "" && strings.TrimSpace(r.body) != tc.body {
				t.Fatalf("body %q, want %q", r.body, tc.body)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			if r.Header.Get("Set-Cookie") != "" {
				t.Errorf("a refusal set a cookie: %s", r.Header.Get("Set-Cookie"))
			}
			if r.Header.Get("X-Origin") != "" {
				t.Errorf("a refused request reached the origin")
			}
		})
	}
}

func TestNoDurationToken(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	c := h.dial(t, hIoT, p.sensor1)
	c.send(request("GET", hIoT, "/reading"))
	r := c.read("GET")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	if v := r.Header.Values("Set-Cookie"); len(v) != 0 {
		t.Errorf("no-duration response sets a cookie: %v", v)
	}
	if !r.Close { // net/http folds "Connection: close" into Close
		t.Errorf("no-duration response lacks Connection: close")
	}
	c.expectEOF()

	tok := r.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")
	if tok == "" {
		t.Fatal("the origin got no Cf-Access-Jwt-Assertion")
	}
	jwks := h.get(t, h.client(nil), href(hIoT, "/cdn-cgi/access/certs"))
	if jwks.StatusCode != http.StatusOK {
		t.Fatalf("JWKS: status %d: %s", jwks.StatusCode, jwks.body)
	}
	keys, err := policy.ParseJWKS([]byte(jwks.body))
	if err != nil {
		t.Fatalf("ParseJWKS: %v", err)
	}
	claims, err := keys.VerifyAny(tok, policy.DeriveAUD("iot"), testIssuer, time.Now())
	if err != nil {
		t.Fatalf("the assertion does not verify against the JWKS: %v", err)
	}
	if !claims.NoDuration || claims.CommonName != "sensor-0001" || claims.CertSHA256 != certSHA256(p.sensor1) || claims.Policy != "sensor-0001 only" {
		t.Errorf("claims %+v", claims)
	}
	if _, err := keys.VerifyAny(tamperPayload(t, tok), "", "", time.Now()); err == nil {
		t.Error("a tampered assertion verifies")
	}

	// Presented back, it is refused.
	for _, hdr := range []http.Header{
		{"Cookie": {"CF_Authorization=" + tok}},
		{"Cf-Access-Token": {tok}},
	} {
		r := h.do(t, h.client(nil), "GET", href(hIoT, "/"), hdr, "")
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("no-duration token presented back (%v): status %d, want 403", hdr, r.StatusCode)
		}
	}

	// net/http makes a fresh connection (and handshake) for every request.
	cl := h.client(p.sensor1)
	for i := range 3 {
		req, _ := http.NewRequest("GET", href(hIoT, "/"), nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if info.Reused {
					t.Errorf("request %d reused a no-duration connection", i)
				}
			},
		}))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
}

// TestNoDurationRefusalCloses: on a "no duration" application a refused
// request ends its connection as an admitted one does: the device's next
// try is judged on a fresh handshake.
func TestNoDurationRefusalCloses(t *testing.T) {
	h := newHarness(t)
	for _, dev := range []*device{h.pki.retired, h.pki.sensor2} { // denied; admitted by no policy
		c := h.dial(t, hIoT, dev)
		c.send(request("GET", hIoT, "/reading"))
		r := c.read("GET")
		if r.StatusCode != http.StatusForbidden {
			t.Fatalf("%s: status %d, want 403: %s", dev.name, r.StatusCode, r.body)
		}
		if !r.Close {
			t.Errorf("%s: the refusal on a no-duration application lacks Connection: close", dev.name)
		}
		c.expectEOF()
	}
}

// TestNoSNIStaysOnItsSite: a connection without SNI lands on the wildcard
// default site; a Host that the wildcard covers but a more specific site
// serves (other policies, possibly other CAs) is refused with 421, not
// judged by the wildcard's policies and forwarded.
func TestNoSNIStaysOnItsSite(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.Wildcard = true })
	rc := h.dialUnverified(t, "", h.pki.sensor1) // no SNI
	rc.send(request("GET", "exact.wild.fleet.test", "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("no SNI, Host of the more specific site: %d, want 421: %s", r.StatusCode, r.body)
	}
	rc.send(request("GET", "other.wild.fleet.test", "/"))
	if r := rc.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("no SNI, a host of the wildcard site: %d, want 200: %s", r.StatusCode, r.body)
	}
	// With SNI the exact site judges by its own policy: sensor-0001 is not
	// its device.
	direct := h.dialUnverified(t, "exact.wild.fleet.test", h.pki.sensor1) // the server certificate lacks the name
	direct.send(request("GET", "exact.wild.fleet.test", "/"))
	if r := direct.read("GET"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("SNI of the exact site, a device its policy does not admit: %d, want 403", r.StatusCode)
	}
}

// TestOversizedBodyNotAwaited: a body over max_body_bytes (64KiB) is refused
// with 413 before the device has sent it, declared or chunked.
func TestOversizedBodyNotAwaited(t *testing.T) {
	o := startCountingOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	t.Run("declared", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		// 100 MB announced, not a byte sent: the answer cannot wait for it.
		c.send(request("POST", hApp, "/up", "Content-Length: 100000000"))
		if r := c.read("POST"); r.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413: %s", r.StatusCode, r.body)
		}
	})
	t.Run("chunked, never ending", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		// 80KiB of chunks and no last chunk: the gateway stops at the limit.
		c.send(request("POST", hApp, "/up", "Transfer-Encoding: chunked") +
			strings.Repeat("4000\r\n"+strings.Repeat("c", 0x4000)+"\r\n", 5))
		if r := c.read("POST"); r.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413: %s", r.StatusCode, r.body)
		}
	})
	if n := o.hits.Load(); n != 0 {
		t.Errorf("the origin received %d requests", n)
	}
}

// TestRefusedBeforeBody: a request the gateway refuses is refused on its
// header: no 100 Continue, its body never read or forwarded, and the
// connection ends after the answer (its unread body cannot be framed).
func TestRefusedBeforeBody(t *testing.T) {
	h := newHarness(t)
	body := strings.Repeat("b", 1000)
	for _, tc := range []struct{ name, req string }{
		{"Expect: 100-continue", "POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"},
		{"body sent at once", "POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 1000\r\n\r\n" + body},
		{"chunked body", "POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + body + "\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, hApp, nil) // no certificate: the policies refuse it
			c.send(tc.req)
			r := c.read("POST")
			if r.StatusCode != http.StatusForbidden {
				t.Fatalf("first answer %d, want 403 before any 100 Continue: %s", r.StatusCode, r.body)
			}
			if !r.Close {
				t.Errorf("a refusal with an unread body must close the connection")
			}
			c.finish()
		})
	}
	t.Run("no body: the connection stays", func(t *testing.T) {
		c := h.dial(t, hApp, nil)
		c.send(request("GET", hApp, "/"))
		if r := c.read("GET"); r.StatusCode != http.StatusForbidden || r.Close {
			t.Fatalf("status %d, close %v: a refused GET keeps the connection", r.StatusCode, r.Close)
		}
		c.send(request("GET", hApp, "/cdn-cgi/access/certs"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK {
			t.Fatalf("the next request on the connection: %d", r.StatusCode)
		}
	})
}

func TestExpectContinue(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("PUT", hApp, "/upload", "Content-Length: 11", "Expect: 100-continue"))
	interim := c.read("PUT")
	if interim.StatusCode != http.StatusContinue {
		t.Fatalf("first response: status %d, want 100", interim.StatusCode)
	}
	c.send("hello world")
	r := c.read("PUT")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("final response: status %d: %s", r.StatusCode, r.body)
	}
	e := r.echo(t)
	if e.Method != "PUT" || e.Body != "hello world" {
		t.Fatalf("origin saw %s %q", e.Method, e.Body)
	}
	if _, ok := e.Headers["Expect"]; ok {
		t.Errorf("Expect was forwarded to the origin: %v", e.Headers["Expect"])
	}

	// Too large a declared body is refused before the client sends it.
	c2 := h.dial(t, hApp, h.pki.sensor1)
	c2.send(request("PUT", hApp, "/upload", "Content-Length: 1000000", "Expect: 100-continue"))
	r = c2.read("PUT")
	if r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized 100-continue: status %d, want 413", r.StatusCode)
	}
	if !r.Close {
		t.Errorf("413 before the body should say Connection: close")
	}
	c2.finish()
}

func TestChunkedRequestBody(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	chunks := []string{"telemetry ", "from ", strings.Repeat("x", 3000), " end"}
	var b strings.Builder
	b.WriteString(request("POST", hApp, "/ingest", "Transfer-Encoding: chunked", "Content-Type: text/plain"))
	for _, ch := range chunks {
		b.WriteString(strconv.FormatInt(int64(len(ch)), 16) + "\r\n" + ch + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	c.send(b.String())
	r := c.read("POST")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	if got, want := r.echo(t).Body, strings.Join(chunks, ""); got != want {
		t.Fatalf("origin received %d bytes %.40q…, want %d bytes", len(got), got, len(want))
	}
	// Keep-alive goes on after a chunked body.
	c.send(request("GET", hApp, "/after"))
	if e := c.read("GET").echo(t); e.Path != "/after" {
		t.Fatalf("next request: origin saw %q", e.Path)
	}
}

func TestRequestLimits(t *testing.T) {
	h := newHarness(t) // max_header_bytes 4KiB, max_header_count 20, max_body_bytes 64KiB
	many := make([]string, 30)
	for i := range many {
		many[i] = "X-Field-" + strconv.Itoa(i) + ": v"
	}
	chunked := request("POST", hApp, "/big", "Transfer-Encoding: chunked") +
		strings.Repeat("8000\r\n"+strings.Repeat("c", 0x8000)+"\r\n", 3) + "0\r\n\r\n"
	tests := []struct {
		name   string
		raw    string
		status int
		body   string
	}{
		{"header too large", request("GET", hApp, "/", "X-Big: "+strings.Repeat("a", 6000)), 431, "request header too large"},
		{"too many header fields", request("GET", hApp, "/", many...), 431, "too many header fields"},
		{"body over max_body_bytes", request("POST", hApp, "/big", "Content-Length: 70000") + strings.Repeat("b", 70000), 413, "request body too large"},
		{"chunked body over max_body_bytes", chunked, 413, "request body too large"},
		// The device keeps sending while the 413 goes out: the answer must not be lost.
		{"body far beyond every buffer", request("POST", hApp, "/huge", "Content-Length: 2000000") + strings.Repeat("h", 2000000), 413, "request body too large"},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, ""},
		{"within limits", request("POST", hApp, "/ok", "Content-Length: 60000", "X-Field: "+strings.Repeat("a", 3000)) + strings.Repeat("b", 60000), 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, hApp, h.pki.sensor1)
			// A first request makes sure the server side of the handshake is
			// over (see TestLargeBodyRightAfterHandshake).
			c.send(request("GET", hApp, "/warm"))
			if r := c.read("GET"); r.StatusCode != 200 {
				t.Fatalf("warm-up: status %d", r.StatusCode)
			}
			go func() { _, _ = c.c.Write([]byte(tc.raw)) }() // the gateway may answer before reading it all
			r := c.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
			if tc.body != "" && strings.TrimSpace(r.body) != tc.body {
				t.Fatalf("body %q, want %q", r.body, tc.body)
			}
			if tc.status >= 400 {
				if !r.Close {
					t.Errorf("a refused request should close the connection (Connection: close)")
				}
				c.finish()
			}
		})
	}
	t.Run("a silent device is closed after the linger", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send(request("GET", hApp, "/", many...))
		if r := c.read("GET"); r.StatusCode != 431 {
			t.Fatalf("status %d", r.StatusCode)
		}
		start := time.Now()
		c.expectEOF() // close_notify, at once
		// The device neither sends nor closes: the linger ends the
		// connection.
		c.expectSocketClosed(lingerTime + time.Second)
		if d := time.Since(start); d < lingerTime/2 {
			t.Errorf("the socket closed after %v, before the linger", d)
		}
	})
	// The gateway still serves.
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("after the limits: status %d", r.StatusCode)
	}
}

// TestRefusedUploadIsAnswered: a device that keeps writing a body the
// gateway refuses still gets the 413 (lingering close), with Go's client,
// which stops reading when its write fails.
func TestRefusedUploadIsAnswered(t *testing.T) {
	h := newHarness(t)
	cl := h.client(h.pki.sensor1)
	for i := range 10 {
		// A new connection each time (the 413 closes it); the body, more
		// than the gateway buffers, is mostly written while the 413 is on
		// its way, and below tlsengine's 256KiB handshake bound.
		req, _ := http.NewRequest("POST", href(hApp, "/up"), strings.NewReader(strings.Repeat("u", 200_000)))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("upload %d: %v (the 413 was lost)", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("upload %d: status %d, want 413", i, resp.StatusCode)
		}
	}
}

func TestHostMustMatchSNI(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		sni    string
		host   string
		status int
	}{
		{"same host", hApp, hApp, 200},
		{"port may differ", hApp, hApp + ":8443", 200},
		{"other port", hApp, hApp + ":1", 200},
		{"case differs", hApp, "APP.Fleet.Test", 200},
		{"another application", hApp, hIoT, 421},
		{"unknown host", hApp, "evil.example", 421},
		{"another application with port", hApp, hIoT + ":443", 421},
		{"no-duration app asked for the session app", hIoT, hApp, 421},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, tc.sni, h.pki.sensor1)
			c.send(request("GET", tc.host, "/"))
			r := c.read("GET")
			if r.StatusCode != tc.status {
				t.Fatalf("SNI %s, Host %s: status %d, want %d: %s", tc.sni, tc.host, r.StatusCode, tc.status, r.body)
			}
			if tc.status == 421 && !strings.Contains(r.body, "does not match") {
				t.Errorf("421 body %q does not say why", r.body)
			}
		})
	}
	t.Run("no Host header", func(t *testing.T) {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n")
		if r := c.read("GET"); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400: %s", r.StatusCode, r.body)
		}
	})
}
