package tlsengine

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/tlsengine/enginetest"
)

// fdTransport is an in-memory transport that also names a socket, as a
// gnet.Conn does: the handshake's flight goes to the socket directly, and
// AsyncWrites are recorded by the embedded transport.
type fdTransport struct {
	*enginetest.Transport
	fd int
}

func (t fdTransport) Fd() int { return t.fd }

// socketPair returns the two ends of a connected stream socket pair: the
// shim's end (non-blocking, as gnet's sockets are) and the peer's, as a file.
func socketPair(t *testing.T) (int, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() {
		_ = syscall.Close(fds[0])
		_ = peer.Close()
	})
	return fds[0], peer
}

// readExactly reads n bytes from f, failing the test after 5 seconds.
func readExactly(t *testing.T, f *os.File, n int) []byte {
	t.Helper()
	_ = f.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("reading %d bytes from the socket: %v", n, err)
	}
	return b
}

// TestHandshakeWritesDirect: during the handshake, a flight the socket
// takes whole is written to it from the handshake's goroutine, with no
// AsyncWrite; once the handshake ends, writes go through AsyncWrite again.
func TestHandshakeWritesDirect(t *testing.T) {
	loop := enginetest.NewLoop()
	defer loop.Close()
	fd, peer := socketPair(t)
	rt := fdTransport{enginetest.NewTransport(loop, ErrWouldBlock), fd}
	s := newShim(nil, rt, newAdmission(1, 1), DefaultMaxInbound)
	if _, err := s.Write([]byte("server flight")); err != nil {
		t.Fatal(err)
	}
	if got := readExactly(t, peer, len("server flight")); string(got) != "server flight" {
		t.Fatalf("the socket got %q", got)
	}
	if w := rt.Writes(); len(w) != 0 {
		t.Fatalf("AsyncWrites during the handshake: %q", w)
	}
	_, _ = s.endHandshake()
	if _, err := s.Write([]byte("application data")); err != nil {
		t.Fatal(err)
	}
	if w := rt.Writes(); len(w) != 1 || string(w[0]) != "application data" {
		t.Fatalf("after the handshake, AsyncWrites %q, want the one write", w)
	}
}

// TestHandshakeWriteFallsBack: a flight the socket does not take whole has
// its rest queued by AsyncWrite, and every later write is queued behind it
// (a direct write would overtake the bytes gnet still holds): the peer
// sees the bytes in order.
func TestHandshakeWriteFallsBack(t *testing.T) {
	loop := enginetest.NewLoop()
	defer loop.Close()
	fd, peer := socketPair(t)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	rt := fdTransport{enginetest.NewTransport(loop, ErrWouldBlock), fd}
	s := newShim(nil, rt, newAdmission(1, 1), DefaultMaxInbound)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than the socket buffers
	if _, err := s.Write(big); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	w := rt.Writes()
	if len(w) != 2 || string(w[1]) != "second" {
		t.Fatalf("AsyncWrites: %d (the last %q), want the rest of the flight, then the second write", len(w), w[len(w)-1])
	}
	direct := len(big) - len(w[0])
	if direct <= 0 || direct >= len(big) {
		t.Fatalf("the socket took %d of %d bytes directly, want part of them", direct, len(big))
	}
	got := append(readExactly(t, peer, direct), w[0]...)
	if !bytes.Equal(got, big) {
		t.Fatal("the direct bytes and the queued rest are not the flight, in order")
	}
}

// TestReleaseStopsDirectWrites: once the transport is released (OnClose,
// before gnet closes the descriptor and the kernel may reuse its number),
// the handshake writes nothing to the socket.
func TestReleaseStopsDirectWrites(t *testing.T) {
	loop := enginetest.NewLoop()
	defer loop.Close()
	fd, peer := socketPair(t)
	rt := fdTransport{enginetest.NewTransport(loop, ErrWouldBlock), fd}
	s := newShim(nil, rt, newAdmission(1, 1), DefaultMaxInbound)
	s.release()
	if s.fd != -1 {
		t.Fatalf("fd %d after release, want -1", s.fd)
	}
	if _, err := s.Write([]byte("late flight")); err == nil {
		t.Fatal("a write after release succeeded")
	}
	_ = syscall.Close(fd) // the peer sees the end, and no byte before it
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(peer); err != nil || len(b) != 0 {
		t.Fatalf("the socket got %q (%v) after release", b, err)
	}
}

// socketConn is a connection of the engine whose transport names a
// socket, after a whole TLS 1.3 handshake with a device over that socket.
type socketConn struct {
	c    *Conn
	rt   fdTransport
	loop *enginetest.Loop
	dev  *tls.Conn // the device, reading the socket's other end
}

// handshakeOverSocket opens a connection on the engine over a socket pair
// and completes a device's handshake through it.
func handshakeOverSocket(t *testing.T) *socketConn {
	t.Helper()
	f := fixture(t)
	e, err := NewEngine(f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	loop := enginetest.NewLoop()
	t.Cleanup(loop.Close)
	fd, peer := socketPair(t)
	rt := fdTransport{enginetest.NewTransport(loop, ErrWouldBlock), fd}
	c, err := e.Open(rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	// The device: crypto/tls over the peer's end, its ClientHello and
	// later flight fed to the engine as the event loop would.
	dev := tls.Client(&feedingConn{File: peer, feed: func(b []byte) { loop.Post(func() { _ = c.Feed(b) }) }},
		f.client(teDevices, &f.deviceTLS))
	if err := dev.Handshake(); err != nil {
		t.Fatalf("device handshake: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !c.HandshakeComplete() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !c.HandshakeComplete() {
		t.Fatal("the engine's handshake did not complete")
	}
	return &socketConn{c: c, rt: rt, loop: loop, dev: dev}
}

// TestHandshakeOverSocket: a whole TLS 1.3 handshake through the engine,
// whose transport names a socket: the server's flight reaches the device
// by the direct write, not by AsyncWrite, and the handshake completes.
func TestHandshakeOverSocket(t *testing.T) {
	sc := handshakeOverSocket(t)
	if w := sc.rt.Writes(); len(w) != 0 {
		t.Fatalf("%d AsyncWrites during the handshake, want none (the flight goes to the socket)", len(w))
	}
}

// TestWriteLoopOverSocket: on the loop, WriteLoop's and FlushOnLoop's
// records go to the socket with one raw write, through neither the
// transport's Write nor an AsyncWrite; behind bytes the transport still
// holds queued they go through its Write instead, never past them.
func TestWriteLoopOverSocket(t *testing.T) {
	sc := handshakeOverSocket(t)
	read := deviceReads(t, sc.dev)
	async := len(sc.rt.Writes())

	onLoop(t, sc.loop, func() {
		if n, err := sc.c.WriteLoop([]byte("straight to the socket")); n != 22 || err != nil {
			t.Errorf("WriteLoop = %d, %v", n, err)
		}
	})
	read("straight to the socket")

	onLoop(t, sc.loop, func() {
		sc.c.Cork()
		_, _ = sc.c.Write([]byte("corked, "))
		_, _ = sc.c.Write([]byte("then flushed"))
		if err := sc.c.FlushOnLoop(); err != nil {
			t.Errorf("FlushOnLoop: %v", err)
		}
	})
	read("corked, then flushed")
	if d := sc.rt.DirectWrites(); d != 0 {
		t.Fatalf("%d writes through the transport's Write, want none (raw to the socket)", d)
	}
	if n := len(sc.rt.Writes()); n != async {
		t.Fatalf("%d AsyncWrites for writes on the loop, want none", n-async)
	}

	// Bytes queued in the transport go first: the record goes behind them
	// through its Write, not to the socket.
	onLoop(t, sc.loop, func() {
		sc.rt.SetOutboundBuffered(10)
		if _, err := sc.c.WriteLoop([]byte("behind the queue")); err != nil {
			t.Errorf("WriteLoop: %v", err)
		}
		sc.rt.SetOutboundBuffered(0)
	})
	if d := sc.rt.DirectWrites(); d != 1 {
		t.Fatalf("%d writes through the transport's Write behind its queue, want 1", d)
	}
}

// feedingConn is the device's side: it reads the server's bytes from the
// socket and hands what it writes to feed, as if the loop had read it.
type feedingConn struct {
	*os.File
	feed func([]byte)
}

func (c *feedingConn) Write(p []byte) (int, error) {
	c.feed(append([]byte(nil), p...))
	return len(p), nil
}

func (c *feedingConn) LocalAddr() net.Addr  { return shimAddr{} }
func (c *feedingConn) RemoteAddr() net.Addr { return shimAddr{} }
