package enginetest

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
)

// Conn is the part of an engine connection (*tlsengine.Conn) the fake
// gateway drives.
type Conn interface {
	Feed(data []byte) error
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
	Release()
}

// Transport is a fake gnet.Conn on a Loop: it satisfies tlsengine.Transport.
// Its OnTraffic handler (Traffic) feeds the bound Conn and reads it until it
// would block, as the gateway does; its OnClose releases the Conn.
//
// AsyncWrite, like gnet's, does not copy: the bytes reach Sent and the
// client when the loop runs the write, and the transport checks they did not
// change meanwhile. Once the transport is closed, writes and wakes are
// dropped and their callbacks get net.ErrClosed.
type Transport struct {
	// Echo makes the gateway write back (WriteConn) every plaintext byte it
	// reads. Set it before any traffic.
	Echo bool
	// CloseOnEOF makes the gateway close the Conn (Conn.Close) when Read
	// reports the peer's close_notify (io.EOF), as it does once it owes no
	// answer; without it the connection stays open (a half-close). Set it
	// before any traffic.
	CloseOnEOF bool

	loop       *Loop
	wouldBlock error
	client     *pipe
	closedCh   chan struct{}

	// Loop only, after Open.
	conn   Conn
	closed bool

	mu         sync.Mutex
	calls      [][]byte // the buffers handed to AsyncWrite, as handed (not copied)
	sent       []byte   // the bytes the loop wrote before the transport closed
	received   []byte   // the plaintext the gateway read
	accepted   []byte   // what Conn.Write accepted from WriteConn
	violations []string // breaches of the engine's side of the contract
	readErr    error    // the first Read error other than would-block

	writes   atomic.Int64 // non-empty writes the loop made before closing
	direct   atomic.Int64 // of which by Write, not AsyncWrite
	wakes    atomic.Int64
	closes   atomic.Int64
	outbound atomic.Int64
	backlog  atomic.Int64
}

// NewTransport returns a Transport on l. wouldBlock is the error the bound
// Conn's Read returns when it has nothing to hand out
// (tlsengine.ErrWouldBlock): the traffic handler stops there, and it is not
// recorded as a read error.
func NewTransport(l *Loop, wouldBlock error) *Transport {
	return &Transport{loop: l, wouldBlock: wouldBlock, client: newPipe(), closedCh: make(chan struct{})}
}

// Loop returns the loop the transport is bound to.
func (t *Transport) Loop() *Loop { return t.loop }

// Open runs open on the loop, as gnet runs OnOpen, and binds the Conn it
// returns to the transport; it returns open's error (and binds nothing).
// It fails with net.ErrClosed on a stopped loop.
func (t *Transport) Open(open func() (Conn, error)) error {
	opened := make(chan error, 1)
	if !t.loop.Post(func() {
		c, err := open()
		if err == nil {
			t.conn = c
		}
		opened <- err
	}) {
		return net.ErrClosed
	}
	return <-opened
}

func (t *Transport) violate(format string, args ...any) {
	t.mu.Lock()
	t.violations = append(t.violations, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}

// AsyncWrite queues buf on the loop, ahead of traffic, wakes and closes.
// The loop then writes it (unless the transport is closed) and runs cb.
func (t *Transport) AsyncWrite(buf []byte, cb gnet.AsyncCallback) error {
	var snap []byte
	if len(buf) > 0 {
		snap = bytes.Clone(buf)
		t.mu.Lock()
		t.calls = append(t.calls, buf)
		t.mu.Unlock()
	}
	if !t.loop.PostUrgent(func() {
		var err error
		switch {
		case t.closed:
			err = net.ErrClosed
		case len(buf) > 0:
			if !bytes.Equal(snap, buf) {
				t.violate("AsyncWrite buffer of %d bytes was modified before the loop wrote it", len(buf))
			}
			t.writes.Add(1)
			t.mu.Lock()
			t.sent = append(t.sent, buf...)
			t.mu.Unlock()
			t.client.write(buf)
		}
		if cb != nil {
			_ = cb(nil, err)
		}
	}) {
		return net.ErrClosed
	}
	return nil
}

// Write writes buf at once, as gnet.Conn.Write does on the event loop (it
// copies: the caller may reuse buf). A call off the loop is a violation;
// on a closed transport it fails with net.ErrClosed.
func (t *Transport) Write(buf []byte) (int, error) {
	if !t.loop.OnLoop() {
		t.violate("Write called off the event loop")
	}
	if t.closed {
		return 0, net.ErrClosed
	}
	if len(buf) > 0 {
		t.writes.Add(1)
		t.direct.Add(1)
		t.mu.Lock()
		t.sent = append(t.sent, buf...)
		t.mu.Unlock()
		t.client.write(buf)
	}
	return len(buf), nil
}

// DirectWrites counts the non-empty Writes (not AsyncWrites).
func (t *Transport) DirectWrites() int64 { return t.direct.Load() }

// Wake runs the traffic handler with no new bytes, as gnet calls OnTraffic.
func (t *Transport) Wake(cb gnet.AsyncCallback) error {
	t.wakes.Add(1)
	if !t.loop.Post(func() {
		var err error
		if t.closed {
			err = net.ErrClosed
		} else {
			t.Traffic(nil)
		}
		if cb != nil {
			_ = cb(nil, err)
		}
	}) {
		return net.ErrClosed
	}
	return nil
}

// Close closes the transport on the loop (CloseNow).
func (t *Transport) Close() error {
	t.closes.Add(1)
	if !t.loop.Post(t.CloseNow) {
		return net.ErrClosed
	}
	return nil
}

// CloseNow closes the transport at once, as a socket closing: the client
// reads EOF, and OnClose releases the bound Conn. It runs once; later calls
// do nothing. Loop only.
func (t *Transport) CloseNow() {
	if t.closed {
		return
	}
	t.closed = true
	t.client.close()
	if t.conn != nil {
		t.conn.Release() // OnClose
	}
	close(t.closedCh)
}

// Closed is closed once the transport is.
func (t *Transport) Closed() <-chan struct{} { return t.closedCh }

// OutboundBuffered reports the backlog set by SetBacklog while it lasts,
// then the value set by SetOutboundBuffered. The engine may call it only on
// the loop; a call elsewhere is a violation.
func (t *Transport) OutboundBuffered() int {
	if !t.loop.OnLoop() {
		t.violate("OutboundBuffered called off the event loop")
	}
	for {
		n := t.backlog.Load()
		if n <= 0 {
			return int(t.outbound.Load())
		}
		if t.backlog.CompareAndSwap(n, n-1) {
			return int(n) * 1000
		}
	}
}

// SetOutboundBuffered sets what OutboundBuffered reports: bytes the socket
// has not taken yet.
func (t *Transport) SetOutboundBuffered(n int) { t.outbound.Store(int64(n)) }

// SetBacklog simulates bytes stuck in the socket's send buffer that drain
// slowly: the next n OutboundBuffered calls report n×1000, (n-1)×1000, …,
// 1000, so the engine's drain polling runs n extra rounds.
func (t *Transport) SetBacklog(n int) { t.backlog.Store(int64(n)) }

// Traffic is the gateway's OnTraffic: Feed data to the bound Conn, then
// Read until it would block, recording the plaintext (and echoing it with
// Echo). Loop only.
func (t *Transport) Traffic(data []byte) {
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
			t.received = append(t.received, buf[:n]...)
			t.mu.Unlock()
			if t.Echo {
				_, _ = t.WriteConn(buf[:n])
			}
		}
		if err != nil {
			if !errors.Is(err, t.wouldBlock) {
				t.mu.Lock()
				if t.readErr == nil {
					t.readErr = err
				}
				t.mu.Unlock()
			}
			if n > 0 {
				t.violate("Conn.Read returned n=%d with error %v (n > 0 must come with nil)", n, err)
			}
			if errors.Is(err, io.EOF) && t.CloseOnEOF {
				_ = t.conn.Close()
			}
			return
		}
		if n == 0 {
			t.violate("Conn.Read returned 0, nil")
			return
		}
	}
}

// Deliver runs Traffic with a copy of data on the loop (gnet's read buffer
// is reused: the engine must copy what it keeps) and waits for it; false
// when it did not run within timeout.
func (t *Transport) Deliver(data []byte, timeout time.Duration) bool {
	data = bytes.Clone(data)
	ch := make(chan struct{})
	if !t.loop.Post(func() { t.Traffic(data); close(ch) }) {
		return false
	}
	return wait(ch, timeout)
}

// WriteConn is the gateway writing p with Conn.Write (from any goroutine,
// once opened), recording what it accepted.
func (t *Transport) WriteConn(p []byte) (int, error) {
	n, err := t.conn.Write(p)
	if n > len(p) || n < 0 {
		t.violate("Conn.Write returned n=%d for %d bytes", n, len(p))
		return n, err
	}
	t.mu.Lock()
	t.accepted = append(t.accepted, p[:n]...)
	t.mu.Unlock()
	return n, err
}

// Writes returns the non-empty buffers handed to AsyncWrite, in call order,
// with the content each holds now: a buffer the engine reused shows what it
// was overwritten with.
func (t *Transport) Writes() [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([][]byte, len(t.calls))
	for i, b := range t.calls {
		out[i] = bytes.Clone(b)
	}
	return out
}

// WriteCount is how many non-empty writes the loop made before the
// transport closed.
func (t *Transport) WriteCount() int { return int(t.writes.Load()) }

// Wakes is how many times Wake was called.
func (t *Transport) Wakes() int { return int(t.wakes.Load()) }

// Closes is how many times Close was called.
func (t *Transport) Closes() int { return int(t.closes.Load()) }

// Sent returns every byte the loop wrote before the transport closed.
func (t *Transport) Sent() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.sent)
}

// Received returns the plaintext the gateway read.
func (t *Transport) Received() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.received)
}

// Accepted returns what Conn.Write accepted from WriteConn, in order.
func (t *Transport) Accepted() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.accepted)
}

// Violations returns the breaches of the engine's side of the contract seen
// so far.
func (t *Transport) Violations() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.violations...)
}

// ReadErr returns the first error the traffic handler's Read returned other
// than would-block, or nil.
func (t *Transport) ReadErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.readErr
}

// Client returns the device's side of the transport, for a real
// tls.Client: its writes become Traffic on the loop, its reads drain what
// the loop wrote, and its Close is the device hanging up.
func (t *Transport) Client() net.Conn { return clientConn{t: t} }

type clientConn struct{ t *Transport }

func (c clientConn) Read(b []byte) (int, error) { return c.t.client.read(b) }

func (c clientConn) Write(b []byte) (int, error) {
	data := bytes.Clone(b)
	if !c.t.loop.Post(func() { c.t.Traffic(data) }) {
		return 0, net.ErrClosed
	}
	return len(b), nil
}

func (c clientConn) Close() error {
	_ = c.t.Close()
	return nil
}

func (c clientConn) LocalAddr() net.Addr              { return addr{} }
func (c clientConn) RemoteAddr() net.Addr             { return addr{} }
func (c clientConn) SetDeadline(time.Time) error      { return nil }
func (c clientConn) SetReadDeadline(time.Time) error  { return nil }
func (c clientConn) SetWriteDeadline(time.Time) error { return nil }

type addr struct{}

func (addr) Network() string { return "enginetest" }
func (addr) String() string  { return "enginetest" }

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
