package gateway

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// benchRequest is a typical device request, parsed anew each round from
// readers that are reset, not made anew: what is measured is the gateway's
// parse and rewrite, not the benchmark's own allocations.
type benchRequest struct {
	raw []byte
	rd  *bytes.Reader
	br  *bufio.Reader
	req fasthttp.Request
}

func newBenchRequest() *benchRequest {
	raw := []byte("GET /v1/readings?since=17 HTTP/1.1\r\nHost: devices.fleet.test\r\nUser-Agent: sensor/2.1\r\nAccept: application/json\r\n\r\n")
	rd := bytes.NewReader(raw)
	return &benchRequest{raw: raw, rd: rd, br: bufio.NewReader(rd)}
}

// read parses the request again into r.req.
func (r *benchRequest) read(b *testing.B) *fasthttp.Request {
	r.req.Reset()
	r.rd.Reset(r.raw)
	r.br.Reset(r.rd)
	if err := r.req.Header.Read(r.br); err != nil {
		b.Fatal(err)
	}
	return &r.req
}

// BenchmarkOriginRequest: rewriting a typical device request for the
// origin (hop-by-hop and spoofable headers out, forwarding headers in).
func BenchmarkOriginRequest(b *testing.B) {
	id := &verdict.Identity{DER: make([]byte, 600), SHA256: "4bb8f981f239975619e1a288a7005fce8e45901e19ff5ac180e5166d3edc278e"}
	f := forwardInfo{Token: benchToken, ClientIP: "10.1.2.3", Host: "devices.fleet.test", CookieName: "CF_Authorization", ClientCert: id}
	r := newBenchRequest()
	b.ReportAllocs()
	for b.Loop() {
		originRequest(r.read(b), f)
	}
}

// BenchmarkOriginRequestWrite: rewriting a typical device request and
// writing it for the origin, as the event loop does (loopOrigin.send), the
// gateway's own headers set in fasthttp's header ("header", as the pooled
// client's requests get them) or appended as it is written ("appended",
// the loop's).
func BenchmarkOriginRequestWrite(b *testing.B) {
	f := forwardInfo{Token: benchToken, ClientIP: "10.1.2.3", Host: "devices.fleet.test", CookieName: "CF_Authorization"}
	for _, mode := range []string{"header", "appended"} {
		b.Run(mode, func(b *testing.B) {
			r := newBenchRequest()
			var out bytes.Buffer
			w := bufio.NewWriterSize(&out, 4096)
			b.ReportAllocs()
			for b.Loop() {
				req := r.read(b)
				req.URI().DisablePathNormalizing = true
				out.Reset()
				w.Reset(&out)
				if mode == "header" {
					originRequest(req, f)
				} else {
					cleanRequest(req, f)
				}
				if err := req.Write(w); err != nil {
					b.Fatal(err)
				}
				_ = w.Flush()
				if mode == "appended" {
					out.Grow(forwardedLen(f))
					if _, err := insertForwarded(out.Bytes(), f); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkCleanOriginResponse: taking the hop-by-hop fields out of a
// typical origin answer, which carries none.
func BenchmarkCleanOriginResponse(b *testing.B) {
	raw := []byte("HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Sun, 06 Dec 2026 09:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	var resp fasthttp.Response
	rd := bytes.NewReader(raw)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	for b.Loop() {
		resp.Reset()
		rd.Reset(raw)
		br.Reset(rd)
		if err := resp.Header.Read(br); err != nil {
			b.Fatal(err)
		}
		cleanOriginResponse(&resp)
	}
}

// bufioReader is a fresh reader over b, for tests that parse once.
func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func BenchmarkOriginRequestParseOnly(b *testing.B) {
	r := newBenchRequest()
	b.ReportAllocs()
	for b.Loop() {
		r.read(b)
	}
}

// benchToken is as long as a real assertion: an ES256 token with the
// claims of a device's request (about 600 bytes).
var benchToken = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjRiYjhmOTgxZjIzOTk3NTYiLCJ0eXAiOiJKV1QifQ." + string(bytes.Repeat([]byte("eyJhdWQiOlsiNGJiOGY5ODFmMjM5OTc1NjE5ZTFhMjg4YTcwMDVmY2UiXX0"), 8)) + ".MEUCIQDr5vJ3kWQ2tG7o0yq8d1pZp0m3x2nqzv0hJq9d7sYp3AIgG1r3q0r7n5c2yX9o2p3k1m0b8z6v4x2c0a9s7d5f3g1"
