package gateway

// What the gateway forwards to the origin, and how: the forwarding headers,
// https origins (with their CA), answers relayed as sent, origin failures;
// and hardened: header names with '_', the whole spoofable families (also
// in trailers), every Connection header (and never the framing on a
// Connection header's word), the device's User-Agent (or its absence),
// absolute-form targets, and targets that start with "//".

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// readRequest parses a raw request (header and body) as the gateway does.
func readRequest(t testing.TB, raw string) *fasthttp.Request {
	t.Helper()
	req := &fasthttp.Request{}
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return req
}

// wireRequest is what the origin client writes for req: the header fields
// by name (lower case), and the request line.
func wireRequest(t testing.TB, req *fasthttp.Request) (line string, fields map[string][]string, raw string) {
	t.Helper()
	req.URI().DisablePathNormalizing = true // as the origin client sets it
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	raw = b.String()
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	fields = map[string][]string{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		fields[strings.ToLower(k)] = append(fields[strings.ToLower(k)], strings.TrimSpace(v))
	}
	return lines[0], fields, raw
}

var testForward = forwardInfo{Token: "minted.jwt.sig", ClientIP: "10.0.0.1", Host: "app.fleet.test", CookieName: "CF_Authorization"}

// TestHardeningUnderscoreHeaders: a field name with '_' never
// reaches the origin, whatever it spells, and the request is served.
func TestHardeningUnderscoreHeaders(t *testing.T) {
	raw := "GET /x HTTP/1.1\r\nHost: app.fleet.test\r\n" +
		"Cf_Access_Jwt_Assertion: forged\r\n" +
		"X_Forwarded_For: 6.6.6.6\r\n" +
		"Cf_Client_Cert_Sha256: 0000\r\n" +
		"cf_connecting_ip: 6.6.6.6\r\n" +
		"X-Device_Model: forged-too\r\n" +
		"_: lone\r\n" +
		"X-Device-Model: m1\r\n\r\n"
	req := readRequest(t, raw)
	if why := framingError(req); why != "" {
		t.Fatalf("refused (%s): underscores are dropped, never refused", why)
	}
	originRequest(req, testForward)
	_, fields, wire := wireRequest(t, req)
	for k := range fields {
		if strings.Contains(k, "_") {
			t.Errorf("%q reached the origin", k)
		}
	}
	for _, bad := range []string{"forged", "6.6.6.6", "0000", "lone"} {
		if strings.Contains(wire, bad) {
			t.Errorf("%q reached the origin:\n%s", bad, wire)
		}
	}
	if got := fields["x-device-model"]; len(got) != 1 || got[0] != "m1" {
		t.Errorf("X-Device-Model = %q, want m1", got)
	}
	if got := fields["cf-access-jwt-assertion"]; len(got) != 1 || got[0] != testForward.Token {
		t.Errorf("Cf-Access-Jwt-Assertion = %q, want the gateway's", got)
	}
}

// TestHardeningSpoofableFamilies: every field of the spoofable
// families is stripped, in any case; the gateway's own forwarding headers
// are then the only ones; neighbours of those names pass.
func TestHardeningSpoofableFamilies(t *testing.T) {
	stripped := []string{
		"X-Forwarded-Client-Cert", "Cf-Access-Authenticated-User-Email", "True-Client-Ip", "X-Client-Ip",
		"X-Forwarded-Port", "X-Ssl-Client-Verify", "X-Forwarded-Server", "X-Forwarded-Prefix", "Cf-Ipcountry",
		"Cf-Ray", "Cf-Visitor", "Cf-Worker", "Ssl-Client-Cert", "Ssl-Client-Verify", "X-Ssl-Client-Cert",
		"X-Client-Cert", "Client-Cert", "Client-Cert-Chain", "Forwarded", "X-Real-Ip",
		"Cf-Access-Jwt-Assertion", "Cf-Access-Client-Id", "Cf-Connecting-Ip", "X-Forwarded-For",
		"X-Forwarded-Proto", "X-Forwarded-Host", "Cf-Client-Cert-Der-Base64", "Cf-Client-Cert-Sha256",
	}
	kept := []string{"X-Request-Id", "Cfg-Version", "X-Cf", "Xcf-A", "X-Forwarded", "X-Forwardedfor", "X-Ssl",
		"Ssl-Client", "Client-Certificate", "X-Client", "X-Cf-Ray", "Accept"}
	ident := &verdict.Identity{DER: []byte("der"), SHA256: "gateway-sha"}
	for _, spell := range []func(string) string{func(s string) string { return s }, strings.ToLower, strings.ToUpper} {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\r\nHost: app.fleet.test\r\n")
		for _, n := range stripped {
			b.WriteString(spell(n) + ": spoofed\r\n")
		}
		for _, n := range kept {
			b.WriteString(spell(n) + ": kept\r\n")
		}
		b.WriteString("\r\n")
		req := readRequest(t, b.String())
		if !carriesStripped(&req.Header) {
			t.Fatal("carriesStripped: not seen")
		}
		f := testForward
		f.ClientCert = ident
		originRequest(req, f)
		_, fields, wire := wireRequest(t, req)
		if strings.Contains(wire, "spoofed") {
			t.Errorf("%s: a spoofed field reached the origin:\n%s", spell("Spelled"), wire)
		}
		for _, n := range kept {
			if got := fields[strings.ToLower(n)]; len(got) != 1 || got[0] != "kept" {
				t.Errorf("%s = %q, want it forwarded", spell(n), got)
			}
		}
		for k, v := range map[string]string{
			"x-forwarded-for": "10.0.0.1", "x-forwarded-proto": "https", "x-forwarded-host": "app.fleet.test",
			"cf-access-jwt-assertion": f.Token, "cf-client-cert-sha256": "gateway-sha",
			"cf-client-cert-der-base64": "ZGVy", "client-cert": ":ZGVy:",
		} {
			if got := fields[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q, want the gateway's %q", k, got, v)
			}
		}
	}
	// Each name alone, in each case, is seen by the one-pass check.
	for _, n := range stripped {
		for _, s := range []string{n, strings.ToLower(n), strings.ToUpper(n)} {
			req := readRequest(t, "GET / HTTP/1.1\r\nHost: app.fleet.test\r\nUser-Agent: s\r\n"+s+": x\r\n\r\n")
			if !carriesStripped(&req.Header) {
				t.Errorf("carriesStripped: %s not seen", s)
			}
		}
	}
	for _, n := range kept {
		req := readRequest(t, "GET / HTTP/1.1\r\nHost: app.fleet.test\r\nUser-Agent: s\r\n"+n+": x\r\n\r\n")
		if carriesStripped(&req.Header) {
			t.Errorf("carriesStripped: %s taken for a stripped field", n)
		}
	}
}

// TestHardeningStrippedNoAlloc: the one-pass check and the whole rewrite of
// a request with nothing to strip cost no allocation, long names included.
func TestHardeningStrippedNoAlloc(t *testing.T) {
	raw := []byte("GET /v1/readings?since=17 HTTP/1.1\r\nHost: devices.fleet.test\r\nUser-Agent: sensor/2.1\r\n" +
		"Accept: application/json\r\nX-A-Rather-Long-Header-Name-Past-Thirty-Two-Bytes: 1\r\n\r\n")
	rd := bytes.NewReader(raw)
	br := bufio.NewReader(rd)
	var req fasthttp.Request
	read := func() {
		rd.Reset(raw)
		br.Reset(rd)
		req.Reset()
		if err := req.Header.Read(br); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if carriesStripped(&req.Header) {
		t.Fatal("an ordinary request taken for one with stripped fields")
	}
	if n := testing.AllocsPerRun(100, func() { _ = carriesStripped(&req.Header) }); n != 0 {
		t.Errorf("carriesStripped: %v allocations", n)
	}
	id := &verdict.Identity{DER: make([]byte, 600), SHA256: "ab"}
	f := forwardInfo{Token: "t.t.t", ClientIP: "10.1.2.3", Host: "devices.fleet.test", CookieName: "CF_Authorization", ClientCert: id}
	if n := testing.AllocsPerRun(100, func() { read(); originRequest(&req, f) }); n != 0 {
		t.Errorf("read + originRequest: %v allocations", n)
	}
}

// TestHardeningConnectionTokens: the fields every
// Connection header nominates are stripped, not only the first's; framing
// fields and Host are never stripped on a Connection header's word.
func TestHardeningConnectionTokens(t *testing.T) {
	tests := []struct {
		name    string
		headers string
		gone    []string
		kept    map[string]string
	}{
		{"second Connection header", "Connection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: 1\r\n",
			[]string{"x-secret", "connection"}, nil},
		{"three headers, lists", "Connection: X-A\r\nConnection: keep-alive, X-B ,, X-C\r\nConnection: close, X-D\r\nX-A: 1\r\nX-B: 1\r\nX-C: 1\r\nX-D: 1\r\nX-E: e\r\n",
			[]string{"x-a", "x-b", "x-c", "x-d", "connection"}, map[string]string{"x-e": "e"}},
		{"framing and Host are not hop-by-hop", "Connection: Content-Length, Host, Transfer-Encoding, X-F\r\nX-F: 1\r\nContent-Length: 5\r\n",
			[]string{"x-f", "connection"}, map[string]string{"content-length": "5", "host": "app.fleet.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if strings.Contains(tc.headers, "Content-Length: 5") {
				body = "hello"
			}
			req := readRequest(t, "POST / HTTP/1.1\r\nHost: app.fleet.test\r\n"+tc.headers+"\r\n"+body)
			originRequest(req, testForward)
			_, fields, wire := wireRequest(t, req)
			for _, k := range tc.gone {
				if v, ok := fields[k]; ok {
					t.Errorf("%s: %q reached the origin:\n%s", k, v, wire)
				}
			}
			for k, v := range tc.kept {
				if got := fields[k]; len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want %q:\n%s", k, got, v, wire)
				}
			}
			if body != "" && !strings.HasSuffix(wire, "\r\n\r\nhello") {
				t.Errorf("the body was reframed:\n%q", wire)
			}
		})
	}
}

// originResponse parses a raw origin response as the origin client does.
func originResponse(t testing.TB, raw string) *fasthttp.Response {
	t.Helper()
	resp := &fasthttp.Response{}
	if err := resp.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return resp
}

func wireResponse(t testing.TB, resp *fasthttp.Response) string {
	t.Helper()
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := resp.Write(w); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	return b.String()
}

// TestHardeningOriginConnection: the origin's
// Connection headers and the fields they nominate stay at the gateway; the
// device's Connection header is the gateway's alone.
func TestHardeningOriginConnection(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n" +
		"X-Internal: secret\r\nKeep-Alive: timeout=5\r\nX-Public: p\r\nContent-Length: 2\r\n\r\nok"
	for _, closeAfter := range []bool{false, true} {
		resp := originResponse(t, raw)
		cleanOriginResponse(resp)
		if closeAfter {
			resp.SetConnectionClose() // as respond does
		}
		wire := wireResponse(t, resp)
		head, _, _ := strings.Cut(wire, "\r\n\r\n")
		var conn []string
		for _, l := range strings.Split(head, "\r\n")[1:] {
			k, v, _ := strings.Cut(l, ":")
			switch strings.ToLower(k) {
			case "connection":
				conn = append(conn, strings.TrimSpace(v))
			case "x-internal", "upgrade", "keep-alive":
				t.Errorf("%s reached the device", l)
			}
		}
		want := []string(nil)
		if closeAfter {
			want = []string{"close"}
		}
		if strings.Join(conn, "|") != strings.Join(want, "|") {
			t.Errorf("close=%v: the device's Connection header is %q, want %q:\n%s", closeAfter, conn, want, wire)
		}
		if !strings.Contains(head, "X-Public: p") || !strings.HasSuffix(wire, "\r\n\r\nok") {
			t.Errorf("the response was damaged:\n%s", wire)
		}
	}
	// A Connection header that names the framing does not reframe it.
	resp := originResponse(t, "HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 2\r\n\r\nok")
	cleanOriginResponse(resp)
	if cl := resp.Header.ContentLength(); cl != 2 {
		t.Errorf("Content-Length %d after cleaning, want 2", cl)
	}
}

// TestCleanOriginResponseEachHopByHop: every hop-by-hop field goes on its
// own, in any case, with no Connection header to nominate it, and an
// answer that carries none keeps every field.
func TestCleanOriginResponseEachHopByHop(t *testing.T) {
	for _, name := range append(hopByHopHeaders, "keep-alive", "PROXY-AUTHENTICATE", "te") {
		value := "v"
		if strings.EqualFold(name, "Connection") {
			value = "close"
		}
		raw := "HTTP/1.1 200 OK\r\n" + name + ": " + value + "\r\nX-Public: p\r\nContent-Length: 2\r\n\r\nok"
		resp := originResponse(t, raw)
		cleanOriginResponse(resp)
		head, _, _ := strings.Cut(wireResponse(t, resp), "\r\n\r\n")
		for _, l := range strings.Split(head, "\r\n")[1:] {
			if k, _, _ := strings.Cut(l, ":"); strings.EqualFold(k, name) {
				t.Errorf("%s reached the device:\n%s", name, head)
			}
		}
		if !strings.Contains(head, "X-Public: p") {
			t.Errorf("%s: the other fields were damaged:\n%s", name, head)
		}
	}
	raw := "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-Connection: 2\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
	resp := originResponse(t, raw)
	cleanOriginResponse(resp)
	wire := wireResponse(t, resp)
	for _, f := range []string{"X-A: 1", "X-Connection: 2", "Content-Type: text/plain", "Content-Length: 2"} {
		if !strings.Contains(wire, f) {
			t.Errorf("%s was lost:\n%s", f, wire)
		}
	}
}

// TestHardeningOriginConnectionEndToEnd: an origin's Connection options
// reach no device, over the wire.
func TestHardeningOriginConnectionEndToEnd(t *testing.T) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Connection"] = []string{"keep-alive, X-Internal", "Upgrade"}
		w.Header().Set("Upgrade", "h2c")
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-Public", "p")
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(o.Close)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/"))
	r := c.read("GET")
	if r.StatusCode != 200 || r.body != "ok" || r.Header.Get("X-Public") != "p" {
		t.Fatalf("status %d %q %v", r.StatusCode, r.body, r.Header)
	}
	for _, k := range []string{"Connection", "Upgrade", "X-Internal"} {
		if v := r.Header.Values(k); len(v) != 0 {
			t.Errorf("the origin's %s %q reached the device", k, v)
		}
	}
	// The connection is still the device's to reuse.
	c.send(request("GET", hApp, "/again"))
	if r := c.read("GET"); r.StatusCode != 200 || r.Header.Get("Connection") != "" {
		t.Errorf("second request: status %d, Connection %q", r.StatusCode, r.Header.Get("Connection"))
	}
}

// TestHardeningUserAgent: the device's User-Agent reaches the
// origin unchanged, and its absence stays an absence.
func TestHardeningUserAgent(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/none"))
	if e := c.read("GET").echo(t); len(e.Headers.Values("User-Agent")) != 0 {
		t.Errorf("no User-Agent sent; the origin got %q", e.Headers.Values("User-Agent"))
	}
	c.send(request("GET", hApp, "/some", "User-Agent: sensor/9.1 (fw 3; +x)"))
	if e := c.read("GET").echo(t); strings.Join(e.Headers.Values("User-Agent"), "|") != "sensor/9.1 (fw 3; +x)" {
		t.Errorf("the origin got User-Agent %q", e.Headers.Values("User-Agent"))
	}
}

// TestHardeningAbsoluteTarget: an absolute-form target reaches
// the origin in origin form with its path and query as sent, exactly as the
// same target in origin form does.
func TestHardeningAbsoluteTarget(t *testing.T) {
	tests := []struct{ target, want string }{
		{"https://app.fleet.test/abs/%2e%2e/x?q=1", "/abs/%2e%2e/x?q=1"},
		{"https://app.fleet.test/a/../b//c/./d?x=%2F&y=a+b", "/a/../b//c/./d?x=%2F&y=a+b"},
		{"https://app.fleet.test:443/%2F%2fenc", "/%2F%2fenc"},
		{"https://app.fleet.test?q=1", "/?q=1"},
		{"https://app.fleet.test", "/"},
		{"http://APP.fleet.test/Case/Kept", "/Case/Kept"},
	}
	for _, tc := range tests {
		line := func(target string) string {
			req := readRequest(t, "GET "+target+" HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n")
			if why := framingError(req); why != "" {
				t.Fatalf("%s refused: %s", target, why)
			}
			originRequest(req, testForward)
			l, _, _ := wireRequest(t, req)
			return l
		}
		if got, want := line(tc.target), "GET "+tc.want+" HTTP/1.1"; got != want {
			t.Errorf("%s: the origin got %q, want %q", tc.target, got, want)
		}
		if got, want := line(tc.target), line(tc.want); got != want {
			t.Errorf("%s: absolute form %q, origin form %q", tc.target, got, want)
		}
	}
	// Over the wire, to the echo origin.
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("GET https://" + hApp + "/abs/%2e%2e/x?q=1 HTTP/1.1\r\nHost: " + hApp + "\r\n\r\n")
	if e := c.read("GET").echo(t); e.Path != "/abs/%2e%2e/x?q=1" {
		t.Errorf("the origin got %q", e.Path)
	}
}

// TestHardeningEndToEnd: findings 1 to 3 over the wire, to the echo origin.
func TestHardeningEndToEnd(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/",
		"Cf_Access_Jwt_Assertion: forged", "X_Forwarded_For: 6.6.6.6", "Cf_Client_Cert_Sha256: forged",
		"X-Forwarded-Client-Cert: forged", "Cf-Access-Authenticated-User-Email: forged@example.com",
		"True-Client-Ip: 6.6.6.6", "X-Client-Ip: 6.6.6.6", "X-Forwarded-Port: 1", "X-Ssl-Client-Verify: SUCCESS",
		"Connection: keep-alive", "Connection: X-Secret", "X-Secret: forged", "X-Device-Model: m1"))
	r := c.read("GET")
	e := r.echo(t)
	for k, vs := range e.Headers {
		for _, v := range vs {
			if strings.Contains(k, "_") || strings.Contains(v, "forged") || strings.Contains(v, "6.6.6.6") || v == "SUCCESS" {
				t.Errorf("%s: %q reached the origin", k, v)
			}
		}
	}
	for _, k := range []string{"X-Forwarded-Client-Cert", "Cf-Access-Authenticated-User-Email", "True-Client-Ip",
		"X-Client-Ip", "X-Forwarded-Port", "X-Ssl-Client-Verify", "X-Secret", "Connection"} {
		if vs := e.Headers.Values(k); len(vs) != 0 {
			t.Errorf("%s %q reached the origin", k, vs)
		}
	}
	if got := e.Headers.Get("X-Device-Model"); got != "m1" {
		t.Errorf("X-Device-Model = %q", got)
	}
	if got := e.Headers.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if jwt := e.Headers.Get("Cf-Access-Jwt-Assertion"); strings.Count(jwt, ".") != 2 {
		t.Errorf("Cf-Access-Jwt-Assertion = %q, want the gateway's token", jwt)
	}
}

// TestHardeningNetworkPathTarget: a target that starts with "//" and
// contains "://" reaches the origin as sent, with the Host the gateway
// checked: fasthttp's parse alone takes its first segment for the host
// ("GET /x://y" with "Host: evil.example").
func TestHardeningNetworkPathTarget(t *testing.T) {
	for _, tc := range []struct{ target, want string }{
		{"//evil.example/x://y", "//evil.example/x://y"},
		{"//evil.example:8080/x://y?q=1", "//evil.example:8080/x://y?q=1"},
		{"https://app.fleet.test//evil.example/x://y?q=1", "//evil.example/x://y?q=1"},
		{"//plain//path", "//plain//path"},
		{"//[::1/x://y", "//[::1/x://y"}, // a host fasthttp cannot parse
	} {
		req := readRequest(t, "GET "+tc.target+" HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n")
		if why := framingError(req); why != "" {
			t.Fatalf("%s refused: %s", tc.target, why)
		}
		originRequest(req, testForward)
		line, fields, _ := wireRequest(t, req)
		if want := "GET " + tc.want + " HTTP/1.1"; line != want {
			t.Errorf("%s: the origin got %q, want %q", tc.target, line, want)
		}
		if got := fields["host"]; len(got) != 1 || got[0] != "app.fleet.test" {
			t.Errorf("%s: the origin got Host %q", tc.target, got)
		}
	}
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "//evil.example/x://y"))
	if e := c.read("GET").echo(t); e.Host != hApp || e.Path != "//evil.example/x://y" {
		t.Errorf("the origin got %q with Host %q", e.Path, e.Host)
	}
}

// TestHTTPSOrigin: a request read from a device goes to an https origin.
// It carries no scheme of its own, and fasthttp's TLS client refused it
// ("redirect to different scheme") until originRequest set https.
func TestHTTPSOrigin(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host+" "+r.URL.RequestURI())
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate()) // httptest's certificate; the rest is the gateway's client
	hc := newOriginClient(mustParseURL(t, srv.URL), originOptions{ConnectTimeout: time.Second, Timeout: 5 * time.Second, MaxConns: 4, RootCAs: roots})
	// Origin form, and absolute form (whose target is rebuilt: the scheme
	// must be set after that, not before).
	for _, target := range []string{"/x?y=1", "https://app.fleet.test/x?y=1"} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		if err := req.Header.Read(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n"))); err != nil {
			t.Fatal(err)
		}
		originRequest(req, forwardInfo{Host: "app.fleet.test", ClientIP: "127.0.0.1", OriginTLS: hc.IsTLS})
		if err := hc.Do(req, resp); err != nil {
			t.Fatalf("%s to an https origin: %v", target, err)
		}
		if got := string(resp.Body()); resp.StatusCode() != http.StatusOK || got != "app.fleet.test /x?y=1" {
			t.Fatalf("%s: status %d, body %q", target, resp.StatusCode(), got)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSessionCookieDroppedInOrder: removing the session cookie keeps the
// other cookies in the order the device sent them (fasthttp's DelCookie
// moved the last one into the removed one's place: "sid=b" before "sid=a").
func TestSessionCookieDroppedInOrder(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"CF_Authorization=t; sid=a; x=1; sid=b", "sid=a; x=1; sid=b"},
		{"sid=a; CF_Authorization=t; sid=b; CF_Authorization=u", "sid=a; sid=b"},
		{"CF_Authorization=t", ""},
		{"sid=a; x=1", "sid=a; x=1"},
	} {
		req := fasthttp.AcquireRequest()
		if err := req.Header.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\nCookie: " + tc.in + "\r\n\r\n"))); err != nil {
			t.Fatal(err)
		}
		originRequest(req, forwardInfo{CookieName: "CF_Authorization", Host: "a"})
		if got := string(req.Header.Peek("Cookie")); got != tc.want {
			t.Errorf("Cookie %q: the origin gets %q, want %q", tc.in, got, tc.want)
		}
		fasthttp.ReleaseRequest(req)
	}
}

// startRawOrigin answers every request with answer(path), as raw bytes,
// and closes the connection after it.
func startRawOrigin(t *testing.T, answer func(path string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(answer(req.URL.Path)))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestOriginAnswersRelayedAsSent(t *testing.T) {
	origin := startRawOrigin(t, func(path string) string {
		switch path {
		case "/switch":
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		default: // no Content-Type
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
		}
	})
	h := newHarness(t, func(p *cfgParams) { p.Origin = origin })

	c := h.dial(t, hApp, h.pki.sensor1)
	c.send(request("GET", hApp, "/plain"))
	r := c.read("GET")
	if r.StatusCode != http.StatusOK || r.body != "ok" {
		t.Fatalf("status %d body %q", r.StatusCode, r.body)
	}
	if ct, ok := r.Header["Content-Type"]; ok {
		t.Errorf("the origin sent no Content-Type; the device got %q", ct)
	}

	c.send(request("GET", hApp, "/switch", "Connection: Upgrade", "Upgrade: websocket"))
	if r := c.read("GET"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("an origin's 101 to a request whose Upgrade it never saw: %d, want 502", r.StatusCode)
	}
}

// TestHTTPSOriginWithItsCA: an https origin whose certificate comes from a
// private CA is reached when origin_ca_file names that CA, and refused
// (502) when it does not: the origin's certificate is verified.
func TestHTTPSOriginWithItsCA(t *testing.T) {
	p := sharedPKI()
	srv := startTLSOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls origin: "+r.Host+r.URL.RequestURI())
	}))

	h := newHarness(t, func(c *cfgParams) { c.Origin, c.OriginCAFile = srv.URL, "root.pem" })
	c := h.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/x?y=1"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "tls origin: app.fleet.test/x?y=1" {
		t.Fatalf("https origin with its CA: %d %q", r.StatusCode, r.body)
	}

	untrusted := newHarness(t, func(c *cfgParams) { c.Origin = srv.URL })
	c = untrusted.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/"))
	if r := c.read("GET"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("https origin whose CA is not trusted: %d, want 502: %s", r.StatusCode, r.body)
	}
}

// TestHTTPSOriginClientCertificate: an https origin that requires a client
// certificate gets origin_cert_file's, and one without it fails the
// handshake: 502.
func TestHTTPSOriginClientCertificate(t *testing.T) {
	p := sharedPKI()
	srv := startTLSOriginFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "client: "+r.TLS.PeerCertificates[0].Subject.CommonName)
	}), "127.0.0.1", func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pki.Pool(p.root) })
	gw := writeGatewayClientCert(t, p.inter, "fleetgate-gateway")

	h := newHTTPSOriginHarness(t, srv.URL, func(a *appSection) { a.OriginCertFile, a.OriginKeyFile = gw.cert, gw.key })
	c := h.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "client: fleetgate-gateway" {
		t.Fatalf("https origin requiring a client certificate: %d %q", r.StatusCode, r.body)
	}

	without := newHTTPSOriginHarness(t, srv.URL, func(*appSection) {})
	c = without.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/"))
	if r := c.read("GET"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("no origin_cert_file for an origin that requires one: %d, want 502: %s", r.StatusCode, r.body)
	}
}

// TestHTTPSOriginServerName: an https origin reached by address whose
// certificate names it by DNS name only: origin_server_name is the name
// verified (and sent as SNI).
func TestHTTPSOriginServerName(t *testing.T) {
	p := sharedPKI()
	srv := startTLSOriginFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "sni: "+r.TLS.ServerName)
	}), "origin.internal")
	named := func(name string) *harness {
		return newHTTPSOriginHarness(t, srv.URL, func(a *appSection) { a.OriginServerName = name })
	}
	h := named("origin.internal")
	c := h.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "sni: origin.internal" {
		t.Fatalf("with origin_server_name: %d %q", r.StatusCode, r.body)
	}
	h = named("")
	c = h.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/"))
	if r := c.read("GET"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("without origin_server_name (the certificate names no address): %d, want 502", r.StatusCode)
	}
}

// newHTTPSOriginHarness is a harness whose applications' origin is the
// https origin at url, trusted through origin_ca_file "root.pem", with set
// applied to app.fleet.test's section.
func newHTTPSOriginHarness(t *testing.T, url string, set func(*appSection)) *harness {
	return newHarness(t, func(c *cfgParams) {
		c.Origin, c.OriginCAFile = url, "root.pem"
		c.Edit = func(c *fileConfig) {
			for i := range c.Applications {
				if c.Applications[i].Domain == hApp {
					set(&c.Applications[i])
				}
			}
		}
	})
}

// gatewayClientCert are the files of a gateway's client certificate for
// its origins (origin_cert_file, origin_key_file).
type gatewayClientCert struct{ cert, key string }

// writeGatewayClientCert issues the gateway a client certificate named cn
// and writes it (with issuer's certificate after it) into a new folder.
func writeGatewayClientCert(t testing.TB, issuer *pki.Cert, cn string) gatewayClientCert {
	t.Helper()
	dir := t.TempDir()
	f := gatewayClientCert{filepath.Join(dir, "gateway-client.pem"), filepath.Join(dir, "gateway-client-key.pem")}
	if err := issuer.MustIssue(pki.Device(cn)).WriteFiles(f.cert, f.key, issuer); err != nil {
		t.Fatal(err)
	}
	return f
}

// startTLSOrigin starts an https origin on 127.0.0.1 whose certificate the
// shared PKI's intermediate issued (origin_ca_file "root.pem" trusts it).
func startTLSOrigin(t *testing.T, h http.Handler) *httptest.Server {
	return startTLSOriginFor(t, h, "127.0.0.1")
}

// startTLSOriginFor is startTLSOrigin with a certificate for host, and its
// TLS configuration changed by edits.
func startTLSOriginFor(t *testing.T, h http.Handler, host string, edits ...func(*tls.Config)) *httptest.Server {
	p := sharedPKI()
	cert := p.inter.MustIssue(pki.Server(host))
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate(p.inter)}}
	for _, e := range edits {
		e(srv.TLS)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestOriginHeaders(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	spoofed := http.Header{
		"Cf-Access-Jwt-Assertion":   {"forged.jwt.value"},
		"X-Forwarded-For":           {"203.0.113.7"},
		"X-Forwarded-Proto":         {"http"},
		"X-Forwarded-Host":          {"evil.example"},
		"Forwarded":                 {"for=203.0.113.7"},
		"X-Real-Ip":                 {"203.0.113.7"},
		"Cf-Connecting-Ip":          {"203.0.113.7"},
		"Cf-Client-Cert-Der-Base64": {"Zm9yZ2Vk"},
		"Cf-Client-Cert-Sha256":     {strings.Repeat("0", 64)},
		"Client-Cert":               {":Zm9yZ2Vk:"},
		"Client-Cert-Chain":         {":Zm9yZ2Vk:"},
		"Cookie":                    {"theme=dark; CF_Authorization=junk.junk.junk; lang=en"},
		"X-Device-Model":            {"m1"},
		"Connection":                {"keep-alive, X-Hop"},
		"X-Hop":                     {"drop me"},
	}
	certHeaders := []string{"Cf-Client-Cert-Der-Base64", "Cf-Client-Cert-Sha256", "Client-Cert"}

	tests := []struct {
		name    string
		domain  string
		forward bool
	}{
		{"session app", hApp, false},
		{"no-duration app", hIoT, false},
		{"forward_client_cert app", hFwd, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := p.sensor2
			if tc.domain == hIoT {
				dev = p.sensor1 // the only device its policy admits
			}
			der := base64.StdEncoding.EncodeToString(dev.cert.DER)
			sum := sha256.Sum256(dev.cert.DER)
			r := h.do(t, h.client(dev), "POST", href(tc.domain, "/path?q=1"), spoofed, "payload")
			if r.StatusCode != 200 {
				t.Fatalf("status %d: %s", r.StatusCode, r.body)
			}
			e := r.echo(t)
			got := e.Headers
			if e.Method != "POST" || e.Path != "/path?q=1" || e.Body != "payload" || e.Host != tc.domain {
				t.Errorf("origin saw %s %s host %q body %q", e.Method, e.Path, e.Host, e.Body)
			}
			want := map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  tc.domain,
				"Cookie":            "theme=dark; lang=en",
				"X-Device-Model":    "m1",
			}
			for k, v := range want {
				if vs := got.Values(k); len(vs) != 1 || vs[0] != v {
					t.Errorf("origin got %s = %q, want %q", k, vs, v)
				}
			}
			for _, k := range []string{"Forwarded", "X-Real-Ip", "Cf-Connecting-Ip", "Client-Cert-Chain", "X-Hop", "Cf-Access-Token"} {
				if vs := got.Values(k); len(vs) != 0 {
					t.Errorf("client-sent %s reached the origin: %q", k, vs)
				}
			}
			jwt := got.Values("Cf-Access-Jwt-Assertion")
			if len(jwt) != 1 || jwt[0] == "forged.jwt.value" || strings.Count(jwt[0], ".") != 2 {
				t.Errorf("Cf-Access-Jwt-Assertion = %q, want the gateway's token alone", jwt)
			}
			if tc.forward {
				for k, v := range map[string]string{
					"Cf-Client-Cert-Der-Base64": der,
					"Cf-Client-Cert-Sha256":     hex.EncodeToString(sum[:]),
					"Client-Cert":               ":" + der + ":",
				} {
					if vs := got.Values(k); len(vs) != 1 || vs[0] != v {
						t.Errorf("origin got %s = %q, want %.30q…", k, vs, v)
					}
				}
			} else {
				for _, k := range certHeaders {
					if vs := got.Values(k); len(vs) != 0 {
						t.Errorf("client-sent %s reached the origin: %q", k, vs)
					}
				}
			}
		})
	}

	t.Run("only the session cookie", func(t *testing.T) {
		r := h.do(t, h.client(p.sensor2), "GET", href(hApp, "/"), http.Header{"Cookie": {"CF_Authorization=junk"}}, "")
		if r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, r.body)
		}
		if vs := r.echo(t).Headers.Values("Cookie"); len(vs) != 0 {
			t.Errorf("origin got Cookie %q, want none", vs)
		}
	})

	t.Run("forward_client_cert with a token and no certificate", func(t *testing.T) {
		login := h.get(t, h.client(p.sensor2), href(hFwd, "/"))
		_, ck := sessionCookieOf(t, login)
		r := h.do(t, h.client(nil), "GET", href(hFwd, "/"), http.Header{
			"Cookie":      {"CF_Authorization=" + ck.Value},
			"Client-Cert": {":Zm9yZ2Vk:"},
		}, "")
		if r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, r.body)
		}
		for _, k := range certHeaders {
			if vs := r.echo(t).Headers.Values(k); len(vs) != 0 {
				t.Errorf("origin got %s %q without a certificate on the connection", k, vs)
			}
		}
	})
}

func TestOriginFailures(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name, domain, path string
		method             string
		kind               string // origin_error in the access log
	}{
		{"nobody listens", hDown, "/", "GET", "unreachable"},
		{"nobody listens, POST", hDown, "/", "POST", "unreachable"},
		{"origin closes without answering", hApp, "/close", "GET", "connection_closed"},
		{"origin closes without answering, POST", hApp, "/close", "POST", "connection_closed"},
		{"origin answers garbage", hApp, "/garbage", "GET", "bad_response"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, h.client(h.pki.sensor1), tc.method, href(tc.domain, tc.path), nil, "x")
			if r.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502: %s", r.StatusCode, r.body)
			}
			if strings.Contains(r.body, "127.0.0.1") {
				t.Errorf("the 502 body leaks the origin address: %q", r.body)
			}
			var line map[string]any // written once the response is out: wait for it
			testkit.WaitFor(t, "the access-log line", 5*time.Second, func() bool {
				for _, l := range h.accessLines(t) {
					if l["host"] == tc.domain && l["path"] == tc.path && l["method"] == tc.method && l["status"] == float64(502) {
						line = l
					}
				}
				return line != nil
			})
			if line["origin_error"] != tc.kind {
				t.Errorf("origin_error %v, want %q", line["origin_error"], tc.kind)
			}
		})
	}
	if !strings.Contains(h.logs.String(), `"origin request failed"`) {
		t.Errorf("no log line names the origin failure")
	}
	// Everyone else is served.
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != 200 {
		t.Fatalf("another application: status %d", r.StatusCode)
	}
}

// TestCarriesStripped: the shortcut that skips the deletions must see every
// header originRequest deletes, whatever its case, and only those.
func TestCarriesStripped(t *testing.T) {
	parse := func(t *testing.T, headers string) *fasthttp.RequestHeader {
		t.Helper()
		var req fasthttp.Request
		raw := "GET / HTTP/1.1\r\nHost: devices.fleet.test\r\n" + headers + "\r\n"
		if err := req.Header.Read(bufioReader([]byte(raw))); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		h := &fasthttp.RequestHeader{}
		req.Header.CopyTo(h)
		return h
	}
	names := append(append([]string{"Expect"}, hopByHopHeaders...), spoofableHeaders...)
	for _, name := range names {
		for _, spelled := range []string{name, strings.ToLower(name), strings.ToUpper(name)} {
			value := "x"
			if strings.EqualFold(name, "Connection") {
				value = "close"
			}
			h := parse(t, "User-Agent: sensor\r\n"+spelled+": "+value+"\r\n")
			if !carriesStripped(h) {
				t.Errorf("%s: not seen", spelled)
			}
			var req fasthttp.Request
			h.CopyTo(&req.Header)
			originRequest(&req, forwardInfo{ClientIP: "10.0.0.1", Host: "devices.fleet.test"})
			if got := req.Header.Peek(name); len(got) > 0 && !strings.HasPrefix(name, "X-Forwarded") {
				t.Errorf("%s: reached the origin as %q", spelled, got)
			}
		}
	}
	// A header the Connection header nominates is hop-by-hop too.
	nominated := parse(t, "Connection: X-Secret\r\nX-Secret: 1\r\n")
	if !carriesStripped(nominated) {
		t.Error("Connection: X-Secret not seen")
	}
	var req fasthttp.Request
	nominated.CopyTo(&req.Header)
	originRequest(&req, forwardInfo{ClientIP: "10.0.0.1", Host: "devices.fleet.test"})
	if got := req.Header.Peek("X-Secret"); len(got) > 0 {
		t.Errorf("X-Secret, nominated by Connection, reached the origin: %q", got)
	}
	ordinary := parse(t, "User-Agent: sensor\r\nAccept: application/json\r\nContent-Type: text/plain\r\nX-Request-Id: 7\r\nCookie: a=b\r\n")
	if carriesStripped(ordinary) {
		t.Error("a request with no stripped header is taken for one")
	}
}

// TestStrippedFromTrailers: spoofable fields in a chunked body's trailer
// section, announced or not, never reach the origin. (fasthttp refuses some
// trailer names itself, X-Forwarded-For among them: those never get here.)
func TestStrippedFromTrailers(t *testing.T) {
	for _, announce := range []string{"Trailer: Cf-Connecting-Ip, Cf-Access-Jwt-Assertion\r\n", ""} {
		raw := "POST /up HTTP/1.1\r\nHost: devices.fleet.test\r\nTransfer-Encoding: chunked\r\n" + announce +
			"\r\n5\r\nhello\r\n0\r\nCf-Connecting-Ip: 6.6.6.6\r\nCf-Access-Jwt-Assertion: forged\r\n\r\n"
		var req fasthttp.Request
		if err := req.Read(bufioReader([]byte(raw))); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if !carriesStripped(&req.Header) {
			t.Errorf("announce %q: the trailer fields were not seen", announce)
		}
		originRequest(&req, forwardInfo{Token: "minted", ClientIP: "10.0.0.1", Host: "devices.fleet.test"})
		var out strings.Builder
		if _, err := req.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "6.6.6.6") || strings.Contains(out.String(), "forged") {
			t.Errorf("announce %q: a spoofed trailer field reached the origin:\n%s", announce, out.String())
		}
	}
}

// hangingOrigin is a loopback address whose connects never complete: a
// socket listening with a backlog of 0 that never accepts, its queue full,
// so that the kernel drops the next SYN.
func hangingOrigin(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(sa.(*syscall.SockaddrInet4).Port))
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // this one hung: the queue is full
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Skip("could not fill the accept queue of a loopback listener")
	return ""
}

// TestAppOriginConnectTimeout: an http application's own
// origin_connect_timeout bounds the dial of its origin, whatever the
// [gateway] default; another application of the same origin keeps the
// default (each timeout gets its own origin client). Both fail as
// connect_timeout, 502.
func TestAppOriginConnectTimeout(t *testing.T) {
	hang := "http://" + hangingOrigin(t)
	h := newHarness(t, func(p *cfgParams) {
		p.OriginTimeout = "20s"
		p.Edit = func(c *fileConfig) {
			c.Gateway.OriginConnectTimeout = "3s"
			for i := range c.Applications {
				switch c.Applications[i].Name {
				case "iot":
					c.Applications[i].Origin, c.Applications[i].OriginConnectTimeout = hang, "200ms"
				case "app":
					c.Applications[i].Origin = hang
				}
			}
		}
	})
	for _, tc := range []struct {
		domain   string
		dev      *device
		min, max time.Duration
	}{
		{hIoT, h.pki.sensor1, 150 * time.Millisecond, 2 * time.Second},
		{hApp, h.pki.sensor2, 2900 * time.Millisecond, 15 * time.Second},
	} {
		start := time.Now()
		r := h.get(t, h.client(tc.dev), href(tc.domain, "/"))
		took := time.Since(start)
		if r.StatusCode != http.StatusBadGateway || took < tc.min || took > tc.max {
			t.Errorf("%s: %d after %v; want 502 after %v to %v", tc.domain, r.StatusCode, took, tc.min, tc.max)
		}
	}
	testkit.WaitFor(t, "two connect_timeout failures logged", 5*time.Second, func() bool {
		return strings.Count(h.logs.String(), `"kind":"connect_timeout"`) >= 2
	})
}

// TestOriginFailureKinds: a dial that times out is a connect_timeout
// (502) whether fasthttp's timer or the dialer's deadline ended it, and so
// is an https origin's TLS handshake that does not finish in time (not a
// bad response: nothing was answered); a read that times out is the
// origin's timeout (504).
func TestOriginFailureKinds(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp4", Err: timeoutError{}}
	for _, tc := range []struct {
		err    error
		status int
		kind   string
	}{
		{fasthttp.ErrDialTimeout, 502, "connect_timeout"},
		{timeout, 502, "connect_timeout"},
		{fasthttp.ErrTLSHandshakeTimeout, 502, "connect_timeout"},
		{&net.OpError{Op: "read", Net: "tcp4", Err: timeoutError{}}, 504, "timeout"},
		{fasthttp.ErrTimeout, 504, "timeout"},
		{&net.OpError{Op: "dial", Net: "tcp4", Err: syscall.ECONNREFUSED}, 502, "unreachable"},
	} {
		if status, kind := originFailure(tc.err); status != tc.status || kind != tc.kind {
			t.Errorf("%v: %d %s; want %d %s", tc.err, status, kind, tc.status, tc.kind)
		}
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// originRequest is the whole rewrite of a request for the origin, as the
// pooled client sends it: cleanRequest, then setForwarded.
func originRequest(req *fasthttp.Request, f forwardInfo) {
	cleanRequest(req, f)
	setForwarded(&req.Header, f)
}
