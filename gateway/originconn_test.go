package gateway

// What reaches the origin, and what happens when the origin fails.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

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

func TestOriginTimeout(t *testing.T) {
	const originTimeout = time.Second // long enough for three handshakes under -race on a busy machine
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = originTimeout.String() })
	type result struct {
		status int
		body   string
		err    error
		dur    time.Duration
	}
	// The slow request runs off the test goroutine, so it reports failure
	// through the channel (t.Fatal there would leave the test waiting):
	// exactly one result is always sent.
	slow := make(chan result, 1)
	c := h.client(h.pki.sensor1)
	go func() {
		start := time.Now()
		var res result
		resp, err := c.Get(href(hApp, "/hold/slow"))
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			res.status, res.body, err = resp.StatusCode, string(b), rerr
		}
		res.err, res.dur = err, time.Since(start)
		slow <- res
	}()
	h.origin.waitArrived(t)

	// While the slow request waits for its origin, others are served.
	for _, d := range []string{hApp, hIoT, hFwd} {
		if r := h.get(t, h.client(h.pki.sensor1), href(d, "/fast")); r.StatusCode != 200 {
			t.Fatalf("%s while another request waits: status %d", d, r.StatusCode)
		}
	}
	select {
	case res := <-slow:
		// Either the gateway answered the held request before its
		// origin_timeout, or the fast requests above were so slow that
		// they were not served "while another request waits": both make
		// the rest of the test meaningless.
		t.Fatalf("the slow request ended before the others were served: after %v, status %d, err %v, body %q",
			res.dur, res.status, res.err, res.body)
	default:
	}

	var res result
	select {
	case res = <-slow:
	case <-time.After(originTimeout + 15*time.Second):
		t.Fatalf("the slow request has not ended %v after origin_timeout", 15*time.Second)
	}
	if res.err != nil {
		t.Fatalf("the slow request failed after %v: %v", res.dur, res.err)
	}
	if res.status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504: %s", res.status, res.body)
	}
	// One attempt: a timed-out request is not sent to the origin again.
	if res.dur < originTimeout*8/10 || res.dur > originTimeout*5/2 {
		t.Errorf("504 after %v; origin_timeout is %v", res.dur, originTimeout)
	}
	if n := len(h.origin.arrived); n != 0 {
		t.Errorf("the origin got the timed-out request %d more times", n)
	}
	if !strings.Contains(h.logs.String(), `"kind":"timeout"`) {
		t.Errorf("the log does not name the timeout")
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/after")); r.StatusCode != 200 {
		t.Fatalf("after the timeout: status %d", r.StatusCode)
	}
}

func TestOriginClosedIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 16)
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Method+" ok")
	}))
	o.Config.IdleTimeout = 50 * time.Millisecond // the origin drops idle keep-alive connections quickly
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for i, method := range []string{"GET", "GET", "PUT", "POST"} {
		r := h.do(t, h.client(h.pki.sensor1), method, href(hApp, "/"), nil, "body")
		if r.StatusCode != 200 {
			t.Fatalf("request %d (%s) after the origin closed the pooled connection: %d %s", i, method, r.StatusCode, r.body)
		}
		select { // the origin closes the gateway's pooled connection
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the origin did not close its idle connection")
		}
	}
}
