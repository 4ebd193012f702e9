package policy

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// benchApp is a realistic application: a bypass that does not match, a
// service-auth policy for some sensors, a deny list, then the fleet allow.
func benchApp() (*Application, map[string]*Input) {
	a := app(24*time.Hour,
		pol("health", Bypass, sels(selCN("health-probe")), nil, nil),
		pol("service", NonIdentity, sels(selCN("svc-0001"), selCN("svc-0002")), sels(selValid), nil),
		pol("blocked", Deny, sels(selCN("sensor-9997"), selCN("sensor-9998"), selCN("sensor-9999")), nil, nil),
		withDuration(pol("fleet devices", Allow, sels(selValid), sels(selValid), sels(selCN("sensor-6666"))), time.Hour),
	)
	tok := sessionToken(a.AUD, "sensor-0001", fp1)
	return a, map[string]*Input{
		"cert":     {Cert: validCert("sensor-0001", fp1), Now: t0},
		"token":    {Cert: &verdict.Verdict{}, Token: tok, Now: t0},
		"denied":   {Cert: validCert("sensor-9999", fp2), Now: t0},
		"expired":  {Cert: badCert(verdict.Expired, "sensor-0001"), Now: t0},
		"no-match": {Cert: validCert("sensor-6666", fp2), Now: t0},
	}
}

func BenchmarkEvaluate(b *testing.B) {
	a, inputs := benchApp()
	for _, name := range []string{"cert", "token", "denied", "expired", "no-match"} {
		in := inputs[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Evaluate(in)
			}
		})
	}
}

func BenchmarkMint(b *testing.B) {
	for _, tt := range algKeys(b) {
		b.Run(tt.alg, func(b *testing.B) {
			c := baseClaims()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tt.ks.Mint(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewClaimsMint is what the gateway does per admitted request.
func BenchmarkNewClaimsMint(b *testing.B) {
	testKeys(b)
	ks := mustKeySet(b, keyES)
	a, inputs := benchApp()
	in := inputs["cert"]
	d := a.Evaluate(in)
	b.ReportAllocs()
	for b.Loop() {
		c, err := a.NewClaims(testIssuer, in, d)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ks.Mint(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, tt := range algKeys(b) {
		tok := mustMint(b, tt.ks, baseClaims())
		b.Run(tt.alg+"/cold", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tt.ks.Verify(tok, testAUD, testIssuer, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tt.alg+"/cached", func(b *testing.B) {
			cache := NewTokenCache(1024)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tt.ks.VerifyCached(cache, tok, testAUD, testIssuer, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyCachedParallel: many devices' cookies, all cores.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	testKeys(b)
	ks := mustKeySet(b, keyEd)
	toks := make([]string, 1024)
	for i := range toks {
		c := baseClaims()
		c.IdentityNonce = fmt.Sprintf("%032x", i)
		toks[i] = mustMint(b, ks, c)
	}
	cache := NewTokenCache(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := ks.VerifyCached(cache, toks[i%len(toks)], testAUD, testIssuer, t0); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkClaimsPayload is the mint's non-crypto part: the claims of a
// device request encoded as the token's payload (JSON, then base64url).
func BenchmarkClaimsPayload(b *testing.B) {
	testKeys(b)
	a, inputs := benchApp()
	in := inputs["cert"]
	d := a.Evaluate(in)
	b.ReportAllocs()
	for b.Loop() {
		c, err := a.NewClaims(testIssuer, in, d)
		if err != nil {
			b.Fatal(err)
		}
		var scratch [1024]byte
		_ = b64.AppendEncode(make([]byte, 0, 1024), c.appendJSON(scratch[:0]))
	}
}
