package tlsengine

import (
	"errors"
	"io"
	"syscall"
	"time"
)

// Leaving the event loop (Site.OffLoop). A device that makes a fresh
// connection for every request crosses between the loop's thread and the
// handshake's several times per request: the loop reads its ClientHello and
// its flight and hands them over, and writes and closes what the handshake's
// goroutine produced. On one core each crossing is a context switch. When
// the ClientHello picks an OffLoop site, the handshake asks its owner to
// hand the socket over (DetachPending on the loop's next turn, then
// Detach): from then on the handshake reads the socket itself, through Go's
// netpoller, writes to it directly, and the owner reads what follows and
// closes it without the loop. The loop keeps what it is for: accepting,
// admission, the ClientHello, and the connections that stay.

// Socket is a connection's socket once it has left the event loop: an
// *os.File over a duplicate of the descriptor satisfies it.
type Socket interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	SyscallConn() (syscall.RawConn, error)
}

// ReadSocket waits until sock is readable, then reads what it has into a
// pooled buffer and hands it to use (valid only during the call). A reader
// that waits holds no buffer: a device that stays silent off the loop
// costs its goroutine, not 16 KiB more. It returns io.EOF when the peer
// closed, os.ErrDeadlineExceeded after a read deadline, and any other
// error of the socket.
func ReadSocket(sock Socket, use func([]byte)) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var rerr error
	var bp *[]byte
	err = rc.Read(func(fd uintptr) bool {
		if bp == nil {
			bp = earlyBufPool.Get().(*[]byte)
		}
		n, rerr = syscall.Read(int(fd), *bp)
		if errors.Is(rerr, syscall.EAGAIN) {
			earlyBufPool.Put(bp) // nothing yet: wait without the buffer
			bp = nil
			return false
		}
		return true
	})
	if bp != nil {
		if n > 0 {
			use((*bp)[:n])
		}
		earlyBufPool.Put(bp)
	}
	switch {
	case err != nil:
		return err
	case rerr != nil && !errors.Is(rerr, syscall.EINTR):
		return rerr
	case n == 0 && rerr == nil:
		return io.EOF
	}
	return nil
}

// States of a connection's departure from the loop (Conn.detach).
const (
	detachNone     = iota
	detachAsked    // the handshake asked; the loop has not answered
	detachDone     // the socket is the handshake's
	detachDeclined // it stays on the loop
)

// detachWait bounds how long a handshake that asked to leave the loop
// waits for the loop's answer once it has completed; without one by then,
// the connection stays on the loop.
const detachWait = time.Second

// askDetach asks the loop to hand the socket over; the handshake's
// goroutine calls it when the ClientHello picked an OffLoop site. The loop
// answers on its next turn for the connection (Wake).
func (c *Conn) askDetach() {
	c.mu.Lock()
	t := c.t // the loop's: once asked, Detach may replace c.t at any moment
	if c.detach.Load() != detachNone || transportFD(t) < 0 {
		c.mu.Unlock()
		return
	}
	c.detached = make(chan struct{})
	c.detach.Store(detachAsked)
	c.mu.Unlock()
	// The loop may already have answered, on a read of its own; then this
	// wake finds the loop's side closed, and declining changes nothing.
	if t.Wake(nil) != nil {
		c.DeclineDetach()
	}
}

// DetachPending reports whether the handshake asked to leave the loop and
// awaits Detach. The owner calls it on the loop, in OnTraffic, after
// feeding what it read.
func (c *Conn) DetachPending() bool { return c.detach.Load() == detachAsked }

// Detach hands the connection's socket to the handshake: sock (a duplicate
// of the loop's descriptor) for its reads and writes, and t for the
// engine's writes and close from now on. A write to sock not done within
// writeStall fails (a device that stopped reading; 0 means
// DefaultDrainTimeout). Call it on the loop, after Feed
// has had every byte the loop read, and close the loop's side of the
// connection at once if it returns true (without Release: the connection
// lives on). It returns false, and the connection stays on the loop, when
// the handshake is over or failing, or when output is still queued on the
// loop (the socket's bytes would go out of order).
func (c *Conn) Detach(sock Socket, t Transport, writeStall time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.detach.Load() != detachAsked {
		return false
	}
	if writeStall <= 0 {
		writeStall = DefaultDrainTimeout
	}
	ok := c.phase == stateHandshake && !c.closeRequested && c.shim.handOver(sock, t, writeStall)
	if ok {
		c.t = t
		c.detach.Store(detachDone)
	} else {
		c.detach.Store(detachDeclined)
	}
	close(c.detached)
	return ok
}

// DeclineDetach answers DetachPending with no: the connection stays on the
// loop. The engine declines too on Release, when its Wake is refused, and
// when the loop has not answered within detachWait.
func (c *Conn) DeclineDetach() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.detach.Load() == detachAsked {
		c.detach.Store(detachDeclined)
		close(c.detached)
	}
}

// awaitDetach waits, at the end of the handshake, for the loop's answer to
// askDetach: the transport the engine uses from here on depends on it.
func (c *Conn) awaitDetach() {
	if c.detach.Load() != detachAsked {
		return
	}
	t := time.NewTimer(detachWait)
	defer t.Stop()
	select {
	case <-c.detached:
	case <-t.C:
		c.DeclineDetach()
	}
}

// Detached reports whether the connection left the loop.
func (c *Conn) Detached() bool { return c.detach.Load() == detachDone }

// handOver switches the shim to the socket, if nothing written is still on
// the loop's side: no AsyncWrite queued, direct writes never fell back
// (gnet's outbound buffer is empty), nothing corked. Called on the loop
// with c.mu held.
func (s *shim) handOver(sock Socket, t Transport, stall time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.released.Load() || s.abortErr != nil || !s.handshaking || s.fd < 0 || s.queued.Load() > 0 || s.corked || len(s.pending) > 0 {
		return false
	}
	s.sock, s.t, s.fd, s.writeStall = sock, t, -1, stall
	select {
	case s.notify <- struct{}{}: // a Read waiting for bytes reads the socket now
	default:
	}
	return true
}

// readSock reads what the socket has into the inbound buffer, for the
// handshake's blocking Read; a read that fails ends the handshake (the
// first cause wins: a timeout's abort has already set the read deadline
// that made it fail).
func (s *shim) readSock(sock Socket) {
	err := ReadSocket(sock, func(b []byte) {
		_ = s.feed(b) // an overflow stops the handshake itself
	})
	if err != nil {
		s.stopHandshake(rClosed, errPeerClosed)
	}
}

// writeSock writes b to the socket of a connection off the loop, bounded
// by writeStall (a device that stops reading). Called with wmu held.
func (s *shim) writeSock(b []byte) error {
	_ = s.sock.SetWriteDeadline(time.Now().Add(s.writeStall))
	_, err := s.sock.Write(b)
	return err
}
