package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// StdlibOptions configure StartStdlib.
type StdlibOptions struct {
	// Listen is the TLS address ("127.0.0.1:0" picks a port).
	Listen string
	// CertFile and KeyFile are the server certificate (leaf then chain) and
	// its key, PEM.
	CertFile, KeyFile string
	// ClientCAFile holds the roots device chains must lead to (PEM).
	ClientCAFile string
	// Upstream is the origin's base URL, such as http://127.0.0.1:9000.
	Upstream string
}

// StartStdlib starts the comparison's baseline: what a Go developer writes
// in an afternoon with the standard library. A net/http server over
// crypto/tls with tls.VerifyClientCertIfGiven against ClientCAFile, session
// tickets off, X25519 only, HTTP/1.1; a request without a verified chain
// gets 403; the others go through httputil.ReverseProxy to a pool of
// keep-alive connections to Upstream. It mints no token: fleetgate's extra
// work per request shows up against it.
func StartStdlib(o StdlibOptions) (*Server, error) {
	if o.Upstream == "" {
		return nil, errors.New("bench: stdlib server: no upstream (-upstream URL)")
	}
	up, err := url.Parse(o.Upstream)
	if err != nil || up.Host == "" {
		return nil, fmt.Errorf("bench: stdlib server: upstream %q: want a URL such as http://127.0.0.1:9000", o.Upstream)
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("bench: stdlib server: %w", err)
	}
	roots, err := LoadRoots(o.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("bench: stdlib server: %w", err)
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
		MinVersion:   tls.VersionTLS12,
		// X25519 for the key exchange; P-256 for TLS 1.2 clients that, like
		// the bench's, list it for the certificate's curve only.
		CurvePreferences:       []tls.CurveID{tls.X25519, tls.CurveP256},
		SessionTicketsDisabled: true,
		NextProtos:             []string{"http/1.1"},
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("bench: stdlib server: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.SetXForwarded()
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "no valid client certificate", http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         conf,
		ReadHeaderTimeout: 10 * time.Second,
		// Long enough for bench/idle.sh to count idle connections.
		IdleTimeout:  10 * time.Minute,
		ErrorLog:     log.New(io.Discard, "", 0),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only
	}
	return serve(srv, tls.NewListener(ln, conf)), nil
}
