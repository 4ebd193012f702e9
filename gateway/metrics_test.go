package gateway

// Prometheus metrics on the admin listener: what each kind of traffic,
// refusal, reload and revocation counts, and what the sink costs.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics GETs /metrics from the harness's admin listener and parses
// the Prometheus text format.
func scrapeMetrics(t testing.TB, h *harness) scrape {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + h.srv.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return fams
}

// value sums the series of family name whose labels include every
// name/value pair of labels (a histogram counts its observations). found
// is false when no series matches.
func (s scrape) value(name string, labels ...string) (v float64, found bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !hasLabel(m, labels[i], labels[i+1]) {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v, found
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return value == "" // an absent label is the empty value
}

// want is one expectation on a scrape: the series' sum is at least min.
type want struct {
	name   string
	labels []string
	min    float64
}

func w(name string, min float64, labels ...string) want { return want{name, labels, min} }

func (x want) String() string {
	var b strings.Builder
	b.WriteString(x.name)
	b.WriteString("{")
	for i := 0; i+1 < len(x.labels); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", x.labels[i], x.labels[i+1])
	}
	b.WriteString("}")
	return b.String()
}

// expectMetrics scrapes until every expectation holds (handshake events
// reach the observer just after the device sees its handshake end) and
// reports the ones that still fail after a few seconds.
func expectMetrics(t testing.TB, h *harness, wants []want) scrape {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := scrapeMetrics(t, h)
		var failed []string
		for _, x := range wants {
			v, found := s.value(x.name, x.labels...)
			if !found || v < x.min {
				failed = append(failed, fmt.Sprintf("%v = %v (found %v), want >= %v", x, v, found, x.min))
			}
		}
		if len(failed) == 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n  %s", strings.Join(failed, "\n  "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsCountTraffic drives each outcome it can provoke through a real
// gateway and checks the counters that must have moved.
func TestMetricsCountTraffic(t *testing.T) {
	h := newHarness(t)
	p := h.pki

	before := scrapeMetrics(t, h)
	for _, name := range []string{"fleetgate_handshakes_total", "fleetgate_requests_total", "fleetgate_tokens_minted_total"} {
		if v, _ := before.value(name); v != 0 {
			t.Errorf("%s = %v before any traffic", name, v)
		}
	}
	// Series that alerts rely on exist at zero from the start.
	for _, x := range []want{
		w("fleetgate_client_cert_verdicts_total", 0, "app", "iot", "verdict", "revoked"),
		w("fleetgate_handshakes_total", 0, "result", "error", "reason", "shed"),
		w("fleetgate_origin_errors_total", 0, "app", "down", "kind", "unreachable"),
		w("fleetgate_connections_refused_total", 0, "reason", "max_connections"),
	} {
		if _, found := before.value(x.name, x.labels...); !found {
			t.Errorf("%v is not exported before traffic", x)
		}
	}

	steps := []struct {
		name      string
		sni, host string
		dev       *device
		status    int
	}{
		{"valid", hIoT, hIoT, p.sensor1, 200},
		{"valid again (verdict cache hit)", hIoT, hIoT, p.sensor1, 200},
		{"no certificate", hIoT, hIoT, nil, 403},
		{"unknown authority", hIoT, hIoT, p.foreign, 403},
		{"expired", hIoT, hIoT, p.expired, 403},
		{"host differs from SNI", hIoT, hApp, p.sensor1, 421},
		{"origin unreachable", hDown, hDown, p.sensor1, 502},
		{"session", hApp, hApp, p.sensor2, 200},
		{"service auth", hSvc, hSvc, nil, 401},
	}
	var session string
	for _, st := range steps {
		r := h.rawGet(t, st.sni, st.host, "/", st.dev)
		if r.StatusCode != st.status {
			t.Fatalf("%s: status %d, want %d: %s", st.name, r.StatusCode, st.status, r.body)
		}
		if st.name == "session" {
			_, ck := sessionCookieOf(t, r)
			session = ck.Value
		}
	}
	// The session token, presented twice without a certificate: verified
	// once (a token cache miss), then answered from the cache.
	for range 2 {
		if r := h.rawGet(t, hApp, hApp, "/", nil, "Cookie: CF_Authorization="+session); r.StatusCode != 200 {
			t.Fatalf("session cookie: status %d: %s", r.StatusCode, r.body)
		}
	}

	// A ClientHello for a name no site serves.
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, h.tlsConfig("nope.fleet.test", p.sensor1)); err == nil {
		c.Close()
		t.Fatal("a handshake for an unknown server name succeeded")
	}
	// Plain HTTP to the TLS port.
	nc, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(nc, request("GET", hIoT, "/"))
	_, _ = io.Copy(io.Discard, nc)
	nc.Close()

	s := expectMetrics(t, h, []want{
		w("fleetgate_handshakes_total", 5, "result", "ok", "reason", "valid"),
		w("fleetgate_handshakes_total", 3, "result", "ok", "reason", "missing"),
		w("fleetgate_handshakes_total", 1, "result", "ok", "reason", "unknown_authority"),
		w("fleetgate_handshakes_total", 1, "result", "ok", "reason", "expired"),
		w("fleetgate_handshakes_total", 1, "result", "error", "reason", "unknown_sni"),
		w("fleetgate_handshakes_total", 1, "result", "error", "reason", "not_tls"),
		w("fleetgate_client_cert_verdicts_total", 3, "app", "iot", "verdict", "valid"),
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "missing"),
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "unknown_authority"),
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "expired"),
		w("fleetgate_handshake_duration_seconds", 10, "result", "ok"),
		w("fleetgate_handshake_duration_seconds", 2, "result", "error"),
		w("fleetgate_connections_accepted_total", 13),

		w("fleetgate_requests_total", 2, "app", "iot", "decision", "non_identity", "policy", "sensor-0001 only", "status", "200"),
		w("fleetgate_requests_total", 3, "app", "iot", "decision", "deny", "policy", "", "status", "403"),
		w("fleetgate_requests_total", 1, "app", "iot", "decision", "none", "policy", "", "status", "421"),
		w("fleetgate_requests_total", 1, "app", "down", "decision", "non_identity", "policy", "fleet devices", "status", "502"),
		w("fleetgate_requests_total", 3, "app", "app", "status", "200"),
		w("fleetgate_requests_total", 1, "app", "svc", "decision", "deny", "status", "401"),
		w("fleetgate_request_duration_seconds", 2, "app", "iot"),
		w("fleetgate_origin_duration_seconds", 1, "app", "down"),
		w("fleetgate_origin_errors_total", 1, "app", "down", "kind", "unreachable"),

		w("fleetgate_tokens_minted_total", 2, "app", "iot", "kind", "no_duration"),
		w("fleetgate_tokens_minted_total", 1, "app", "app", "kind", "session"),
		w("fleetgate_verdict_cache_hits_total", 1),
		w("fleetgate_verdict_cache_misses_total", 1),
		w("fleetgate_token_cache_hits_total", 1),
		w("fleetgate_token_cache_misses_total", 1),

		w("fleetgate_handshake_workers", 1),
		w("fleetgate_handshake_queue_limit", 1),
		w("fleetgate_ready", 1),
		w("fleetgate_config_info", 1, "hash", h.srv.snap.Load().cfg.Hash),
		w("fleetgate_config_last_reload_successful", 1),
		w("fleetgate_config_last_reload_success_timestamp_seconds", 1),
		w("go_goroutines", 1),
	})
	// The requests that went wrong were not counted as anything else.
	if v, _ := s.value("fleetgate_requests_total", "status", "500"); v != 0 {
		t.Errorf("requests with status 500: %v", v)
	}
	if v, _ := s.value("fleetgate_tokens_minted_total", "app", "iot", "kind", "session"); v != 0 {
		t.Errorf("session tokens minted for a no-duration application: %v", v)
	}
	for _, name := range []string{"fleetgate_handshakes_in_flight", "fleetgate_handshake_workers_busy", "fleetgate_connections_open", "fleetgate_requests_in_flight", "fleetgate_handshake_cpu_seconds_total"} {
		if _, found := s.value(name); !found {
			t.Errorf("%s is not exported", name)
		}
	}
	if v, _ := s.value("fleetgate_handshake_cpu_seconds_total"); v <= 0 {
		t.Errorf("fleetgate_handshake_cpu_seconds_total = %v after handshakes", v)
	}
}

// TestMetricsExpiry: the seconds until each client CA and server
// certificate expires are exported, positive, per name.
func TestMetricsExpiry(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.SecondCA = true })
	s := scrapeMetrics(t, h)
	tests := []struct {
		name  string
		label []string
		left  time.Duration // roughly, at most this
	}{
		{"client CA fleet", []string{"name", "fleet"}, 10 * 365 * 24 * time.Hour},
		{"client CA fleet-2", []string{"name", "fleet-2"}, 10 * 365 * 24 * time.Hour},
	}
	for _, tc := range tests {
		v, found := s.value("fleetgate_client_ca_expiry_seconds", tc.label...)
		if !found || v <= 30*24*3600 || v > tc.left.Seconds() {
			t.Errorf("%s: fleetgate_client_ca_expiry_seconds = %v (found %v)", tc.name, v, found)
		}
	}
	for _, app := range []string{"iot", "app", "svc", "fwd", "down"} {
		v, found := s.value("fleetgate_server_cert_expiry_seconds", "app", app)
		want := time.Until(h.pki.server.Cert.NotAfter).Seconds()
		if !found || v <= 0 || v > want+60 || v < want-60 {
			t.Errorf("fleetgate_server_cert_expiry_seconds{app=%q} = %v (found %v), want about %v", app, v, found, want)
		}
	}
}

// TestMetricsConnectionRefusals provokes shedding (handshake queue full)
// and max_connections, with a queue of one handshake and two connections.
func TestMetricsConnectionRefusals(t *testing.T) {
	v := newHarness(t).variantWith(t, func(c *fileConfig) {
		c.Gateway.HandshakeQueue, c.Gateway.MaxConnections = 1, 2
		// A's handshake must still be waiting when the test closes it,
		// however slowly a loaded machine runs the steps before.
		c.Gateway.HandshakeTimeout = "60s"
	})

	// D: a completed handshake, kept open (one connection, no handshake).
	d := v.dial(t, hApp, v.pki.sensor1) // app keeps connections alive (iot closes them)
	d.send(request("GET", hApp, "/"))
	if r := d.read("GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	// A: a TCP connection that never says hello holds the only queue place.
	a, err := net.DialTimeout("tcp", v.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	expectMetrics(t, v, []want{w("fleetgate_handshakes_in_flight", 1), w("fleetgate_connections_open", 2)})

	refused(t, v.addr) // a third connection: max_connections
	expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 1, "reason", "max_connections")})

	_ = d.c.Close() // back to one connection: the next one gets past max_connections…
	testkit.WaitFor(t, "the keep-alive connection to close", 5*time.Second, func() bool { return v.srv.conns.Load() == 1 })
	refused(t, v.addr) // …and finds the handshake queue full
	s := expectMetrics(t, v, []want{
		w("fleetgate_connections_refused_total", 1, "reason", "shed"),
		w("fleetgate_handshakes_total", 1, "result", "error", "reason", "shed"),
	})
	if n, _ := s.value("fleetgate_connections_refused_total", "reason", "max_connections"); n != 1 {
		t.Errorf("max_connections refusals = %v, want 1", n)
	}
	if n, _ := s.value("fleetgate_connections_accepted_total"); n != 2 {
		t.Errorf("connections accepted = %v, want 2", n)
	}

	_ = a.Close() // the stalled handshake ends: the peer closed it
	expectMetrics(t, v, []want{w("fleetgate_handshakes_total", 1, "result", "error", "reason", "closed")})
}

// TestMetricsReload: reloads are counted by result, the serving
// configuration's hash follows the successful ones, and the token cache
// counters survive the new snapshot's new cache.
func TestMetricsReload(t *testing.T) {
	h := newHarness(t)
	first := h.srv.snap.Load().cfg.Hash

	r := h.rawGet(t, hApp, hApp, "/", h.pki.sensor1)
	_, ck := sessionCookieOf(t, r)
	for range 2 {
		h.rawGet(t, hApp, hApp, "/", nil, "Cookie: CF_Authorization="+ck.Value)
	}
	expectMetrics(t, h, []want{w("fleetgate_token_cache_hits_total", 1), w("fleetgate_token_cache_misses_total", 1)})

	cfg := h.config()
	cfg.ClientCAs = append(cfg.ClientCAs, secondFleetCA())
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	second := h.srv.snap.Load().cfg.Hash
	if second == first {
		t.Fatal("the reloaded configuration has the same hash")
	}
	h.writeFile("fleetgate.toml", []byte("[gateway]\nlisten = 12\n"))
	if err := h.srv.Reload(); err == nil {
		t.Fatal("a broken configuration was accepted")
	}
	s := expectMetrics(t, h, []want{
		w("fleetgate_config_reloads_total", 1, "result", "ok"),
		w("fleetgate_config_reloads_total", 1, "result", "failed"),
		w("fleetgate_config_info", 1, "hash", second),
		w("fleetgate_client_ca_expiry_seconds", 1, "name", "fleet-2"),
		// The new snapshot's token cache is empty; the counters do not go back.
		w("fleetgate_token_cache_hits_total", 1),
		w("fleetgate_token_cache_misses_total", 1),
	})
	if v, found := s.value("fleetgate_config_info", "hash", first); found {
		t.Errorf("the replaced configuration's hash is still exported (%v)", v)
	}
	if v, _ := s.value("fleetgate_config_last_reload_successful"); v != 0 {
		t.Errorf("fleetgate_config_last_reload_successful = %v after a refused reload", v)
	}
	if n := len(s["fleetgate_config_info"].GetMetric()); n != 1 {
		t.Errorf("fleetgate_config_info has %d series, want 1", n)
	}
}

// TestNoAdminNoMetrics: without an admin listener nothing can scrape, so
// the gateway counts nothing.
func TestNoAdminNoMetrics(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Gateway.AdminListen = "" // no admin listener
	h.writeFile("noadmin.toml", marshalConfig(t, cfg))
	s, err := New(Options{Load: func() (*configs.Config, error) { return configs.Load(filepath.Join(h.dir, "noadmin.toml")) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.metrics.(noMetrics); !ok || s.registry != nil {
		t.Errorf("metrics sink %T, registry %v: want noMetrics and none", s.metrics, s.registry)
	}
}

// benchExchange is a request as the metrics sink sees it: allowed by a
// policy, answered 200 by the origin.
func benchExchange() *exchange {
	return &exchange{
		app:       &application{name: "iot"},
		decided:   true,
		decision:  policy.Decision{Allowed: true, Action: policy.NonIdentity, Policy: "sensor-0001 only"},
		status:    200,
		originDur: 3 * time.Millisecond,
	}
}

// BenchmarkMetricsRequest is the per-request cost of the metrics: one
// requests_total increment and two histogram observations (request and
// origin duration), with the label children resolved.
func BenchmarkMetricsRequest(b *testing.B) {
	sinks := []struct {
		name string
		m    metrics
	}{
		{"none", noMetrics{}},
		{"prometheus", newPromMetrics(&Server{now: time.Now})},
	}
	for _, sk := range sinks {
		x := benchExchange()
		sk.m.request(x, 4*time.Millisecond) // resolves the children, as the first request does
		b.Run(sk.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sk.m.request(x, 4*time.Millisecond)
			}
		})
		b.Run(sk.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				x := benchExchange()
				for pb.Next() {
					sk.m.request(x, 4*time.Millisecond)
				}
			})
		})
	}
}

// BenchmarkMetricsHandshake is the per-handshake cost: the handshakes_total
// and client_cert_verdicts_total increments and one histogram observation.
func BenchmarkMetricsHandshake(b *testing.B) {
	m := newPromMetrics(&Server{now: time.Now})
	ev := tlsengine.HandshakeEvent{
		Reason:   tlsengine.ReasonOK,
		Site:     &tlsengine.Site{App: &application{name: "iot"}},
		Verdict:  &verdict.Verdict{Kind: verdict.Valid},
		Duration: 900 * time.Microsecond,
	}
	m.Handshake(ev)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Handshake(ev)
		}
	})
}

// TestMetricsRequestNoAlloc pins the hot path's cost: counting a request
// whose series exists allocates nothing.
func TestMetricsRequestNoAlloc(t *testing.T) {
	m := newPromMetrics(&Server{now: time.Now})
	x := benchExchange()
	m.request(x, time.Millisecond)
	ev := tlsengine.HandshakeEvent{Reason: tlsengine.ReasonOK, Site: &tlsengine.Site{App: x.app},
		Verdict: &verdict.Verdict{Kind: verdict.Expired}, Duration: time.Millisecond}
	m.Handshake(ev)
	if n := testing.AllocsPerRun(100, func() { m.request(x, time.Millisecond) }); n != 0 {
		t.Errorf("request: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { m.Handshake(ev) }); n != 0 {
		t.Errorf("Handshake: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { m.tokenMinted("iot", "no_duration") }); n != 0 {
		t.Errorf("tokenMinted: %v allocations", n)
	}
	// Every verdict kind and handshake failure reason has its series.
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, f := range fams {
		if f.GetName() != "fleetgate_handshakes_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "reason" {
					reasons = append(reasons, l.GetValue())
				}
			}
		}
	}
	for _, r := range append(slices.Clone(handshakeFailures), "valid", "missing", "revoked", "bad_usage") {
		if !slices.Contains(reasons, r) {
			t.Errorf("no fleetgate_handshakes_total series with reason %q", r)
		}
	}
}

// TestMetricsRevokedAndBadUsage: the refusal reasons the main metrics test
// cannot provoke move their counters too: a revoked certificate (CRL), a
// certificate without clientAuth usage, and a failed handshake (a client
// that only speaks TLS 1.1).
func TestMetricsRevokedAndBadUsage(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	h.writeCRL(h.pki.sensor2)
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if r := h.rawGet(t, hIoT, hIoT, "/", h.pki.sensor2); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "certificate revoked") {
		t.Fatalf("revoked device: status %d %q", r.StatusCode, r.body)
	}
	srvOnly := h.pki.inter.MustIssue(pki.Options{CommonName: "sensor-0001", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	badUsage := &device{name: "sensor-0001", cert: srvOnly, tls: srvOnly.TLSCertificate(h.pki.inter)}
	if r := h.rawGet(t, hIoT, hIoT, "/", badUsage); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "client authentication") {
		t.Fatalf("certificate without clientAuth: status %d %q", r.StatusCode, r.body)
	}
	old := h.tlsConfig(hIoT, h.pki.sensor1)
	old.MinVersion, old.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	if c, err := tls.Dial("tcp", h.addr, old); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	expectMetrics(t, h, []want{
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "revoked"),
		w("fleetgate_handshakes_total", 1, "result", "ok", "reason", "revoked"),
		w("fleetgate_client_cert_verdicts_total", 1, "app", "iot", "verdict", "bad_usage"),
		w("fleetgate_handshakes_total", 1, "result", "ok", "reason", "bad_usage"),
		w("fleetgate_handshakes_total", 1, "result", "error", "reason", "tls_error"),
		w("fleetgate_requests_total", 2, "app", "iot", "status", "403"),
	})
}

// TestMetricsHandshakeTimeout: a client that sends half a ClientHello and
// stalls is cut off at handshake_timeout and counted as a timeout.
func TestMetricsHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.HandshakeTimeout = "300ms" })
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A handshake record header announcing 512 bytes, and only 3 of them.
	if _, err := c.Write([]byte{22, 3, 1, 2, 0, 1, 0, 1}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the stalled connection was not closed: %v", err)
	}
	expectMetrics(t, h, []want{w("fleetgate_handshakes_total", 1, "result", "error", "reason", "timeout")})
}

// TestMetricsDocumented: every fleetgate_ family the sink exports, those of
// tcp and mqtt applications included, is in docs/metrics.md, and so is
// every kind of minted token.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := newPromMetrics(&Server{now: time.Now})
	m.request(benchExchange(), time.Millisecond)
	m.tcpOpened("iot").closed("idle")
	m.tcpRefused("iot", policy.ReasonNoPolicyMatched)
	m.mqttRefused("iot", policy.ReasonNoPolicyMatched)
	m.tokenMinted("iot", "tcp") // what a tcp or mqtt application's relay mints
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if name := f.GetName(); strings.HasPrefix(name, "fleetgate_") && !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("%s is exported but not in docs/metrics.md", name)
		}
	}
	for _, kind := range []string{"session", "no_duration", "tcp"} {
		if !strings.Contains(string(doc), "`"+kind+"`") {
			t.Errorf("tokens_minted_total kind %q is not in docs/metrics.md", kind)
		}
	}
}
