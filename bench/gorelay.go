package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// GoRelayOptions configure StartGoRelay.
type GoRelayOptions struct {
	// Listen is the TLS address ("127.0.0.1:0" picks a port).
	Listen string
	// CertFile and KeyFile are the server certificate (leaf then chain) and
	// its key, PEM.
	CertFile, KeyFile string
	// ClientCAFile holds the roots device chains must lead to (PEM).
	ClientCAFile string
	// Upstream is the TCP origin's host:port.
	Upstream string
}

// goRelayHandshakeTimeout bounds a device's handshake in the Go relay, and
// goRelayDialTimeout its origin's connect.
const (
	goRelayHandshakeTimeout = 10 * time.Second
	goRelayDialTimeout      = 5 * time.Second
)

// StartGoRelay starts the relay comparison's Go baseline, the shape of
// ghostunnel and of most Go TLS tunnels: crypto/tls with
// tls.RequireAndVerifyClientCert against ClientCAFile (a device without a
// verified chain is refused in the handshake), session tickets off, X25519
// (and P-256 for TLS 1.2 clients that name the certificate's curve); after
// the handshake it dials Upstream and runs two io.Copy loops, one per
// direction, each on its own goroutine. The device ending its stream
// half-closes the origin's side; the origin ending its stream ends the
// device's with close_notify and closes both.
func StartGoRelay(o GoRelayOptions) (*TCPServer, error) {
	if o.Upstream == "" {
		return nil, errors.New("bench: go relay: no upstream (-relay-upstream host:port)")
	}
	if _, _, err := net.SplitHostPort(o.Upstream); err != nil {
		return nil, fmt.Errorf("bench: go relay: upstream %q: want host:port: %w", o.Upstream, err)
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("bench: go relay: %w", err)
	}
	roots, err := LoadRoots(o.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("bench: go relay: %w", err)
	}
	conf := &tls.Config{
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              roots,
		MinVersion:             tls.VersionTLS12,
		CurvePreferences:       []tls.CurveID{tls.X25519, tls.CurveP256},
		SessionTicketsDisabled: true,
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("bench: go relay: %w", err)
	}
	return serveTCP(ln, func(s *TCPServer, raw net.Conn) {
		goRelay(s, raw, conf, o.Upstream)
	}), nil
}

// goRelay serves one device connection; it is the first of the
// connection's two goroutines, copying device → origin.
func goRelay(s *TCPServer, raw net.Conn, conf *tls.Config, upstream string) {
	dev := tls.Server(raw, conf)
	_ = raw.SetDeadline(time.Now().Add(goRelayHandshakeTimeout))
	if err := dev.Handshake(); err != nil {
		return // refused or broken: the origin is never dialed
	}
	_ = raw.SetDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", upstream, goRelayDialTimeout)
	if err != nil {
		_ = dev.Close()
		return
	}
	if !s.track(up, false) {
		return
	}
	defer s.untrack(up)
	back := make(chan struct{})
	go func() { // the second goroutine: origin → device
		defer close(back)
		_, _ = io.Copy(dev, up)
		_ = dev.Close() // close_notify; also ends the copy below
	}()
	_, _ = io.Copy(up, dev)
	if tc, ok := up.(*net.TCPConn); ok {
		_ = tc.CloseWrite() // the device is done: the origin may still answer
	}
	<-back
}
