package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// TCPServer is a running raw TCP server of this package: the TCP echo
// origin or the Go TLS relay. Each accepted connection is handled on its
// own goroutine.
type TCPServer struct {
	ln     net.Listener
	handle func(net.Conn)

	mu      sync.Mutex
	conns   map[net.Conn]struct{} // open connections, closed by Close
	closing bool
	wg      sync.WaitGroup // the handlers
	done    chan error
}

// Addr is the address the server listens on.
func (s *TCPServer) Addr() string { return s.ln.Addr().String() }

// Done is closed, after one error (nil for a clean stop) has been sent on
// it, when the server stops accepting.
func (s *TCPServer) Done() <-chan error { return s.done }

// Close stops accepting, closes every open connection and waits for the
// handlers to return.
func (s *TCPServer) Close() error { return s.Shutdown(context.Background()) }

// Shutdown is Close that waits for the handlers only until ctx ends.
func (s *TCPServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	err := s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() { s.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		return fmt.Errorf("bench: tcp server on %s: %w", s.Addr(), ctx.Err())
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil // closed before, by a failed Accept
	}
	return err
}

// track registers c to be closed by Close; with handler it also counts
// the handler about to start, under the same lock, so that a Shutdown that
// has set closing waits for every handler it did not refuse. False means
// the server is closing (c is closed then).
func (s *TCPServer) track(c net.Conn, handler bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		_ = c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	if handler {
		s.wg.Add(1)
	}
	return true
}

// untrack closes c and forgets it.
func (s *TCPServer) untrack(c net.Conn) {
	_ = c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveTCP starts the accept loop of a TCPServer on ln. A handler's
// connection is tracked for it and closed when it returns.
func serveTCP(ln net.Listener, handle func(s *TCPServer, c net.Conn)) *TCPServer {
	s := &TCPServer{ln: ln, conns: map[net.Conn]struct{}{}, done: make(chan error, 1)}
	go func() {
		var err error
		for {
			var c net.Conn
			c, err = ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() || isFileLimit(err) {
					// Out of descriptors: wait for some to be freed
					// rather than stop serving.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				break
			}
			if !s.track(c, true) {
				continue
			}
			go func() {
				defer s.wg.Done()
				defer s.untrack(c)
				handle(s, c)
			}()
		}
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing {
			err = nil
		}
		s.done <- err
		close(s.done)
	}()
	return s
}

// echoBufferSize is the echo origin's buffer per connection.
const echoBufferSize = 16 << 10

// StartEchoOrigin starts the TCP echo origin on addr ("127.0.0.1:0" picks
// a port): every byte a connection sends is written back to it, until it
// closes. Like StartOrigin it is deliberately minimal, so that a relay
// comparison measures the relay. With conf it speaks TLS (for relays with
// TLS to their origin).
func StartEchoOrigin(addr string, conf *tls.Config) (*TCPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: echo origin: %w", err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	return serveTCP(ln, func(_ *TCPServer, c net.Conn) {
		buf := make([]byte, echoBufferSize)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}), nil
}

// isFileLimit reports whether err is "too many open files" (the process's
// or the system's).
func isFileLimit(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
