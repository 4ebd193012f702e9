package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"
)

// OriginBody is what the benchmark origin answers to every request.
const OriginBody = "ok\n"

// Server is a running HTTP server of this package (the origin or the
// standard-library proxy).
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Done is closed, after one error (nil for a clean stop) has been sent on
// it, when the server stops serving.
func (s *Server) Done() <-chan error { return s.done }

// Close stops the server at once.
func (s *Server) Close() error { return s.srv.Close() }

// Shutdown stops accepting and waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// serve starts srv on ln in a goroutine.
func serve(srv *http.Server, ln net.Listener) *Server {
	s := &Server{srv: srv, ln: ln, done: make(chan error, 1)}
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
		close(s.done)
	}()
	return s
}

// StartOrigin starts the benchmark origin on addr ("127.0.0.1:0" picks a
// port): plain HTTP/1.1 with keep-alive, reading and discarding any body and
// answering 200 with OriginBody. It is deliberately minimal, so that what a
// comparison measures is the proxy in front of it.
func StartOrigin(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: origin: %w", err)
	}
	body := []byte(OriginBody)
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", length)
		_, _ = w.Write(body)
	})
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	return serve(srv, ln), nil
}
