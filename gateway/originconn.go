package gateway

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// originConn is a pooled origin connection with three additions to
// fasthttp's handling:
//
//   - before the first write of each request it checks that the origin has
//     not closed it while it sat idle in the pool. fasthttp keeps no reader
//     on idle connections, so without this a request (a device's POST, which
//     is never retried) would be written to a dead connection and answered
//     502 whenever the origin's keep-alive timeout is shorter than the pool's,
//     or the origin restarted (a graceful shutdown closes idle connections at
//     once, however recently they were used);
//   - origin_timeout bounds each wait for the origin's next bytes, not the
//     whole response: fasthttp sets one read deadline per response, which
//     would cut a large body streaming to a device that reads slowly (while
//     the gateway waits for the device, it is not waiting for the origin).
//     Each read restarts a deadline fasthttp set at readTimeout from now;
//   - after some answers, what the origin sends next on the connection
//     cannot be known, so it carries no further request: the connection
//     watches the header bytes it passes on to fasthttp (which keeps no raw
//     header of an answer) and refuses the next request (errStaleConn:
//     fasthttp closes it and sends the request on another connection).
//     Those answers are (unsure):
//   - one with both Content-Length and Transfer-Encoding, read as chunked
//     (RFC 9112) although the origin may have framed it by the length (RFC
//     9112 section 6.3: the client closes the connection);
//   - the answer to a HEAD, and a 204 or 304 that announces a body: they
//     end with their header, and a body the origin sent anyway would be
//     read as the answer to the next request, maybe another device's;
//   - a 101 to a request that asked for no upgrade: the connection now
//     speaks another protocol, and the next device's request, token
//     included, would go into it.
type originConn struct {
	net.Conn
	raw  syscall.RawConn // nil when the connection offers none: no check
	idle bool            // no request is being written: the next Write starts one
	used bool            // a request was written: the origin may have closed since

	readTimeout time.Duration // 0: fasthttp's deadlines as they are
	deadline    time.Time     // the read deadline in force; zero for none

	release func() // after the close, once: gives the socket's slot back (originSlots)
	closed  atomic.Bool

	watch   bool   // look at each answer's header (watchAnswer)
	headReq bool   // the request being answered is a HEAD
	seen    bool   // the header of the current answer has been looked at
	head    []byte // the part of that header read so far, when it took reads
	unsure  bool   // an answer left the connection's next bytes unknown (above)
}

// maxWatchedHeader bounds the bytes of one answer's header originConn
// gathers: fasthttp refuses a longer header (its read buffer) anyway, and a
// header not seen whole counts as mixed.
const maxWatchedHeader = 64 << 10

// newOriginConn wraps c, a plain connection or a TLS one over tcp, whose
// socket (for the idle check) is tcp. watch: look at every answer's header
// (the pool's connections; not a connection handed off mid-answer).
// release, when not nil, runs once c is closed: it gives back c's slot
// among the origin's connections.
func newOriginConn(c, tcp net.Conn, readTimeout time.Duration, watch bool, release func()) *originConn {
	oc := &originConn{Conn: c, readTimeout: readTimeout, watch: watch, idle: true, release: release}
	if sc, ok := tcp.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			oc.raw = raw
		}
	}
	return oc
}

// Handshake does nothing (the TLS handshake of an https origin is done
// when it is dialed, newOriginClient): fasthttp takes a connection with a
// Handshake method for one that needs no TLS on top.
func (c *originConn) Handshake() error { return nil }

// Close closes the connection, then gives its slot back, once.
func (c *originConn) Close() error {
	err := c.Conn.Close()
	if c.release != nil && c.closed.CompareAndSwap(false, true) {
		c.release()
	}
	return err
}

func (c *originConn) Read(p []byte) (int, error) {
	if c.readTimeout > 0 && !c.deadline.IsZero() {
		_ = c.SetReadDeadline(time.Now().Add(c.readTimeout))
	}
	n, err := c.Conn.Read(p)
	c.idle = true
	if c.watch && !c.seen && n > 0 {
		c.watchAnswer(p[:n])
	}
	return n, err
}

// watchAnswer looks at b, the next bytes of the current answer, until that
// answer's header is whole: interim (1xx) answers are skipped, and the
// final one (or a 101) tells whether the connection can carry another
// request (unsure).
func (c *originConn) watchAnswer(b []byte) {
	buf := b
	if len(c.head) > 0 {
		c.head = append(c.head, b...)
		buf = c.head
	}
	for {
		end := headerEnd(buf)
		if end < 0 || end > maxWatchedHeader {
			break // more to come, or too long (below)
		}
		block := buf[:end]
		if status, ok := answerStatus(block); !ok || status == 101 || status >= 200 {
			c.unsure = c.unsure || !ok || answerUnsure(block, status, c.headReq)
			c.seen, c.head = true, nil
			return
		}
		buf = buf[end:] // an interim answer: the final one follows
	}
	if len(buf) > maxWatchedHeader {
		c.unsure, c.seen, c.head = true, true, nil
		return
	}
	// Keep the header's start for the next read: a copy (b is fasthttp's
	// buffer, and an interim answer skipped leaves a tail of c.head), unless
	// buf is all of c.head already.
	if len(c.head) == 0 || len(buf) != len(c.head) {
		c.head = append(c.head[:0:0], buf...)
	}
}

func (c *originConn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *originConn) SetDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

func (c *originConn) Write(p []byte) (int, error) {
	if c.idle { // the first bytes of a request
		c.idle = false
		if c.unsure {
			return 0, errStaleConn // nothing sent; fasthttp closes c
		}
		c.seen, c.headReq = false, bytes.HasPrefix(p, []byte("HEAD "))
		// Before every request on a connection used before: one that the
		// origin closed, or that holds bytes nobody asked for, carries none.
		if c.used && c.raw != nil && peerClosed(c.raw) {
			return 0, errStaleConn
		}
		c.used = true
	}
	return c.Conn.Write(p)
}

// peerClosed peeks at the socket without blocking: end of file (or any
// unsolicited byte or error) means the connection cannot carry a request.
func peerClosed(raw syscall.RawConn) bool {
	closed := false
	var b [1]byte
	err := raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = !errors.Is(err, syscall.EAGAIN) || n > 0
		return true // never wait for readability
	})
	return err != nil || closed
}
