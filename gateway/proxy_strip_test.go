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
	ordinary := parse(t, "User-Agent: sensor\r\nAccept: application/json\r\nContent-Type: text/plain\r\nX-Request-Id: 7\r\nCookie: a=b\r\n")
	if carriesStripped(ordinary) {
		t.Error("a request with no stripped header is taken for one")
	}
}
