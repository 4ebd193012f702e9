package gateway

import (
	"net/http"
	"testing"
)

// BenchmarkGatewayRequest: one request through the real gateway over
// loopback, the device's client, the gateway and the origin all in this
// process. "fresh" is a no-duration application (a full mTLS handshake per
// request, the connection closes after it), "keepalive" a 24h session on
// one connection. It measures the whole path, one request at a time, for
// benchstat comparisons of a change on one machine (go test -run '^$'
// -bench GatewayRequest -count 10 ./gateway/): ns/op is mostly the latency
// of waking each party in turn, allocs/op the whole path's allocations.
// The gateway's own CPU per request under load, apart from the client's,
// is what bench/compare.sh measures.
func BenchmarkGatewayRequest(b *testing.B) {
	h := newHarness(b)
	for _, tc := range []struct{ name, host string }{{"fresh", hIoT}, {"keepalive", hApp}} {
		b.Run(tc.name, func(b *testing.B) {
			c := h.client(h.pki.sensor1)
			url := href(tc.host, "/")
			b.ReportAllocs()
			for b.Loop() {
				if r := h.get(b, c, url); r.StatusCode != http.StatusOK {
					b.Fatalf("status %d: %s", r.StatusCode, r.body)
				}
			}
		})
	}
}
