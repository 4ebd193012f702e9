package enginetest

import (
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

var errWouldBlock = errors.New("would block")

// fakeConn hands out what was fed, then errWouldBlock (or eof once set).
type fakeConn struct {
	mu       sync.Mutex
	buf      []byte
	eof      bool
	released int
	closed   int
	written  []byte
	zero     bool // Read returns 0, nil once
}

func (c *fakeConn) Feed(data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, data...)
	return nil
}

func (c *fakeConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.zero {
		c.zero = false
		return 0, nil
	}
	if len(c.buf) == 0 {
		if c.eof {
			return 0, io.EOF
		}
		return 0, errWouldBlock
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *fakeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.written = append(c.written, p...)
	return len(p), nil
}

func (c *fakeConn) Close() error { c.mu.Lock(); c.closed++; c.mu.Unlock(); return nil }
func (c *fakeConn) Release()     { c.mu.Lock(); c.released++; c.mu.Unlock() }
func (c *fakeConn) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.released
}

func newLoop(t *testing.T) *Loop {
	l := NewLoop()
	t.Cleanup(l.Close)
	return l
}

func open(t *testing.T, l *Loop) (*Transport, *fakeConn) {
	t.Helper()
	tr := NewTransport(l, errWouldBlock)
	c := &fakeConn{}
	if err := tr.Open(func() (Conn, error) { return c, nil }); err != nil {
		t.Fatal(err)
	}
	return tr, c
}

// TestLoopOrder: urgent tasks run before those queued with Post, each kind
// in order, one at a time on the loop.
func TestLoopOrder(t *testing.T) {
	l := newLoop(t)
	if l.OnLoop() {
		t.Error("OnLoop true outside the loop, before any task")
	}
	var got []string
	gate := make(chan struct{})
	l.Post(func() { <-gate }) // hold the loop while the rest is queued
	for _, s := range []string{"a", "b"} {
		l.Post(func() { got = append(got, s) })
	}
	for _, s := range []string{"W1", "W2"} {
		l.PostUrgent(func() {
			if !l.OnLoop() {
				t.Error("OnLoop false inside a task")
			}
			got = append(got, s)
		})
	}
	close(gate)
	if !l.Sync(5 * time.Second) {
		t.Fatal("Sync timed out")
	}
	if want := []string{"W1", "W2", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if l.OnLoop() {
		t.Error("OnLoop true outside the loop, after Sync")
	}
}

// TestLoopShutdown: queued tasks still run; later posts are refused.
func TestLoopShutdown(t *testing.T) {
	l := NewLoop()
	ran := make(chan struct{})
	gate := make(chan struct{})
	l.Post(func() { <-gate })
	l.Post(func() { close(ran) })
	go func() { time.Sleep(10 * time.Millisecond); close(gate) }()
	if !l.Shutdown(5 * time.Second) {
		t.Fatal("Shutdown timed out")
	}
	select {
	case <-ran:
	default:
		t.Fatal("a task queued before Shutdown did not run")
	}
	if l.Post(func() {}) || l.PostUrgent(func() {}) || l.Sync(time.Second) {
		t.Fatal("a stopped loop accepted a task")
	}
	tr := NewTransport(l, errWouldBlock)
	if tr.AsyncWrite([]byte("x"), nil) == nil || tr.Wake(nil) == nil || tr.Close() == nil {
		t.Fatal("a transport on a stopped loop accepted a call")
	}
}

// TestWritesAndContract: writes are recorded as handed over, reach Sent
// and the client, and a reused buffer or an off-loop OutboundBuffered is a
// violation.
func TestWritesAndContract(t *testing.T) {
	l := newLoop(t)
	tr, _ := open(t, l)
	client := tr.Client()
	done := make(chan error, 1)
	if err := tr.AsyncWrite([]byte("one"), func(_ gnet.Conn, err error) error { done <- err; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("callback got %v", err)
	}
	if err := tr.AsyncWrite(nil, nil); err != nil { // an empty write is not recorded
		t.Fatal(err)
	}
	l.Sync(5 * time.Second)
	if v := tr.Violations(); len(v) != 0 {
		t.Fatalf("violations %q", v)
	}

	// The loop is held inside a task before the write is queued: an urgent
	// write queued while the task was still waiting would go ahead of it.
	gate, held := make(chan struct{}), make(chan struct{})
	l.Post(func() { close(held); <-gate })
	<-held
	buf := []byte("two")
	_ = tr.AsyncWrite(buf, nil)
	copy(buf, "TWO") // reused before the loop wrote it
	close(gate)
	l.Sync(5 * time.Second)
	if w := tr.Writes(); len(w) != 2 || string(w[0]) != "one" || string(w[1]) != "TWO" {
		t.Fatalf("Writes %q, want one, TWO (as the buffer is now)", w)
	}
	if tr.WriteCount() != 2 || string(tr.Sent()) != "oneTWO" {
		t.Fatalf("WriteCount %d, Sent %q", tr.WriteCount(), tr.Sent())
	}
	p := make([]byte, 16)
	if n, _ := client.Read(p); string(p[:n]) != "oneTWO" {
		t.Fatalf("client read %q", p[:n])
	}
	if v := tr.Violations(); len(v) != 1 || !strings.Contains(v[0], "modified") {
		t.Fatalf("violations %q, want the modified buffer", v)
	}

	tr.SetOutboundBuffered(7)
	if n := tr.OutboundBuffered(); n != 7 {
		t.Fatalf("OutboundBuffered = %d", n)
	}
	if v := tr.Violations(); len(v) != 2 || !strings.Contains(v[1], "off the event loop") {
		t.Fatalf("violations %q, want the off-loop call", v)
	}
	tr.SetBacklog(2)
	got := make(chan []int, 1)
	l.Post(func() { got <- []int{tr.OutboundBuffered(), tr.OutboundBuffered(), tr.OutboundBuffered()} })
	if g := <-got; !slices.Equal(g, []int{2000, 1000, 7}) {
		t.Fatalf("backlog then outbound: %v", g)
	}
	if v := tr.Violations(); len(v) != 2 {
		t.Fatalf("violations %q after on-loop calls", v)
	}
}

// TestClose: Close runs OnClose once (Release), the client reads EOF, and
// later writes and wakes are dropped with net.ErrClosed.
func TestClose(t *testing.T) {
	l := newLoop(t)
	tr, c := open(t, l)
	_ = tr.Close()
	_ = tr.Close()
	select {
	case <-tr.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
	l.Sync(5 * time.Second)
	if _, released := c.counts(); released != 1 || tr.Closes() != 2 {
		t.Fatalf("released %d times, Closes %d", released, tr.Closes())
	}
	if _, err := tr.Client().Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %v, want EOF", err)
	}
	errs := make(chan error, 2)
	cb := func(_ gnet.Conn, err error) error { errs <- err; return nil }
	_ = tr.AsyncWrite([]byte("late"), cb)
	_ = tr.Wake(cb)
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("callback after close got %v, want net.ErrClosed", err)
		}
	}
	if tr.WriteCount() != 0 || len(tr.Sent()) != 0 || len(tr.Writes()) != 1 || tr.Wakes() != 1 {
		t.Fatalf("WriteCount %d Sent %q Writes %d Wakes %d", tr.WriteCount(), tr.Sent(), len(tr.Writes()), tr.Wakes())
	}
}

// TestTraffic: the handler reads until would-block, echoes with Echo,
// closes on EOF with CloseOnEOF, records other read errors, and flags a
// Read returning 0, nil.
func TestTraffic(t *testing.T) {
	l := newLoop(t)
	tr, c := open(t, l)
	tr.Echo = true
	if _, err := tr.Client().Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if !tr.Deliver([]byte(" world"), 5*time.Second) {
		t.Fatal("Deliver timed out")
	}
	if string(tr.Received()) != "hello world" || string(tr.Accepted()) != "hello world" || tr.ReadErr() != nil {
		t.Fatalf("received %q accepted %q err %v", tr.Received(), tr.Accepted(), tr.ReadErr())
	}
	c.mu.Lock()
	c.zero = true
	c.mu.Unlock()
	_ = tr.Wake(nil)
	l.Sync(5 * time.Second)
	if v := tr.Violations(); len(v) != 1 || !strings.Contains(v[0], "0, nil") {
		t.Fatalf("violations %q", v)
	}

	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
	tr.Deliver(nil, 5*time.Second)
	if closed, _ := c.counts(); closed != 0 || !errors.Is(tr.ReadErr(), io.EOF) {
		t.Fatalf("without CloseOnEOF: %d closes, read error %v", closed, tr.ReadErr())
	}
	tr.CloseOnEOF = true
	tr.Deliver(nil, 5*time.Second)
	if closed, _ := c.counts(); closed != 1 {
		t.Fatalf("with CloseOnEOF: %d closes, want 1", closed)
	}
}

// TestOpenError: a failed open binds nothing.
func TestOpenError(t *testing.T) {
	l := newLoop(t)
	tr := NewTransport(l, errWouldBlock)
	refused := errors.New("shed")
	if err := tr.Open(func() (Conn, error) { return nil, refused }); err != refused {
		t.Fatalf("Open = %v", err)
	}
	tr.Deliver([]byte("x"), 5*time.Second) // no Conn: nothing to feed
	if len(tr.Received()) != 0 {
		t.Fatal("traffic without a Conn")
	}
}
