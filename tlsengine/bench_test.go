package tlsengine

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/tlsengine/enginetest"
)

// Handshake benchmarks: full mTLS (TLS 1.3, X25519, ECDSA P-256 server and
// device leaves, each sent with its intermediate), no resumption.
//
// BenchmarkHandshakeMTLS drives the engine over the in-memory event loop with
// a Go tls client in the same process; ns/op and allocs/op cover both sides.
// server-ns/op is the time the server held its CPU slot (handshake plus
// verdict): the server's share, measured by the engine itself.
// BenchmarkHandshakeStdlibPair runs the same handshake between two plain
// crypto/tls Conns over net.Pipe, verdict included, as the baseline: the
// difference between the two is the engine's own overhead.
//
//	go test -run '^$' -bench 'Handshake(MTLS|StdlibPair)' -benchmem -benchtime 2s ./tlsengine/

// benchObserver signals each finished handshake.
type benchObserver struct{ done chan HandshakeEvent }

func (o benchObserver) Handshake(ev HandshakeEvent) { o.done <- ev }

func benchClientConfig(f *teFixture) *tls.Config {
	conf := f.client(teDevices, &f.deviceTLS)
	conf.MinVersion = tls.VersionTLS13
	conf.CurvePreferences = []tls.CurveID{tls.X25519}
	return conf
}

func BenchmarkHandshakeMTLS(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache *VerdictCache // nil: every chain verified
	}{
		{"cold", nil},
		{"warm", NewVerdictCache(1024)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := fixture(b)
			obs := benchObserver{done: make(chan HandshakeEvent, 1)}
			e, err := NewEngine(Config{Sites: f.sites(b, teDevices), Verifier: bc.cache, Observer: obs})
			if err != nil {
				b.Fatal(err)
			}
			loop := enginetest.NewLoop()
			defer loop.Close()
			conf := benchClientConfig(f)
			one := func() {
				mt, cc, err := memOpen(b, e, loop)
				if err != nil {
					b.Fatal(err)
				}
				client := tls.Client(cc, conf)
				if err := client.Handshake(); err != nil {
					b.Fatal(err)
				}
				ev := <-obs.done
				if ev.Reason != ReasonOK || !ev.Verdict.OK() || ev.Version != tls.VersionTLS13 {
					b.Fatalf("handshake: %s %v", ev.Reason, ev.Err)
				}
				_ = mt.Close()
			}
			one() // warms the cache in the warm case
			cpu0 := e.Stats().CPUTime
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				one()
			}
			b.StopTimer()
			b.ReportMetric(float64(e.Stats().CPUTime-cpu0)/float64(b.N), "server-ns/op")
		})
	}
}

func BenchmarkHandshakeStdlibPair(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache *VerdictCache
	}{
		{"cold", nil},
		{"warm", NewVerdictCache(1024)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := fixture(b)
			site, _ := f.sites(b, teDevices).Lookup(teDevices)
			srvConf := buildSiteConfig(site)
			clientConf := benchClientConfig(f)
			one := func() {
				a, c := net.Pipe()
				srv := tls.Server(a, srvConf)
				errc := make(chan error, 1)
				go func() {
					err := srv.Handshake()
					if err == nil {
						v := bc.cache.Verdict(site, srv.ConnectionState().PeerCertificates, time.Now())
						if !v.OK() {
							err = net.ErrClosed
						}
					}
					errc <- err
				}()
				client := tls.Client(c, clientConf)
				if err := client.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				_ = a.Close()
				_ = c.Close()
			}
			one()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				one()
			}
		})
	}
}
