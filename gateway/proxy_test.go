package gateway

// What the gateway forwards, hardened: header names with '_', the whole
// spoofable families, every Connection header (and never the framing on a
// Connection header's word), CONNECT and TRACE, the device's User-Agent (or
// its absence), absolute-form targets, and targets that start with "//".

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

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

// TestHardeningUnderscoreHeaders (finding 1): a field name with '_' never
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

// TestHardeningSpoofableFamilies (finding 2): every field of the spoofable
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

// TestHardeningConnectionTokens (finding 3, request side): the fields every
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

// TestHardeningOriginConnection (finding 3, response side): the origin's
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

// TestHardeningRefusedMethods (finding 4): CONNECT and TRACE are refused
// before anything is forwarded.
func TestHardeningRefusedMethods(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		refused bool
	}{
		{"CONNECT app.fleet.test:443 HTTP/1.1\r\nHost: app.fleet.test:443\r\n\r\n", true},
		{"TRACE / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", true},
		{"trace / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", true},
		{"Connect / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
		{"OPTIONS * HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
		{"TRACK / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
		{"PROPFIND / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n", false},
	} {
		req := readRequest(t, tc.raw)
		if got := refusedMethod(req); got != tc.refused {
			t.Errorf("%q: refusedMethod = %v", tc.raw, got)
		}
		if why := framingError(req); (why != "") != tc.refused {
			t.Errorf("%q: framingError = %q", tc.raw, why)
		}
	}
	x := &exchange{resp: &fasthttp.Response{}}
	x.refuseMethod()
	if x.resp.StatusCode() != fasthttp.StatusMethodNotAllowed || !x.unread || len(x.resp.Header.Peek("Allow")) == 0 {
		t.Errorf("refuseMethod: status %d, close %v, Allow %q", x.resp.StatusCode(), x.unread, x.resp.Header.Peek("Allow"))
	}
}

// TestHardeningRefusedMethodsEndToEnd: over the wire, CONNECT and TRACE
// get 405 with an Allow header, the connection closes, and neither reaches
// the origin.
func TestHardeningRefusedMethodsEndToEnd(t *testing.T) {
	o := startCountingOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	for _, raw := range []string{
		"CONNECT " + hApp + ":443 HTTP/1.1\r\nHost: " + hApp + ":443\r\n\r\n",
		"TRACE / HTTP/1.1\r\nHost: " + hApp + "\r\n\r\n",
	} {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send(raw)
		r := c.read("GET")
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") == "" {
			t.Errorf("%q: status %d, Allow %q; want 405 with Allow: %s", raw, r.StatusCode, r.Header.Get("Allow"), r.body)
		}
		if !r.Close {
			t.Errorf("%q: the connection should close", raw)
		}
	}
	if n := o.hits.Load(); n != 0 {
		t.Errorf("the origin received %d requests", n)
	}
}

// TestHardeningUserAgent (finding 5): the device's User-Agent reaches the
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

// TestHardeningAbsoluteTarget (finding 6): an absolute-form target reaches
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
	hc := newOriginClient(mustParseURL(t, srv.URL), originOptions{ConnectTimeout: time.Second, Timeout: 5 * time.Second, MaxConns: 4})
	hc.TLSConfig.InsecureSkipVerify = true // httptest's certificate; the rest is the gateway's client
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
