package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzHTTPRequest sends arbitrary bytes as the plaintext that follows a
// device's handshake, through a real gateway (real sockets, real TLS), and
// checks what a device and the fleet can observe:
//   - the gateway answers with well-formed HTTP responses, or closes; it
//     never hangs past header_timeout;
//   - a framing refusal (400, 408, 413, 431) closes the connection, so no
//     byte after it is ever read as another request;
//   - the gateway keeps serving: after every input a normal request by
//     another device succeeds.
//
// It lives in package gateway because it drives the request path through
// the harness of the end-to-end tests; the surfaces of the other packages
// are fuzzed in fuzz/. Run it with
//
//	go test ./gateway -run '^$' -fuzz '^FuzzHTTPRequest$' -fuzztime 30s
func FuzzHTTPRequest(f *testing.F) {
	host := "Host: " + hApp + "\r\n"
	for _, seed := range []string{
		"GET / HTTP/1.1\r\n" + host + "\r\n",
		"GET /a HTTP/1.1\r\n" + host + "\r\nGET /b HTTP/1.1\r\n" + host + "\r\nGET /c HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n",
		"POST /up HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello",
		"POST /up HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /up HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n",
		"GET / HTTP/1.1\r\n" + host + "X-A: b\r\n c\r\n\r\n",
		"GET / HTTP/1.1\nHost: " + hApp + "\n\n",
		"GET / HTTP/1.1\r\nHost: " + hIoT + "\r\n\r\n",
		"GET /cdn-cgi/access/get-identity HTTP/1.1\r\n" + host + "Cookie: CF_Authorization=eyJhbGciOiJub25lIn0.e30.\r\n\r\n",
		"GET https://" + hIoT + "/ HTTP/1.1\r\n" + host + "\r\n",
		"HEAD / HTTP/1.1\r\n" + host + "\r\nGET /after-head HTTP/1.1\r\n" + host + "\r\n",
		"\r\n\r\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f, func(p *cfgParams) { p.OriginTimeout = "500ms" })
	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, h.tlsConfig(hApp, h.pki.sensor1))
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		// Header timeout is 2s in the harness; a slow answer past 8s is a hang.
		_ = conn.SetDeadline(time.Now().Add(8 * time.Second))
		if len(input) > 0 {
			// The gateway reads (or, after a refusal, discards) everything a
			// device sends until it closes its side: a write never fails.
			if _, err := conn.Write(input); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		_ = conn.CloseWrite() // the device is done sending: every answer must come now
		// A response to HEAD has no body whatever its Content-Length, so
		// each final response is read against the method of the request it
		// answers, in order (as far as net/http can split the input).
		methods := requestMethods(input)
		br := bufio.NewReader(conn)
		for n, final := 0, 0; ; n++ {
			if _, err := br.Peek(1); err != nil {
				if isTimeout(err) {
					t.Fatalf("the gateway neither answered nor closed within 8s (after %d responses)", n)
				}
				if err != io.EOF {
					t.Fatalf("after %d complete responses, the connection ended with %v, not a clean close", n, err)
				}
				break // close_notify (or a TCP close between records) after complete answers
			}
			var req *http.Request
			if final < len(methods) {
				req = &http.Request{Method: methods[final]}
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("response %d: the gateway stalled mid-response", n)
				}
				t.Fatalf("response %d is not well-formed HTTP: %v", n, err)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				// Truncated (io.ErrUnexpectedEOF), reset, or stalled: the
				// answer was not delivered whole.
				t.Fatalf("response %d (status %d) body: %v", n, resp.StatusCode, err)
			}
			if resp.StatusCode >= 100 && resp.StatusCode < 200 {
				continue // interim (100 Continue): the final answer follows
			}
			final++
			switch resp.StatusCode {
			case 400, 408, 413, 431:
				if !resp.Close {
					t.Fatalf("response %d: a framing refusal (%d) must close the connection", n, resp.StatusCode)
				}
				if req != nil && req.Method == http.MethodHead && resp.ContentLength > 0 {
					// The refusal of a request line the gateway could not
					// read (say "HEAD * HTTP/0.0", which net/http reads)
					// does not know the method was HEAD and may carry its
					// body: exactly that body or none, then a clean close.
					rest, err := io.ReadAll(io.LimitReader(br, resp.ContentLength+1))
					if err != nil || (len(rest) != 0 && int64(len(rest)) != resp.ContentLength) {
						t.Fatalf("response %d (%d to HEAD): %d bytes after the header (Content-Length %d), then %v",
							n, resp.StatusCode, len(rest), resp.ContentLength, err)
					}
				}
			}
			if resp.Close {
				switch _, err := br.Peek(1); {
				case err == nil:
					t.Fatalf("bytes after a response that closes the connection (status %d)", resp.StatusCode)
				case isTimeout(err):
					t.Fatalf("the gateway did not close the connection after a response saying it would (status %d)", resp.StatusCode)
				case err != io.EOF:
					t.Fatalf("after a response that closes the connection (status %d), the connection ended with %v, not a clean close", resp.StatusCode, err)
				}
				break
			}
		}
		// The fleet is still served.
		r := h.rawGet(t, hApp, hApp, "/health", h.pki.sensor2)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("after the input, a normal request got %d: %s", r.StatusCode, r.body)
		}
	})
}

// requestMethods returns the methods of the requests that net/http reads
// from input, in order, up to the first it cannot read.
func requestMethods(input []byte) []string {
	var methods []string
	br := bufio.NewReader(bytes.NewReader(input))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return methods
		}
		methods = append(methods, req.Method)
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return methods
		}
	}
}
