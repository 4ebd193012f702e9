package tlsengine

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// TLS record framing, for handing crypto/tls complete records only.
const (
	recordHeaderLen = 5
	// maxCiphertext is the largest record TLS 1.2 allows (2^14 + 2048);
	// TLS 1.3's bound is smaller and crypto/tls enforces it itself.
	maxCiphertext = 16384 + 2048

	recordTypeCCS       = 20
	recordTypeAlert     = 21
	recordTypeHeartbeat = 24

	alertLevelFatal         = 2
	alertInternalError      = 80
	alertUnrecognizedName   = 112
	compactThreshold        = 4096
	dropBufferAboveCapacity = 32 << 10
)

// shim is the in-memory net.Conn that crypto/tls runs over (DESIGN decision
// 1). The event loop appends received bytes with feed; crypto/tls reads them
// with Read and writes records with Write, which go out by Transport.AsyncWrite.
//
// Read has two modes. During the handshake it is called on the handshake's
// goroutine and blocks: it gives the CPU slot back while no record is
// buffered and takes it again before returning bytes. After the handshake it
// is called on the event loop and never blocks: with no complete record it
// returns ErrWouldBlock, a temporary net.Error that crypto/tls passes through
// without poisoning the connection.
//
// Read hands out only bytes of records that are entirely buffered, so
// crypto/tls never waits in the middle of a record. A header that crypto/tls
// rejects by itself (not a TLS record type, a version byte that is not 3,
// an oversized length) switches to passthrough so the rejection, and its
// alert, happen at once instead of after waiting for a body.
type shim struct {
	t    Transport
	conn *Conn

	mu          sync.Mutex
	in          []byte  // received, not yet read by crypto/tls: in[off:]
	inBox       *[]byte // in's pooled backing array, if it came from inboundPool
	off         int
	ready       int  // in[off:ready] may be handed to crypto/tls
	recEnd      int  // end of the record take is handing out (off ≥ recEnd: at a record's start)
	passthrough bool // framing abandoned: every byte is ready
	oversized   bool // a header announced a record longer than maxCiphertext
	maxInbound  int
	handshaking bool   // blocking mode
	abortErr    error  // why the handshake was aborted, if it was
	abortWhy    reason // the counter for abortErr
	notify      chan struct{}
	abort       chan struct{} // closed when abortErr is set
	abortOnce   sync.Once

	released   atomic.Bool // the transport is gone (OnClose); set under mu
	flightSent atomic.Bool // the handshake has written to the peer: maxInbound applies, not maxUnanswered
	unknownSNI atomic.Bool // rewrite crypto/tls's internal_error alert to unrecognized_name

	cpu slot // handshake goroutine only

	// readHook, if set, runs in Read after each look at the state, outside
	// the lock: tests release the connection there. Nil in production.
	readHook func()

	// Outbound coalescing (Cork): while corked, records are appended to
	// pending instead of going out one AsyncWrite each.
	wmu     sync.Mutex
	corked  bool
	pending []byte
	// direct, while set (Conn.WriteLoop, on the event loop), collects the
	// records crypto/tls writes so that they go out in one transport Write,
	// with no AsyncWrite. Guarded by wmu.
	direct *[]byte
	// queued counts AsyncWrites not yet run on the loop: while any is,
	// WriteLoop queues too, or its records would overtake them.
	queued atomic.Int64
	// written is the AsyncWrite callback that counts queued down (made once).
	written gnet.AsyncCallback
	// fd is the transport's socket while the handshake may write to it
	// directly (writeHandshake), -1 otherwise. Guarded by wmu: release
	// clears it under wmu before the event loop closes the descriptor, so a
	// direct write never reaches a descriptor the kernel gave to another
	// connection.
	fd int
}

// maxUnanswered bounds what a peer may have buffered before the handshake
// has written anything to it: a ClientHello (crypto/tls takes one of at most
// 64 KiB), in records. MaxInbound, which must hold a whole request sent
// right behind the client's Finished, applies once the server has answered;
// before that the peer has proven nothing, and while its handshake waits for
// a CPU slot it would otherwise park MaxInbound per connection.
const maxUnanswered = 68 << 10

// corkLimit bounds what a corked connection holds back: above it the
// pending records go out at once, so a large response is never buffered
// whole.
const corkLimit = 64 << 10

func newShim(c *Conn, t Transport, a *admission, maxInbound int) *shim {
	return &shim{
		t:           t,
		fd:          transportFD(t),
		conn:        c,
		maxInbound:  maxInbound,
		handshaking: true,
		notify:      make(chan struct{}, 1),
		abort:       make(chan struct{}),
		cpu:         slot{a: a},
	}
}

// asyncWrite queues buf on the loop with AsyncWrite, counting it in queued
// until it has run; cb, if any, runs after it as AsyncWrite's callback.
func (s *shim) asyncWrite(buf []byte, cb gnet.AsyncCallback) error {
	done := s.written
	if done == nil {
		done = s.asyncDone
		s.written = done
	}
	if cb != nil {
		done = func(c gnet.Conn, err error) error {
			s.queued.Add(-1)
			return cb(c, err)
		}
	}
	s.queued.Add(1)
	if err := s.t.AsyncWrite(buf, done); err != nil {
		s.queued.Add(-1)
		return err
	}
	return nil
}

func (s *shim) asyncDone(gnet.Conn, error) error {
	s.queued.Add(-1)
	return nil
}

// directPool holds the buffers WriteLoop collects records in: gnet's Write
// copies what the socket does not take at once, so the buffer is free again
// as soon as it returns.
var directPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// startDirect makes Write collect records for one transport Write on the
// loop, and reports whether it did: not while corked, while an AsyncWrite is
// still queued (the records would overtake it), or once released.
func (s *shim) startDirect() bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.corked || s.direct != nil || s.queued.Load() > 0 || s.released.Load() {
		return false
	}
	s.direct = directPool.Get().(*[]byte)
	return true
}

// endDirect stops collecting and returns what was collected; the caller
// writes it, then gives it back with putDirect.
func (s *shim) endDirect() *[]byte {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.direct
	s.direct = nil
	return b
}

func putDirect(b *[]byte) {
	if cap(*b) <= dropBufferAboveCapacity {
		*b = (*b)[:0]
		directPool.Put(b)
	}
}

// feed appends bytes received by the event loop. It copies data: gnet
// reuses its read buffer.
func (s *shim) feed(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if s.released.Load() {
		return ErrClosed
	}
	s.mu.Lock()
	limit := s.maxInbound
	if !s.flightSent.Load() {
		limit = min(limit, maxUnanswered)
	}
	if len(s.in)-s.off+len(data) > limit {
		s.mu.Unlock()
		s.stopHandshake(rInboundOverflow, ErrInboundOverflow)
		return ErrInboundOverflow
	}
	if s.off > 0 && (s.off == len(s.in) || s.off >= compactThreshold && s.off >= len(s.in)/2) {
		n := copy(s.in, s.in[s.off:])
		s.in = s.in[:n]
		s.ready -= s.off
		s.recEnd -= s.off
		s.off = 0
	}
	if s.in == nil {
		s.inBox = inboundPool.Get().(*[]byte)
		s.in = (*s.inBox)[:0]
	}
	s.in = append(s.in, data...)
	s.frame()
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// frame advances s.ready over every complete record. Called with s.mu held.
func (s *shim) frame() {
	for !s.passthrough {
		rest := s.in[s.ready:]
		if len(rest) < recordHeaderLen {
			break
		}
		typ, major := rest[0], rest[1]
		n := int(rest[3])<<8 | int(rest[4])
		if n > maxCiphertext || typ < recordTypeCCS || typ > recordTypeHeartbeat || major != 3 {
			// crypto/tls refuses this from the header alone; let it.
			s.passthrough = true
			s.oversized = n > maxCiphertext && typ >= recordTypeCCS && typ <= recordTypeHeartbeat && major == 3
			break
		}
		if len(rest) < recordHeaderLen+n {
			break
		}
		s.ready += recordHeaderLen + n
	}
	if s.passthrough {
		s.ready = len(s.in)
	}
}

// take copies ready bytes into p, at most one record per call (the rest of
// the one begun, or the next), so that crypto/tls never buffers a record it
// has not processed: once it has returned a record's plaintext whole, it
// holds nothing, and Conn.read need not ask it again to learn that (see
// Conn.drained). Called with s.mu held.
func (s *shim) take(p []byte) int {
	end := s.ready
	if !s.passthrough {
		if s.off >= s.recEnd {
			// At a record's start: ready covers whole records, so its
			// header and body are both there.
			h := s.in[s.off:]
			s.recEnd = s.off + recordHeaderLen + (int(h[3])<<8 | int(h[4]))
		}
		end = min(end, s.recEnd)
	}
	n := copy(p, s.in[s.off:end])
	s.off += n
	if s.off == len(s.in) {
		s.clearIn()
		if !s.handshaking || cap(s.in) > dropBufferAboveCapacity {
			s.putInbound()
		}
	}
	return n
}

// clearIn empties the received bytes once crypto/tls has taken them all,
// keeping the buffer. Called with s.mu held.
func (s *shim) clearIn() { s.in, s.off, s.ready, s.recEnd = s.in[:0], 0, 0, 0 }

// inboundPool holds the buffers of received bytes: an open connection
// gives its buffer back whenever crypto/tls has read everything, so an idle
// connection holds none (a fixed buffer was 1 KiB of every idle connection).
var inboundPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// putInbound gives the empty inbound buffer back to the pool, or drops it
// when it grew large. Called with s.mu held.
func (s *shim) putInbound() {
	if s.inBox != nil && cap(s.in) <= dropBufferAboveCapacity {
		*s.inBox = s.in[:0]
		inboundPool.Put(s.inBox)
	}
	s.in, s.inBox = nil, nil
}

// Read implements net.Conn for crypto/tls; see the type's comment.
func (s *shim) Read(p []byte) (int, error) {
	for {
		// released is read under the lock with abortErr: release sets both
		// at once, so a handshake never sees the transport gone without the
		// abort that names why (a bare io.EOF would be counted as a TLS
		// error instead of "closed").
		s.mu.Lock()
		blocking, err, avail, released := s.handshaking, s.abortErr, s.ready-s.off, s.released.Load()
		if err == nil && avail > 0 && (!blocking || s.cpu.held) {
			n := s.take(p)
			s.mu.Unlock()
			return n, nil
		}
		s.mu.Unlock()
		if s.readHook != nil {
			s.readHook()
		}
		switch {
		case err != nil:
			return 0, err
		case released:
			return 0, io.EOF
		case !blocking:
			return 0, ErrWouldBlock
		case avail > 0:
			// Bytes to compute on: take a CPU slot first (abortable), then
			// loop to hand them out.
			if !s.cpu.acquire(s.abort) {
				continue // abortErr is set now
			}
		default:
			// Nothing to compute on: never hold a CPU slot while waiting.
			s.cpu.release()
			select {
			case <-s.notify:
			case <-s.abort:
			}
		}
	}
}

// Write implements net.Conn for crypto/tls: each record is copied (crypto/tls
// reuses its buffer and AsyncWrite does not copy) and queued on the loop, or
// held back while the connection is corked.
func (s *shim) Write(b []byte) (int, error) {
	if s.released.Load() {
		return 0, net.ErrClosed
	}
	if !s.flightSent.Load() {
		s.flightSent.Store(true)
	}
	if c := s.conn; c != nil && c.complete.Load() && c.writing.Load() == 0 {
		c.answered.Add(int64(len(b))) // crypto/tls answering the peer, not the owner writing
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.direct != nil {
		*s.direct = append(*s.direct, b...)
		return len(b), nil
	}
	if s.corked {
		s.pending = append(s.pending, b...)
		if len(s.pending) >= corkLimit {
			out := s.pending
			s.pending = nil
			if err := s.asyncWrite(out, nil); err != nil {
				return 0, err
			}
		}
		return len(b), nil
	}
	n := len(b)
	if s.unknownSNI.Load() && len(b) >= 7 && b[0] == recordTypeAlert && b[3] == 0 && b[4] == 2 &&
		b[5] == alertLevelFatal && b[6] == alertInternalError {
		// crypto/tls answers a failing GetConfigForClient with internal_error;
		// the right answer to an unknown name is unrecognized_name (RFC 6066).
		// This is the plaintext alert that precedes any ServerHello.
		b = append([]byte(nil), b...)
		b[6] = alertUnrecognizedName
	}
	if s.fd >= 0 {
		b = b[s.writeHandshake(b):]
		if len(b) == 0 {
			return n, nil
		}
	}
	buf := make([]byte, len(b))
	copy(buf, b)
	if err := s.asyncWrite(buf, nil); err != nil {
		return 0, err
	}
	return n, nil
}

// writeHandshake writes a handshake flight straight to the socket from the
// handshake's goroutine and returns how much of b the socket took. A
// device reconnecting for every request then costs no AsyncWrite (a task
// queued on the loop, an eventfd write and a loop wake-up) for the server's
// flight. This is safe only while nothing of the connection has been
// queued on the loop (gnet's outbound buffer is empty, so these bytes
// overtake nothing) and the descriptor is still the connection's (release
// clears s.fd under wmu before OnClose returns and gnet closes it). So the
// first write the socket does not take whole ends direct writes for the
// connection: the rest, and everything after it, goes through AsyncWrite
// in order. Called with wmu held.
func (s *shim) writeHandshake(b []byte) int {
	n, err := unix.Write(s.fd, b)
	if err != nil || n < len(b) {
		s.fd = -1
		return max(n, 0)
	}
	return n
}

// stopDirectWrites ends writeHandshake's direct writes: at the end of the
// handshake (later writes come from any goroutine, interleaved with the
// loop's) and when the transport is gone.
func (s *shim) stopDirectWrites() {
	s.wmu.Lock()
	s.fd = -1
	s.wmu.Unlock()
}

// transportFD is the socket of a transport that has one (a gnet.Conn),
// read on the event loop in Open, or -1.
func transportFD(t Transport) int {
	if f, ok := t.(interface{ Fd() int }); ok {
		if fd := f.Fd(); fd >= 0 {
			return fd
		}
	}
	return -1
}

// cork makes Write hold records back until uncork.
func (s *shim) cork() {
	s.wmu.Lock()
	s.corked = true
	s.wmu.Unlock()
}

// uncork stops holding records back and sends what is pending in one
// AsyncWrite whose callback is cb; with nothing pending, cb (if any) still
// runs on the loop after everything queued before.
func (s *shim) uncork(cb gnet.AsyncCallback) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.corked = false
	out := s.pending
	s.pending = nil
	if len(out) == 0 && cb == nil {
		return nil
	}
	return s.asyncWrite(out, cb)
}

// stopHandshake aborts a handshake in progress: a blocked Read returns err.
// The first cause wins. It does nothing once the handshake has ended.
func (s *shim) stopHandshake(why reason, err error) {
	s.mu.Lock()
	stopped := s.stopLocked(why, err)
	s.mu.Unlock()
	if stopped {
		s.abortOnce.Do(func() { close(s.abort) })
	}
}

// stopLocked records the abort if the handshake is still running and has
// none yet, and reports whether it did; the caller then closes s.abort.
// Called with s.mu held.
func (s *shim) stopLocked(why reason, err error) bool {
	if !s.handshaking || s.abortErr != nil {
		return false
	}
	s.abortErr, s.abortWhy = err, why
	return true
}

// endHandshake switches Read to its non-blocking mode and returns the
// handshake's abort, if there was one, with the error it made Read return.
func (s *shim) endHandshake() (reason, error) {
	s.stopDirectWrites()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handshaking = false
	if s.off == len(s.in) {
		s.clearIn()
		s.putInbound()
	}
	if s.abortErr != nil {
		return s.abortWhy, s.abortErr
	}
	return rOK, nil
}

// release records that the transport is gone (OnClose).
// The flag and the handshake's abort are set together under s.mu, so Read
// sees both or neither.
func (s *shim) release() {
	s.mu.Lock()
	s.released.Store(true)
	stopped := s.stopLocked(rClosed, errPeerClosed)
	s.mu.Unlock()
	// A direct write in progress finishes before OnClose returns and the
	// loop closes the descriptor; none starts after this.
	s.stopDirectWrites()
	if stopped {
		s.abortOnce.Do(func() { close(s.abort) })
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// hasRecord reports whether a whole record is buffered, ready for
// crypto/tls (and the transport is still there).
func (s *shim) hasRecord() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready > s.off && !s.released.Load()
}

// holdsReady reports whether a crypto/tls read would get more than "would
// block" from the shim: a whole record, anything at all once framing was
// abandoned, or the end once the transport is gone.
func (s *shim) holdsReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready > s.off || s.passthrough || s.released.Load()
}

func (s *shim) isOversized() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oversized
}

// Close is a no-op: the engine closes the transport itself, after flushing.
func (s *shim) Close() error { return nil }

// LocalAddr and RemoteAddr are placeholders: the transport knows the real
// addresses and crypto/tls does not need them.
func (s *shim) LocalAddr() net.Addr  { return shimAddr{} }
func (s *shim) RemoteAddr() net.Addr { return shimAddr{} }

// Deadlines are no-ops: the handshake timeout is the engine's own timer and
// after the handshake Read never blocks.
func (s *shim) SetDeadline(time.Time) error      { return nil }
func (s *shim) SetReadDeadline(time.Time) error  { return nil }
func (s *shim) SetWriteDeadline(time.Time) error { return nil }

type shimAddr struct{}

func (shimAddr) Network() string { return "tlsengine" }
func (shimAddr) String() string  { return "tlsengine" }

var _ net.Conn = (*shim)(nil)
