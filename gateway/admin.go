package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminServer is the operator's listener: liveness (/healthz), readiness
// (/readyz), Prometheus metrics (/metrics) and the token keys
// (/cdn-cgi/access/certs). It is plain net/http: it
// serves a handful of requests from the operator's own machines.
type adminServer struct {
	ln  net.Listener
	srv *http.Server
}

// adminLimits bound what one client of the admin listener may hold. The
// listener serves a few small GETs, but in the gateway's own process: a
// client that trickles its request, never reads the answer, or keeps its
// connection idle must not keep a goroutine and a descriptor for good.
type adminLimits struct {
	readHeader time.Duration // the request line and headers
	read       time.Duration // the whole request, body included
	write      time.Duration // from the end of the headers to the answer sent
	idle       time.Duration // a kept-alive connection between requests
	maxHeader  int           // the request line and headers, in bytes
}

// defaultAdminLimits are the admin listener's bounds. A scrape has 10s to
// be gathered (the /metrics handler's Timeout) and the rest of write to be
// sent; idle outlasts a minute's scrape interval, so scrapers keep their
// connection.
var defaultAdminLimits = adminLimits{
	readHeader: 5 * time.Second,
	read:       5 * time.Second,
	write:      30 * time.Second,
	idle:       2 * time.Minute,
	maxHeader:  16 << 10,
}

// startAdmin starts the admin listener on addr with defaultAdminLimits.
func startAdmin(addr string, s *Server) (*adminServer, error) {
	return startAdminLimited(addr, s, defaultAdminLimits)
}

func startAdminLimited(addr string, s *Server, lim adminLimits) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if why := s.notReady(); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + why + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	// The token keys, as on every application's domain: origins of tcp
	// applications verify the token of the PROXY header with them, and a
	// fleet with no HTTP application has no other place to fetch them.
	mux.HandleFunc(pathCerts, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.snap.Load().jwks)
	})
	if s.registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelError),
			ErrorHandling: promhttp.ContinueOnError, // a partial scrape beats none
			// Scrapes are cheap but not free: a runaway scraper must not
			// take CPU from handshakes.
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		}))
	}
	a := &adminServer{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		MaxHeaderBytes:    lim.maxHeader,
	}}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}

// notReady says why the gateway should not receive traffic, or "" when it
// should (see Server.Ready).
func (s *Server) notReady() string {
	switch {
	case s.snap.Load() == nil:
		return "no configuration loaded"
	case s.draining.Load():
		return "draining"
	case !s.listening.Load():
		return "listener not up"
	}
	return ""
}

func (a *adminServer) addr() string { return a.ln.Addr().String() }

func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
}
