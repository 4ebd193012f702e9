package policy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
)

func ExampleApplication_Evaluate() {
	validCert, _ := policy.ParseSelector("valid_certificate", true)
	blocked, _ := policy.ParseSelector("common_name", "sensor-9999")
	probe, _ := policy.ParseSelector("common_name", "health-probe")

	app := &policy.Application{
		Name:            "telemetry",
		Domain:          "devices.fleet.test",
		SessionDuration: 24 * time.Hour,
		Policies: []policy.Policy{
			{Name: "fleet devices", Action: policy.Allow,
				Include: []policy.Selector{validCert}, Exclude: []policy.Selector{blocked}},
			// Listed last, evaluated first: bypass comes before allow.
			{Name: "health", Action: policy.Bypass, Include: []policy.Selector{probe}},
		},
	}
	if err := app.Compile(); err != nil {
		panic(err)
	}

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, in := range []policy.Input{
		{Cert: &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "sensor-0001"}}, Now: now},
		{Cert: &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "sensor-9999"}}, Now: now},
		{Cert: &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "health-probe"}}, Now: now},
		{Cert: &verdict.Verdict{Kind: verdict.Expired, Identity: verdict.Identity{CommonName: "sensor-0002"}}, Now: now},
		{Now: now},
	} {
		d := app.Evaluate(&in)
		fmt.Printf("allowed=%v mint=%v session=%v reason=%s\n", d.Allowed, d.Mint, d.SessionDuration, d.Reason)
	}
	// Output:
	// allowed=true mint=true session=24h0m0s reason=allowed by policy "fleet devices"
	// allowed=false mint=false session=0s reason=no policy matched
	// allowed=true mint=false session=0s reason=allowed by policy "health"
	// allowed=false mint=false session=0s reason=certificate expired
	// allowed=false mint=false session=0s reason=no client certificate
}

func ExampleKeySet_Mint() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys, err := policy.NewKeySet(key) // ES256
	if err != nil {
		panic(err)
	}
	validCert, _ := policy.ParseSelector("valid_certificate", true)
	app := &policy.Application{Name: "telemetry", SessionDuration: time.Hour,
		Policies: []policy.Policy{{Name: "fleet devices", Action: policy.Allow, Include: []policy.Selector{validCert}}}}
	if err := app.Compile(); err != nil { // fills app.AUD = policy.DeriveAUD("telemetry")
		panic(err)
	}
	const issuer = "https://access.fleet.test"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	// Request 1: a certificate; the gateway mints a session token.
	in := policy.Input{Cert: &verdict.Verdict{Kind: verdict.Valid,
		Identity: verdict.Identity{CommonName: "sensor-0001", SHA256: "9f86d081884c7d65"}}, Now: now}
	d := app.Evaluate(&in)
	claims, _ := app.NewClaims(issuer, &in, d)
	token, _ := keys.Mint(claims)

	// Request 2, ten minutes later: no certificate, the cookie comes back.
	cache := policy.NewTokenCache(100_000)
	later := now.Add(10 * time.Minute)
	back, err := keys.VerifyCached(cache, token, app.AUD, issuer, later)
	fmt.Println(back.CommonName, back.Policy, err)
	d2 := app.Evaluate(&policy.Input{Token: back, Now: later})
	fmt.Println(d2.Allowed, d2.Reason)

	// The token of another application is refused.
	_, err = keys.Verify(token, policy.DeriveAUD("billing"), issuer, later)
	fmt.Println(errors.Is(err, policy.ErrAudience))

	// Two hours later the session is over.
	_, err = keys.VerifyCached(cache, token, app.AUD, issuer, now.Add(2*time.Hour))
	fmt.Println(err)
	// Output:
	// sensor-0001 fleet devices <nil>
	// true allowed by policy "fleet devices"
	// true
	// policy: token expired
}
