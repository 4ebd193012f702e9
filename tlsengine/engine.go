package tlsengine

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Defaults for zero Config fields.
const (
	DefaultQueue            = 4096
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxInbound       = 256 << 10
	DefaultDrainTimeout     = 30 * time.Second
)

// Transport is the part of a gnet.Conn the engine uses; gnet.Conn satisfies
// it, and tests use an in-memory fake. All four are called from any
// goroutine except OutboundBuffered, which the engine calls only inside an
// AsyncWrite callback, on the event loop.
type Transport interface {
	// AsyncWrite queues buf on the event loop; buf must not be reused.
	AsyncWrite(buf []byte, callback gnet.AsyncCallback) error
	// Wake makes the event loop call OnTraffic for the connection.
	Wake(callback gnet.AsyncCallback) error
	// Close closes the connection on the event loop.
	Close() error
	// OutboundBuffered is the number of bytes written but not yet on the wire.
	OutboundBuffered() int
}

var _ Transport = gnet.Conn(nil)

// ChainVerifier turns a presented client chain into a verdict for a site.
// *VerdictCache satisfies it; it must be safe for concurrent use.
type ChainVerifier interface {
	Verdict(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict
}

// Observer receives one event per finished handshake (and per connection
// shed by the queue or the rate), for metrics. It is called on handshake goroutines, so it must
// be safe for concurrent use and quick.
type Observer interface {
	Handshake(ev HandshakeEvent)
}

// HandshakeEvent describes how one handshake ended.
type HandshakeEvent struct {
	// Reason is ReasonOK or why the handshake failed or was refused.
	Reason string
	// Conn is the connection; nil for ReasonShed and ReasonRate.
	Conn *Conn
	// Site is the site the ClientHello selected; nil if none was.
	Site *Site
	// ServerName is the SNI the client sent ("" if none).
	ServerName string
	// Verdict is the client chain's verdict; nil unless the handshake
	// completed (or a RejectInvalid site judged and refused the chain).
	Verdict *verdict.Verdict
	// Duration runs from Open to the end of the handshake and verdict.
	Duration time.Duration
	// Version is the negotiated TLS version, 0 if none was.
	Version uint16
	// Resumed reports a resumed session (only on SessionTickets sites).
	Resumed bool
	// Err is the failure, for logs; nil on success.
	Err error
}

type nopObserver struct{}

func (nopObserver) Handshake(HandshakeEvent) {}

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	// Sites is the SNI table. Required; replace it later with SetSites.
	Sites *Sites
	// Workers is the number of CPU slots: handshakes computing at once.
	// 0 means runtime.GOMAXPROCS(0).
	Workers int
	// Queue bounds the handshakes in flight (computing or waiting for the
	// client); a connection beyond it is refused by Open with ErrShed.
	// 0 means DefaultQueue.
	Queue int
	// HandshakeTimeout bounds a handshake from Open to its end; 0 means
	// DefaultHandshakeTimeout. A stalled client holds a Queue place (never a
	// CPU slot) for at most this long.
	HandshakeTimeout time.Duration
	// HandshakeRate bounds the handshakes started per second, over every
	// connection the engine serves; a connection beyond it is refused by
	// Open with ErrRate. 0 means unlimited. Change it with SetHandshakeRate.
	HandshakeRate int
	// HandshakeBurst is the rate's token bucket size: the handshakes that
	// may start at once after a quiet period. 0 means HandshakeRate.
	HandshakeBurst int
	// MaxInbound bounds the received bytes buffered and not yet consumed;
	// 0 means DefaultMaxInbound.
	MaxInbound int
	// DrainTimeout bounds how long a closing connection may make no write
	// progress before it is closed with output still pending; 0 means
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Verifier computes each connection's verdict from the presented chain.
	// Required (normally a *VerdictCache).
	Verifier ChainVerifier
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
	// Logger receives debug lines for failed handshakes; nil discards.
	Logger *slog.Logger
	// Go runs each handshake on a goroutine; nil means a new goroutine per
	// handshake. The gateway passes a workpool.Pool's Go, whose workers keep
	// the stack a previous handshake grew.
	Go func(func())
	// Observer receives one HandshakeEvent per handshake; nil ignores them.
	Observer Observer
	// Early, when set, is asked after each successful handshake whether the
	// owner takes over the opening of the connection on the handshake's
	// goroutine (see EarlyData). Nil, or Early returning nil, means the
	// event loop is woken instead, to read what came with the client's
	// Finished and to see the connection open.
	Early func(c *Conn, site *Site) EarlyData
}

// Engine terminates TLS for connections whose bytes come from an event loop.
// It is safe for concurrent use.
type Engine struct {
	workers      int
	timeout      time.Duration
	maxInbound   atomic.Int64 // SetMaxInbound changes it for connections opened later
	drainTimeout time.Duration
	verifier     ChainVerifier
	now          func() time.Time
	log          *slog.Logger
	obs          Observer
	adm          *admission
	tab          atomic.Pointer[table]
	spawn        func(func())
	early        func(*Conn, *Site) EarlyData
}

// NewEngine checks cfg, fills defaults and returns an Engine.
func NewEngine(cfg Config) (*Engine, error) {
	switch {
	case cfg.Sites == nil:
		return nil, errors.New("tlsengine: Config.Sites is required")
	case cfg.Verifier == nil:
		return nil, errors.New("tlsengine: Config.Verifier is required")
	case cfg.Workers < 0, cfg.Queue < 0, cfg.HandshakeTimeout < 0, cfg.MaxInbound < 0, cfg.DrainTimeout < 0,
		cfg.HandshakeRate < 0, cfg.HandshakeBurst < 0:
		return nil, errors.New("tlsengine: Config limits must not be negative")
	}
	e := &Engine{
		workers:      cfg.Workers,
		timeout:      cfg.HandshakeTimeout,
		drainTimeout: cfg.DrainTimeout,
		verifier:     cfg.Verifier,
		now:          cfg.Now,
		log:          cfg.Logger,
		obs:          cfg.Observer,
		spawn:        cfg.Go,
		early:        cfg.Early,
	}
	if e.spawn == nil {
		e.spawn = func(f func()) { go f() }
	}
	if e.workers == 0 {
		e.workers = runtime.GOMAXPROCS(0)
	}
	queue := cfg.Queue
	if queue == 0 {
		queue = DefaultQueue
	}
	if e.timeout == 0 {
		e.timeout = DefaultHandshakeTimeout
	}
	e.SetMaxInbound(cfg.MaxInbound)
	if e.drainTimeout == 0 {
		e.drainTimeout = DefaultDrainTimeout
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.obs == nil {
		e.obs = nopObserver{}
	}
	e.adm = newAdmission(e.workers, queue)
	e.adm.setRate(cfg.HandshakeRate, cfg.HandshakeBurst)
	e.tab.Store(newTable(cfg.Sites))
	return e, nil
}

// SetMaxInbound changes Config.MaxInbound for the connections opened from
// now on (a reload that raises the request size limits); 0 means
// DefaultMaxInbound, and less than one whole record is raised to one.
func (e *Engine) SetMaxInbound(n int) {
	if n <= 0 {
		n = DefaultMaxInbound
	}
	n = max(n, recordHeaderLen+maxCiphertext) // one full record must fit
	e.maxInbound.Store(int64(n))
}

// SetHandshakeRate changes Config.HandshakeRate and HandshakeBurst (a
// reload): perSecond <= 0 removes the bound, burst <= 0 means perSecond.
// The tokens already in the bucket are kept, up to the new burst.
func (e *Engine) SetHandshakeRate(perSecond, burst int) {
	e.adm.setRate(perSecond, burst)
}

// SetSites swaps the SNI table (a reload). Handshakes already started keep
// the table they started with; nil refuses every name.
func (e *Engine) SetSites(sites *Sites) {
	e.tab.Store(newTable(sites))
}

// Sites returns the current SNI table.
func (e *Engine) Sites() *Sites {
	return e.tab.Load().sites
}

// Stats returns a snapshot of the engine's load and counters.
func (e *Engine) Stats() Stats {
	return e.adm.stats()
}

// Open starts the TLS server side of a new connection; call it from gnet's
// OnOpen. When the handshakes in flight are at Config.Queue it returns
// ErrShed at once (count "shed"), and when a handshake now would exceed
// Config.HandshakeRate it returns ErrRate at once (count "rate"): either
// way the caller should close the connection, nothing having been read.
// Otherwise the handshake starts on its own goroutine and the returned Conn
// receives the connection's bytes through Feed.
func (e *Engine) Open(t Transport) (*Conn, error) {
	// The queue first: a connection it sheds spends no token of the rate.
	if !e.adm.enter() {
		e.adm.counts[rShed].Add(1)
		e.obs.Handshake(HandshakeEvent{Reason: ReasonShed})
		return nil, ErrShed
	}
	if !e.adm.allow() {
		e.adm.leave()
		e.adm.counts[rRate].Add(1)
		e.obs.Handshake(HandshakeEvent{Reason: ReasonRate})
		return nil, ErrRate
	}
	c := &Conn{eng: e, t: t, opened: time.Now(), remote: remoteAddr(t)}
	c.shim = newShim(c, t, e.adm, int(e.maxInbound.Load()))
	c.tls = tls.Server(c.shim, e.tab.Load().base)
	e.spawn(c.run)
	return c, nil
}

// remoteAddr is the transport's peer address, when it has one (a gnet.Conn
// does): Site.Authorize decides with it.
func remoteAddr(t Transport) netip.Addr {
	ra, ok := t.(interface{ RemoteAddr() net.Addr })
	if !ok {
		return netip.Addr{}
	}
	a := ra.RemoteAddr()
	if a == nil {
		return netip.Addr{}
	}
	if ta, ok := a.(*net.TCPAddr); ok && ta != nil {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
