package tlsengine

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// OriginConn is the TLS client side of a relay's connection to its origin
// (a tls:// origin): the gateway speaks TLS to the origin as a device speaks
// it to the gateway. Its handshake runs on the dialed socket, on a worker
// goroutine (HandshakeOrigin); afterwards the event loop that owns the
// socket feeds it the origin's bytes (Feed), takes plaintext out (Read) and
// sends what it seals (Seal, CloseNotify, Output), so an established origin
// connection, like a device's, costs no goroutine.
//
// After HandshakeOrigin returns, an OriginConn is used by one goroutine at
// a time (the event loop); it is not safe for concurrent use.
type OriginConn struct {
	tc *tls.Conn
	io *originIO
}

// HandshakeOrigin runs the client handshake with cfg over nc, bounded by
// ctx, and returns the session ready to be fed by the loop. nc itself is
// not read or written again by the session: the caller hands the socket to
// its event loop. Bytes the origin sent right after its handshake and that
// crypto/tls already read stay inside the session; Read returns them.
func HandshakeOrigin(ctx context.Context, nc net.Conn, cfg *tls.Config) (*OriginConn, error) {
	io := &originIO{nc: nc}
	tc := tls.Client(io, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	io.nc = nil // from now on the loop feeds it
	return &OriginConn{tc: tc, io: io}, nil
}

// originKeep is the largest buffer an OriginConn keeps between uses: a
// burst's larger one goes back to the collector once it is empty.
const originKeep = 64 << 10

// Feed hands the session bytes read from the origin's socket (copied).
func (o *OriginConn) Feed(data []byte) {
	if len(o.io.in) == o.io.off {
		o.io.in, o.io.off = o.io.in[:0], 0
		if cap(o.io.in) > originKeep {
			o.io.in = nil
		}
	}
	o.io.in = append(o.io.in, data...)
}

// Read decrypts what was fed into p. It returns ErrWouldBlock when no whole
// record is buffered, io.EOF after the origin's close_notify, and any other
// error for a broken session (which stays broken). crypto/tls may have
// written an answer while reading (to a key update request): Output has it.
func (o *OriginConn) Read(p []byte) (int, error) {
	n, err := o.tc.Read(p)
	if n > 0 {
		return n, nil
	}
	if err == nil {
		return 0, ErrWouldBlock
	}
	return 0, err // ErrWouldBlock (originIO's, which leaves the session usable), io.EOF, or broken
}

// Seal encrypts p as records to send to the origin and returns all the
// output waiting to be sent, which is valid until the session's next call.
func (o *OriginConn) Seal(p []byte) ([]byte, error) {
	if len(o.io.out) == 0 && cap(o.io.out) > originKeep {
		o.io.out = nil
	}
	if _, err := o.tc.Write(p); err != nil {
		return nil, err
	}
	return o.Output(), nil
}

// CloseNotify queues the close_notify alert (the gateway's side of the
// origin connection ends) and returns the output waiting to be sent.
func (o *OriginConn) CloseNotify() []byte {
	_ = o.tc.CloseWrite()
	return o.Output()
}

// Output returns what the session wrote and that is not sent yet (records
// from Seal, crypto/tls's own answers), and forgets it: the caller sends
// it before the session's next call.
func (o *OriginConn) Output() []byte {
	out := o.io.out
	if cap(out) > originKeep {
		o.io.out = nil // the caller's now: a burst's buffer is not kept while idle
	} else {
		o.io.out = out[:0]
	}
	return out
}

// Buffered reports how many fed bytes crypto/tls has not taken yet.
func (o *OriginConn) Buffered() int { return len(o.io.in) - o.io.off }

// originIO is the net.Conn under an OriginConn's tls.Conn: the socket while
// the handshake runs, then the bytes the loop feeds and the output it
// sends.
type originIO struct {
	nc  net.Conn // the socket, during the handshake only
	in  []byte   // fed by the loop
	off int      // how much of in crypto/tls has read
	out []byte   // records to send
}

func (o *originIO) Read(p []byte) (int, error) {
	if o.nc != nil {
		return o.nc.Read(p)
	}
	if o.off == len(o.in) {
		return 0, ErrWouldBlock
	}
	n := copy(p, o.in[o.off:])
	o.off += n
	return n, nil
}

func (o *originIO) Write(p []byte) (int, error) {
	if o.nc != nil {
		return o.nc.Write(p)
	}
	o.out = append(o.out, p...)
	return len(p), nil
}

func (o *originIO) Close() error {
	if o.nc != nil {
		return o.nc.Close()
	}
	return nil
}

func (o *originIO) LocalAddr() net.Addr {
	if o.nc != nil {
		return o.nc.LocalAddr()
	}
	return shimAddr{}
}

func (o *originIO) RemoteAddr() net.Addr {
	if o.nc != nil {
		return o.nc.RemoteAddr()
	}
	return shimAddr{}
}

func (o *originIO) SetDeadline(t time.Time) error {
	if o.nc != nil {
		return o.nc.SetDeadline(t)
	}
	return nil
}

func (o *originIO) SetReadDeadline(t time.Time) error {
	if o.nc != nil {
		return o.nc.SetReadDeadline(t)
	}
	return nil
}

func (o *originIO) SetWriteDeadline(t time.Time) error {
	if o.nc != nil {
		return o.nc.SetWriteDeadline(t)
	}
	return nil
}
