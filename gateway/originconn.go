package gateway

import (
	"bytes"
	"errors"
	"net"
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
//   - an answer with both Content-Length and Transfer-Encoding is read as
//     chunked (RFC 9112), but the origin may have framed it by the length,
//     so its connection carries no further request (RFC 9112 section 6.3:
//     the client closes it). fasthttp drops the Content-Length and keeps no
//     raw header of an answer, so the connection watches the header bytes
//     it passes on, and refuses the next request (errStaleConn: fasthttp
//     closes it and sends the request on another connection).
type originConn struct {
	net.Conn
	raw  syscall.RawConn // nil when the connection offers none: no check
	idle bool            // a response was read and no request written since

	readTimeout time.Duration // 0: fasthttp's deadlines as they are
	deadline    time.Time     // the read deadline in force; zero for none

	watch bool   // look at each answer's header (watchAnswer)
	seen  bool   // the header of the current answer has been looked at
	head  []byte // the part of that header read so far, when it took reads
	mixed bool   // an answer had both Content-Length and Transfer-Encoding
}

// maxWatchedHeader bounds the bytes of one answer's header originConn
// gathers: fasthttp refuses a longer header (its read buffer) anyway, and a
// header not seen whole counts as mixed.
const maxWatchedHeader = 64 << 10

// newOriginConn wraps c, a plain connection or a TLS one over tcp, whose
// socket (for the idle check) is tcp. watch: look at every answer's header
// (the pool's connections; not a connection handed off mid-answer).
func newOriginConn(c, tcp net.Conn, readTimeout time.Duration, watch bool) *originConn {
	oc := &originConn{Conn: c, readTimeout: readTimeout, watch: watch}
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
// final one's fields tell whether it was mixed.
func (c *originConn) watchAnswer(b []byte) {
	buf := b
	if len(c.head) > 0 {
		c.head = append(c.head, b...)
		buf = c.head
	}
	for {
		end := bytes.Index(buf, crlfcrlf)
		if end < 0 || end > maxWatchedHeader {
			break // more to come, or too long (below)
		}
		block := buf[:end+2]
		if !bytes.HasPrefix(block, []byte("HTTP/1.")) || len(block) < 10 || block[9] != '1' {
			c.mixed = c.mixed || hasHeaderField(block, "Content-Length") && hasHeaderField(block, "Transfer-Encoding")
			c.seen, c.head = true, nil
			return
		}
		buf = buf[end+4:] // an interim answer: the final one follows
	}
	if len(buf) > maxWatchedHeader {
		c.mixed, c.seen, c.head = true, true, nil
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
	if c.idle {
		c.idle = false
		if c.mixed {
			return 0, errStaleConn // nothing sent; fasthttp closes c
		}
		c.seen = false
		// An idempotent request needs no look: on a connection the origin
		// closed it fails before any answer and goes again (retryable), so
		// the system call is paid only for the others.
		if c.raw != nil && !idempotentStart(p) && peerClosed(c.raw) {
			return 0, errStaleConn
		}
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

// idempotentStart reports whether p, the first bytes of a request written
// on the connection, starts with a method retryable sends again.
func idempotentStart(p []byte) bool {
	for _, m := range [...]string{"GET ", "HEAD ", "PUT ", "OPTIONS "} {
		if len(p) >= len(m) && string(p[:len(m)]) == m {
			return true
		}
	}
	return false
}
