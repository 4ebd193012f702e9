package tlsengine

import "github.com/fleetgate/fleetgate/internal/loopwrite"

// writer is a transport that can be written directly on its event loop
// (gnet.Conn's Write), as WriteLoop and FlushOnLoop do.
type writer interface{ Write([]byte) (int, error) }

// writeOnLoop writes p to the transport w on its event loop: a socket (a
// gnet.Conn) with one raw write system call (loopwrite), anything else
// with its Write.
func writeOnLoop(w writer, p []byte) (int, error) {
	if s, ok := w.(loopwrite.Socket); ok {
		return loopwrite.Write(s, p)
	}
	return w.Write(p)
}

// FlushOnLoop sends the records held back by Cork with one direct write on
// the transport, instead of an AsyncWrite (a task queued on the loop and an
// eventfd wake-up): for a response written on the connection's own event
// loop. It must be called only on that loop. While an AsyncWrite of the
// connection is still queued (a cork that overflowed, crypto/tls answering
// a KeyUpdate, an alert) the records are queued behind it instead: written
// directly they would overtake it, and the device would see records out of
// order (bad_record_mac). A transport without a direct Write gets an
// AsyncWrite, as Flush.
func (c *Conn) FlushOnLoop() error {
	s := c.shim
	s.wmu.Lock()
	s.corked = false
	out := s.pending
	s.pending = nil
	behind := s.queued.Load() > 0
	s.wmu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if s.released.Load() {
		return ErrClosed
	}
	if behind {
		return s.asyncWrite(out, nil)
	}
	if w, ok := c.t.(writer); ok {
		_, err := writeOnLoop(w, out) // the transport copies what the socket does not take
		s.wmu.Lock()
		if s.pending == nil && cap(out) <= corkLimit {
			s.pending = out[:0] // the next corked response reuses it
		}
		s.wmu.Unlock()
		return err
	}
	return s.asyncWrite(out, nil)
}
