package gateway

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// originConn is a pooled origin connection with two additions to fasthttp's
// handling:
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
//     Each read restarts a deadline fasthttp set at readTimeout from now.
type originConn struct {
	net.Conn
	raw  syscall.RawConn // nil when the connection offers none: no check
	idle bool            // a response was read and no request written since

	readTimeout time.Duration // 0: fasthttp's deadlines as they are
	deadline    time.Time     // the read deadline in force; zero for none
}

func newOriginConn(c net.Conn, readTimeout time.Duration) net.Conn {
	oc := &originConn{Conn: c, readTimeout: readTimeout}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			oc.raw = raw
		}
	}
	return oc
}

func (c *originConn) Read(p []byte) (int, error) {
	if c.readTimeout > 0 && !c.deadline.IsZero() {
		_ = c.SetReadDeadline(time.Now().Add(c.readTimeout))
	}
	n, err := c.Conn.Read(p)
	c.idle = true
	return n, err
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
