package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/oidclogin"
	"github.com/fleetgate/fleetgate/policy"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// snapshot is everything built from one configuration file: the SNI table,
// the applications with their policies and origin clients, the token keys.
// It is immutable; a reload builds a new one and swaps one pointer, and a
// connection keeps the snapshot it started with.
type snapshot struct {
	cfg        *configs.Config
	sites      *tlsengine.Sites
	apps       []*application
	keys       *policy.KeySet
	tokenCache *policy.TokenCache
	// revocation is the CRLs and deny-lists of this configuration; every
	// site carries it, and requests on older connections are re-checked
	// against the newest snapshot's.
	revocation *tlsengine.Revocation
	// lists and serviceTokens, like revocation, are consulted in the newest
	// snapshot by every request and tcp decision (lists.go).
	lists         *policy.ListSet
	serviceTokens *policy.ServiceTokens
	// logins holds the identity providers and the login state's keys
	// (login.go).
	logins     *logins
	jwks       []byte
	issuer     string
	cookieName string
	sameSite   string

	maxHeaderBytes int
	// readers pools the request workers' header readers, each of
	// maxHeaderBytes (which bounds a request header: larger is 431).
	readers        sync.Pool
	maxHeaderCount int
	maxBodyBytes   int64
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	maxConnAge     time.Duration // 0: no limit

	// srv is the server the snapshot serves in, set before its sites are
	// installed: a tcp application's handshake hook logs and counts with
	// it. Nil in tests that build snapshots alone.
	srv *Server
}

// application is one configured application, ready to serve.
type application struct {
	snap              *snapshot
	name              string
	aud               string
	policy            *policy.Application
	origin            *originClient
	originURL         string
	originCAs         [32]byte      // SHA-256 of origin_ca_file; zero without one
	originCert        [32]byte      // SHA-256 of origin_cert_file's chain; zero without one
	originName        string        // origin_server_name ("": the origin's host)
	originConnect     time.Duration // its origin_connect_timeout (the gateway's unless it sets one)
	forwardClientCert bool
	serviceAuth401    bool
	// tcp is set for a tcp or mqtt application: its relay's settings. Nil
	// for http.
	tcp *tcpSettings
	// mqtt is set for an mqtt application: its CONNECT check and identity
	// binding (mqttapp.go).
	mqtt *mqttSettings
	// idps are the identity providers people log in with, in the
	// application's order; empty: no login (login.go).
	idps []*oidclogin.Provider
	// roots are the hex SHA-256s of the roots of the CAs associated with
	// the application's domain: a session token whose certificate chained
	// to another root (a CA since removed) is refused here.
	roots map[string]struct{}
}

// trustsRoot reports whether a token's cert_root is one of the
// application's roots; a token without one (minted before the claim
// existed) is judged by its signature, expiry and revocation alone.
func (a *application) trustsRoot(root string) bool {
	if root == "" {
		return true
	}
	_, ok := a.roots[root]
	return ok
}

// buildSnapshot provisions a snapshot from a validated configuration. old,
// when not nil, is the snapshot being replaced: origin clients for unchanged
// origins are reused so their pooled connections survive a reload.
func buildSnapshot(cfg *configs.Config, old *snapshot) (*snapshot, error) {
	g := &cfg.Gateway
	keys, err := policy.NewKeySet(cfg.Tokens.SigningKey, cfg.Tokens.PreviousKeys...)
	if err != nil {
		return nil, fmt.Errorf("gateway: token keys: %w", err)
	}
	s := &snapshot{
		cfg:            cfg,
		keys:           keys,
		tokenCache:     policy.NewTokenCache(g.TokenCacheSize),
		jwks:           keys.JWKS(),
		issuer:         g.Issuer,
		cookieName:     cfg.Tokens.CookieName,
		sameSite:       cfg.Tokens.CookieSameSite,
		maxHeaderBytes: int(g.MaxHeaderBytes),
		maxHeaderCount: g.MaxHeaderCount,
		maxBodyBytes:   g.MaxBodyBytes,
		headerTimeout:  g.HeaderTimeout,
		idleTimeout:    g.IdleTimeout,
		maxConnAge:     g.MaxConnectionAge,
	}
	s.readers.New = func() any { return bufio.NewReaderSize(nil, s.maxHeaderBytes) }
	// An application's origin client is reused by the next snapshot when
	// its URL, its trusted CAs and its connect timeout are the same (its
	// pooled connections survive). Each application keeps its own, as at
	// start: applications on one origin do not come to share one client,
	// and one bound, after a reload.
	oldClients := map[appOrigin]*originClient{}
	if old != nil {
		for _, a := range old.apps {
			if a.origin != nil {
				oldClients[appOrigin{a.name, a.originKey()}] = a.origin
			}
		}
	}
	opt := originOptions{
		Timeout:          g.OriginTimeout,
		MaxConns:         g.MaxConnsPerOrigin,
		MaxResponseBytes: g.MaxResponseBytes,
	}
	if s.revocation, err = newRevocation(cfg); err != nil {
		return nil, err
	}
	if err := s.provisionCredentials(cfg); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := s.provisionLogins(cfg, old); err != nil {
		return nil, err
	}
	sites := make([]*tlsengine.Site, 0, len(cfg.Applications))
	for i := range cfg.Applications {
		app, site, err := s.buildApplication(&cfg.Applications[i], oldClients, old, opt)
		if err != nil {
			return nil, err
		}
		s.apps = append(s.apps, app)
		sites = append(sites, site)
	}
	s.sites, err = tlsengine.NewSites(sites, g.DefaultSite)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return s, nil
}

// keepOriginSessions gives a relayed application the tls:// client
// configuration of the previous snapshot's application of the same name,
// and so its TLS session cache, when the origin, its trusted CAs, the
// certificate presented and the name verified are the same: a reload (the
// CRL watch's, say) does not make the next connections' handshakes with
// the origin full ones.
func (app *application) keepOriginSessions(old *snapshot) {
	if old == nil || app.tcp.originTLS == nil {
		return
	}
	for _, a := range old.apps {
		if a.name == app.name && a.tcp != nil && a.tcp.originTLS != nil && a.originURL == app.originURL &&
			a.originCAs == app.originCAs && a.originCert == app.originCert && a.originName == app.originName {
			app.tcp.originTLS = a.tcp.originTLS
			return
		}
	}
}

// originKey identifies an origin client: its URL, its trusted CAs, the
// certificate it presents, the name it verifies and its connect timeout.
type originKey struct {
	url     string
	cas     [32]byte
	cert    [32]byte
	name    string // origin_server_name
	connect time.Duration
}

// originKey is the key of the application's origin client.
func (a *application) originKey() originKey {
	return originKey{a.originURL, a.originCAs, a.originCert, a.originName, a.originConnect}
}

// appOrigin is an application's origin client as the next snapshot may
// reuse it: the application's name and its origin.
type appOrigin struct {
	app string
	originKey
}

// buildApplication provisions one application and its site: its compiled
// policies, its origin client (reused from old when unchanged, so pooled
// connections survive a reload) and its client-CA pools.
func (s *snapshot) buildApplication(ca *configs.Application, oldClients map[appOrigin]*originClient, old *snapshot, opt originOptions) (*application, *tlsengine.Site, error) {
	pa := ca.Application // a copy: the snapshot owns its policy model
	if err := pa.Compile(); err != nil {
		return nil, nil, fmt.Errorf("gateway: application %q: %w", ca.Name, err)
	}
	app := &application{
		snap:              s,
		name:              ca.Name,
		aud:               ca.AUD,
		policy:            &pa,
		originURL:         ca.Origin.String(),
		originCAs:         ca.OriginCAsSum,
		originCert:        ca.OriginCertSum,
		originName:        ca.OriginServerName,
		originConnect:     ca.OriginConnectTimeout,
		forwardClientCert: ca.ForwardClientCert,
		serviceAuth401:    ca.ServiceAuth401,
		roots:             rootSums(ca.ClientCAs),
	}
	for _, name := range ca.IdentityProviders {
		app.idps = append(app.idps, s.logins.providers[name])
	}
	if ca.Protocol.Relayed() {
		app.tcp = newTCPSettings(ca)
		app.keepOriginSessions(old)
		if ca.Protocol == configs.ProtocolMQTT {
			app.mqtt = newMQTTSettings(ca)
		}
	} else if c, ok := oldClients[appOrigin{app.name, app.originKey()}]; ok && sameOriginOptions(old.cfg, s.cfg) {
		app.origin = c
	} else {
		o := opt
		o.RootCAs, o.Certificate, o.ServerName, o.ConnectTimeout = ca.OriginCAs, ca.OriginCertificate, ca.OriginServerName, ca.OriginConnectTimeout
		app.origin = newOriginClient(ca.Origin, o)
	}
	site := &tlsengine.Site{
		Name:           strings.ToLower(ca.Domain),
		Certificates:   []tls.Certificate{ca.Certificate},
		SessionTickets: ca.SessionTickets,
		RejectInvalid:  ca.RejectInvalidCert,
		Revocation:     s.revocation,
		App:            app,
	}
	var roots, inters []*x509.Certificate
	for _, c := range ca.ClientCAs {
		roots = append(roots, c.Roots...)
		inters = append(inters, c.Intermediates...)
	}
	site.SetClientCAs(roots, inters)
	if app.tcp != nil && app.mqtt == nil {
		// A raw TCP device cannot read a 403: the policies decide inside
		// the handshake, and a refusal is a bad_certificate alert.
		site.Authorize = app.authorize
		site.RequireCertificate = site.Roots != nil && !admitsWithoutCertificate(&pa)
	}
	return app, site, nil
}

func sameOriginOptions(a, b *configs.Config) bool {
	ga, gb := &a.Gateway, &b.Gateway
	return ga.OriginTimeout == gb.OriginTimeout &&
		ga.MaxConnsPerOrigin == gb.MaxConnsPerOrigin && ga.MaxResponseBytes == gb.MaxResponseBytes
}

// newRevocation builds the revocation set of a configuration: every client
// CA's CRLs (their signatures were checked by configs) and the global
// deny-lists. Nil when nothing is revoked.
func newRevocation(cfg *configs.Config) (*tlsengine.Revocation, error) {
	var crls []tlsengine.CRL
	for i := range cfg.ClientCAs {
		ca := &cfg.ClientCAs[i]
		for j := range ca.CRLs {
			c := &ca.CRLs[j]
			crl := tlsengine.CRL{Name: ca.Name + ": " + c.Name(), List: c.List, Issuer: c.Issuer}
			if ca.CRLStale == "reject" {
				crl.RejectAfter = c.List.NextUpdate // zero (never stale) without nextUpdate
			}
			crls = append(crls, crl)
		}
	}
	r := &cfg.Revocation
	if len(crls) == 0 && len(r.DeniedSerials) == 0 && len(r.DeniedFingerprints) == 0 {
		return nil, nil
	}
	rev, err := tlsengine.NewRevocation(crls, r.DeniedSerials, r.DeniedFingerprints)
	if err != nil {
		return nil, fmt.Errorf("gateway: revocation: %w", err)
	}
	return rev, nil
}

// tokenCertStatus refuses a session token whose certificate is revoked now
// (by a CRL, a denied serial or fingerprint), so that a cookie dies with its
// certificate, or whose certificate's issuer has a CRL gone stale under
// crl_stale = "reject"; nil when the token may be used.
func (s *snapshot) tokenCertStatus(c *policy.Claims, now time.Time) error {
	if s.revocation == nil {
		return nil
	}
	ref, ok, err := c.CertRef()
	switch {
	case err != nil:
		return errTokenRevoked // the gateway minted it, so this cannot happen: fail closed
	case !ok:
		return nil
	case s.revocation.RevokedRef(&ref):
		return errTokenRevoked
	case s.revocation.StaleRef(&ref, now):
		return errTokenRevocationUnknown
	}
	return nil
}

// rootSums returns the hex SHA-256s of the CAs' roots.
func rootSums(cas []*configs.ClientCA) map[string]struct{} {
	sums := make(map[string]struct{})
	for _, ca := range cas {
		for _, c := range ca.Roots {
			sum := sha256.Sum256(c.Raw)
			sums[hex.EncodeToString(sum[:])] = struct{}{}
		}
	}
	return sums
}

// servedBy reports whether host's requests belong to site: the site SNI
// routing would choose for host, were it the server name, is site itself.
func (s *snapshot) servedBy(host string, site *tlsengine.Site) bool {
	got, ok := s.sites.Lookup(host)
	return ok && got == site
}

// verifyToken checks a presented session token for an application,
// consulting the verified-token cache first.
func (s *snapshot) verifyToken(tok, aud string, now time.Time) (*policy.Claims, error) {
	return s.keys.VerifyCached(s.tokenCache, tok, aud, s.issuer, now)
}

// inputLimit is the most plaintext a connection buffers: one request of the
// largest allowed header and body, or the largest CONNECT an mqtt
// application accepts (a device sends it right behind its Finished, before
// the handshake has ended), plus room for what follows.
func (s *snapshot) inputLimit() int {
	n := s.maxHeaderBytes + int(s.maxBodyBytes)
	for _, a := range s.apps {
		if a.mqtt != nil {
			n = max(n, a.mqtt.binding.MaxConnectBytes)
		}
	}
	return n + 64<<10
}

// mintFor mints the token of an allowed request: claims from the policy
// input (the certificate's identity, or the token's standing in for it,
// and the logged-in person's). ident is the token's identity nonce when a
// person is logged in, "" for a device.
func (s *snapshot) mintFor(app *application, in *policy.Input, d policy.Decision) (tok string, exp time.Time, ident string, err error) {
	claims, err := app.policy.NewClaims(s.issuer, in, d)
	if err != nil {
		return "", time.Time{}, "", err
	}
	// A token names its leaf and root only, so when it comes back the
	// lists of the leaf's issuer are checked (tokenCertStatus), not those
	// covering the rest of the path, such as a root's CRL over the
	// intermediates. It must not outlive the moment one of those stops
	// vouching for the path under crl_stale = "reject".
	if in.Cert.OK() && in.ServiceToken == nil && len(in.Cert.Path) > 1 {
		path := in.Cert.Path
		for i := 1; i < len(path); i++ {
			if bytes.Equal(path[i].RawIssuer, path[0].RawIssuer) {
				continue // the leaf issuer's lists: checked when the token comes back
			}
			if u := s.revocation.VouchedUntil(path[i : i+1]); !u.IsZero() && claims.Exp > u.Unix() {
				claims.Exp = u.Unix()
			}
		}
	}
	if claims.IdP != "" {
		ident = claims.IdentityNonce
	}
	tok, err = s.keys.Mint(claims)
	return tok, time.Unix(claims.Exp, 0), ident, err
}
