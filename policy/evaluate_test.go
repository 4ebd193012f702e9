package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

func pol(name string, a Action, include, require, exclude []Selector) Policy {
	return Policy{Name: name, Action: a, Include: include, Require: require, Exclude: exclude}
}

func withDuration(p Policy, d time.Duration) Policy {
	p.SessionDuration, p.HasSessionDuration = d, true
	return p
}

func app(session time.Duration, ps ...Policy) *Application {
	a := &Application{Name: "telemetry", Domain: "devices.fleet.test", SessionDuration: session, Policies: ps}
	if err := a.Compile(); err != nil {
		panic(err)
	}
	return a
}

func TestEvaluate(t *testing.T) {
	const day = 24 * time.Hour
	s1 := validCert("sensor-0001", fp1)
	s2 := validCert("sensor-0002", fp2)
	tok1 := sessionToken(testAUD, "sensor-0001", fp1)
	fleet := pol("fleet", Allow, sels(selValid), nil, nil)

	tests := []struct {
		name string
		app  *Application
		in   Input
		want Decision
	}{
		// Evaluation order.
		{
			name: "bypass before allow even when listed later",
			app:  app(day, fleet, pol("public", Bypass, sels(selEveryone), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Bypass, Policy: "public", Reason: `allowed by policy "public"`},
		},
		{
			name: "non_identity before deny even when listed later",
			app: app(day, pol("block s1", Deny, sels(selCN("sensor-0001")), nil, nil),
				pol("svc", NonIdentity, sels(selValid), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: NonIdentity, Policy: "svc", Reason: `allowed by policy "svc"`, SessionDuration: day, Mint: true},
		},
		{
			name: "bypass and non_identity in file order: non_identity first",
			app: app(day, pol("svc", NonIdentity, sels(selValid), nil, nil),
				pol("public", Bypass, sels(selEveryone), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: NonIdentity, Policy: "svc", Reason: `allowed by policy "svc"`, SessionDuration: day, Mint: true},
		},
		{
			name: "bypass and non_identity in file order: bypass first",
			app: app(day, pol("public", Bypass, sels(selEveryone), nil, nil),
				pol("svc", NonIdentity, sels(selValid), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Bypass, Policy: "public", Reason: `allowed by policy "public"`},
		},
		{
			name: "first match wins: deny listed before allow",
			app:  app(day, pol("block s1", Deny, sels(selCN("sensor-0001")), nil, nil), fleet),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Policy: "block s1", Reason: `denied by policy "block s1"`},
		},
		{
			name: "first match wins: allow listed before deny",
			app:  app(day, fleet, pol("block s1", Deny, sels(selCN("sensor-0001")), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: day, Mint: true},
		},
		{
			name: "deny that does not match falls through to allow",
			app:  app(day, pol("block s1", Deny, sels(selCN("sensor-0001")), nil, nil), fleet),
			in:   Input{Cert: s2},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: day, Mint: true},
		},
		{
			name: "no match with a valid cert: no policy matched",
			app:  app(day, pol("only s2", Allow, sels(selCN("sensor-0002")), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "no policies at all",
			app:  app(day),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "no match, no cert, no token: the certificate's reason",
			app:  app(day, fleet),
			in:   Input{},
			want: Decision{Action: Deny, Reason: "no client certificate"},
		},
		{
			name: "no match, unknown CA",
			app:  app(day, fleet),
			in:   Input{Cert: badCert(verdict.UnknownAuthority, "x")},
			want: Decision{Action: Deny, Reason: "unknown certificate authority"},
		},
		// Rules.
		{
			name: "include is OR",
			app:  app(day, pol("two", Allow, sels(selCN("sensor-0009"), selCN("sensor-0002")), nil, nil)),
			in:   Input{Cert: s2},
			want: Decision{Allowed: true, Action: Allow, Policy: "two", Reason: `allowed by policy "two"`, SessionDuration: day, Mint: true},
		},
		{
			name: "require is AND: one fails",
			app:  app(day, pol("s1 only", Allow, sels(selEveryone), sels(selValid, selCN("sensor-0001")), nil)),
			in:   Input{Cert: s2},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "require is AND: all hold",
			app:  app(day, pol("s1 only", Allow, sels(selEveryone), sels(selValid, selCN("sensor-0001")), nil)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Allow, Policy: "s1 only", Reason: `allowed by policy "s1 only"`, SessionDuration: day, Mint: true},
		},
		{
			name: "exclude is NOT: excluded",
			app:  app(day, pol("all but s1", Allow, sels(selValid), nil, sels(selCN("sensor-9999"), selCN("sensor-0001")))),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "exclude is NOT: not excluded",
			app:  app(day, pol("all but s1", Allow, sels(selValid), nil, sels(selCN("sensor-0001")))),
			in:   Input{Cert: s2},
			want: Decision{Allowed: true, Action: Allow, Policy: "all but s1", Reason: `allowed by policy "all but s1"`, SessionDuration: day, Mint: true},
		},
		{
			name: "empty include never matches, even with require",
			app:  app(day, pol("empty", Allow, nil, sels(selEveryone), nil)),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "everyone admits without a certificate",
			app:  app(day, pol("open", Allow, sels(selEveryone), nil, nil)),
			in:   Input{},
			want: Decision{Allowed: true, Action: Allow, Policy: "open", Reason: `allowed by policy "open"`, SessionDuration: day, Mint: true},
		},
		// Certificates and tokens.
		{
			name: "expired cert with a valid token: the certificate's reason",
			app:  app(day, fleet),
			in:   Input{Cert: badCert(verdict.Expired, "sensor-0001"), Token: tok1, Now: t0},
			want: Decision{Action: Deny, Reason: "certificate expired"},
		},
		{
			name: "revoked cert, an everyone allow does not admit",
			app:  app(day, pol("open", Allow, sels(selEveryone), nil, nil)),
			in:   Input{Cert: badCert(verdict.Revoked, "sensor-0001")},
			want: Decision{Action: Deny, Reason: "certificate revoked"},
		},
		{
			name: "expired cert, bypass still admits",
			app:  app(day, fleet, pol("public", Bypass, sels(selEveryone), nil, nil)),
			in:   Input{Cert: badCert(verdict.Expired, "sensor-0001")},
			want: Decision{Allowed: true, Action: Bypass, Policy: "public", Reason: `allowed by policy "public"`},
		},
		{
			name: "expired cert, non_identity everyone does not admit",
			app:  app(day, pol("svc", NonIdentity, sels(selEveryone), nil, nil)),
			in:   Input{Cert: badCert(verdict.Expired, "sensor-0001")},
			want: Decision{Action: Deny, Reason: "certificate expired", ServiceAuthFailed: true},
		},
		{
			name: "token stands in for the certificate",
			app:  app(day, fleet),
			in:   Input{Token: tok1, Now: t0},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: day, Mint: true},
		},
		{
			name: "token CN matches common_name",
			app:  app(day, pol("s1", Allow, sels(selCN("sensor-0001")), nil, nil)),
			in:   Input{Token: tok1, Now: t0},
			want: Decision{Allowed: true, Action: Allow, Policy: "s1", Reason: `allowed by policy "s1"`, SessionDuration: day, Mint: true},
		},
		{
			name: "token, policies re-evaluated: now excluded",
			app:  app(day, pol("fleet", Allow, sels(selValid), nil, sels(selCN("sensor-0001")))),
			in:   Input{Token: tok1, Now: t0},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "token minted without a certificate does not satisfy valid_certificate",
			app:  app(day, fleet),
			in:   Input{Token: sessionToken(testAUD, "", ""), Now: t0},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		{
			name: "token for another application",
			app:  app(day, fleet),
			in:   Input{Token: sessionToken(DeriveAUD("other"), "sensor-0001", fp1), Now: t0},
			want: Decision{Action: Deny, Reason: "token not valid for this application"},
		},
		{
			name: "valid cert: a foreign token is ignored",
			app:  app(day, fleet),
			in:   Input{Cert: s1, Token: sessionToken(DeriveAUD("other"), "sensor-0002", fp2), Now: t0},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: day, Mint: true},
		},
		{
			name: "no-duration token presented back",
			app:  app(day, fleet),
			in:   Input{Token: func() *Claims { c := sessionToken(testAUD, "sensor-0001", fp1); c.NoDuration = true; return c }(), Now: t0},
			want: Decision{Action: Deny, Reason: "token not valid for this application"},
		},
		{
			name: "expired token",
			app:  app(day, fleet),
			in:   Input{Token: tok1, Now: time.Unix(tok1.Exp+30, 0)},
			want: Decision{Action: Deny, Reason: "token expired"},
		},
		{
			name: "bad token, bypass still admits",
			app:  app(day, fleet, pol("public", Bypass, sels(selEveryone), nil, nil)),
			in:   Input{Token: sessionToken(DeriveAUD("other"), "sensor-0001", fp1), Now: t0},
			want: Decision{Allowed: true, Action: Bypass, Policy: "public", Reason: `allowed by policy "public"`},
		},
		{
			name: "valid cert wins over the token's identity",
			app:  app(day, pol("s1", Allow, sels(selCN("sensor-0001")), nil, nil)),
			in:   Input{Cert: s2, Token: tok1, Now: t0},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		// Service auth.
		{
			name: "ServiceAuthFailed: non_identity did not match",
			app:  app(day, pol("svc", NonIdentity, sels(selCN("sensor-0001")), nil, nil)),
			in:   Input{Cert: s2},
			want: Decision{Action: Deny, Reason: "no policy matched", ServiceAuthFailed: true},
		},
		{
			name: "ServiceAuthFailed: no certificate",
			app:  app(day, pol("svc", NonIdentity, sels(selValid), nil, nil)),
			in:   Input{},
			want: Decision{Action: Deny, Reason: "no client certificate", ServiceAuthFailed: true},
		},
		{
			name: "ServiceAuthFailed: deny policy with a non_identity policy present",
			app: app(day, pol("svc", NonIdentity, sels(selCN("sensor-0002")), nil, nil),
				pol("block", Deny, sels(selCN("sensor-0001")), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Policy: "block", Reason: `denied by policy "block"`, ServiceAuthFailed: true},
		},
		{
			name: "not ServiceAuthFailed without a non_identity policy",
			app:  app(day, pol("only s2", Allow, sels(selCN("sensor-0002")), nil, nil)),
			in:   Input{Cert: s1},
			want: Decision{Action: Deny, Reason: "no policy matched"},
		},
		// Session duration.
		{
			name: "session: the policy's overrides the application's",
			app:  app(day, withDuration(fleet, time.Hour)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: time.Hour, Mint: true},
		},
		{
			name: "session: the policy's 0s means no duration",
			app:  app(day, withDuration(fleet, 0)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: 0, Mint: true},
		},
		{
			name: "session: the application's when the policy has none",
			app:  app(8*time.Hour, fleet),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, SessionDuration: 8 * time.Hour, Mint: true},
		},
		{
			name: "session: application 0s and no policy duration",
			app:  app(0, fleet),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Allow, Policy: "fleet", Reason: `allowed by policy "fleet"`, Mint: true},
		},
		{
			name: "session: bypass has none",
			app:  app(day, withDuration(pol("public", Bypass, sels(selEveryone), nil, nil), time.Hour)),
			in:   Input{Cert: s1},
			want: Decision{Allowed: true, Action: Bypass, Policy: "public", Reason: `allowed by policy "public"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			got := tt.app.Evaluate(&in)
			// The rule is named exactly when a policy decided.
			if (got.Rule != "") != (got.Policy != "") || got.Rule != "" && !strings.HasPrefix(got.Rule, "include[") {
				t.Errorf("Rule %q with Policy %q", got.Rule, got.Policy)
			}
			rule := got.Rule
			if got.Rule = ""; got != tt.want {
				t.Errorf("Evaluate:\n got %+v\nwant %+v", got, tt.want)
			}
			// The same decision without Compile's precomputed texts.
			raw := *tt.app
			raw.plan = nil
			got = raw.Evaluate(&in)
			if got.Rule != rule {
				t.Errorf("Rule without Compile %q, with %q", got.Rule, rule)
			}
			if got.Rule = ""; got != tt.want {
				t.Errorf("Evaluate without Compile:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	tests := []struct {
		name    string
		app     Application
		wantErr string
	}{
		{name: "ok", app: Application{Name: "a", Policies: []Policy{pol("p", Allow, sels(selValid), nil, nil)}}},
		{name: "nil selector", app: Application{Name: "a", Policies: []Policy{pol("p", Allow, sels(selValid), sels(nil), nil)}},
			wantErr: `policy: application "a": policies[0] "p": require[0] is nil`},
		{name: "unknown action", app: Application{Name: "a", Policies: []Policy{pol("p", Action(9), sels(selValid), nil, nil)}},
			wantErr: `policy: application "a": policies[0] "p": unknown action 9`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.app
			err := a.Compile()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.AUD != DeriveAUD(a.Name) {
				t.Errorf("AUD = %q, want derived", a.AUD)
			}
		})
	}
	a := Application{Name: "a", AUD: "set", Policies: nil}
	if err := a.Compile(); err != nil || a.AUD != "set" {
		t.Errorf("Compile overwrote AUD: %q, %v", a.AUD, err)
	}
}

func TestEvaluateNilSelectorFailsClosed(t *testing.T) {
	// Without Compile, a nil selector must never admit.
	a := &Application{Name: "a", AUD: testAUD, Policies: []Policy{
		pol("req", Allow, sels(selEveryone), sels(nil), nil),
		pol("exc", Allow, sels(selEveryone), nil, sels(nil)),
		pol("inc", Allow, sels(nil), nil, nil),
	}}
	if d := a.Evaluate(&Input{Cert: validCert("s", fp1)}); d.Allowed {
		t.Errorf("admitted: %+v", d)
	}
}

// TestEvaluateAllocs runs under -race too: the race detector instruments
// memory accesses but adds no heap allocations to Evaluate's paths, so the
// bound is zero either way.
func TestEvaluateAllocs(t *testing.T) {
	a, inputs := benchApp()
	if len(inputs) == 0 {
		t.Fatal("benchApp returned no inputs to measure")
	}
	for name, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { _ = a.Evaluate(in) }); n != 0 {
			t.Errorf("%s: %v allocs per Evaluate, want 0", name, n)
		}
	}
}
