package tlsengine

import "sync"

// EarlyData takes over the opening of a connection on the goroutine that
// just completed its handshake (Config.Early). Without it the engine wakes
// the event loop (an eventfd write and a loop turn) so that the loop reads
// what came with the client's Finished and sees the connection open (the
// gateway arms its idle timer there). A device that reconnects for every
// request pays that wake-up on every request; with EarlyData the owner does
// the same work where the handshake ended, and the loop is woken only when
// it has records to read (ones that arrived while the connection opened),
// or the device's end (close_notify, a broken record) to report.
type EarlyData interface {
	// Push takes plaintext decrypted from the records buffered when the
	// handshake completed, in order, each call with bytes that follow the
	// previous call's. It runs before the event loop reads anything of the
	// connection (HandshakeComplete is still false), and p is only valid
	// during the call. With nothing buffered it is not called.
	Push(p []byte)
	// Serve runs once Push has had everything that was buffered: the
	// connection is open (HandshakeComplete, Write), the event loop reads
	// whatever comes next itself, and the handshake's queue place and CPU
	// slot have been given back, so Serve may block on I/O.
	Serve()
}

// earlyBufPool holds the buffers takeEarly decrypts into.
var earlyBufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// takeEarly decrypts the records buffered at the end of a successful
// handshake into ed, then publishes the connection (HandshakeComplete). The
// event loop does not read a connection before it is published, so nothing
// can overtake these bytes; what arrives from then on is the loop's. If
// more records arrived meanwhile, or the device already ended its side
// (close_notify, a broken record), the loop is woken to handle them, as it
// would have been without Early. It returns ed, for run to Serve.
func (c *Conn) takeEarly(ed EarlyData) EarlyData {
	// Not only the shim's records: crypto/tls reads ahead, so a record that
	// came in the same segment as the Finished may be in its buffer already.
	bp := earlyBufPool.Get().(*[]byte)
	for {
		n, err := c.read(*bp)
		if n > 0 {
			ed.Push((*bp)[:n])
		}
		if err != nil {
			// ErrWouldBlock: all taken. Anything else is now c.readErr,
			// which the loop reports to its owner after the wake below.
			break
		}
	}
	earlyBufPool.Put(bp)
	ended := c.readErr != nil // readErr is the loop's once the connection is published
	c.complete.Store(true)
	// Whatever the loop fed before seeing the connection complete, it left
	// for us: either this look sees it, or the loop saw complete and reads it
	// itself (the shim's lock orders the two).
	if !c.shim.released.Load() && (ended || c.shim.hasRecord()) {
		_ = c.t.Wake(nil)
	}
	return ed
}
