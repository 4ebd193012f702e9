package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// deviceKey carries the certificate a handshake presents in its context.
type deviceKey struct{}

// clientConfig is the TLS configuration shared by every connection of a
// run: one version, one key-exchange group, no session cache (every
// handshake is a full one), and the device certificate taken from the
// handshake's context (none for a context without one).
//
// In TLS 1.2 the supported_groups extension also names the curves the
// client accepts for ECDSA certificates (RFC 8422 section 5.1.1), and
// OpenSSL servers hold to it: a client listing only X25519 gets a handshake
// failure from nginx or HAProxy serving a P-256 certificate. So TLS 1.2
// lists P-256 second; the key exchange is still the first group, which
// connect checks on every connection.
func clientConfig(o Options) *tls.Config {
	groups := []tls.CurveID{o.Group}
	if o.TLSVersion == tls.VersionTLS12 && o.Group != tls.CurveP256 {
		groups = append(groups, tls.CurveP256)
	}
	return &tls.Config{
		ServerName:         o.SNI,
		RootCAs:            o.RootCAs,
		InsecureSkipVerify: o.Insecure, //nolint:gosec // a load generator's explicit choice (-insecure)
		MinVersion:         o.TLSVersion,
		MaxVersion:         o.TLSVersion,
		CurvePreferences:   groups,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if dev, ok := cri.Context().Value(deviceKey{}).(*tls.Certificate); ok {
				return dev, nil
			}
			return &tls.Certificate{}, nil
		},
	}
}

// requestBytes formats the request every worker sends; extra header lines
// (such as a Cookie) end with CRLF.
func requestBytes(o Options, extra string) []byte {
	var b strings.Builder
	method := http.MethodGet
	if o.BodySize > 0 {
		method = http.MethodPost
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fleetgate-bench\r\n", method, o.Path, o.Host)
	if o.Mode == ModeFresh {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString(extra)
	if o.BodySize > 0 {
		fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", o.BodySize)
		b.WriteString(strings.Repeat("x", o.BodySize))
	} else {
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// worker is one simulated client: at most one request in flight, one
// connection at a time. It records into its own histogram and counters, so
// the hot path takes no lock; Run merges them at the end.
type worker struct {
	r    *runner
	id   int
	seq  int // connections opened so far: picks the next device
	req  []byte
	conn *tls.Conn
	br   *bufio.Reader
	uses int // requests sent on conn
	// measuring is whether the current request belongs to the measured
	// phase (decided when it starts).
	measuring bool

	hist       *hdrhistogram.Histogram
	ok         int64
	errs       map[string]int64
	handshakes int64

	tcp *tcpWorker // ModeTCP's state; nil in the HTTP modes
}

// errKind is the classification of a failed request ("" for success).
type errKind = string

// do sends one request and reads its response, opening a connection first
// when there is none.
func (w *worker) do(ctx context.Context) errKind {
	o := &w.r.o
	if w.conn == nil {
		if kind := w.connect(ctx, o.Mode != ModeCookie); kind != "" {
			return kind
		}
	}
	_ = w.conn.SetDeadline(time.Now().Add(o.Timeout))
	reused := w.uses > 0
	w.uses++
	if _, err := w.conn.Write(w.req); err != nil {
		kind := classify("write", err, reused)
		if alert := pendingAlert(w.conn); alert != "" {
			kind = alert
		}
		w.drop()
		return kind
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		w.drop()
		return classify("read", err, reused)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		w.drop()
		return classify("read", err, false)
	}
	if o.Mode == ModeFresh || resp.Close {
		w.drop()
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "status_" + strconv.Itoa(resp.StatusCode)
	}
	return ""
}

// connect dials the target and completes a TLS handshake presenting the
// worker's next device certificate (withCert) or none.
func (w *worker) connect(ctx context.Context, withCert bool) errKind {
	o := &w.r.o
	raw, err := w.r.dial(ctx, w.id, w.seq)
	if err != nil {
		return classify("dial", err, false)
	}
	_ = raw.SetDeadline(time.Now().Add(o.Timeout))
	hctx := ctx
	if withCert {
		dev := &o.Devices[(w.id+w.seq*o.Concurrency)%len(o.Devices)]
		hctx = context.WithValue(ctx, deviceKey{}, dev)
	}
	w.seq++
	c := tls.Client(raw, w.r.tlsConf)
	if err := c.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return classify("handshake", err, false)
	}
	if c.ConnectionState().CurveID != o.Group {
		_ = raw.Close()
		return "group_mismatch" // the server chose another key exchange: not the run asked for
	}
	if w.measuring {
		w.handshakes++
	}
	w.conn, w.uses = c, 0
	if w.br == nil {
		w.br = bufio.NewReaderSize(c, 16<<10)
	} else {
		w.br.Reset(c)
	}
	return ""
}

// pendingAlert reads what the server sent before a failed write: a TLS
// alert (a refused certificate in TLS 1.3, where the client learns of it
// after its handshake is over) explains the failure better than the broken
// pipe it caused.
func pendingAlert(c *tls.Conn) errKind {
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var one [1]byte
	_, err := c.Read(one[:])
	if kind := classify("read", err, false); err != nil && kind == "tls_alert" {
		return kind
	}
	return ""
}

// drop closes the worker's connection, if any.
func (w *worker) drop() {
	if w.conn != nil {
		_ = w.conn.NetConn().Close() // no close_notify: the exchange is over either way
		w.conn = nil
	}
}

// classify names the kind of a failure at stage (dial, handshake, write,
// read). A TLS alert from the server (such as a refused client
// certificate, which TLS 1.3 reports only on the first read) is tls_alert.
// A kept-alive connection that the server had closed before this request
// ("reused") is "closed": a race with the server's idle timeout or a server
// that closes without saying so.
func classify(stage string, err error, reused bool) errKind {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &oe) && oe.Op == "remote error":
		return "tls_alert"
	case reused && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)):
		return "closed"
	}
	return stage
}

// dial opens a TCP connection to the target, from a spread source address
// when the run asks for it.
func (r *runner) dial(ctx context.Context, worker, seq int) (net.Conn, error) {
	d := net.Dialer{Timeout: r.o.Timeout}
	if r.o.SourceIPs > 0 {
		d.LocalAddr = &net.TCPAddr{IP: LoopbackIP((worker + seq*r.o.Concurrency) % r.o.SourceIPs)}
	}
	return d.DialContext(ctx, "tcp", r.o.Target)
}

// LoopbackIP returns the i-th source address of a spread: 127.0.0.2,
// 127.0.0.3 … over 127.0.0.0/8 (i below 2^24 - 3).
func LoopbackIP(i int) net.IP {
	n := uint32(i) + 2
	return net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))
}

// getCookie makes one request presenting dev and returns the session cookie
// the response sets.
func (r *runner) getCookie(ctx context.Context, dev *tls.Certificate) (string, error) {
	o := &r.o
	raw, err := r.dial(ctx, 0, 0)
	if err != nil {
		return "", fmt.Errorf("bench: cookie: dial %s: %w", o.Target, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(o.Timeout))
	c := tls.Client(raw, r.tlsConf)
	if err := c.HandshakeContext(context.WithValue(ctx, deviceKey{}, dev)); err != nil {
		return "", fmt.Errorf("bench: cookie: handshake with %s: %w", o.Target, err)
	}
	if _, err := c.Write(requestBytes(o.withMode(ModeFresh), "")); err != nil {
		return "", fmt.Errorf("bench: cookie: write: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", fmt.Errorf("bench: cookie: read: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name == o.CookieName && ck.Value != "" {
			return ck.Name + "=" + ck.Value, nil
		}
	}
	cn := ""
	if dev.Leaf != nil {
		cn = dev.Leaf.Subject.CommonName
	}
	return "", fmt.Errorf("bench: cookie: %s %s for device %q answered %s without a %s cookie (is the application's session_duration 0?)",
		o.SNI, o.Path, cn, resp.Status, o.CookieName)
}

// withMode returns a copy of o with another mode.
func (o Options) withMode(m Mode) Options {
	o.Mode = m
	return o
}
