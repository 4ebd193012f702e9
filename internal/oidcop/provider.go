package oidcop

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Provider is a running OpenID Provider: the op library's endpoints plus the
// login page, over one http.Server that Start runs and Close stops.
type Provider struct {
	opts    Options
	store   *storage
	op      *op.Provider
	handler http.Handler
	log     *slog.Logger

	mu      sync.Mutex
	srv     *http.Server
	stopped chan struct{}
	closed  bool
}

// New checks opts, generates what is missing (the signing key, the key that
// encrypts codes and access tokens) and builds the provider. It opens no
// socket: call Start, or serve Handler yourself.
func New(opts Options) (*Provider, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	key, err := newSigningKey(opts.SigningKey)
	if err != nil {
		return nil, err
	}
	store := newStorage(opts, key, opts.Issuer+defaultLoginPath)

	config := &op.Config{
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		DefaultLogoutRedirectURI: opts.Issuer + defaultLoggedOutPath,
		SupportedScopes:          []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail},
		SupportedClaims:          append(slices.Clone(op.DefaultSupportedClaims), opts.GroupsClaim),
	}
	if _, err := rand.Read(config.CryptoKey[:]); err != nil {
		return nil, fmt.Errorf("oidcop: crypto key: %w", err)
	}
	var opOpts []op.Option
	if opts.TLSCertificate == nil {
		opOpts = append(opOpts, op.WithAllowInsecure())
	}
	provider, err := op.NewProvider(config, store, op.StaticIssuer(opts.Issuer), opOpts...)
	if err != nil {
		return nil, fmt.Errorf("oidcop: %w", err)
	}
	p := &Provider{opts: opts, store: store, op: provider, log: opts.Logger}
	p.handler = p.routes()
	return p, nil
}

// Issuer returns the issuer URL, as in discovery and in the tokens' iss.
func (p *Provider) Issuer() string { return p.opts.Issuer }

// Handler returns the provider's HTTP handler, for callers that run their
// own server. Start uses the same handler.
func (p *Provider) Handler() http.Handler { return p.handler }

// Start serves the provider on ln in the background, over TLS with
// Options.TLSCertificate when the issuer is https. ln's address must be the
// one the issuer names (or route to it). A Provider starts once.
func (p *Provider) Start(ln net.Listener) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil || p.closed {
		return errors.New("oidcop: provider already started or closed")
	}
	if p.opts.TLSCertificate != nil {
		ln = tls.NewListener(ln, &tls.Config{
			Certificates: []tls.Certificate{*p.opts.TLSCertificate},
			MinVersion:   tls.VersionTLS12,
		})
	}
	p.srv = &http.Server{
		Handler:           p.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	p.stopped = make(chan struct{})
	go func(srv *http.Server, stopped chan struct{}) {
		defer close(stopped)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("oidcop: serve", "err", err)
		}
	}(p.srv, p.stopped)
	p.log.Info("oidcop: serving", "issuer", p.opts.Issuer, "addr", ln.Addr().String())
	return nil
}

// stopping marks the provider closed (no Start after it) and returns its
// server, nil when it never started, and the channel closed once it stops.
func (p *Provider) stopping() (*http.Server, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return p.srv, p.stopped
}

// Close stops the server at once: the listener and every open connection
// are closed, so the provider is down (connections are refused) from the
// moment Close returns. It is safe to call more than once.
func (p *Provider) Close() error {
	srv, stopped := p.stopping()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-stopped
	return err
}

// Shutdown stops the server gracefully, waiting for requests in flight
// until ctx ends.
func (p *Provider) Shutdown(ctx context.Context) error {
	srv, stopped := p.stopping()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err == nil {
		<-stopped
	}
	return err
}
