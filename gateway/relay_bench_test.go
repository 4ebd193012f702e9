package gateway

import (
	"crypto/tls"
	"io"
	"testing"
	"time"
)

// BenchmarkRelayEcho: one 64 B message through a tcp application's relay
// and back, over loopback, the device, the gateway and the echo origin all
// in this process, on one kept connection. Like BenchmarkGatewayRequest it
// is for benchstat comparisons of a change on one machine (go test -run
// '^$' -bench RelayEcho -count 10 ./gateway/): ns/op is mostly the latency
// of waking each party in turn, allocs/op the allocations of the device's
// client, the relay and the origin together (the relay's own share is what
// a heap profile of it shows). The relay's CPU per echo under load, apart
// from its peers, is what the relay rows of bench/compare.sh measure.
func BenchmarkRelayEcho(b *testing.B) {
	f := newTCPFixture(b)
	benchEcho(b, f, tEcho)
}

// BenchmarkRelayEchoTLSOrigin is BenchmarkRelayEcho through a tls:// origin:
// what the gateway's TLS to its origin (and the origin's own, in this
// process too) adds to an echo.
func BenchmarkRelayEchoTLSOrigin(b *testing.B) {
	op := newOriginPKI(b)
	origin, _ := startTLSRelayOrigin(b, op.root, []string{"127.0.0.1"}, false, func(c *tls.Conn) { _, _ = io.Copy(c, c) })
	f := newTCPFixture(b, lifeApp("tls-echo", "tlsecho.tcp.test", tlsURL(origin), func(a *appSection) {
		a.OriginCAFile = op.caFile
	}))
	benchEcho(b, f, "tlsecho.tcp.test")
}

// benchEcho echoes 64 B messages through the tcp application of domain on
// one kept connection.
func benchEcho(b *testing.B, f *tcpFixture, domain string) {
	c, err := f.dialTCP(b, domain, f.pki.sensor1)
	if err != nil {
		b.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{}) // the benchmark may run longer than the dial's deadline
	msg, got := make([]byte, 64), make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
	if string(got) != string(msg) {
		b.Fatalf("the last echo differs: %x", got)
	}
}
