package gateway

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

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
