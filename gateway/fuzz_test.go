package gateway

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
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
			if _, err := conn.Write(input); err != nil && !isClosedErr(err) {
				t.Fatalf("write: %v", err)
			}
		}
		_ = conn.CloseWrite() // the device is done sending: every answer must come now
		br := bufio.NewReader(conn)
		for n := 0; ; n++ {
			if _, err := br.Peek(1); err != nil {
				if isTimeout(err) {
					t.Fatalf("the gateway neither answered nor closed within 8s (after %d responses)", n)
				}
				break // closed: fine
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("response %d: the gateway stalled mid-response", n)
				}
				t.Fatalf("response %d is not well-formed HTTP: %v", n, err)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil && !isClosedErr(err) {
				t.Fatalf("response %d body: %v", n, err)
			}
			switch resp.StatusCode {
			case 400, 408, 413, 431:
				if !resp.Close {
					t.Fatalf("response %d: a framing refusal (%d) must close the connection", n, resp.StatusCode)
				}
			}
			if resp.Close {
				if _, err := br.Peek(1); err == nil {
					t.Fatalf("bytes after a response that closes the connection (status %d)", resp.StatusCode)
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

func isClosedErr(err error) bool {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}
