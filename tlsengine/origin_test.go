package tlsengine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// originPair is a TLS origin on loopback and the gateway's side of one
// connection to it, handshaken by HandshakeOrigin: the test plays the
// event loop, moving bytes between the socket and the session.
type originPair struct {
	sock   net.Conn    // the gateway's socket, read and written raw by the test
	oc     *OriginConn // the gateway's session
	server *tls.Conn   // the origin's side
}

func newOriginPair(t *testing.T) *originPair {
	t.Helper()
	root := pki.MustRoot(pki.Root("Origin Root"))
	cert := root.MustIssue(pki.Server("127.0.0.1"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}})
		if s.Handshake() != nil {
			_ = c.Close()
			accepted <- nil
			return
		}
		accepted <- s
	}()
	sock, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sock.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oc, err := HandshakeOrigin(ctx, sock, &tls.Config{ServerName: "127.0.0.1", RootCAs: pki.Pool(root)})
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("the origin's handshake failed")
	}
	t.Cleanup(func() { _ = server.Close() })
	_ = sock.SetDeadline(time.Now().Add(10 * time.Second))
	_ = server.SetDeadline(time.Now().Add(10 * time.Second))
	return &originPair{sock: sock, oc: oc, server: server}
}

// send writes what the session has to send on the socket.
func (p *originPair) send(t *testing.T, out []byte) {
	t.Helper()
	if _, err := p.sock.Write(out); err != nil {
		t.Fatal(err)
	}
}

// readFed feeds the socket's bytes to the session a byte at a time until
// Read returns something other than ErrWouldBlock.
func (p *originPair) readFed(t *testing.T, buf []byte) (int, error) {
	t.Helper()
	one := make([]byte, 1)
	for {
		n, err := p.oc.Read(buf)
		if !errors.Is(err, ErrWouldBlock) {
			return n, err
		}
		if _, rerr := io.ReadFull(p.sock, one); rerr != nil {
			t.Fatalf("socket: %v (the session waits for more)", rerr)
		}
		p.oc.Feed(one)
	}
}

func TestOriginConnRoundTrip(t *testing.T) {
	p := newOriginPair(t)
	out, err := p.oc.Seal([]byte("hello origin"))
	if err != nil {
		t.Fatal(err)
	}
	p.send(t, out)
	got := make([]byte, 64)
	n, err := p.server.Read(got)
	if err != nil || string(got[:n]) != "hello origin" {
		t.Fatalf("origin read %q, %v", got[:n], err)
	}
	if _, err := p.server.Write([]byte("hello gateway")); err != nil {
		t.Fatal(err)
	}
	// Fed a byte at a time: nothing until a whole record, and no error
	// that would leave the session broken.
	n, err = p.readFed(t, got)
	if err != nil || string(got[:n]) != "hello gateway" {
		t.Fatalf("gateway read %q, %v", got[:n], err)
	}
	if p.oc.Buffered() != 0 {
		t.Errorf("%d fed bytes left", p.oc.Buffered())
	}
	// The origin's close_notify: io.EOF.
	if err := p.server.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.readFed(t, got); !errors.Is(err, io.EOF) {
		t.Errorf("after the origin's close_notify: %v, want io.EOF", err)
	}
}

func TestOriginConnCloseNotify(t *testing.T) {
	p := newOriginPair(t)
	p.send(t, p.oc.CloseNotify())
	if n, err := p.server.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("origin read %d, %v; want the gateway's close_notify (io.EOF)", n, err)
	}
	if out := p.oc.Output(); len(out) != 0 {
		t.Errorf("%d bytes left to send after CloseNotify's", len(out))
	}
}

// TestOriginConnBrokenRecord: bytes that are not a record of the session
// break it, for good.
func TestOriginConnBrokenRecord(t *testing.T) {
	p := newOriginPair(t)
	p.oc.Feed([]byte{23, 3, 3, 0, 20})
	p.oc.Feed(bytes.Repeat([]byte{0xAA}, 20))
	_, err := p.oc.Read(make([]byte, 64))
	if err == nil || errors.Is(err, ErrWouldBlock) || errors.Is(err, io.EOF) {
		t.Fatalf("a forged record: %v, want the session broken", err)
	}
	if _, err2 := p.oc.Read(make([]byte, 64)); err2 == nil || errors.Is(err2, ErrWouldBlock) {
		t.Errorf("a broken session read again: %v", err2)
	}
	if _, err := p.oc.Seal([]byte("x")); err == nil {
		t.Error("a broken session sealed more")
	}
}

// TestHandshakeOriginBounded: an origin that never answers the ClientHello
// fails the handshake when its context ends, and the socket is closed.
func TestHandshakeOriginBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}
	}()
	sock, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := HandshakeOrigin(ctx, sock, &tls.Config{ServerName: "127.0.0.1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handshake with a silent origin: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the handshake took %v", d)
	}
	if _, err := sock.Write([]byte("x")); err == nil {
		t.Error("the socket is still open after the failed handshake")
	}
}

// TestOriginConnKeepsNoLargeBufferIdle: after a large Seal (the relay's
// OnOpen seals an mqtt CONNECT and everything the device sent before the
// origin opened: up to relay_buffer, 64 MiB at most) whose output has been
// taken and written, an idle session keeps no buffer over originKeep.
func TestOriginConnKeepsNoLargeBufferIdle(t *testing.T) {
	p := newOriginPair(t)
	big := bytes.Repeat([]byte{'x'}, 1<<20)
	out, err := p.oc.Seal(big)
	if err != nil {
		t.Fatal(err)
	}
	_ = append([]byte(nil), out...) // what originOpened does; gnet then writes the copy
	// The device now idles: no further Seal.
	if c := cap(p.oc.io.out); c > originKeep {
		t.Errorf("idle session keeps an output buffer of %d bytes (> originKeep %d)", c, originKeep)
	}
}
