package tlsengine

// FlushOnLoop sends the records held back by Cork with one direct write on
// the transport, instead of an AsyncWrite (a task queued on the loop and an
// eventfd wake-up): for a response written on the connection's own event
// loop. It must be called only on that loop, and only when no AsyncWrite of
// the connection may still be queued (its records would go out after these);
// a transport without a direct Write gets an AsyncWrite, as Flush.
func (c *Conn) FlushOnLoop() error {
	s := c.shim
	s.wmu.Lock()
	s.corked = false
	out := s.pending
	s.pending = nil
	s.wmu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if s.released.Load() {
		return ErrClosed
	}
	if w, ok := c.t.(interface{ Write([]byte) (int, error) }); ok {
		_, err := w.Write(out) // the transport copies what the socket does not take
		s.wmu.Lock()
		if s.pending == nil && cap(out) <= corkLimit {
			s.pending = out[:0] // the next corked response reuses it
		}
		s.wmu.Unlock()
		return err
	}
	return c.t.AsyncWrite(out, nil)
}
