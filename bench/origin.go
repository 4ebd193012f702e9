package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"
)

// OriginBody is what the benchmark origin answers to every request.
const OriginBody = "ok\n"

// Server is a running HTTP server of this package (the origin or the
// standard-library proxy).
type Server struct {
	ln       net.Listener
	done     chan error
	close    func() error
	shutdown func(context.Context) error
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Done is closed, after one error (nil for a clean stop) has been sent on
// it, when the server stops serving.
func (s *Server) Done() <-chan error { return s.done }

// Close stops the server at once.
func (s *Server) Close() error { return s.close() }

// Shutdown stops accepting and waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.shutdown(ctx) }

// serve starts srv on ln in a goroutine.
func serve(srv *http.Server, ln net.Listener) *Server {
	s := &Server{ln: ln, done: make(chan error, 1), close: srv.Close, shutdown: srv.Shutdown}
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
// comparison measures is the proxy in front of it: it shares the load
// client's core, and a costlier origin (net/http's, which parses every
// header into a map) would make that core the limit of every keep-alive
// row before any server's.
func StartOrigin(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: origin: %w", err)
	}
	body := []byte(OriginBody)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if r := ctx.RequestBodyStream(); r != nil {
				_, _ = io.Copy(io.Discard, r)
			}
			ctx.SetContentType("text/plain")
			ctx.SetBody(body)
		},
		StreamRequestBody:     true, // any body size, read and dropped
		IdleTimeout:           5 * time.Minute,
		ReadTimeout:           5 * time.Minute, // the wait for a kept connection's next request
		NoDefaultServerHeader: true,
		Logger:                discardLogger{},
	}
	s := &Server{ln: ln, done: make(chan error, 1), shutdown: srv.ShutdownWithContext}
	s.close = func() error {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // close the listener and idle connections, wait for nothing
		_ = srv.ShutdownWithContext(ctx)
		return nil
	}
	go func() {
		err := srv.Serve(ln)
		s.done <- err
		close(s.done)
	}()
	return s, nil
}

// discardLogger drops fasthttp's log lines, as the origin's net/http
// predecessor did (a device's reset connection is not news here).
type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
