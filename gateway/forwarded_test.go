package gateway

// The gateway's own headers for the origin (the token, X-Forwarded-*, the
// client certificate): the event loop appends them as it writes a request
// (insertForwarded) instead of setting them in fasthttp's header as the
// pooled client's requests get them (setForwarded). Both must put the same
// fields on the wire.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// forwardCases are the gateway's headers in the shapes they take: a token
// or none (bypass), a client certificate or none, an IPv6 address.
func forwardCases(t testing.TB) map[string]forwardInfo {
	t.Helper()
	der := sharedPKI().sensor1.cert.DER
	sum := sha256.Sum256(der)
	id := &verdict.Identity{DER: der, SHA256: hex.EncodeToString(sum[:])}
	return map[string]forwardInfo{
		"token":          testForward,
		"no token":       {ClientIP: "10.0.0.1", Host: "app.fleet.test"},
		"client cert":    {Token: "a.b.c", ClientIP: "2001:db8::1", Host: "fwd.fleet.test", ClientCert: id},
		"empty identity": {Token: "a.b.c", ClientIP: "10.0.0.1", Host: "fwd.fleet.test", ClientCert: &verdict.Identity{}},
	}
}

// TestForwardedLen: forwardedLen counts exactly what appendForwarded
// appends; insertForwarded relies on it to move the body.
func TestForwardedLen(t *testing.T) {
	for name, f := range forwardCases(t) {
		if got, want := len(appendForwarded(nil, f)), forwardedLen(f); got != want {
			t.Errorf("%s: appendForwarded wrote %d bytes, forwardedLen says %d", name, got, want)
		}
	}
}

// TestInsertForwardedMatchesHeader: a request written by fasthttp with the
// gateway's fields inserted after its header reads back as the same
// request, field for field and byte for byte in its body, as the one
// written with the fields set in its header; with a body of a length or
// chunked with a trailer, and for HEAD (Connection: close).
func TestInsertForwardedMatchesHeader(t *testing.T) {
	raws := map[string]string{
		"GET":  "GET /x?q=1 HTTP/1.1\r\nHost: app.fleet.test\r\nX-Forwarded-For: 6.6.6.6\r\nCf-Access-Jwt-Assertion: forged\r\nX-Device-Model: m1\r\n\r\n",
		"POST": "POST /up HTTP/1.1\r\nHost: app.fleet.test\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello\r\n\r\nhi",
		"chunked": "POST /up HTTP/1.1\r\nHost: app.fleet.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
		"HEAD": "HEAD / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n",
	}
	for rname, raw := range raws {
		for fname, f := range forwardCases(t) {
			t.Run(rname+"/"+fname, func(t *testing.T) {
				set := readRequest(t, raw)
				originRequest(set, f)
				_, _, want := wireRequest(t, set)

				ins := readRequest(t, raw)
				cleanRequest(ins, f)
				_, _, written := wireRequest(t, ins)
				msg := []byte(written)
				// Room for the fields, as loopOrigin.send grows its buffer.
				msg = slices.Grow(msg, forwardedLen(f))
				got, err := insertForwarded(msg, f)
				if err != nil {
					t.Fatal(err)
				}
				wantReq, gotReq := readRequest(t, want), readRequest(t, string(got))
				if a, b := fieldsOf(wantReq), fieldsOf(gotReq); !slices.Equal(a, b) {
					t.Errorf("fields differ:\n set:      %q\n inserted: %q", a, b)
				}
				if a, b := wantReq.Body(), gotReq.Body(); !bytes.Equal(a, b) {
					t.Errorf("body %q, want %q", b, a)
				}
				if a, b := string(wantReq.Header.RequestURI()), string(gotReq.Header.RequestURI()); a != b {
					t.Errorf("target %q, want %q", b, a)
				}
				if f.Token != "" && string(gotReq.Header.Peek("Cf-Access-Jwt-Assertion")) != f.Token {
					t.Errorf("token %q, want %q", gotReq.Header.Peek("Cf-Access-Jwt-Assertion"), f.Token)
				}
			})
		}
	}
}

// fieldsOf lists a request's header fields as "name: value" and the names
// its trailer announces, sorted.
func fieldsOf(req *fasthttp.Request) []string {
	var out []string
	for k, v := range req.Header.All() {
		out = append(out, strings.ToLower(string(k))+": "+string(v))
	}
	for k := range req.Header.Trailers() {
		out = append(out, "trailer "+strings.ToLower(string(k)))
	}
	slices.Sort(out)
	return out
}

// TestAppendForwardedNoLineBreak: a line break in the address or the host
// (which the parser refuses today) would never split a field: it goes out
// as a space, as fasthttp writes it when the field is set in its header.
func TestAppendForwardedNoLineBreak(t *testing.T) {
	f := forwardInfo{Token: "a.b.c", ClientIP: "10.0.0.1\r\nX-Evil: 1", Host: "app.fleet.test\nX-Evil: 2"}
	got := string(appendForwarded(nil, f))
	if strings.Count(got, "\r\n") != 4 || strings.Count(got, "\n") != 4 || strings.Contains(got, "\r\nX-Evil") {
		t.Fatalf("fields split by a value: %q", got)
	}
	if len(got) != forwardedLen(f) {
		t.Fatalf("wrote %d bytes, forwardedLen says %d", len(got), forwardedLen(f))
	}
	set := readRequest(t, "GET / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n")
	setForwarded(&set.Header, f)
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host"} {
		want := string(set.Header.Peek(k))
		if !strings.Contains(got, k+": "+want+"\r\n") {
			t.Errorf("%s: appended %q, fasthttp sets %q", k, got, want)
		}
	}
}

// TestInsertForwardedNoHeaderEnd: a message without the blank line that
// ends a header is refused, not written with the fields somewhere in it.
func TestInsertForwardedNoHeaderEnd(t *testing.T) {
	if _, err := insertForwarded([]byte("GET / HTTP/1.1\r\nHost: a\r\n"), testForward); err == nil {
		t.Fatal("insertForwarded took a message without the end of its header")
	}
}

// TestLoopForwardsGatewayHeaders: requests the event loop carries on its own
// origin connection reach the origin with the gateway's fields, the
// device's forged ones gone and the body intact: a POST with a body, one
// chunked with a trailer, and a GET, on the session application and on the
// one that forwards the client certificate.
func TestLoopForwardsGatewayHeaders(t *testing.T) {
	h := newHarness(t)
	for _, host := range []string{hApp, hFwd} {
		t.Run(host, func(t *testing.T) {
			dev := h.pki.sensor2
			c := h.dial(t, host, dev)
			peer := settleOnLoop(t, c, host, "/settle", func(r *response) string { return r.echo(t).Peer })
			forged := []string{"Cf-Access-Jwt-Assertion: forged.jwt.value", "X-Forwarded-For: 203.0.113.7",
				"X-Forwarded-Host: evil.example", "X-Forwarded-Proto: http", "Cf-Client-Cert-Sha256: forged", "X-Device-Model: m1"}
			sends := map[string]string{
				"GET":     request("GET", host, "/g?x=1", forged...),
				"POST":    request("POST", host, "/p", append(forged, "Content-Length: 11")...) + "hello\r\n\r\nhi",
				"chunked": request("POST", host, "/c", append(forged, "Transfer-Encoding: chunked")...) + "5\r\nhello\r\n0\r\n\r\n",
			}
			bodies := map[string]string{"GET": "", "POST": "hello\r\n\r\nhi", "chunked": "hello"}
			for _, name := range []string{"GET", "POST", "chunked", "GET"} {
				c.send(sends[name])
				r := c.read("POST")
				if r.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", name, r.StatusCode, r.body)
				}
				e := r.echo(t)
				if name != "chunked" && e.Peer != peer {
					t.Errorf("%s came from %s, not the loop's origin connection %s", name, e.Peer, peer)
				}
				if e.Body != bodies[name] {
					t.Errorf("%s: origin got body %q, want %q", name, e.Body, bodies[name])
				}
				hd := e.Headers
				if jwt := hd.Values("Cf-Access-Jwt-Assertion"); len(jwt) != 1 || strings.Count(jwt[0], ".") != 2 || strings.Contains(jwt[0], "forged") {
					t.Errorf("%s: Cf-Access-Jwt-Assertion %q, want the gateway's token alone", name, jwt)
				}
				for k, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https",
					"X-Forwarded-Host": host, "X-Device-Model": "m1"} {
					if got := hd.Values(k); len(got) != 1 || got[0] != want {
						t.Errorf("%s: %s %q, want %q", name, k, got, want)
					}
				}
				sum := sha256.Sum256(dev.cert.DER)
				der := base64.StdEncoding.EncodeToString(dev.cert.DER)
				certs := map[string]string{"Cf-Client-Cert-Sha256": hex.EncodeToString(sum[:]),
					"Cf-Client-Cert-Der-Base64": der, "Client-Cert": ":" + der + ":"}
				for k, want := range certs {
					got := hd.Values(k)
					switch {
					case host == hFwd && (len(got) != 1 || got[0] != want):
						t.Errorf("%s: %s %q, want %q", name, k, got, want)
					case host != hFwd && len(got) != 0:
						t.Errorf("%s: %s %q reached the origin of an application that does not forward certificates", name, k, got)
					}
				}
			}
		})
	}
}
