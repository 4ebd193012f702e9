package gateway

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// plainPipe carries decrypted bytes from the event loop (which appends) to
// the connection's request worker (which reads, blocking). The event loop
// never blocks on it; the worker exists only while a request is in progress,
// so an idle keep-alive connection holds no goroutine.
type plainPipe struct {
	mu       sync.Mutex
	buf      []byte
	closed   bool
	working  bool
	deadline time.Time
	idle     time.Duration // when set, each read that returns bytes moves deadline to now+idle
	notify   chan struct{}
	limit    int // most bytes buffered at once; the connection closes past it
	// noWait is set while the event loop itself reads (loopserve.go): an
	// empty pipe then fails the read instead of waiting for bytes only the
	// loop could push.
	noWait bool
}

// pipeKeep is the largest buffer a drained pipe keeps for the bytes that
// follow: a keep-alive device's next request then costs no allocation,
// while a connection that once carried a large body does not hold it idle.
const pipeKeep = 512

func newPlainPipe(limit int) *plainPipe {
	return &plainPipe{notify: make(chan struct{}, 1), limit: limit}
}

// push appends decrypted bytes and reports whether the caller must start a
// worker (none is running). Called on the event loop.
func (p *plainPipe) push(b []byte) (startWorker bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false, nil // no more input is taken: discard
	}
	if len(p.buf)+len(b) > p.limit {
		p.mu.Unlock()
		return false, errInputOverflow
	}
	p.buf = append(p.buf, b...)
	if !p.working && len(p.buf) > 0 && !p.closed {
		p.working = true
		startWorker = true
	}
	p.mu.Unlock()
	p.wake()
	return startWorker, nil
}

// close makes pending and future reads return io.EOF once the buffer is
// drained. Called when the connection goes away.
func (p *plainPipe) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wake()
}

func (p *plainPipe) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// buffered returns how many bytes wait to be read.
func (p *plainPipe) buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.buf)
}

// setDeadline bounds the worker's blocking reads; zero means none.
func (p *plainPipe) setDeadline(t time.Time) {
	p.mu.Lock()
	p.deadline, p.idle = t, 0
	p.mu.Unlock()
}

// setIdleTimeout bounds the time between two reads that return bytes, not
// their total (nginx's client_body_timeout): a slow but steady upload goes
// through, a stalled one times out. now is the current time.
func (p *plainPipe) setIdleTimeout(d time.Duration, now time.Time) {
	p.mu.Lock()
	p.deadline, p.idle = now.Add(d), d
	p.mu.Unlock()
}

// Read implements io.Reader for the worker: it blocks until bytes arrive,
// the pipe closes, or the deadline passes.
func (p *plainPipe) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if len(p.buf) > 0 {
			n := copy(b, p.buf)
			switch {
			case n < len(p.buf):
				p.buf = p.buf[n:]
			case cap(p.buf) <= pipeKeep:
				p.buf = p.buf[:0] // the next request's bytes go here
			default:
				p.buf = nil // let a large burst's memory go
			}
			if p.idle > 0 {
				p.deadline = time.Now().Add(p.idle)
			}
			p.mu.Unlock()
			return n, nil
		}
		if p.closed {
			p.mu.Unlock()
			return 0, io.EOF
		}
		deadline, noWait := p.deadline, p.noWait
		p.mu.Unlock()
		if noWait {
			return 0, errLoopWouldBlock
		}

		if deadline.IsZero() {
			<-p.notify
			continue
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return 0, errReadTimeout
		}
		t := time.NewTimer(wait)
		select {
		case <-p.notify:
			t.Stop()
		case <-t.C:
		}
	}
}

// finish is called by the worker when it has nothing left to parse. It
// returns true (and the worker exits) when no bytes are pending; otherwise
// the worker must go on, because the event loop saw a running worker and did
// not start another.
func (p *plainPipe) finish(readerBuffered int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 || readerBuffered > 0 {
		return false
	}
	p.working = false
	return true
}

// isClosed reports whether the device finished sending (close_notify, EOF,
// or the connection went away).
func (p *plainPipe) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// stopIfIdle retires the pipe when no worker runs and nothing is pending,
// so that none will start; it reports whether it did. The caller then closes
// the connection (idle timeout, or the device finished sending).
func (p *plainPipe) stopIfIdle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.working || len(p.buf) > 0 {
		return false
	}
	p.working = true
	p.closed = true
	return true
}

// setNoWait makes reads on an empty pipe fail (errLoopWouldBlock) instead of
// waiting, while the event loop reads.
func (p *plainPipe) setNoWait(on bool) {
	p.mu.Lock()
	p.noWait = on
	p.mu.Unlock()
}

// holdsHeader reports whether the bytes waiting in the pipe hold a whole
// request header (up to the empty line that ends it).
func (p *plainPipe) holdsHeader() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Contains(p.buf, crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")
