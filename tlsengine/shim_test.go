package tlsengine

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// TestWouldBlockIsTemporary pins the contract crypto/tls relies on: the
// shim's "no data yet" error is a net.Error whose Temporary() is true
// (readRecordOrCCS then returns it without setting c.in.err).
func TestWouldBlockIsTemporary(t *testing.T) {
	var ne net.Error
	if !errors.As(ErrWouldBlock, &ne) {
		t.Fatal("ErrWouldBlock is not a net.Error")
	}
	//lint:ignore SA1019 crypto/tls still decides on Temporary(); this pins it.
	if !ne.Temporary() || ne.Timeout() {
		t.Fatalf("Temporary()=%v Timeout()=%v, want true false", ne.Temporary(), ne.Timeout())
	}
}

// TestCryptoTLSSurvivesWouldBlock: after ErrWouldBlock, crypto/tls's Conn is
// not poisoned: later records are read normally, again and again.
func TestCryptoTLSSurvivesWouldBlock(t *testing.T) {
	f := fixture(t)
	e, err := NewEngine(f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	loop := newMemLoop()
	defer loop.close()
	mt, cc, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(cc, f.client(teDevices, &f.deviceTLS))
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	for i, msg := range []string{"one", "two", "three"} {
		// Straight to crypto/tls, on the loop, with nothing buffered.
		errc := make(chan error, 1)
		loop.post(func() {
			_, err := mt.conn.tls.Read(make([]byte, 10))
			errc <- err
		})
		if err := <-errc; err != ErrWouldBlock {
			t.Fatalf("#%d: tls.Conn.Read with no data = %v, want ErrWouldBlock itself", i, err)
		}
		if _, err := io.WriteString(client, msg); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the message", 10*time.Second, func() bool { return bytes.HasSuffix([]byte(mt.received()), []byte(msg)) })
	}
	if got := mt.received(); got != "onetwothree" {
		t.Errorf("received %q", got)
	}
}

// TestShimFraming: crypto/tls is handed whole records only; a header that
// crypto/tls refuses by itself is handed over at once.
func TestShimFraming(t *testing.T) {
	rec := func(typ byte, n int) []byte {
		return append([]byte{typ, 3, 3, byte(n >> 8), byte(n)}, bytes.Repeat([]byte{0xaa}, n)...)
	}
	two := append(rec(22, 10), rec(23, 0)...) // the second record is empty
	tests := []struct {
		name        string
		input       []byte
		ready       []int // ready bytes after feeding each byte
		passthrough bool
		oversized   bool
	}{
		{
			name:  "two records byte by byte",
			input: two,
			ready: func() []int {
				r := make([]int, len(two))
				for i := range r {
					switch {
					case i >= 19:
						r[i] = 20
					case i >= 14:
						r[i] = 15
					}
				}
				return r
			}(),
		},
		{name: "oversized", input: []byte{22, 3, 3, 0x48, 0x01}, ready: []int{0, 0, 0, 0, 5}, passthrough: true, oversized: true},
		{name: "largest allowed waits for its body", input: []byte{23, 3, 3, 0x48, 0x00}, ready: []int{0, 0, 0, 0, 0}},
		{name: "not tls", input: []byte("GET /"), ready: []int{0, 0, 0, 0, 5}, passthrough: true},
		{name: "sslv2", input: []byte{0x80, 0x2e, 1, 3, 1}, ready: []int{0, 0, 0, 0, 5}, passthrough: true},
		{name: "bad major version", input: []byte{22, 4, 1, 0, 1, 0}, ready: []int{0, 0, 0, 0, 5, 6}, passthrough: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShim(nil, nil, newAdmission(1, 1), DefaultMaxInbound)
			for i := range tt.input {
				if err := s.feed(tt.input[i : i+1]); err != nil {
					t.Fatal(err)
				}
				if got := s.ready - s.off; got != tt.ready[i] {
					t.Fatalf("after byte %d: ready = %d, want %d", i, got, tt.ready[i])
				}
			}
			if s.passthrough != tt.passthrough || s.oversized != tt.oversized {
				t.Errorf("passthrough=%v oversized=%v, want %v %v", s.passthrough, s.oversized, tt.passthrough, tt.oversized)
			}
		})
	}
}

// TestShimReadModes: after the handshake Read never blocks; a record handed
// out in pieces (small p) continues where it stopped.
func TestShimReadModes(t *testing.T) {
	s := newShim(nil, nil, newAdmission(1, 1), DefaultMaxInbound)
	s.endHandshake()
	if n, err := s.Read(make([]byte, 10)); n != 0 || err != ErrWouldBlock {
		t.Fatalf("empty: %d, %v", n, err)
	}
	rec := []byte{23, 3, 3, 0, 3, 'a', 'b', 'c'}
	_ = s.feed(rec[:6])
	if n, err := s.Read(make([]byte, 10)); n != 0 || err != ErrWouldBlock {
		t.Fatalf("partial record: %d, %v", n, err)
	}
	_ = s.feed(rec[6:])
	var got []byte
	p := make([]byte, 3)
	for {
		n, err := s.Read(p)
		got = append(got, p[:n]...)
		if err != nil {
			if err != ErrWouldBlock {
				t.Fatal(err)
			}
			break
		}
	}
	if !bytes.Equal(got, rec) {
		t.Fatalf("read %x, want %x", got, rec)
	}
	s.release()
	if _, err := s.Read(p); err != io.EOF {
		t.Fatalf("after release: %v, want EOF", err)
	}
}

// TestShimCPUSlot: a blocked handshake Read holds no CPU slot while it waits
// and takes one before returning bytes.
func TestShimCPUSlot(t *testing.T) {
	a := newAdmission(1, 10)
	s := newShim(nil, nil, a, DefaultMaxInbound)
	got := make(chan int, 1)
	read := func() {
		n, _ := s.Read(make([]byte, 100))
		got <- n
	}
	go read()
	time.Sleep(20 * time.Millisecond)
	if busy := len(a.cpu); busy != 0 {
		t.Fatalf("waiting Read holds %d slots", busy)
	}
	_ = s.feed([]byte{22, 3, 1, 0, 1, 1})
	if n := <-got; n != 6 {
		t.Fatalf("read %d bytes", n)
	}
	if busy := len(a.cpu); busy != 1 || !s.cpu.held {
		t.Fatalf("after returning bytes: %d slots busy, held=%v", busy, s.cpu.held)
	}
	go read()
	waitFor(t, "the slot released while waiting", 5*time.Second, func() bool { return len(a.cpu) == 0 })
	s.stopHandshake(rTimeout, ErrHandshakeTimeout)
	if n := <-got; n != 0 {
		t.Fatalf("aborted read returned %d bytes", n)
	}
	if a.cpuNanos.Load() <= 0 {
		t.Error("CPU time not accounted")
	}
}

// TestShimSlotWaitIsAbortable: a handshake waiting for a CPU slot gives up
// when aborted (timeout, close) instead of waiting for the slot.
func TestShimSlotWaitIsAbortable(t *testing.T) {
	a := newAdmission(1, 10)
	a.cpu <- struct{}{} // the only slot is taken
	s := newShim(nil, nil, a, DefaultMaxInbound)
	_ = s.feed([]byte{22, 3, 1, 0, 0})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.stopHandshake(rTimeout, ErrHandshakeTimeout)
	select {
	case err := <-errc:
		if err != ErrHandshakeTimeout {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still waiting for a slot after abort")
	}
}

// recordingTransport records writes (callbacks are not run).
type recordingTransport struct {
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordingTransport) AsyncWrite(b []byte, _ gnet.AsyncCallback) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(b) > 0 {
		r.writes = append(r.writes, b)
	}
	return nil
}
func (r *recordingTransport) Wake(gnet.AsyncCallback) error { return nil }
func (r *recordingTransport) Close() error                  { return nil }
func (r *recordingTransport) OutboundBuffered() int         { return 0 }

func (r *recordingTransport) written() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.writes...)
}

// TestShimWriteCopies: crypto/tls reuses its buffer, so each write is copied.
func TestShimWriteCopies(t *testing.T) {
	rt := &recordingTransport{}
	s := newShim(nil, rt, newAdmission(1, 1), DefaultMaxInbound)
	b := []byte("record one")
	_, _ = s.Write(b)
	copy(b, "RECORD TWO")
	_, _ = s.Write(b)
	if w := rt.written(); string(w[0]) != "record one" || string(w[1]) != "RECORD TWO" {
		t.Fatalf("writes %q", w)
	}
	s.release()
	if _, err := s.Write(b); err == nil {
		t.Fatal("write after release succeeded")
	}
}

// TestUnknownSNIAlertBytes: an unknown name gets exactly one write, the
// fatal alert unrecognized_name (112): no certificate, no internal_error.
func TestUnknownSNIAlertBytes(t *testing.T) {
	f := fixture(t)
	e, err := NewEngine(f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		rt := &recordingTransport{}
		c, err := e.Open(rt)
		if err != nil {
			t.Fatal(err)
		}
		conf := f.client("nope.fleet.test", nil)
		conf.MaxVersion = v
		_ = c.Feed(captureClientHello(t, conf))
		counted(t, e, ReasonUnknownSNI, uint64(i+1))
		w := rt.written()
		if len(w) != 1 {
			t.Fatalf("version %x: %d writes, want 1", v, len(w))
		}
		if a := w[0]; len(a) != 7 || a[0] != 21 || a[1] != 3 || a[3] != 0 || a[4] != 2 || a[5] != 2 || a[6] != 112 {
			t.Fatalf("version %x: alert bytes %x, want 15 03 0x 00 02 02 70", v, a)
		}
	}
}
