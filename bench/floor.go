package bench

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// FloorPiece is one unavoidable cryptographic operation of a fresh TLS 1.3
// mTLS request on the server side.
type FloorPiece struct {
	// Name is the sub-benchmark name: x25519, sign, verify, token, chain, or
	// Sum for all of them in one operation.
	Name string
	// What says what the piece stands for in the handshake.
	What string
	// Op performs the operation once.
	Op func() error
}

// FloorPieces builds the pieces of the crypto floor, then Sum, their
// sequence. Each runs once here, so a broken setup is an error now rather
// than a benchmark that measures a failure:
//
//   - x25519: the server's ECDHE key share (key generation) and the shared
//     secret with the client's share (crypto/ecdh);
//   - sign: ECDSA P-256 signature of the server's CertificateVerify;
//   - verify: ECDSA P-256 verification of the client's CertificateVerify;
//   - token: one ES256 token signature (policy.KeySet.Mint);
//   - chain: cold verification of the device chain, P-256 leaf and
//     intermediate against the site's root (tlsengine.VerifyChain): two
//     more ECDSA verifications plus path building.
//
// Left out, because they are small or avoidable: parsing the client's
// certificates, the transcript hashes, HKDF and the record encryption. The
// floor is a lower bound.
func FloorPieces() ([]FloorPiece, error) {
	// The key exchange: the client's share is fixed, the server's is new
	// for every handshake.
	peer, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	peerPub := peer.PublicKey()
	x25519 := func() error {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		_, err = k.ECDH(peerPub)
		return err
	}

	// CertificateVerify: a signature over a transcript hash, each way.
	root, err := pki.NewRoot(pki.Root("floor root"))
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	inter, err := root.Issue(pki.Intermediate("floor intermediate"))
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	server, err := inter.Issue(pki.Server("devices.fleet.test"))
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	device, err := inter.Issue(pki.Device("sensor-0001"))
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	digest := sha256.Sum256([]byte("TLS 1.3, client CertificateVerify transcript stand-in"))
	sign := func() error {
		_, err := server.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
		return err
	}
	devSig, err := device.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	devPub, ok := device.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("bench: floor: device key is %T, want ECDSA", device.Cert.PublicKey)
	}
	verify := func() error {
		if !ecdsa.VerifyASN1(devPub, digest[:], devSig) {
			return fmt.Errorf("CertificateVerify signature does not verify")
		}
		return nil
	}

	// The token minted for the request.
	tokenKey, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	ks, err := policy.NewKeySet(tokenKey)
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	claims := policy.NewClaims(policy.ClaimsParams{
		AUD: strings.Repeat("ab", 32), Issuer: "https://access.fleet.test", CommonName: "sensor-0001",
		CertSHA256: strings.Repeat("cd", 32), Policy: "fleet devices", Now: time.Now(),
	})
	token := func() error {
		_, err := ks.Mint(claims)
		return err
	}

	// The device chain as the site sees it, verified without the cache.
	site := &tlsengine.Site{Name: "devices.fleet.test", Roots: pki.Pool(root), Intermediates: pki.Pool(inter), Generation: 1}
	chain := []*x509.Certificate{device.Cert, inter.Cert}
	chainOp := func() error {
		if v := tlsengine.VerifyChain(site, chain, time.Time{}); v.Kind != verdict.Valid {
			return fmt.Errorf("device chain: verdict %s (%s)", v.Kind, v.Detail)
		}
		return nil
	}

	pieces := []FloorPiece{
		{"x25519", "ECDHE: X25519 key generation and shared secret", x25519},
		{"sign", "ECDSA P-256 sign: the server's CertificateVerify", sign},
		{"verify", "ECDSA P-256 verify: the client's CertificateVerify", verify},
		{"token", "ES256 token signature (policy.KeySet.Mint)", token},
		{"chain", "cold chain verification, P-256 leaf + intermediate (tlsengine.VerifyChain)", chainOp},
	}
	ops := make([]func() error, len(pieces))
	for i, p := range pieces {
		ops[i] = p.Op
	}
	pieces = append(pieces, FloorPiece{"Sum", "all of the above, in sequence", func() error {
		for _, op := range ops {
			if err := op(); err != nil {
				return err
			}
		}
		return nil
	}})
	for _, p := range pieces {
		if err := p.Op(); err != nil {
			return nil, fmt.Errorf("bench: floor: %s: %w", p.Name, err)
		}
	}
	return pieces, nil
}

// CPUMetric is the unit of the CPU time per operation that floor
// benchmarks report: the benchmark goroutine's OS thread CPU time (user +
// system) per op, which, unlike ns/op, does not grow when another process
// takes the core.
const CPUMetric = "cpu-ns/op"

// BenchFunc returns a benchmark of op that also reports CPUMetric.
func BenchFunc(op func() error) func(*testing.B) {
	return func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		b.ReportAllocs()
		c0 := threadCPU()
		for i := 0; i < b.N; i++ {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		c1 := threadCPU()
		b.ReportMetric(float64(c1-c0)/float64(b.N), CPUMetric)
	}
}

// FloorResult is one measured piece.
type FloorResult struct {
	Name    string  `json:"name"`
	What    string  `json:"what"`
	NsPerOp float64 `json:"ns_per_op"`
	// CPUNsPerOp is the thread CPU time per op (see CPUMetric).
	CPUNsPerOp float64 `json:"cpu_ns_per_op"`
	N          int     `json:"n"`
}

// Floor is the measured crypto floor.
type Floor struct {
	Pieces []FloorResult `json:"pieces"` // each piece, then Sum
	// SumUS is the Sum piece in microseconds of CPU: the floor that the
	// comparison divides server CPU per request by.
	SumUS float64 `json:"sum_us"`
}

// MeasureFloor measures every piece of FloorPieces in this process with
// testing.Benchmark (about a second each).
func MeasureFloor() (*Floor, error) {
	pieces, err := FloorPieces()
	if err != nil {
		return nil, err
	}
	f := &Floor{}
	for _, p := range pieces {
		r := testing.Benchmark(BenchFunc(p.Op))
		if r.N == 0 {
			return nil, fmt.Errorf("bench: floor: %s: the benchmark failed", p.Name)
		}
		fr := FloorResult{Name: p.Name, What: p.What, NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N),
			CPUNsPerOp: r.Extra[CPUMetric], N: r.N}
		f.Pieces = append(f.Pieces, fr)
		if p.Name == "Sum" {
			f.SumUS = fr.CPUNsPerOp / 1e3
		}
	}
	return f, nil
}

// WriteText writes the floor as a table.
func (f *Floor) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "crypto floor of one fresh TLS 1.3 mTLS request, server side (%s, %s/%s, GOMAXPROCS %d)\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "  %-7s %10s %10s  %s\n", "piece", "CPU µs/op", "wall µs/op", "what")
	for _, p := range f.Pieces {
		fmt.Fprintf(&b, "  %-7s %10.1f %10.1f  %s\n", p.Name, p.CPUNsPerOp/1e3, p.NsPerOp/1e3, p.What)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
