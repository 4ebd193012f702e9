package gateway

// Request framing checks. fasthttp parses requests, and
// refuses most malformed ones itself (two Content-Length fields, a space
// before the colon, a bad chunk size, NUL in a value, two Host fields…).
// A few shapes it accepts are request-smuggling vectors when the gateway and
// the origin (or any proxy between) would frame the request differently, so
// the gateway refuses them with 400 before anything is forwarded:
//
//   - a bare LF line ending (fasthttp accepts one inside the header and, with
//     no CRLF CRLF at all, waits for more until the header timeout);
//   - obsolete line folding (fasthttp joins the lines);
//   - Content-Length together with Transfer-Encoding (fasthttp drops the
//     Content-Length and reads chunked);
//   - a Transfer-Encoding that fasthttp did not read as chunked ("CHUNKED",
//     "identity": it reads no body and parses the body as the next request);
//   - a header field name that is not an RFC 9110 token ("X A");
//   - an absolute-form request target whose authority differs from Host (the
//     Host check would pass on one name and the origin receive another);
//   - the CONNECT and TRACE methods (refusedMethod): a gateway to one
//     origin is no tunnel, and TRACE would echo the minted assertion and
//     the forwarded client certificate back to the device. These deserve
//     405 rather than 400: the caller asks refusedMethod first.
//
// These are checks over bytes fasthttp already holds, not a second parser.

import (
	"bufio"
	"bytes"

	"github.com/valyala/fasthttp"
)

// awaitHeader blocks until br holds a whole request header (up to the empty
// line that ends it) and refuses a bare LF on the way, as the bytes arrive:
// fasthttp alone would wait for a CRLF CRLF that never comes and answer 408
// only after the header timeout. It returns nil (and leaves fasthttp to
// report) when the header is complete, when the buffer is full (431) and on
// any read error (timeout, EOF), which fasthttp sees again on its own read.
func awaitHeader(br *bufio.Reader) error {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		for scanned < len(buf) {
			i := bytes.IndexByte(buf[scanned:], '\n')
			if i < 0 {
				scanned = len(buf)
				break
			}
			i += scanned
			if i == 0 || buf[i-1] != '\r' {
				return errBareLF
			}
			if i >= 3 && buf[i-2] == '\n' && buf[i-3] == '\r' {
				return nil // CRLF CRLF: the header is complete
			}
			scanned = i + 1
		}
		if len(buf) >= br.Size() {
			return nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil
		}
	}
}

// framingError returns why a request whose header fasthttp accepted must
// still be refused with 400, or "" when its framing is sound.
func framingError(req *fasthttp.Request) string {
	h := &req.Header
	if refusedMethod(req) {
		return "method not allowed"
	}
	raw := h.RawHeaders()
	var sawCL, sawTE bool
	for len(raw) > 0 {
		line, rest, _ := bytes.Cut(raw, []byte{'\n'})
		raw = rest
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break // the empty line that ends the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "obsolete line folding"
		}
		name, _, ok := bytes.Cut(line, []byte{':'})
		if !ok || !isToken(name) {
			return "invalid header field name"
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			sawCL = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			sawTE = true
		}
	}
	switch {
	case sawCL && sawTE:
		return "both Content-Length and Transfer-Encoding"
	case sawTE && h.ContentLength() != -1:
		return "unsupported transfer coding"
	}
	if host := h.Host(); len(host) > 0 && !validHost(host) {
		return "malformed Host header"
	}
	if !validTarget(h.RequestURI()) {
		return "malformed request target"
	}
	if target := h.RequestURI(); len(target) > 0 && target[0] != '/' && !bytes.Equal(target, []byte("*")) {
		// Absolute form: RFC 9112 section 3.2.2 makes its authority the host,
		// and fasthttp forwards it as the Host header.
		if hostWithoutPort(req.URI().Host()) != hostWithoutPort(h.Host()) {
			return "request target authority differs from Host"
		}
	}
	return ""
}

// refusedMethod reports whether the request's method is one the gateway
// never forwards, whatever the policy: CONNECT (fasthttp would send
// "CONNECT /app.fleet.test:443" to the origin and relay its answer as if a
// tunnel were open) and TRACE (the origin echoes the request, and with it
// the Cf-Access-Jwt-Assertion and client-certificate headers the gateway
// added). Methods are case-sensitive, but an origin may not treat them so:
// "connect" and "trace" are refused too. The answer is 405 Method Not
// Allowed, and the connection closes: what follows a CONNECT is not HTTP.
func refusedMethod(req *fasthttp.Request) bool {
	m := req.Header.Method()
	return bytes.EqualFold(m, []byte(fasthttp.MethodConnect)) || bytes.EqualFold(m, []byte(fasthttp.MethodTrace))
}

// refuseMethod answers a request refusedMethod refused: 405 with an Allow
// header (RFC 9110 section 15.5.6 requires one) naming the usual methods
// (any other but CONNECT and TRACE is the origin's to accept or refuse),
// and the connection closes.
func (x *exchange) refuseMethod() outcome {
	o := x.refuseUnread(fasthttp.StatusMethodNotAllowed, "method not allowed")
	x.resp.Header.Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
	return o
}

// validHost reports whether a Host value is uri-host [":" port] (RFC 9110
// section 7.2) in the forms a gateway serves: a name of letters, digits,
// '-', '_' and '.', or a bracketed IPv6 literal, then at most ':' and five
// digits. The Host goes to the origin as the device sent it, so anything
// else ("app.fleet.test:80@evil.example", "app.fleet.test: 0") is refused:
// the origin could read another authority in it than the one checked here.
func validHost(h []byte) bool {
	name, port := h, []byte(nil)
	if h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 3 { // at least "[::]"
			return false
		}
		for _, c := range h[1:end] {
			if !hexDigit(c) && c != ':' && c != '.' {
				return false
			}
		}
		switch rest := h[end+1:]; {
		case len(rest) == 0:
		case rest[0] == ':':
			port = rest[1:]
		default:
			return false
		}
	} else {
		if i := bytes.LastIndexByte(h, ':'); i >= 0 {
			name, port = h[:i], h[i+1:]
		}
		if len(name) == 0 || name[0] == '.' {
			return false
		}
		for _, c := range name {
			if !hostNameChars[c] {
				return false
			}
		}
	}
	if len(port) > 5 {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validTarget reports whether a request target's bytes are visible (no
// control characters, spaces or DEL) and its percent-encodings complete
// ("%" and two hex digits), as nginx requires: "/%0" or "/%zz" is refused
// rather than forwarded, since the origin would decode it its own way.
func validTarget(t []byte) bool {
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c <= ' ' || c == 0x7f:
			return false
		case c == '%':
			if i+2 >= len(t) || !hexDigit(t[i+1]) || !hexDigit(t[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func hexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hostNameChars marks the bytes validHost accepts in a host name.
var hostNameChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	t['-'], t['_'], t['.'] = true, true, true
	return t
}()

// tokenChars marks the bytes of an RFC 9110 token (tchar).
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}
