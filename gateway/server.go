package gateway

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/workpool"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// Options wires a Server to its surroundings. Only Load is required.
type Options struct {
	// Load reads and validates the configuration; it is called at start and
	// on every Reload.
	Load func() (*configs.Config, error)
	// Logger receives diagnostics (JSON in production); nil discards them.
	Logger *slog.Logger
	// AccessLog receives one line per request; nil uses Logger.
	AccessLog *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
	// Ready, when set, is called once the listener is up, from within Run
	// as it boots: it must not wait for Run (to call Shutdown from it,
	// start a goroutine).
	Ready func(addr string)
	// TuneRuntime lets the server set the process's GOMAXPROCS, the garbage
	// collector's pacing and its soft memory limit (at New and on every
	// Reload) from [gateway] gomaxprocs, gc_heap_target and memory_limit,
	// and return unused heap after memory_release_after of quiet.
	// For the process's one gateway (`fleetgate serve`); tests running
	// several servers leave it off.
	TuneRuntime bool
}

// Server is a running fleetgate: the gnet event loops, the TLS engine, the
// current configuration snapshot and the admin listener.
type Server struct {
	opts     Options
	log      *slog.Logger
	accessLg *slog.Logger
	now      func() time.Time
	engine   *tlsengine.Engine
	verdicts *tlsengine.VerdictCache
	snap     atomic.Pointer[snapshot]
	metrics  metrics
	registry *prometheus.Registry // nil when there is no admin listener to serve it
	gnetEng  gnet.Engine
	booted   chan struct{}
	bootMu   sync.Mutex // orders OnBoot and the start of Shutdown
	// running is the [gateway] section the server started with: the
	// settings a reload cannot change (restartOnly) keep these values.
	running   configs.Gateway
	conns     atomic.Int64
	inflight  atomic.Int64
	live      sync.Map     // *conn → struct{}: the open connections, for the drain
	relays    relayIndex   // live relayed connections of tcp applications, by certificate
	loopBufs  sync.Map     // gnet.EventLoop → *[]byte: each loop's decrypt buffer (loopBuf)
	loopPools sync.Map     // loopPoolKey → *loopPool: each loop's origin connections (loopclient.go)
	perIP     ipCounter    // open connections per client address (max_connections_per_ip)
	coarse    *coarseClock // advanced while the server runs; the relays' activity
	shedLog   shedLog      // the log lines of connections shed as they are accepted
	draining  atomic.Bool
	reloadMu  sync.Mutex
	admin     *adminServer
	listen    string
	stopOnce  sync.Once
	runDone   chan struct{}
	runErr    error
	listening atomic.Bool
	// ephemeralKey signs tokens when the configuration names no key file.
	ephemeralKey *ecdsa.PrivateKey
	// workers runs handshakes and request workers on goroutines that keep
	// the stacks earlier ones grew.
	workers *workpool.Pool
	// testBeforeRelayAdd, set by tests only, runs on the loop between a
	// relay's admission and its entry in the live index.
	testBeforeRelayAdd atomic.Pointer[func()]
	// cpus is runtime.GOMAXPROCS as New found it: the CPUs the process may
	// use. Event loops and handshake workers default to one per CPU, not per
	// P (TuneRuntime adds a P per event loop for https origins).
	cpus int
	// baseMemLimit is the soft memory limit the process started with.
	baseMemLimit int64
	// memRelease returns a storm's unused heap to the system once the
	// process is quiet (memory_release_after); nil without TuneRuntime.
	memRelease *memRelease
	gnet.BuiltinEventEngine
}

// workerIdle is how long an idle pooled goroutine waits for a handshake or
// a request before it exits.
const workerIdle = 2 * time.Second

// New loads the configuration and builds the first snapshot. It opens no
// socket: Run does.
func New(opts Options) (*Server, error) {
	if opts.Load == nil {
		return nil, errors.New("gateway: Options.Load is required")
	}
	s := &Server{opts: opts, log: opts.Logger, accessLg: opts.AccessLog, now: opts.Now,
		booted: make(chan struct{}), runDone: make(chan struct{}), workers: workpool.New(workerIdle),
		coarse: newCoarseClock()}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.accessLg == nil {
		s.accessLg = s.log
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.metrics = noMetrics{}
	cfg, err := opts.Load()
	if err != nil {
		return nil, err
	}
	s.logWarnings(cfg)
	s.cpus, s.baseMemLimit = runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1)
	if opts.TuneRuntime {
		tuneRuntime(cfg, s.cpus, s.baseMemLimit, s.log, true)
		s.memRelease = newMemRelease(cfg.Gateway.MemoryReleaseAfter, s.log)
	}
	if cfg.Gateway.AdminListen != "" {
		pm := newPromMetrics(s)
		s.metrics, s.registry = pm, pm.reg
	}
	if n := cfg.Gateway.VerdictCacheSize; n > 0 {
		s.verdicts = tlsengine.NewVerdictCache(n) // nil: verdict_cache_size = 0 disables it
	}
	if err := s.provideKey(cfg); err != nil {
		return nil, err
	}
	snap, err := buildSnapshot(cfg, nil)
	if err != nil {
		return nil, err
	}
	snap.srv = s
	s.snap.Store(snap)
	s.metrics.configLoaded(nil, snap)
	s.running = cfg.Gateway
	s.listen = cfg.Gateway.Listen
	if s.engine, err = s.newEngine(cfg, snap); err != nil {
		return nil, err
	}
	return s, nil
}

// newEngine builds the TLS engine over the first snapshot's sites, with
// the [gateway] bounds of cfg.
func (s *Server) newEngine(cfg *configs.Config, snap *snapshot) (*tlsengine.Engine, error) {
	e, err := tlsengine.NewEngine(tlsengine.Config{
		Sites:            snap.sites,
		Workers:          cmp.Or(cfg.Gateway.HandshakeWorkers, s.cpus),
		Queue:            cfg.Gateway.HandshakeQueue,
		HandshakeTimeout: cfg.Gateway.HandshakeTimeout,
		HandshakeRate:    cfg.Gateway.MaxHandshakeRate,
		HandshakeBurst:   cfg.Gateway.MaxHandshakeBurst,
		Verifier:         s.verdicts,
		// Bytes a device sends right behind its Finished wait in the engine
		// until the handshake completes: allow one whole request there too.
		MaxInbound: max(tlsengine.DefaultMaxInbound, snap.inputLimit()),
		Now:        s.now,
		Logger:     s.log,
		Observer:   s.metrics,
		Go:         s.workers.Go,
		Early:      earlyData,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return e, nil
}

// Run serves until Shutdown (or a fatal listener error). It refuses a
// [gateway].listen that another process already listens on, starts the admin
// listener, then the gnet event loops on [gateway].listen with SO_REUSEPORT.
func (s *Server) Run() error {
	if err := checkPortFree(s.listen); err != nil {
		return s.failedStart(fmt.Errorf("gateway: listen %s: %w", s.listen, err))
	}
	// The settings a reload cannot change are the ones New loaded, even
	// when a reload came before Run (a SIGHUP while starting).
	if addr := s.running.AdminListen; addr != "" {
		a, err := startAdmin(addr, s)
		if err != nil {
			return s.failedStart(err)
		}
		s.admin = a
	}
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go s.newCRLWatcher().run(stopWatch)
	go s.coarse.run(stopWatch)
	if s.memRelease != nil {
		go s.memRelease.run(stopWatch)
	}
	loops := s.running.EventLoops
	if loops <= 0 {
		loops = s.cpus
	}
	err := gnet.Run(s, "tcp://"+s.listen, loopOptions(loops, s.log)...)
	if err != nil && !isDone(s.booted) {
		// gnet's own error ("bind: address already in use") does not say
		// which of the gateway's listeners failed.
		err = fmt.Errorf("gateway: listen %s: %w", s.listen, err)
	}
	s.listening.Store(false)
	// The loops have exited: relays they did not finish end here.
	s.relays.finishAll(closeShutdown)
	if s.admin != nil {
		s.admin.close()
	}
	s.runErr = err
	close(s.runDone)
	return err
}

// failedStart ends a Run that failed before its event loops started: a
// Shutdown, then or later, returns err at once instead of waiting for a boot
// that never comes.
func (s *Server) failedStart(err error) error {
	s.runErr = err
	close(s.runDone)
	return err
}

// restartOnly names the settings of next that differ from the running ones
// but take effect only at start: the listeners, the event loops, the
// handshake engine and the verdict cache are built once.
func restartOnly(running, next *configs.Gateway) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(running.Listen != next.Listen, "listen")
	add(running.AdminListen != next.AdminListen, "admin_listen")
	add(running.EventLoops != next.EventLoops, "event_loops")
	add(running.HandshakeWorkers != next.HandshakeWorkers, "handshake_workers")
	add(running.HandshakeQueue != next.HandshakeQueue, "handshake_queue")
	add(running.HandshakeTimeout != next.HandshakeTimeout, "handshake_timeout")
	add(running.VerdictCacheSize != next.VerdictCacheSize, "verdict_cache_size")
	return keys
}

// OnBoot records the gnet engine and reports readiness. A server whose
// Shutdown began before it booted stops at once.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.bootMu.Lock()
	s.gnetEng = eng
	if s.draining.Load() {
		close(s.booted)
		s.bootMu.Unlock()
		s.log.Info("shut down before it booted")
		return gnet.Shutdown
	}
	s.listening.Store(true)
	close(s.booted)
	s.bootMu.Unlock() // Ready may call Shutdown
	s.log.Info("listening", "addr", s.listen)
	if s.opts.Ready != nil {
		s.opts.Ready(s.listen)
	}
	return gnet.None
}

// OnOpen admits a connection: refused at once when the gateway is draining,
// at max_connections, at max_connections_per_ip for the client's address,
// when the handshake queue is full, or over max_handshake_rate. A load
// balancer's connection (proxy_protocol_from) passes the first two here and
// the rest once its PROXY header has named the device (balancer.go).
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if o, ok := gc.Context().(*originSide); ok {
		// A tcp application's origin socket, enrolled by its relay: not a
		// device, so neither counted nor admitted.
		return o.r.originOpened(gc)
	}
	if lo, ok := gc.Context().(*loopOrigin); ok {
		return lo.opened(gc) // an HTTP origin connection of the loop's pool
	}
	snap := s.snap.Load()
	if s.draining.Load() {
		s.metrics.connRefused("draining")
		return nil, gnet.Close
	}
	if n := s.conns.Add(1); snap.cfg.Gateway.MaxConnections > 0 && n > int64(snap.cfg.Gateway.MaxConnections) {
		s.conns.Add(-1)
		s.metrics.connRefused("max_connections")
		return nil, gnet.Close
	}
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(gc.RemoteAddr().String()); err == nil {
		addr = ap.Addr().Unmap()
	}
	balanced := snap.fromBalancer(addr)
	var tc *tlsengine.Conn
	var counted bool
	if !balanced {
		if tc, counted = s.admit(gc, snap, addr); tc == nil {
			s.conns.Add(-1)
			return nil, gnet.Close
		}
	}
	c := &conn{srv: s, gc: gc, tc: tc, snap: snap, opened: time.Now(),
		pipe: newPlainPipe(snap.inputLimit()), remoteAddr: addr, countedIP: counted,
		awaitHeader: balanced, buf: s.loopBuf(gc.EventLoop())}
	if addr.IsValid() {
		c.remoteIP = addr.String()
	}
	c.out.c = c
	gc.SetContext(c)
	if balanced {
		// The header, and the first TLS byte after it, must come within the
		// handshake timeout; the handshake then has its own.
		c.headerTimer = time.AfterFunc(s.running.HandshakeTimeout, func() {
			c.headerLate.Store(true)
			_ = gc.Close()
		})
		return nil, gnet.None
	}
	s.started(c)
	return nil, gnet.None
}

// admit runs a device's connection from addr through the admission that
// needs its address: max_connections_per_ip, then the handshake queue and
// rate (tlsengine.Open). It returns the TLS connection, and whether the
// connection holds a place of its address to give back at close; or nil,
// with the refusal counted and logged, and nothing held.
func (s *Server) admit(gc gnet.Conn, snap *snapshot, addr netip.Addr) (tc *tlsengine.Conn, countedIP bool) {
	limit := snap.cfg.Gateway.MaxConnectionsPerIP
	countedIP = limit > 0 && addr.IsValid()
	if countedIP && !s.perIP.enter(addr, limit) {
		s.metrics.connRefused("max_connections_per_ip")
		return nil, false
	}
	tc, err := s.engine.Open(gc)
	if err != nil {
		if countedIP {
			s.perIP.leave(addr)
		}
		reason := "shed"
		if errors.Is(err, tlsengine.ErrRate) {
			reason = tlsengine.ReasonRate
		}
		s.metrics.connRefused(reason)
		s.shedLog.shed(s.log, reason, addr.String(), time.Now())
		return nil, false
	}
	return tc, countedIP
}

// started records an admitted connection, whose TLS is open.
func (s *Server) started(c *conn) {
	c.tc.SetValue(c) // for earlyData, on the handshake's goroutine
	s.live.Store(c, struct{}{})
	s.metrics.connAccepted()
}

// OnTraffic moves received bytes through TLS to the connection's worker.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	switch v := gc.Context().(type) {
	case *conn:
		if v.awaitHeader {
			return v.balancerHeader(gc)
		}
		data, _ := gc.Next(-1)
		return v.traffic(data)
	case *originSide:
		return v.r.originTraffic(gc)
	case *loopOrigin:
		return v.traffic(gc)
	}
	return gnet.Close
}

// OnClose releases the connection's resources.
func (s *Server) OnClose(gc gnet.Conn, _ error) gnet.Action {
	if o, ok := gc.Context().(*originSide); ok {
		gc.SetContext(nil)
		o.r.originClosed()
		return gnet.None
	}
	if lo, ok := gc.Context().(*loopOrigin); ok {
		gc.SetContext(nil)
		lo.closed()
		return gnet.None
	}
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	gc.SetContext(nil)
	s.conns.Add(-1)
	if c.countedIP {
		s.perIP.leave(c.remoteAddr)
	}
	if c.tc == nil {
		// A load balancer's connection that closed before its TLS began.
		c.headerTimer.Stop()
		if c.headerLate.Load() {
			reason := "PROXY header too late"
			if c.headerRead {
				reason = "no TLS after the PROXY header"
			}
			s.metrics.connRefused("proxy_header")
			s.shedLog.shed(s.log, reason, c.remoteIP, time.Now())
		}
		return gnet.None
	}
	s.live.Delete(c)
	c.markClosing()
	c.pipe.close()
	c.tc.Release()
	c.mqttClosed()
	if c.relay != nil {
		c.relay.deviceClosed()
	}
	return gnet.None
}

// Reload re-reads the configuration. A valid file becomes the snapshot for
// new connections (connections keep the one they started with); an invalid
// one is refused with its errors and the current snapshot keeps serving.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, err := s.opts.Load()
	if err != nil {
		s.metrics.reloadFailed()
		s.log.Error("reload refused; the previous configuration keeps serving", "err", err.Error())
		return err
	}
	if err := s.provideKey(cfg); err != nil {
		s.metrics.reloadFailed()
		s.log.Error("reload refused; the previous configuration keeps serving", "err", err.Error())
		return err
	}
	old := s.snap.Load()
	snap, err := buildSnapshot(cfg, old)
	if err != nil {
		s.metrics.reloadFailed()
		s.log.Error("reload refused; the previous configuration keeps serving", "err", err.Error())
		return err
	}
	snap.srv = s
	if keys := restartOnly(&s.running, &cfg.Gateway); len(keys) > 0 {
		s.log.Warn("these settings changed but need a restart; the running values stay", "keys", strings.Join(keys, ", "))
	}
	// Bytes sent right behind the handshake wait in the engine: a raised
	// request limit must fit there too, for connections opened under either
	// snapshot while it is swapped.
	s.engine.SetMaxInbound(max(tlsengine.DefaultMaxInbound, old.inputLimit(), snap.inputLimit()))
	s.snap.Store(snap)
	snap.logins.closeReplaced(old.logins)
	s.engine.SetSites(snap.sites)
	s.engine.SetHandshakeRate(cfg.Gateway.MaxHandshakeRate, cfg.Gateway.MaxHandshakeBurst)
	if s.opts.TuneRuntime {
		// gomaxprocs applies now, counted with the loops that run (a
		// changed event_loops waits for a restart).
		running := *cfg
		running.Gateway.EventLoops = s.running.EventLoops
		tuneRuntime(&running, s.cpus, s.baseMemLimit, s.log, false)
		s.memRelease.setInterval(cfg.Gateway.MemoryReleaseAfter)
	}
	s.engine.SetMaxInbound(max(tlsengine.DefaultMaxInbound, snap.inputLimit()))
	// Cached verdicts belong to the old sites (and their CAs and
	// revocation lists): drop them rather than let them age out.
	s.verdicts.Purge()
	// The loops keep no idle connection to an origin no application uses now.
	s.retireLoopPools(snap)
	// Relayed connections keep their snapshot, but not a certificate this
	// one revokes: they close now.
	if n := s.relays.recheck(snap.revocation, s.now()); n > 0 {
		s.log.Info("closing tcp connections of revoked certificates", "connections", n)
	}
	// Nor a decision the newest lists reverse.
	if n := s.relays.reevaluate(snap.lists, s.now()); n > 0 {
		s.log.Info("closing tcp connections that the policies no longer admit", "connections", n)
	}
	s.metrics.configLoaded(old, snap)
	s.log.Info("configuration reloaded", "hash", cfg.Hash, "applications", len(snap.apps))
	s.logWarnings(cfg)
	return nil
}

// provideKey gives a configuration that asked for an ephemeral token key
// (no signing_key_file) the key this process generated at its first load,
// so that reloads do not invalidate the sessions already issued.
func (s *Server) provideKey(cfg *configs.Config) error {
	if !cfg.Tokens.EphemeralKey || cfg.Tokens.SigningKey != nil {
		return nil
	}
	if s.ephemeralKey == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("gateway: ephemeral token key: %w", err)
		}
		s.ephemeralKey = k
		s.log.Warn("no signing_key_file: tokens are signed with a key generated at start; sessions end with the process")
	}
	cfg.Tokens.SigningKey = s.ephemeralKey
	return nil
}

// Shutdown drains: it stops admitting connections and closes idle
// keep-alive ones; every connection already admitted finishes (a handshake
// in progress completes, a request in flight or sent right behind the
// handshake is answered, with Connection: close). It stops the event loops
// once every connection has closed (its output flushed) or ctx expires.
//
// Shutdown stops the server even when ctx has already expired (a zero
// drain_timeout): a booted server is stopped at once, and one that has not
// booted yet stops as it boots.
func (s *Server) Shutdown(ctx context.Context) error {
	s.bootMu.Lock()
	s.draining.Store(true)
	booted := isDone(s.booted)
	s.bootMu.Unlock()
	if !booted {
		// OnBoot sees draining and stops Run; wait for that, within ctx.
		select {
		case <-s.runDone:
			return s.runErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.live.Range(func(c, _ any) bool {
		c.(*conn).drain()
		return true
	})
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	// Relayed tcp connections carry no request to finish: they are cut
	// (close_notify to the device, the origin closed) once drain_timeout
	// has passed, or when ctx ends first.
	cutAt := time.Now().Add(s.DrainTimeout())
	cut := false
	cutRelays := func() {
		if !cut {
			// Also when none is live: a handshake completing from now on
			// starts no relay that lives on.
			cut = true
			s.relays.cutAll(closeShutdown)
		}
	}
	for s.inflight.Load() > 0 || s.conns.Load() > 0 {
		if !cut && !time.Now().Before(cutAt) {
			cutRelays()
		}
		select {
		case <-ctx.Done():
			cutRelays()
			s.awaitCutRelays(tick.C)
			if s.inflight.Load() == 0 && s.conns.Load() == 0 {
				// Only relays were left, cut at drain_timeout as planned.
				return s.stop()
			}
			s.log.Warn("drain timeout; closing with requests in flight", "inflight", s.inflight.Load(), "connections", s.conns.Load())
			return s.stop()
		case <-tick.C:
		}
	}
	return s.stop()
}

// awaitCutRelays gives relayed connections just cut a moment (a second at
// most, looking at every tick) to send their close_notify and log their line.
func (s *Server) awaitCutRelays(tick <-chan time.Time) {
	if s.relays.len() == 0 {
		return
	}
	grace := time.NewTimer(time.Second)
	defer grace.Stop()
	for s.relays.len() > 0 {
		select {
		case <-grace.C:
			return
		case <-tick:
		}
	}
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (s *Server) stop() error {
	var err error
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// gnet's Stop polls for the end of the event loops every 500ms;
		// Run returning says the same at once.
		stopped := make(chan error, 1)
		go func() { stopped <- s.gnetEng.Stop(ctx) }()
		select {
		case <-s.runDone:
		case err = <-stopped:
		}
	})
	<-s.runDone
	return err
}

// DrainTimeout is how long Shutdown should wait for in-flight requests
// ([gateway].drain_timeout of the current configuration).
func (s *Server) DrainTimeout() time.Duration { return s.snap.Load().cfg.Gateway.DrainTimeout }

// Addr returns the TLS listener's configured address.
func (s *Server) Addr() string { return s.listen }

// AdminAddr returns the admin listener's bound address, or "" if disabled.
func (s *Server) AdminAddr() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.addr()
}

// Booted is closed once the TLS listener is up.
func (s *Server) Booted() <-chan struct{} { return s.booted }

// Ready reports whether the gateway should receive traffic: configuration
// loaded, listener up (from OnBoot until Run returns), not draining (from
// the first Shutdown call on, even one made before the listener was up).
func (s *Server) Ready() bool { return s.notReady() == "" }

// logWarnings logs each of a loaded configuration's warnings (a client CA
// or server certificate that expires within 30 days, a stale CRL…) at warn
// level, at start and on every reload.
func (s *Server) logWarnings(cfg *configs.Config) {
	for _, w := range cfg.Warnings {
		s.log.Warn("configuration warning", "file", w.File, "line", w.Line, "path", w.Path, "problem", w.Msg)
	}
}

// gnetLogger sends gnet's own messages to slog at debug level (errors at
// error level), so the library never writes to stdout.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Infof(format string, args ...any)  { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }

// FreePort returns a loopback address with a port that was free a moment
// ago; tests and the demo use it to pick listeners.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// edgeReadChunk is gnet's edge-triggered read chunk, the least it allows:
// one read of at least that much ends a connection's event, unless it
// filled the loop's buffer (gnet then queues another read behind the other
// connections' events).
const edgeReadChunk = 2

// loopOptions are the event loops' settings: loops loops, each with its own
// listening socket (SO_REUSEPORT), logging through log.
func loopOptions(loops int, log *slog.Logger) []gnet.Option {
	return []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(loops),
		gnet.WithReusePort(true),
		// SO_REUSEADDR too, as every server sets it: the connections this
		// process leaves in TIME_WAIT then keep neither a restart's
		// checkPortFree nor its bind off the port.
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{log}),
		// Edge-triggered epoll, one read per event (edgeReadChunk).
		// Level-triggered, epoll looked at every connection it had just
		// reported once more at the next wait (a tcp_poll that finds
		// nothing), and a connection that had to queue output cost two
		// epoll_ctl calls to watch and unwatch writability; here a socket
		// is registered for both once. A relayed echo and a keep-alive
		// request cost about 2% less CPU (docs/performance.md).
		gnet.WithEdgeTriggeredIO(true),
		gnet.WithEdgeTriggeredIOChunk(edgeReadChunk),
	}
}
