package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// spoofableHeaders are removed from every client request before it is
// forwarded: the gateway is their only author, so a device must never be able
// to pre-set them (a forged assertion or client-cert header would be trusted
// by the origin). spoofablePrefixes extends the list to whole families:
// every Cf-* (Cloudflare's), X-Forwarded-* (X-Forwarded-Client-Cert,
// X-Forwarded-Port…) and the TLS-terminator headers (X-Ssl-Client-Verify,
// Ssl-Client-Cert…) that origins read as the proxy's word.
var spoofableHeaders = []string{
	"Cf-Access-Jwt-Assertion",
	"Cf-Access-Token",
	"Cf-Access-Client-Id",
	"Cf-Access-Client-Secret",
	"Cf-Client-Cert-Der-Base64",
	"Cf-Client-Cert-Sha256",
	"Client-Cert",
	"Client-Cert-Chain",
	"X-Client-Cert",
	"Cf-Connecting-Ip",
	"X-Forwarded-For",
	"X-Forwarded-Proto",
	"X-Forwarded-Host",
	"X-Real-Ip",
	"True-Client-Ip",
	"X-Client-Ip",
	"Forwarded",
}

// spoofablePrefixes are the lower-case name prefixes of spoofable headers,
// by first byte (strippedName compares only those that can match).
var spoofablePrefixes = func() (t [256][]string) {
	for _, p := range []string{"cf-", "x-forwarded-", "x-ssl-", "ssl-client-"} {
		t[p[0]] = append(t[p[0]], p)
	}
	return t
}()

// hopByHopHeaders apply to one connection only (RFC 9110 section 7.6.1) and
// are not forwarded in either direction.
var hopByHopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Upgrade",
}

// originOptions are the limits of one application's origin client.
type originOptions struct {
	ConnectTimeout time.Duration
	// Timeout bounds each write and each wait for the origin's next bytes:
	// a response that keeps coming may take longer (originConn).
	Timeout          time.Duration
	MaxConns         int
	MaxResponseBytes int64 // enforced while streaming (stream.go), not by fasthttp
	// RootCAs verify an https origin's certificate; nil: the system's.
	RootCAs *x509.CertPool
	// Certificate is presented to an https origin that asks for one; nil:
	// none.
	Certificate *tls.Certificate
	// ServerName is the name an https origin's certificate must carry (and
	// the SNI); "": the origin URL's host.
	ServerName string
}

// newOriginClient returns the pooled keep-alive client for one origin URL,
// with the bound on the connections all the origin's pools hold.
func newOriginClient(origin *url.URL, opt originOptions) *originClient {
	isTLS := origin.Scheme == "https"
	addr := origin.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		if isTLS {
			addr = net.JoinHostPort(addr, "443")
		} else {
			addr = net.JoinHostPort(addr, "80")
		}
	}
	connect := opt.ConnectTimeout
	var tlsConf *tls.Config
	if isTLS {
		tlsConf = &tls.Config{ServerName: origin.Hostname(), MinVersion: tls.VersionTLS12, RootCAs: opt.RootCAs}
		if opt.ServerName != "" {
			tlsConf.ServerName = opt.ServerName
		}
		if opt.Certificate != nil {
			tlsConf.Certificates = []tls.Certificate{*opt.Certificate}
		}
	}
	slots := newOriginSlots(opt.MaxConns)
	var hc *fasthttp.HostClient
	hc = &fasthttp.HostClient{
		Addr:                     addr,
		NoDefaultUserAgentHeader: true, // and no Name: a device's missing User-Agent stays missing
		IsTLS:                    isTLS,
		MaxConns:                 opt.MaxConns,
		// A request that finds all of the client's connections busy waits
		// for one, as it waits for a slot in the dial below.
		MaxConnWaitTimeout:            connect,
		ReadTimeout:                   opt.Timeout,
		WriteTimeout:                  opt.Timeout,
		MaxIdleConnDuration:           30 * time.Second,
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		Dial: func(a string) (net.Conn, error) {
			if !slots.acquire(hc, connect) {
				return nil, fasthttp.ErrNoFreeConns
			}
			release := func() { slots.release(false) }
			c, err := fasthttp.DialTimeout(a, connect)
			if err != nil {
				release()
				return nil, err
			}
			if !isTLS {
				return newOriginConn(c, c, opt.Timeout, true, release), nil
			}
			tc, err := originHandshake(c, tlsConf, opt.Timeout)
			if err != nil {
				release()
				return nil, err
			}
			return newOriginConn(tc, c, opt.Timeout, true, release), nil
		},
		// A request goes to the origin again only when a pooled keep-alive
		// connection turned out to be closed before any answer, and only for
		// idempotent methods. Never after a timeout (fasthttp's default
		// retries GET, HEAD and PUT up to five times): the device would wait
		// five origin_timeouts and the origin would get the request five times.
		RetryIfErr: func(req *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
			return false, retryable(req, err)
		},
	}
	// Bodies stream to the device (stream.go), which also enforces
	// max_response_bytes: fasthttp ignores MaxResponseBodySize when streaming.
	hc.StreamResponseBody = true
	return &originClient{HostClient: hc, slots: slots}
}

// originHandshake runs the TLS handshake of an https origin's connection c
// within timeout, as fasthttp would, so that originConn wraps the plaintext.
func originHandshake(c net.Conn, conf *tls.Config, timeout time.Duration) (net.Conn, error) {
	tc := tls.Client(c, conf)
	if timeout > 0 {
		_ = tc.SetDeadline(time.Now().Add(timeout))
	}
	err := tc.Handshake()
	if err == nil {
		err = tc.SetDeadline(time.Time{})
	}
	if err != nil {
		_ = c.Close()
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return nil, fasthttp.ErrTLSHandshakeTimeout
		}
		return nil, err
	}
	return tc, nil
}

// cleanRequest turns the device's request into the origin's, in place:
// spoofable and hop-by-hop headers and the session cookie are removed. The
// gateway's own headers come after it: setForwarded puts them in the
// header for the pooled client, and the event loop writes them after the
// request's header itself (appendForwarded), rather than copy them into it
// (loopOrigin.send).
func cleanRequest(req *fasthttp.Request, f forwardInfo) {
	h := &req.Header
	if string(h.Protocol()) != "HTTP/1.1" {
		// An HTTP/1.0 device's request goes to the origin as HTTP/1.1, as
		// nginx's proxy_http_version 1.1 and Envoy do: the origin connection
		// stays in the keep-alive pool. Its framing is the same (framingError
		// refused Transfer-Encoding on HTTP/1.0).
		h.SetProtocol("HTTP/1.1")
	}
	// The origin gets the Host the device sent, which the gateway checked
	// against the SNI: without UseHostHeader, fasthttp writes the host of its
	// own parse of the target instead (see pinTarget).
	req.UseHostHeader = true
	if f.OriginTLS {
		// After the target is settled below (SetRequestURIBytes parses the
		// URI again): a closure, so that URI() is called then, not now.
		defer func() { req.URI().SetScheme("https") }()
	}
	if t := h.RequestURI(); len(t) > 0 && t[0] != '/' && string(t) != "*" {
		originForm(req)
	}
	if t := h.RequestURI(); len(t) > 1 && t[0] == '/' && t[1] == '/' {
		pinTarget(req, t)
	}
	if carriesStripped(h) {
		// The gateway answers an expectation itself (100 Continue) and has
		// the whole body: the origin must not be asked to answer it again,
		// so Expect goes with the hop-by-hop and spoofable headers.
		stripRequestHeaders(h)
	}
	if f.CookieName != "" {
		dropCookie(h, f.CookieName)
	}
	if h.IsHead() {
		// A HEAD's answer ends with its header, and a body the origin sent
		// anyway would be read as the next answer on the connection: it
		// carries no other request (answerUnsure), so the origin is told,
		// and the pooled client closes it instead of keeping it idle.
		h.SetConnectionClose()
	}
}

// setForwarded sets the gateway's own headers on a request cleanRequest
// prepared: the token, X-Forwarded-*, and the client certificate when the
// application forwards it. cleanRequest removed any the device sent.
func setForwarded(h *fasthttp.RequestHeader, f forwardInfo) {
	if f.Token != "" {
		setHeader(h, hdrAssertion, f.Token)
	}
	setHeader(h, hdrForwardedFor, f.ClientIP)
	setHeader(h, hdrForwardedProto, "https")
	setHeader(h, hdrForwardedHost, f.Host)
	if f.ClientCert != nil && len(f.ClientCert.DER) > 0 {
		setClientCertHeaders(h, f.ClientCert)
	}
}

// appendForwarded appends to b the header fields setForwarded sets, each
// ending in CRLF, for a request header written without them. Setting them
// in fasthttp's header would copy the token (about a kilobyte) into it,
// scan it for line breaks, and copy it twice more as the header is
// written. The token, the fingerprint and the certificate are the
// gateway's own base64url, hex and base64, and go as they are; the address
// and the host (a few dozen bytes, and already parsed: fasthttp refuses a
// line break in a header value) still have any CR or LF turned into a
// space, as fasthttp does with every value it sets, so that no change
// upstream of this can ever split a field.
func appendForwarded(b []byte, f forwardInfo) []byte {
	if f.Token != "" {
		b = appendField(b, hdrAssertion, f.Token)
	}
	b = appendCleanField(b, hdrForwardedFor, f.ClientIP)
	b = appendField(b, hdrForwardedProto, "https")
	b = appendCleanField(b, hdrForwardedHost, f.Host)
	if id := f.ClientCert; id != nil && len(id.DER) > 0 {
		b = append(append(b, hdrClientCertDER...), ": "...)
		b = base64.StdEncoding.AppendEncode(b, id.DER)
		b = appendField(append(b, "\r\n"...), hdrClientCertSHA256, id.SHA256)
		// RFC 9440: the DER as a Structured Field Byte Sequence.
		b = append(append(b, hdrClientCert...), ": :"...)
		b = base64.StdEncoding.AppendEncode(b, id.DER)
		b = append(b, ":\r\n"...)
	}
	return b
}

// forwardedLen is the length of what appendForwarded appends for f.
func forwardedLen(f forwardInfo) int {
	const sep = len(": ") + len("\r\n")
	n := len(hdrForwardedFor) + len(f.ClientIP) + len(hdrForwardedProto) + len("https") +
		len(hdrForwardedHost) + len(f.Host) + 3*sep
	if f.Token != "" {
		n += len(hdrAssertion) + len(f.Token) + sep
	}
	if id := f.ClientCert; id != nil && len(id.DER) > 0 {
		b64 := base64.StdEncoding.EncodedLen(len(id.DER))
		n += len(hdrClientCertDER) + b64 + sep
		n += len(hdrClientCertSHA256) + len(id.SHA256) + sep
		n += len(hdrClientCert) + b64 + len("::") + sep
	}
	return n
}

// appendField appends "name: value" and CRLF to b.
func appendField(b, name []byte, value string) []byte {
	b = append(append(append(b, name...), ": "...), value...)
	return append(b, "\r\n"...)
}

// appendCleanField is appendField with each CR or LF of value written as a
// space (the same length).
func appendCleanField(b, name []byte, value string) []byte {
	b = append(append(b, name...), ": "...)
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, "\r\n"...)
}

// The names of the headers the gateway sets on every request it forwards,
// in the canonical form fasthttp stores parsed names in, so that setting one
// replaces whatever the device sent under that name. SetCanonical takes
// them as they are: Set would copy and normalise the name, and copy the
// value twice, on every request.
var (
	hdrAssertion        = []byte("Cf-Access-Jwt-Assertion")
	hdrForwardedFor     = []byte("X-Forwarded-For")
	hdrForwardedProto   = []byte("X-Forwarded-Proto")
	hdrForwardedHost    = []byte("X-Forwarded-Host")
	hdrClientCertDER    = []byte("Cf-Client-Cert-Der-Base64")
	hdrClientCertSHA256 = []byte("Cf-Client-Cert-Sha256")
	hdrClientCert       = []byte("Client-Cert")
)

// setHeader sets the header name (canonical) to value. fasthttp copies the
// value before it returns, so it is handed a read-only view of the string
// rather than a copy.
func setHeader(h *fasthttp.RequestHeader, name []byte, value string) {
	h.SetCanonical(name, unsafe.Slice(unsafe.StringData(value), len(value)))
}

// originForm rewrites an absolute-form target (its authority is the Host,
// framingError checked) into origin form for the origin: the device's scheme
// is not the origin's, and fasthttp would refuse to send https:// to an http
// origin. Its path and query go byte for byte, as an origin-form target's
// do: URI().RequestURI() would normalise the path ("/abs/%2e%2e/x" becoming
// "/x"), and the origin would be asked for another path than the one the
// device asked for.
func originForm(req *fasthttp.Request) {
	u := req.URI()
	bp := scratchPool.Get().(*[]byte)
	b := (*bp)[:0]
	if p := u.PathOriginal(); len(p) > 0 {
		b = append(b, p...)
	} else {
		b = append(b, '/')
	}
	if q := u.QueryString(); len(q) > 0 {
		b = append(append(b, '?'), q...)
	}
	req.SetRequestURIBytes(b) // fasthttp copies it; the URI is parsed again
	*bp = b
	scratchPool.Put(bp)
}

// setClientCertHeaders hands the verified client certificate to the origin:
// Cloudflare's Cf-Client-Cert-* headers and RFC 9440's Client-Cert.
func setClientCertHeaders(h *fasthttp.RequestHeader, id *verdict.Identity) {
	bp := scratchPool.Get().(*[]byte)
	b := append((*bp)[:0], ':')
	b = base64.StdEncoding.AppendEncode(b, id.DER)
	b = append(b, ':')
	h.SetCanonical(hdrClientCertDER, b[1:len(b)-1]) // fasthttp copies values
	setHeader(h, hdrClientCertSHA256, id.SHA256)
	// RFC 9440: the DER as a Structured Field Byte Sequence.
	h.SetCanonical(hdrClientCert, b)
	*bp = b
	scratchPool.Put(bp)
}

// pinTarget sets the path and query of req's URI, which the origin client
// writes in the request line, to those of the origin-form target t, which
// starts with "//". fasthttp parses such a target as a network-path
// reference when it contains "://": "//evil.example/x://y" would reach the
// origin as "/x://y" with Host: evil.example. Like any origin-form target,
// t goes as it came, less a fragment.
func pinTarget(req *fasthttp.Request, t []byte) {
	if i := bytes.IndexByte(t, '#'); i >= 0 {
		t = t[:i]
	}
	path, query, _ := bytes.Cut(t, []byte{'?'})
	u := req.URI()
	u.SetPathBytes(path) // both copy
	u.SetQueryStringBytes(query)
}

// dropCookie removes every cookie named name from the request, keeping the
// others in their order: fasthttp's DelCookie moves the last cookie into the
// removed one's place, and an origin that reads the first of two cookies of
// one name (path-scoped duplicates) would read the other.
func dropCookie(h *fasthttp.RequestHeader, name string) {
	found := false
	for k := range h.Cookies() {
		if string(k) == name {
			found = true
			break
		}
	}
	if !found {
		return
	}
	bp := scratchPool.Get().(*[]byte)
	b := (*bp)[:0]
	for k, v := range h.Cookies() {
		if string(k) == name {
			continue
		}
		if len(b) > 0 {
			b = append(b, "; "...)
		}
		b = append(append(append(b, k...), '='), v...)
	}
	h.DelAllCookies()
	h.Del("Cookie")
	if len(b) > 0 {
		h.SetBytesV("Cookie", b) // parsed again, in this order; fasthttp copies
	}
	*bp = b
	scratchPool.Put(bp)
}

// scratchPool holds cleanRequest's scratch buffers: the rebuilt target of
// an absolute-form request, the cookies kept for the origin, and the client
// certificate base64-encoded for the origin's headers.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// strippedHeaders are the lower-case names cleanRequest deletes, besides
// those that start with one of spoofablePrefixes or contain '_', indexed by
// length (a comparison or two per field is cheaper than hashing it).
var strippedHeaders = func() (t [33][]string) {
	for _, list := range [][]string{{"Expect"}, hopByHopHeaders, spoofableHeaders} {
		for _, name := range list {
			name = strings.ToLower(name)
			if len(name) >= len(t) {
				panic("gateway: a stripped header name is longer than 32 bytes")
			}
			if !slices.Contains(t[len(name)], name) {
				t[len(name)] = append(t[len(name)], name)
			}
		}
	}
	return t
}()

// strippedName reports whether cleanRequest deletes a request header
// field of this name (any case):
//
//   - a name with '_': origins that map fields to CGI-style variables
//     (HTTP_CF_ACCESS_JWT_ASSERTION) read Cf_Access_Jwt_Assertion as the
//     gateway's own Cf-Access-Jwt-Assertion. Like nginx's default
//     (underscores_in_headers off), such fields are dropped, never refused;
//   - a spoofable name or family (spoofableHeaders, spoofablePrefixes);
//   - a hop-by-hop name, Connection included (it nominates others), and
//     Expect.
func strippedName(k []byte) bool {
	var lower [32]byte // longer than every name and prefix compared below
	for i, c := range k {
		switch {
		case c == '_':
			return true
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if i < len(lower) {
			lower[i] = c
		}
	}
	l := lower[:min(len(k), len(lower))]
	if len(l) > 0 {
		for _, p := range spoofablePrefixes[l[0]] {
			if len(l) > len(p) && string(l[:len(p)]) == p {
				return true
			}
		}
	}
	if len(k) >= len(strippedHeaders) {
		return false
	}
	for _, name := range strippedHeaders[len(k)] {
		if string(l) == name {
			return true
		}
	}
	return false
}

// carriesStripped reports whether the request has any header cleanRequest
// deletes (a Connection header included, which names the others; a
// trailer section shows as the Trailer field): most device requests have
// none, and one pass over their few headers, with no allocation, is much
// cheaper than collecting names and deleting them.
func carriesStripped(h *fasthttp.RequestHeader) bool {
	for k := range h.All() {
		if strippedName(k) {
			return true
		}
	}
	return false
}

// stripRequestHeaders deletes every field strippedName names, in the
// header and the trailer section, and every field a Connection header
// nominates, whichever of several Connection headers names it. The names
// are collected first (deleting while iterating is undefined in fasthttp).
func stripRequestHeaders(h *fasthttp.RequestHeader) {
	bp := namesPool.Get().(*[]byte)
	names := (*bp)[:0]
	for k, v := range h.All() {
		if bytes.EqualFold(k, strConnection) {
			names = appendConnectionTokens(names, v)
		}
		if strippedName(k) {
			names = append(append(names, k...), '\n')
		}
	}
	for k := range h.Trailers() {
		if strippedName(k) {
			names = append(append(names, k...), '\n')
		}
	}
	for rest := names; len(rest) > 0; {
		var name []byte
		name, rest, _ = bytes.Cut(rest, []byte{'\n'})
		h.DelBytes(name) // copies name before it deletes
	}
	putNames(bp, names)
}

// namesPool holds the buffers of header names to delete, each followed by
// '\n' (which no field name contains).
var namesPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func putNames(bp *[]byte, names []byte) {
	if cap(names) > 16<<10 {
		return // an outsized request's buffer is not kept
	}
	*bp = names
	namesPool.Put(bp)
}

var strConnection = []byte("Connection")

// forwardInfo is what the gateway adds to a request for the origin
// (setForwarded, appendForwarded), and what cleanRequest needs to know.
type forwardInfo struct {
	Token      string // the assertion for the origin; "" for bypass
	ClientIP   string
	Host       string // the host the device asked for
	CookieName string
	ClientCert *verdict.Identity // non-nil when the application forwards certificates
	// OriginTLS is set for an https origin: the request read from the
	// device carries no scheme, and fasthttp's TLS client refuses an http
	// one ("redirect to different scheme").
	OriginTLS bool
}

// appendConnectionTokens appends to names, each followed by '\n', the
// header names a Connection header value marks as hop-by-hop: every
// token but the keep-alive and close options, and but the framing fields
// and Host. A Connection header may not nominate those (RFC 9110 section
// 7.6.1: they are meant for every recipient); in fasthttp the header is
// the framing, so deleting Content-Length or Transfer-Encoding would
// reframe the message (a response with "Connection: Content-Length" would
// go to the device as "Content-Length: 0" followed by its body).
func appendConnectionTokens(names, v []byte) []byte {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte{','})
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || bytes.IndexByte(tok, '\n') >= 0 {
			continue
		}
		switch {
		case bytes.EqualFold(tok, []byte("close")), bytes.EqualFold(tok, []byte("keep-alive")),
			bytes.EqualFold(tok, []byte("Content-Length")), bytes.EqualFold(tok, []byte("Transfer-Encoding")),
			bytes.EqualFold(tok, []byte("Host")):
			continue
		}
		names = append(append(names, tok...), '\n')
	}
	return names
}

// cleanOriginResponse removes hop-by-hop headers from the origin's
// response before it goes to the device: those the origin's Connection
// headers (all of them) nominate, then the hop-by-hop list with the
// Connection header itself. The device's Connection header is the
// gateway's alone (respond): the origin's "keep-alive, X-Internal"
// or "Upgrade" describes the origin connection, not the device's.
func cleanOriginResponse(resp *fasthttp.Response) {
	h := &resp.Header
	if !carriesHopByHop(h) {
		// Most answers carry none: one look over their fields instead of
		// a lookup per hop-by-hop name.
		h.ResetConnectionClose()
		return
	}
	bp := namesPool.Get().(*[]byte)
	names := (*bp)[:0]
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		names = appendConnectionTokens(names, v)
	}
	for rest := names; len(rest) > 0; {
		var name []byte
		name, rest, _ = bytes.Cut(rest, []byte{'\n'})
		h.DelBytes(name)
	}
	putNames(bp, names)
	for _, name := range hopByHopHeaders {
		h.Del(name)
	}
	h.ResetConnectionClose()
}

// carriesHopByHop reports whether an origin's response header has a field
// cleanOriginResponse deletes: a hop-by-hop one, Connection included (only
// a Connection header nominates others). Trailer is hop-by-hop too, so an
// answer with trailers announced is always cleaned in full.
func carriesHopByHop(h *fasthttp.ResponseHeader) bool {
	for k := range h.All() {
		if hopByHopName(k) {
			return true
		}
	}
	return false
}

// hopByHopName reports whether k is one of hopByHopHeaders, in any case.
func hopByHopName(k []byte) bool {
	for _, name := range hopByHopHeaders {
		if len(k) == len(name) && strings.EqualFold(string(k), name) {
			return true
		}
	}
	return false
}

// originFailure classifies an error from the origin client: the HTTP status
// the device gets and the kind named in logs and metrics. This is the one
// place where origin failures map to statuses.
func originFailure(err error) (status int, kind string) {
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return fasthttp.StatusGatewayTimeout, "timeout"
	case errors.Is(err, fasthttp.ErrDialTimeout),
		// fasthttp's dial gives its own error or the dialer's, whichever
		// comes first: the same failure.
		isDialError(err) && errors.As(err, &netErr) && netErr.Timeout(),
		// An https origin that accepts the connection but does not
		// finish the TLS handshake in time was not reached either.
		errors.Is(err, fasthttp.ErrTLSHandshakeTimeout):
		return fasthttp.StatusBadGateway, "connect_timeout"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fasthttp.StatusBadGateway, "response_too_large"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return fasthttp.StatusServiceUnavailable, "no_free_connections"
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		return fasthttp.StatusBadGateway, "connection_closed"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fasthttp.StatusBadGateway, "truncated" // closed mid-body
	case errors.As(err, &netErr) && netErr.Timeout():
		return fasthttp.StatusGatewayTimeout, "timeout"
	case isDialError(err):
		return fasthttp.StatusBadGateway, "unreachable"
	}
	return fasthttp.StatusBadGateway, "bad_response"
}

// retryable reports whether an origin request may be sent again: any
// method when nothing was sent (errStaleConn), else an idempotent method
// that failed because the origin had closed the pooled connection (EOF,
// reset or broken pipe before the first response byte).
func retryable(req *fasthttp.Request, err error) bool {
	if errors.Is(err, errStaleConn) {
		return true // nothing was sent
	}
	h := &req.Header
	if !h.IsGet() && !h.IsHead() && !h.IsPut() && !h.IsOptions() {
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isDialError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}
