package fuzz

// An in-memory event loop and tlsengine.Transport, so the engine targets run
// without sockets, the way the gateway drives the engine from gnet:
//
//	fuzz input ─▶ loop task "OnTraffic": Conn.Feed, then Conn.Read until ErrWouldBlock
//	engine ────▶ AsyncWrite (high priority, like gnet) ─▶ out (+ the client's pipe)
//	engine ────▶ Wake / Close (low priority) ─▶ OnTraffic(nil) / OnClose: Conn.Release
//
// The transport also checks the engine's side of the contract: an
// AsyncWrite buffer is never modified after the call (gnet does not copy),
// OutboundBuffered is only called on the loop, and nothing is written after
// the transport closed.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/tlsengine"
)

// loop runs tasks one at a time on one goroutine, like a gnet event loop:
// high-priority tasks (AsyncWrite) before low-priority ones (Wake, Close,
// traffic), FIFO within each.
type loop struct {
	mu     sync.Mutex
	cond   *sync.Cond
	high   []func()
	low    []func()
	stop   bool
	done   chan struct{}
	onLoop atomic.Bool // a task is running (there is one loop goroutine)
}

func newLoop() *loop {
	l := &loop{done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// post queues f; false when the loop has stopped.
func (l *loop) post(high bool, f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop {
		return false
	}
	if high {
		l.high = append(l.high, f)
	} else {
		l.low = append(l.low, f)
	}
	l.cond.Signal()
	return true
}

func (l *loop) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		for len(l.high) == 0 && len(l.low) == 0 && !l.stop {
			l.cond.Wait()
		}
		var f func()
		switch {
		case len(l.high) > 0:
			f, l.high = l.high[0], l.high[1:]
		case len(l.low) > 0:
			f, l.low = l.low[0], l.low[1:]
		default: // stopped and empty
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		l.onLoop.Store(true)
		f()
		l.onLoop.Store(false)
	}
}

// sync waits until every task queued before it has run; false on timeout or
// a stopped loop.
func (l *loop) sync(timeout time.Duration) bool {
	ch := make(chan struct{})
	if !l.post(false, func() { close(ch) }) {
		return false
	}
	select {
	case <-ch:
		return true
	case <-time.After(timeout):
		return false
	}
}

// shutdown stops accepting tasks, runs those queued, and waits for the loop
// goroutine to exit (bounded by timeout).
func (l *loop) shutdown(timeout time.Duration) bool {
	l.mu.Lock()
	l.stop = true
	l.cond.Signal()
	l.mu.Unlock()
	select {
	case <-l.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// pipe is the bytes travelling to the client, read with blocking semantics.
type pipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	closed bool
}

func newPipe() *pipe {
	p := &pipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pipe) write(b []byte) {
	p.mu.Lock()
	if !p.closed {
		p.buf = append(p.buf, b...)
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

// transport is the fake gnet.Conn of one engine connection.
type transport struct {
	loop     *loop
	toClient *pipe // nil when no client reads (the pre-handshake targets)
	closedCh chan struct{}

	// Loop only.
	conn   *tlsengine.Conn
	closed bool
	// echo makes the "gateway" write back every plaintext byte it reads.
	echo bool

	mu         sync.Mutex
	out        []byte   // every byte the engine wrote, in order
	plain      []byte   // application data the engine decrypted
	written    []byte   // what Conn.Write accepted, in order (echo and script writes)
	violations []string // contract breaches seen by the transport
	readErr    error    // the first Conn.Read error other than ErrWouldBlock

	// backlog simulates bytes stuck in the socket's send buffer: each
	// OutboundBuffered call reports it, then it shrinks by one, so the
	// engine's drain polling runs backlog extra rounds.
	backlog atomic.Int64
}

var _ tlsengine.Transport = (*transport)(nil)

func newTransport(l *loop, toClient *pipe) *transport {
	return &transport{loop: l, toClient: toClient, closedCh: make(chan struct{})}
}

func (t *transport) violate(format string, args ...any) {
	t.mu.Lock()
	t.violations = append(t.violations, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}

// AsyncWrite queues buf on the loop. Like gnet it does not copy; unlike gnet
// it keeps a snapshot to prove the engine did not reuse buf meanwhile. Like
// gnet, the callback runs with net.ErrClosed once the connection is closed.
func (t *transport) AsyncWrite(buf []byte, cb gnet.AsyncCallback) error {
	var snap []byte
	if len(buf) > 0 {
		snap = bytes.Clone(buf)
	}
	if !t.loop.post(true, func() {
		var err error
		switch {
		case t.closed:
			err = net.ErrClosed
		case len(buf) > 0:
			if !bytes.Equal(snap, buf) {
				t.violate("AsyncWrite buffer of %d bytes was modified before the loop wrote it", len(buf))
			}
			t.mu.Lock()
			t.out = append(t.out, buf...)
			t.mu.Unlock()
			if t.toClient != nil {
				t.toClient.write(buf)
			}
		}
		if cb != nil {
			_ = cb(nil, err)
		}
	}) {
		return net.ErrClosed
	}
	return nil
}

// Wake runs the traffic handler with no new bytes (gnet calls OnTraffic).
func (t *transport) Wake(cb gnet.AsyncCallback) error {
	if !t.loop.post(false, func() {
		var err error
		if t.closed {
			err = net.ErrClosed
		} else {
			t.traffic(nil)
		}
		if cb != nil {
			_ = cb(nil, err)
		}
	}) {
		return net.ErrClosed
	}
	return nil
}

// Close closes the connection on the loop; OnClose (Conn.Release) runs once.
func (t *transport) Close() error {
	if !t.loop.post(false, t.closeNow) {
		return net.ErrClosed
	}
	return nil
}

func (t *transport) closeNow() {
	if t.closed {
		return
	}
	t.closed = true
	if t.toClient != nil {
		t.toClient.close()
	}
	if t.conn != nil {
		t.conn.Release() // OnClose
	}
	close(t.closedCh)
}

// OutboundBuffered reports the simulated backlog. The engine may call it
// only on the loop (inside an AsyncWrite callback).
func (t *transport) OutboundBuffered() int {
	if !t.loop.onLoop.Load() {
		t.violate("OutboundBuffered called off the event loop")
	}
	for {
		n := t.backlog.Load()
		if n <= 0 {
			return 0
		}
		if t.backlog.CompareAndSwap(n, n-1) {
			return int(n) * 1000
		}
	}
}

// traffic is the gateway's OnTraffic: Feed, then Read until ErrWouldBlock,
// echoing what it read when echo is set. Loop only.
func (t *transport) traffic(data []byte) {
	if t.conn == nil || t.closed {
		return
	}
	if err := t.conn.Feed(data); err != nil {
		return // the engine closes after flushing
	}
	var buf [4096]byte
	for {
		n, err := t.conn.Read(buf[:])
		if n > 0 {
			t.mu.Lock()
			t.plain = append(t.plain, buf[:n]...)
			t.mu.Unlock()
			if t.echo {
				t.write(buf[:n])
			}
		}
		if err != nil {
			if !errors.Is(err, tlsengine.ErrWouldBlock) {
				t.mu.Lock()
				if t.readErr == nil {
					t.readErr = err
				}
				t.mu.Unlock()
			}
			if n > 0 && err != nil {
				t.violate("Conn.Read returned n=%d with error %v (n > 0 must come with nil)", n, err)
			}
			return
		}
		if n == 0 {
			t.violate("Conn.Read returned 0, nil")
			return
		}
	}
}

// write is Conn.Write, recording what it accepted.
func (t *transport) write(p []byte) {
	n, _ := t.conn.Write(p)
	if n > len(p) || n < 0 {
		t.violate("Conn.Write returned n=%d for %d bytes", n, len(p))
		return
	}
	t.mu.Lock()
	t.written = append(t.written, p[:n]...)
	t.mu.Unlock()
}

// feed runs OnTraffic with data on the loop and waits for it.
func (t *transport) feed(data []byte, timeout time.Duration) bool {
	data = bytes.Clone(data) // gnet's read buffer is reused: the engine must copy
	ch := make(chan struct{})
	if !t.loop.post(false, func() { t.traffic(data); close(ch) }) {
		return false
	}
	select {
	case <-ch:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (t *transport) snapshot() (out, plain, written []byte, violations []string, readErr error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.out), bytes.Clone(t.plain), bytes.Clone(t.written), append([]string(nil), t.violations...), t.readErr
}

// clientConn is the device's side of a transport, for a real tls.Client:
// its writes become OnTraffic on the loop, its reads drain the pipe.
type clientConn struct {
	t *transport
}

func (c *clientConn) Read(b []byte) (int, error) { return c.t.toClient.read(b) }

func (c *clientConn) Write(b []byte) (int, error) {
	data := bytes.Clone(b)
	if !c.t.loop.post(false, func() { c.t.traffic(data) }) {
		return 0, net.ErrClosed
	}
	return len(b), nil
}

// Close is the device hanging up: the loop sees the socket close.
func (c *clientConn) Close() error {
	_ = c.t.Close()
	return nil
}

func (c *clientConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (c *clientConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (c *clientConn) SetDeadline(time.Time) error      { return nil }
func (c *clientConn) SetReadDeadline(time.Time) error  { return nil }
func (c *clientConn) SetWriteDeadline(time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fuzz" }
func (fakeAddr) String() string  { return "fuzz" }
