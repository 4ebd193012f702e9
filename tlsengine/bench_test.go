package tlsengine

import (
	"crypto/tls"
	"fmt"
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

// BenchmarkReadRecord is the event loop's work for one small record from a
// device after the handshake, as a relay or a keep-alive connection does it
// per message: Feed the record, then Read until ErrWouldBlock. The records
// are encrypted by a Go client beforehand, outside the timer, and held in
// memory (86 B each, b.N of them: each carries its own sequence number).
//
//	go test -run '^$' -bench ReadRecord -benchmem -count 10 ./tlsengine/
func BenchmarkReadRecord(b *testing.B) {
	e, loop, f := memEngine(b, nil)
	mt, gc, client := gatherHandshake(b, e, loop, benchClientConfig(f))
	msg := make([]byte, 64)
	gc.hold()
	for range b.N {
		if _, err := client.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	gc.mu.Lock()
	held := gc.held
	gc.mu.Unlock()
	const recLen = recordHeaderLen + 64 + 1 + 16 // header, data, content type, tag
	if len(held) != b.N*recLen {
		b.Fatalf("client wrote %d bytes for %d records, want %d each", len(held), b.N, recLen)
	}
	c := mt.conn
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	loop.Post(func() { // Feed and Read belong to the loop
		var buf [16 << 10]byte
		for i := range b.N {
			if err := c.Feed(held[i*recLen : (i+1)*recLen]); err != nil {
				done <- err
				return
			}
			n, err := c.Read(buf[:])
			if n != len(msg) || err != nil {
				done <- fmt.Errorf("record %d: read %d, %v", i, n, err)
				return
			}
			if _, err := c.Read(buf[:]); err != ErrWouldBlock {
				done <- fmt.Errorf("record %d: second read: %v, want ErrWouldBlock", i, err)
				return
			}
		}
		done <- nil
	})
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}
