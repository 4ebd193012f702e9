package gateway

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// The hot-path half of the Prometheus sink: counters and histograms updated
// as things happen. The label children the hot paths use are resolved once
// (per reason, per verdict kind, per application) so that counting is a
// map or slice lookup and an atomic add: no label hashing, no allocation.
// What can be read instead of counted is in metrics_collect.go.

const metricsNamespace = "fleetgate"

// Histogram buckets, in seconds. A full mTLS handshake costs about a
// millisecond of CPU; queueing and slow clients stretch it, and failures run
// to handshake_timeout (5s by default).
var (
	handshakeBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}
	requestBuckets   = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// handshakeFailures are the tlsengine reasons other than ok: the values of
// the reason label when result="error".
var handshakeFailures = []string{
	tlsengine.ReasonShed,
	tlsengine.ReasonRate,
	tlsengine.ReasonTimeout,
	tlsengine.ReasonUnknownSNI,
	tlsengine.ReasonNotTLS,
	tlsengine.ReasonRecordOverflow,
	tlsengine.ReasonClientAlert,
	tlsengine.ReasonBadCertificate,
	tlsengine.ReasonInboundOverflow,
	tlsengine.ReasonClosed,
	tlsengine.ReasonTLSError,
}

// originKinds are the kinds originFailure names; keep the two in step (an
// unknown kind still counts, it just has no pre-created series).
var originKinds = []string{
	"timeout", "connect_timeout", "response_too_large", "no_free_connections",
	"connection_closed", "truncated", "unreachable", "bad_response",
}

// connRefusals are the reasons OnOpen refuses a connection.
var connRefusals = []string{"max_connections", "max_connections_per_ip", "shed", tlsengine.ReasonRate, "draining", "proxy_header"}

// verdictKinds are the verdict kinds with a stable name, in Kind order.
var verdictKinds = func() []verdict.Kind {
	var ks []verdict.Kind
	for k := verdict.Kind(0); k < 64 && k.String() != "unknown"; k++ {
		ks = append(ks, k)
	}
	return ks
}()

// decisionNone is the decision label of a request answered before any
// policy was evaluated (421, 400, 413, the Access endpoints…).
const decisionNone = "none"

// promMetrics is the Prometheus sink of one Server, with its own registry
// (never the global one: a process, such as a test binary, may run many
// servers).
type promMetrics struct {
	reg *prometheus.Registry
	srv *Server

	handshakes  *prometheus.CounterVec        // result, reason
	hsOK        []prometheus.Counter          // by verdict.Kind, result="ok"
	hsFailed    map[string]prometheus.Counter // by reason, result="error"; read-only after construction
	hsDurOK     prometheus.Observer
	hsDurFailed prometheus.Observer

	accepted   prometheus.Counter
	refusedVec *prometheus.CounterVec
	refused    map[string]prometheus.Counter // read-only after construction

	verdicts  *prometheus.CounterVec   // app, verdict
	requests  *prometheus.CounterVec   // app, decision, policy, status
	reqDur    *prometheus.HistogramVec // app
	originDur *prometheus.HistogramVec // app
	originErr *prometheus.CounterVec   // app, kind
	tokens    *prometheus.CounterVec   // app, kind

	tcpConns     *prometheus.GaugeVec   // app
	tcpBytes     *prometheus.CounterVec // app, direction
	tcpCloses    *prometheus.CounterVec // app, reason
	tcpRefusals  *prometheus.CounterVec // app, reason
	mqttRefusals *prometheus.CounterVec // app, reason

	reloadsOK, reloadsFailed prometheus.Counter
	lastReloadOK             prometheus.Gauge
	lastReloadTime           prometheus.Gauge

	appsMu sync.Mutex                             // serialises additions to apps
	apps   atomic.Pointer[map[string]*appMetrics] // copy on write

	// The token cache belongs to a snapshot, so a reload starts a new one;
	// tokBase keeps the counts of the caches replaced so that the exported
	// counters never go back. (Hits on a replaced cache by connections that
	// still hold the old snapshot are not counted.)
	tokMu    sync.Mutex
	tokCache *policy.TokenCache
	tokBase  policy.CacheStats
}

// appMetrics are one application's label children.
type appMetrics struct {
	m             *promMetrics
	name          string
	verdicts      []prometheus.Counter // by verdict.Kind
	tokSession    prometheus.Counter
	tokNoDuration prometheus.Counter
	reqDur        prometheus.Observer
	originDur     prometheus.Observer
	originErr     map[string]prometheus.Counter // read-only after construction

	reqMu    sync.Mutex                                    // serialises additions to requests
	requests atomic.Pointer[map[reqKey]prometheus.Counter] // copy on write
}

// reqKey is what distinguishes a request's series within its application.
// Its strings come from the configuration (policy names), so the number of
// keys is bounded by policies × statuses.
type reqKey struct {
	policy   string
	status   int32
	decision uint8 // 0: none; else policy.Action + 1
}

// newPromMetrics builds the sink and its registry for s, with the Go runtime
// and process collectors and the scrape-time collectors over s.
func newPromMetrics(s *Server) *promMetrics {
	m := &promMetrics{reg: prometheus.NewRegistry(), srv: s}
	f := factory{m.reg}

	m.handshakes = f.counterVec("handshakes_total",
		`TLS handshakes by how they ended. result="ok": completed, and reason is the client certificate verdict (valid, missing, unknown_authority, expired, revoked, bad_usage…); result="error": failed or refused, and reason says why (shed, rate, timeout, unknown_sni, not_tls, tls_error…).`,
		"result", "reason")
	for _, k := range verdictKinds {
		m.hsOK = append(m.hsOK, m.handshakes.WithLabelValues("ok", k.String()))
	}
	m.hsFailed = make(map[string]prometheus.Counter, len(handshakeFailures))
	for _, r := range handshakeFailures {
		m.hsFailed[r] = m.handshakes.WithLabelValues("error", r)
	}
	hsDur := f.histogramVec("handshake_duration_seconds",
		"Time from accepting a connection to the end of its TLS handshake and certificate verdict (shed connections are not observed).",
		handshakeBuckets, "result")
	m.hsDurOK, m.hsDurFailed = hsDur.WithLabelValues("ok"), hsDur.WithLabelValues("error")

	m.accepted = f.counter("connections_accepted_total", "Connections admitted (a TLS handshake started; for a load balancer's connection, once its PROXY header was read and TLS began).")
	m.refusedVec = f.counterVec("connections_refused_total",
		"Connections closed at once: max_connections reached, max_connections_per_ip reached for the client address, handshake queue full (shed), over max_handshake_rate (rate), the gateway draining, or a load balancer's connection without a valid PROXY header in time (proxy_header).", "reason")
	m.refused = make(map[string]prometheus.Counter, len(connRefusals))
	for _, r := range connRefusals {
		m.refused[r] = m.refusedVec.WithLabelValues(r)
	}

	m.verdicts = f.counterVec("client_cert_verdicts_total",
		"Client certificate verdicts of completed (or, on reject_invalid_cert applications, rejected) handshakes, by application.",
		"app", "verdict")
	m.requests = f.counterVec("requests_total",
		`Requests answered, by application, decision (allow, deny, bypass, non_identity; "none" when answered before the policies, such as 421 or 400), the matched policy ("" when none) and the HTTP status.`,
		"app", "decision", "policy", "status")
	m.reqDur = f.histogramVec("request_duration_seconds",
		"Time from reading a request's header to writing its response, origin time included.", requestBuckets, "app")
	m.originDur = f.histogramVec("origin_duration_seconds",
		"Time the origin took to answer (or fail).", requestBuckets, "app")
	m.originErr = f.counterVec("origin_errors_total",
		"Origin requests that failed, by kind: timeout, connect_timeout, unreachable, connection_closed, truncated (closed mid-body), bad_response, response_too_large, no_free_connections.",
		"app", "kind")
	m.tokens = f.counterVec("tokens_minted_total",
		`Tokens minted, by application and kind: "session" (also sent as the session cookie), "no_duration" (for one request) or "tcp" (for a tcp or mqtt application's connection).`,
		"app", "kind")

	m.registerTCP(f)

	m.registerReloads(f)

	empty := map[string]*appMetrics{}
	m.apps.Store(&empty)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newScrapeCollector(s, m),
	)
	return m
}

// registerReloads creates the metrics of configuration reloads.
func (m *promMetrics) registerReloads(f factory) {
	reloads := f.counterVec("config_reloads_total", "Configuration reloads, by result: ok or failed.", "result")
	m.reloadsOK, m.reloadsFailed = reloads.WithLabelValues("ok"), reloads.WithLabelValues("failed")
	m.lastReloadOK = f.gauge("config_last_reload_successful", "1 when the last configuration load succeeded, 0 when the last reload was refused.")
	m.lastReloadTime = f.gauge("config_last_reload_success_timestamp_seconds", "When the configuration now serving was loaded, as a Unix time.")
}

// registerTCP creates the metrics of tcp applications' relayed connections.
func (m *promMetrics) registerTCP(f factory) {
	m.tcpConns = f.gaugeVec("tcp_connections", "Relayed connections of tcp applications open now, by application.", "app")
	m.tcpBytes = f.counterVec("tcp_bytes_total",
		`Bytes relayed by tcp applications, by application and direction: "device_to_origin" (plaintext read from devices) or "origin_to_device".`,
		"app", "direction")
	m.tcpCloses = f.counterVec("tcp_closes_total",
		"Relayed connections of tcp applications closed, by application and reason: device_closed, origin_closed, idle, max_age, revoked, expired, policy, backpressure, origin_down, key_updates, shutdown.",
		"app", "reason")
	m.tcpRefusals = f.counterVec("tcp_refused_total",
		"Devices of tcp applications refused inside the TLS handshake (bad_certificate alert), by application and the reason an HTTP application's 403 would carry.",
		"app", "reason")
	m.mqttRefusals = f.counterVec("mqtt_refused_total",
		"Devices of mqtt applications refused before their CONNECT reached the broker (a CONNACK when the device can read one), by application and reason.",
		"app", "reason")
}

// Handshake counts a finished handshake: implements tlsengine.Observer.
func (m *promMetrics) Handshake(ev tlsengine.HandshakeEvent) {
	kind := verdict.Missing
	if ev.Verdict != nil {
		kind = ev.Verdict.Kind
	}
	if ev.Reason == tlsengine.ReasonOK {
		if int(kind) < len(m.hsOK) {
			m.hsOK[kind].Inc()
		} else {
			m.handshakes.WithLabelValues("ok", kind.String()).Inc()
		}
		m.hsDurOK.Observe(ev.Duration.Seconds())
	} else {
		c, ok := m.hsFailed[ev.Reason]
		if !ok {
			c = m.handshakes.WithLabelValues("error", ev.Reason)
		}
		c.Inc()
		if ev.Reason != tlsengine.ReasonShed && ev.Reason != tlsengine.ReasonRate {
			m.hsDurFailed.Observe(ev.Duration.Seconds())
		}
	}
	if ev.Verdict != nil && ev.Site != nil {
		if app, ok := ev.Site.App.(*application); ok {
			m.app(app.name).verdict(kind).Inc()
		}
	}
}

func (m *promMetrics) connAccepted() { m.accepted.Inc() }

func (m *promMetrics) connRefused(reason string) {
	c, ok := m.refused[reason]
	if !ok {
		c = m.refusedVec.WithLabelValues(reason)
	}
	c.Inc()
}

func (m *promMetrics) tokenMinted(app, kind string) {
	a := m.app(app)
	switch kind {
	case "session":
		a.tokSession.Inc()
	case "no_duration":
		a.tokNoDuration.Inc()
	default:
		m.tokens.WithLabelValues(app, kind).Inc()
	}
}

func (m *promMetrics) request(x *exchange, total time.Duration) {
	if x.app == nil {
		return
	}
	a := m.app(x.app.name)
	k := reqKey{status: int32(x.status)}
	if x.decided {
		k.decision = uint8(x.decision.Action) + 1
		k.policy = x.decision.Policy
	}
	a.request(k).Inc()
	a.reqDur.Observe(total.Seconds())
	if x.originDur > 0 {
		a.originDur.Observe(x.originDur.Seconds())
	}
	if x.originKind != "" {
		c, ok := a.originErr[x.originKind]
		if !ok {
			c = m.originErr.WithLabelValues(a.name, x.originKind)
		}
		c.Inc()
	}
}

func (m *promMetrics) configLoaded(old, cur *snapshot) {
	for _, a := range cur.apps {
		m.app(a.name) // the application's series exist (at zero) from now on
	}
	m.tokMu.Lock()
	if m.tokCache != nil && m.tokCache != cur.tokenCache {
		st := m.tokCache.Stats()
		m.tokBase.Hits += st.Hits
		m.tokBase.Misses += st.Misses
	}
	m.tokCache = cur.tokenCache
	m.tokMu.Unlock()
	if old != nil {
		m.reloadsOK.Inc()
	}
	m.lastReloadOK.Set(1)
	m.lastReloadTime.Set(float64(m.srv.now().UnixNano()) / 1e9)
}

func (m *promMetrics) tcpRefused(app, reason string) {
	m.tcpRefusals.WithLabelValues(app, reason).Inc()
}

func (m *promMetrics) mqttRefused(app, reason string) {
	m.mqttRefusals.WithLabelValues(app, reason).Inc()
}

// tcpOpened resolves the connection's label children once: the relay then
// counts its bytes with an atomic add per read.
func (m *promMetrics) tcpOpened(app string) relayMeter {
	g := m.tcpConns.WithLabelValues(app)
	g.Inc()
	return &promRelayMeter{m: m, app: app, conns: g,
		up: m.tcpBytes.WithLabelValues(app, "device_to_origin"), down: m.tcpBytes.WithLabelValues(app, "origin_to_device")}
}

// promRelayMeter counts one relayed connection.
type promRelayMeter struct {
	m        *promMetrics
	app      string
	conns    prometheus.Gauge
	up, down prometheus.Counter
}

func (p *promRelayMeter) bytes(up, down int) {
	if up > 0 {
		p.up.Add(float64(up))
	}
	if down > 0 {
		p.down.Add(float64(down))
	}
}

func (p *promRelayMeter) closed(reason string) {
	p.conns.Dec()
	p.m.tcpCloses.WithLabelValues(p.app, reason).Inc()
}

func (m *promMetrics) reloadFailed() {
	m.reloadsFailed.Inc()
	m.lastReloadOK.Set(0)
}

// tokenCacheStats returns the token caches' counters, those of replaced
// caches included.
func (m *promMetrics) tokenCacheStats() (hits, misses uint64) {
	m.tokMu.Lock()
	defer m.tokMu.Unlock()
	st := m.tokCache.Stats() // nil-safe
	return m.tokBase.Hits + st.Hits, m.tokBase.Misses + st.Misses
}

// app returns the label children of the application named name, creating
// them on first use.
func (m *promMetrics) app(name string) *appMetrics {
	if a, ok := (*m.apps.Load())[name]; ok {
		return a
	}
	m.appsMu.Lock()
	defer m.appsMu.Unlock()
	cur := *m.apps.Load()
	if a, ok := cur[name]; ok {
		return a
	}
	a := &appMetrics{
		m:             m,
		name:          name,
		tokSession:    m.tokens.WithLabelValues(name, "session"),
		tokNoDuration: m.tokens.WithLabelValues(name, "no_duration"),
		reqDur:        m.reqDur.WithLabelValues(name),
		originDur:     m.originDur.WithLabelValues(name),
		originErr:     make(map[string]prometheus.Counter, len(originKinds)),
	}
	for _, k := range verdictKinds {
		a.verdicts = append(a.verdicts, m.verdicts.WithLabelValues(name, k.String()))
	}
	for _, k := range originKinds {
		a.originErr[k] = m.originErr.WithLabelValues(name, k)
	}
	empty := map[reqKey]prometheus.Counter{}
	a.requests.Store(&empty)
	next := make(map[string]*appMetrics, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[name] = a
	m.apps.Store(&next)
	return a
}

// verdict returns the application's counter for a verdict kind.
func (a *appMetrics) verdict(k verdict.Kind) prometheus.Counter {
	if int(k) < len(a.verdicts) {
		return a.verdicts[k]
	}
	return a.m.verdicts.WithLabelValues(a.name, k.String())
}

// request returns the application's request counter for k, resolving the
// label child on the first request with that key.
func (a *appMetrics) request(k reqKey) prometheus.Counter {
	if c, ok := (*a.requests.Load())[k]; ok {
		return c
	}
	a.reqMu.Lock()
	defer a.reqMu.Unlock()
	cur := *a.requests.Load()
	if c, ok := cur[k]; ok {
		return c
	}
	decision := decisionNone
	if k.decision > 0 {
		decision = policy.Action(k.decision - 1).String()
	}
	c := a.m.requests.WithLabelValues(a.name, decision, k.policy, strconv.Itoa(int(k.status)))
	next := make(map[reqKey]prometheus.Counter, len(cur)+1)
	for key, v := range cur {
		next[key] = v
	}
	next[k] = c
	a.requests.Store(&next)
	return c
}

// factory registers fleetgate_ metrics in one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: name, Help: help, Buckets: buckets,
	}, labels)
	f.reg.MustRegister(h)
	return h
}
