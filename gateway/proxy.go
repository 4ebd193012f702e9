package gateway

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// spoofableHeaders are removed from every client request before it is
// forwarded: the gateway is their only author, so a device must never be able
// to pre-set them (a forged assertion or client-cert header would be trusted
// by the origin).
var spoofableHeaders = []string{
	"Cf-Access-Jwt-Assertion",
	"Cf-Access-Token",
	"Cf-Access-Client-Id",
	"Cf-Access-Client-Secret",
	"Cf-Client-Cert-Der-Base64",
	"Cf-Client-Cert-Sha256",
	"Client-Cert",
	"Client-Cert-Chain",
	"Cf-Connecting-Ip",
	"X-Forwarded-For",
	"X-Forwarded-Proto",
	"X-Forwarded-Host",
	"X-Real-Ip",
	"Forwarded",
}

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
}

// newOriginClient returns the pooled keep-alive client for one origin URL.
func newOriginClient(origin *url.URL, opt originOptions) *fasthttp.HostClient {
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
	hc := &fasthttp.HostClient{
		Addr:                          addr,
		Name:                          "fleetgate",
		NoDefaultUserAgentHeader:      true,
		IsTLS:                         isTLS,
		MaxConns:                      opt.MaxConns,
		ReadTimeout:                   opt.Timeout,
		WriteTimeout:                  opt.Timeout,
		MaxIdleConnDuration:           30 * time.Second,
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		Dial: func(a string) (net.Conn, error) {
			c, err := fasthttp.DialTimeout(a, connect)
			if err != nil {
				return nil, err
			}
			return newOriginConn(c, opt.Timeout), nil
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
	if isTLS {
		hc.TLSConfig = &tls.Config{ServerName: origin.Hostname(), MinVersion: tls.VersionTLS12}
	}
	return hc
}

// originRequest turns the device's request into the origin's, in place:
// spoofable and hop-by-hop headers and the session cookie are removed, then
// the gateway's own headers are set.
func originRequest(req *fasthttp.Request, f forwardInfo) {
	h := &req.Header
	if string(h.Protocol()) != "HTTP/1.1" {
		// An HTTP/1.0 device's request goes to the origin as HTTP/1.1, as
		// nginx's proxy_http_version 1.1 and Envoy do: the origin connection
		// stays in the keep-alive pool. Its framing is the same (framingError
		// refused Transfer-Encoding on HTTP/1.0).
		h.SetProtocol("HTTP/1.1")
	}
	if t := h.RequestURI(); len(t) > 0 && t[0] != '/' && string(t) != "*" {
		// An absolute-form target (its authority is the Host, framingError
		// checked) goes to the origin in origin form: the device's scheme is
		// not the origin's, and fasthttp would refuse to send https:// to an
		// http origin.
		req.SetRequestURI(string(req.URI().RequestURI()))
	}
	if carriesStripped(h) {
		for _, name := range connectionTokens(h.Peek("Connection")) {
			h.Del(name)
		}
		for _, name := range hopByHopHeaders {
			h.Del(name)
		}
		for _, name := range spoofableHeaders {
			h.Del(name)
		}
		// The gateway answered the expectation itself (100 Continue) and has
		// the whole body: the origin must not be asked to answer it again.
		h.Del("Expect")
	}
	if f.CookieName != "" {
		h.DelCookie(f.CookieName)
		if len(h.Peek("Cookie")) == 0 {
			h.Del("Cookie")
		}
	}
	if f.Token != "" {
		h.Set("Cf-Access-Jwt-Assertion", f.Token)
	}
	h.Set("X-Forwarded-For", f.ClientIP)
	h.Set("X-Forwarded-Proto", "https")
	h.Set("X-Forwarded-Host", f.Host)
	if f.ClientCert != nil && len(f.ClientCert.DER) > 0 {
		bp := certBufPool.Get().(*[]byte)
		b := append((*bp)[:0], ':')
		b = base64.StdEncoding.AppendEncode(b, f.ClientCert.DER)
		b = append(b, ':')
		h.SetBytesV("Cf-Client-Cert-Der-Base64", b[1:len(b)-1]) // fasthttp copies values
		h.Set("Cf-Client-Cert-Sha256", f.ClientCert.SHA256)
		// RFC 9440: the DER as a Structured Field Byte Sequence.
		h.SetBytesV("Client-Cert", b)
		*bp = b
		certBufPool.Put(bp)
	}
}

// certBufPool holds the buffers the client certificate is base64-encoded
// into for the origin's headers.
var certBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// strippedHeaders are the lower-case names originRequest deletes.
var strippedHeaders = func() map[string]bool {
	m := map[string]bool{"expect": true}
	for _, list := range [][]string{hopByHopHeaders, spoofableHeaders} {
		for _, name := range list {
			m[strings.ToLower(name)] = true
		}
	}
	return m
}()

// carriesStripped reports whether the request has any header originRequest
// deletes (a Connection header included, which names the others): most
// device requests have none, and one pass over their few headers is much
// cheaper than two dozen deletions that find nothing.
func carriesStripped(h *fasthttp.RequestHeader) bool {
	var lower [32]byte
	for k := range h.All() {
		if len(k) > len(lower) {
			continue // longer than every stripped name
		}
		for i, c := range k {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		if strippedHeaders[string(lower[:len(k)])] {
			return true
		}
	}
	return false
}

// forwardInfo is what originRequest adds to a request.
type forwardInfo struct {
	Token      string // the assertion for the origin; "" for bypass
	ClientIP   string
	Host       string // the host the device asked for
	CookieName string
	ClientCert *verdict.Identity // non-nil when the application forwards certificates
}

// connectionTokens lists the header names a Connection header marks as
// hop-by-hop (besides the keep-alive and close options).
func connectionTokens(v []byte) []string {
	if len(v) == 0 {
		return nil
	}
	var out []string
	for _, tok := range strings.Split(string(v), ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" || strings.EqualFold(tok, "close") || strings.EqualFold(tok, "keep-alive") {
			continue
		}
		out = append(out, tok)
	}
	return out
}

// cleanOriginResponse removes hop-by-hop headers from the origin's response
// before it goes to the device.
func cleanOriginResponse(resp *fasthttp.Response) {
	h := &resp.Header
	for _, name := range connectionTokens(h.Peek("Connection")) {
		h.Del(name)
	}
	for _, name := range hopByHopHeaders {
		if name == "Connection" {
			continue // fasthttp manages the response's own Connection header
		}
		h.Del(name)
	}
	h.ResetConnectionClose()
}

// originFailure classifies an error from the origin client: the HTTP status
// the device gets and the kind named in logs and metrics. This is the one
// place where origin failures map to statuses.
func originFailure(err error) (status int, kind string) {
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return fasthttp.StatusGatewayTimeout, "timeout"
	case errors.Is(err, fasthttp.ErrDialTimeout):
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
