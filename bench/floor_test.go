package bench

import (
	"testing"
)

// BenchmarkCryptoFloor measures the unavoidable cryptography of one fresh
// TLS 1.3 mTLS request on the server side, piece by piece and in sum (see
// FloorPieces). Besides ns/op it reports cpu-ns/op, the benchmark thread's
// CPU time, which is the figure to compare with server CPU per request.
//
//	go test -run '^$' -bench CryptoFloor -benchtime 2s ./bench/
func BenchmarkCryptoFloor(b *testing.B) {
	pieces, err := FloorPieces()
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range pieces {
		b.Run(p.Name, BenchFunc(p.Op))
	}
}

func TestFloorPieces(t *testing.T) {
	pieces, err := FloorPieces()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"x25519", "sign", "verify", "token", "chain", "Sum"}
	if len(pieces) != len(want) {
		t.Fatalf("%d pieces, want %d", len(pieces), len(want))
	}
	for i, p := range pieces {
		if p.Name != want[i] {
			t.Errorf("piece %d is %q, want %q", i, p.Name, want[i])
		}
		if p.What == "" {
			t.Errorf("piece %q has no description", p.Name)
		}
		if err := p.Op(); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
}
