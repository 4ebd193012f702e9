package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/configs"
)

// The scrape-time half of the Prometheus sink: values the gateway already
// keeps (connection and request counts, the engine's admission state, the
// caches' counters, the current snapshot's configuration) are read when
// /metrics is scraped, so they cost the hot paths nothing.

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", name), help, labels, nil)
}

var (
	descReady = desc("ready", "1 when the gateway is ready for traffic (/readyz answers 200): configuration loaded, listener up, not draining.")

	descConnsOpen = desc("connections_open", "Device connections open (handshaking, active or idle).")
	descInflight  = desc("requests_in_flight", "Requests being served.")

	descHSInFlight = desc("handshakes_in_flight", "Handshakes admitted and not finished: the depth of the handshake queue (computing or waiting for the client).")
	descHSQueue    = desc("handshake_queue_limit", "The bound on handshakes in flight ([gateway].handshake_queue); beyond it new connections are shed.")
	descHSBusy     = desc("handshake_workers_busy", "CPU slots held by handshakes right now.")
	descHSWorkers  = desc("handshake_workers", "CPU slots for handshakes ([gateway].handshake_workers).")
	descHSCPU      = desc("handshake_cpu_seconds_total", "Time handshakes have held CPU slots (wall time), certificate verdicts included.")

	descVerdictHits   = desc("verdict_cache_hits_total", "Client chain verdicts served from the verdict cache.")
	descVerdictMisses = desc("verdict_cache_misses_total", "Client chain verdicts computed (and cached): verdict cache misses.")
	descTokenHits     = desc("token_cache_hits_total", "Presented session tokens answered from the verified-token cache.")
	descTokenMisses   = desc("token_cache_misses_total", "Presented session tokens verified in full: token cache misses.")

	descConfigInfo = desc("config_info", "The configuration now serving: hash is the SHA-256 of its file. Always 1.", "hash")

	descCAExpiry     = desc("client_ca_expiry_seconds", "Seconds until the earliest NotAfter of a [[client_cas]] upload (negative once expired).", "name")
	descServerExpiry = desc("server_cert_expiry_seconds", "Seconds until an application's server certificate (tls_cert_file leaf) expires.", "app")
	descCRLExpiry    = desc("crl_next_update_seconds", "Seconds until a client CA's CRL reaches its nextUpdate (negative once stale).", "ca", "crl")
)

// scrapeCollector reads the Server's state at scrape time.
type scrapeCollector struct {
	s *Server
	m *promMetrics
}

func newScrapeCollector(s *Server, m *promMetrics) *scrapeCollector {
	return &scrapeCollector{s: s, m: m}
}

// Describe implements prometheus.Collector.
func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descReady, descConnsOpen, descInflight,
		descHSInFlight, descHSQueue, descHSBusy, descHSWorkers, descHSCPU,
		descVerdictHits, descVerdictMisses, descTokenHits, descTokenMisses,
		descConfigInfo, descCAExpiry, descServerExpiry, descCRLExpiry,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}

	gauge(descReady, b2f(s.Ready()))
	gauge(descConnsOpen, float64(s.conns.Load()))
	gauge(descInflight, float64(s.inflight.Load()))

	if s.engine != nil {
		st := s.engine.Stats()
		gauge(descHSInFlight, float64(st.InFlight))
		gauge(descHSQueue, float64(st.Queue))
		gauge(descHSBusy, float64(st.CPUBusy))
		gauge(descHSWorkers, float64(st.Workers))
		counter(descHSCPU, st.CPUTime.Seconds())
	}

	hits, misses := s.verdicts.Stats() // nil-safe: 0, 0 when the cache is disabled
	counter(descVerdictHits, float64(hits))
	counter(descVerdictMisses, float64(misses))
	hits, misses = c.m.tokenCacheStats()
	counter(descTokenHits, float64(hits))
	counter(descTokenMisses, float64(misses))

	snap := s.snap.Load()
	if snap == nil {
		return
	}
	cfg := snap.cfg
	gauge(descConfigInfo, 1, cfg.Hash)
	now := s.now()
	for i := range cfg.ClientCAs {
		ca := &cfg.ClientCAs[i]
		gauge(descCAExpiry, until(ca.ExpiresOn, now), ca.Name)
	}
	for i := range cfg.Applications {
		a := &cfg.Applications[i]
		if leaf := a.Certificate.Leaf; leaf != nil {
			gauge(descServerExpiry, until(leaf.NotAfter, now), a.Name)
		}
	}
	collectCRLExpiry(ch, cfg, now)
}

// collectCRLExpiry emits fleetgate_crl_next_update_seconds{ca, crl}: one
// series per CRL of each [[client_cas]] entry, the seconds until its
// nextUpdate. A CRL without nextUpdate never goes stale and has no series.
func collectCRLExpiry(ch chan<- prometheus.Metric, cfg *configs.Config, now time.Time) {
	for i := range cfg.ClientCAs {
		ca := &cfg.ClientCAs[i]
		for j := range ca.CRLs {
			crl := &ca.CRLs[j]
			if crl.NextUpdate.IsZero() {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descCRLExpiry, prometheus.GaugeValue, until(crl.NextUpdate, now), ca.Name, crl.Name())
		}
	}
}

func until(t, now time.Time) float64 { return t.Sub(now).Seconds() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
