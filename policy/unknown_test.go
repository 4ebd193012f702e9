package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// TestUnknownNeverAdmits: a selector on what a session token does not carry
// (SANs, O, OU, a URI list) cannot be evaluated when the token stands in for
// the certificate, and that never lets the request in: an exclude refuses,
// a require is unmet, an allow's include does not match, a deny's include
// does. With the certificate itself, or with no identity at all, the
// answers are the ordinary ones.
func TestUnknownNeverAdmits(t *testing.T) {
	env := testEnv()
	env.Lists["recalled"] = ListSANURI
	sel := func(k string, v any) Selector {
		s, err := ParseSelectorIn(env, k, v)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b := NewListBuilder("recalled", ListSANURI, 1)
	if err := b.Add("spiffe://fleet.test/meter/17"); err != nil {
		t.Fatal(err)
	}
	lists := NewListSet(b.Build())

	recalledOU := sel("organizational_unit", "recalled")
	recalledList := sel("list", "recalled")
	meters := sel("organizational_unit", "meters")
	apps := map[string]*Application{
		"exclude ou":   app(time.Hour, pol("fleet", Allow, sels(selValid), nil, sels(recalledOU))),
		"exclude list": app(time.Hour, pol("fleet", Allow, sels(selValid), nil, sels(recalledList))),
		"exclude dns":  app(time.Hour, pol("fleet", Allow, sels(selValid), nil, sels(sel("san_dns", "*.recalled.test")))),
		"require ou":   app(time.Hour, pol("fleet", Allow, sels(selValid), sels(meters), nil)),
		"include ou":   app(time.Hour, pol("fleet", Allow, sels(meters), nil, nil)),
		"deny ou": app(time.Hour, pol("recalled", Deny, sels(recalledOU), nil, nil),
			pol("fleet", Allow, sels(selValid), nil, nil)),
		"deny all but trusted": app(time.Hour, pol("untrusted", Deny, sels(selValid), nil, sels(sel("organization", "Trusted"))),
			pol("fleet", Allow, sels(selValid), nil, nil)),
		"everyone exclude ou": app(time.Hour, pol("all", Allow, sels(selEveryone), nil, sels(recalledOU))),
	}
	tok := sessionToken(testAUD, "meter-0017", fp1)
	tok.CertSerial = "4f1a09"
	withToken := &Input{Cert: &verdict.Verdict{}, Token: tok, Now: t0, Lists: lists}
	recalledCert := meterCert()
	recalledCert.Identity.OrgUnit = []string{"recalled"}
	tests := []struct {
		app  string
		in   *Input
		want bool
	}{
		// The token: none of these may admit.
		{"exclude ou", withToken, false},
		{"exclude list", withToken, false},
		{"exclude dns", withToken, false},
		{"require ou", withToken, false},
		{"include ou", withToken, false},
		{"deny ou", withToken, false},
		{"deny all but trusted", withToken, false},
		// The certificate: ordinary answers.
		{"exclude ou", &Input{Cert: meterCert(), Now: t0, Lists: lists}, true},
		{"exclude ou", &Input{Cert: recalledCert, Now: t0, Lists: lists}, false},
		{"exclude list", &Input{Cert: meterCert(), Now: t0, Lists: lists}, false},
		{"exclude list", &Input{Cert: validCert("sensor-0001", fp2), Now: t0, Lists: lists}, true},
		{"exclude dns", &Input{Cert: meterCert(), Now: t0}, true},
		{"require ou", &Input{Cert: meterCert(), Now: t0}, true},
		{"include ou", &Input{Cert: meterCert(), Now: t0}, true},
		{"deny ou", &Input{Cert: meterCert(), Now: t0}, true},
		{"deny ou", &Input{Cert: recalledCert, Now: t0}, false},
		// No identity at all: nothing to be unknown about.
		{"everyone exclude ou", &Input{Cert: &verdict.Verdict{}, Now: t0}, true},
		{"everyone exclude ou", withToken, false},
	}
	for _, tt := range tests {
		d := apps[tt.app].Evaluate(tt.in)
		if d.Allowed != tt.want {
			t.Errorf("%s, token %v: allowed %v (%s), want %v", tt.app, tt.in.Token != nil, d.Allowed, d.Reason, tt.want)
		}
	}
	if d := apps["deny ou"].Evaluate(withToken); d.Policy != "recalled" {
		t.Errorf("deny ou on a token: decided by %q, want the deny policy", d.Policy)
	}
	if d := apps["exclude ou"].Evaluate(withToken); d.Reason != ReasonNotOnToken {
		t.Errorf("exclude ou on a token: reason %q, want %q", d.Reason, ReasonNotOnToken)
	}
	for name, a := range apps {
		if n := testing.AllocsPerRun(50, func() { _ = a.Evaluate(withToken) }); n != 0 {
			t.Errorf("%s: %v allocs per Evaluate, want 0", name, n)
		}
	}
}

// TestJudgeOutcomes: the selectors that can say Unknown say it exactly when
// a session token stands in for the certificate and lacks the field.
func TestJudgeOutcomes(t *testing.T) {
	env := testEnv()
	env.Lists["serials"] = ListSerial
	tok := sessionToken(testAUD, "meter-0017", fp1) // no serial recorded
	onToken := &Input{Cert: &verdict.Verdict{}, Token: tok}
	none := &Input{Cert: &verdict.Verdict{}}
	for _, tt := range []struct {
		key   string
		value any
	}{
		{"san_dns", "meter-17.fleet.test"},
		{"san_uri", "spiffe://fleet.test/meter/17"},
		{"san_email", "ops@fleet.test"},
		{"organization", "Acme Meters"},
		{"organizational_unit", "meters"},
		{"serial", "4f1a09"},
		{"list", "serials"},
	} {
		s, err := ParseSelectorIn(env, tt.key, tt.value)
		if err != nil {
			t.Fatal(err)
		}
		j, ok := s.(Judge)
		if !ok {
			t.Fatalf("%s is not a Judge", tt.key)
		}
		b := NewListBuilder("serials", ListSerial, 1)
		_ = b.Add("4f1a09")
		onToken.Lists, none.Lists = NewListSet(b.Build()), NewListSet(b.Build())
		if o := j.Judge(onToken); o != Unknown {
			t.Errorf("%s on a token: %v, want Unknown", tt.key, o)
		}
		if s.Match(onToken) {
			t.Errorf("%s on a token: Match true", tt.key)
		}
		if o := j.Judge(none); o != NoMatch {
			t.Errorf("%s without identity: %v, want NoMatch", tt.key, o)
		}
		if o := j.Judge(&Input{Cert: meterCert(), Lists: none.Lists}); o != Matched {
			t.Errorf("%s on the certificate: %v, want Matched", tt.key, o)
		}
	}
}

// TestClientCAMostSpecificEntry: two [[client_cas]] entries under one root,
// each with its own intermediate: a device under intermediate B matches
// only line-b; one issued by the root itself matches both; a session token,
// which records only the shared root, cannot tell them apart.
func TestClientCAMostSpecificEntry(t *testing.T) {
	root := sha256.Sum256([]byte("shared root"))
	interB := sha256.Sum256([]byte("intermediate B"))
	env := &Env{ClientCAs: map[string][][32]byte{
		"line-a": {root, interA},
		"line-b": {root, interB},
		"other":  {rootB},
	}}
	underB := &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "gauge-1", SHA256: fp2},
		Path: []verdict.CertRef{{}, {SHA256: interB}, {SHA256: root}}}
	underA := &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "meter-1", SHA256: fp1},
		Path: []verdict.CertRef{{}, {SHA256: interA}, {SHA256: root}}}
	direct := &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "probe", SHA256: fp1},
		Path: []verdict.CertRef{{}, {SHA256: root}}}
	tok := sessionToken(testAUD, "gauge-1", fp2)
	tok.CertRoot = hex.EncodeToString(root[:])
	onToken := &Input{Cert: &verdict.Verdict{}, Token: tok}
	tokOther := sessionToken(testAUD, "x", fp2)
	tokOther.CertRoot = hex.EncodeToString(rootB[:])
	for _, tt := range []struct {
		entry string
		in    *Input
		want  Outcome
	}{
		{"line-a", &Input{Cert: underB}, NoMatch},
		{"line-b", &Input{Cert: underB}, Matched},
		{"line-a", &Input{Cert: underA}, Matched},
		{"line-b", &Input{Cert: underA}, NoMatch},
		{"line-a", &Input{Cert: direct}, Matched},
		{"line-b", &Input{Cert: direct}, Matched},
		{"other", &Input{Cert: underB}, NoMatch},
		{"line-a", onToken, Unknown},
		{"line-b", onToken, Unknown},
		{"other", onToken, NoMatch},
		{"other", &Input{Cert: &verdict.Verdict{}, Token: tokOther}, Matched},
	} {
		s, err := ParseSelectorIn(env, "client_ca", tt.entry)
		if err != nil {
			t.Fatal(err)
		}
		got := judge(s, tt.in)
		if got != tt.want {
			t.Errorf("client_ca %s on %v (token %v): %v, want %v", tt.entry, tt.in.Cert.Identity.CommonName, tt.in.Token != nil, got, tt.want)
		}
		if s.Match(tt.in) != (tt.want == Matched) {
			t.Errorf("client_ca %s: Match disagrees with %v", tt.entry, tt.want)
		}
	}
	// An allow of line-a that excludes line-b's devices: the shared root on
	// a token refuses rather than guess.
	a := app(time.Hour, pol("line a", Allow, sels(selValid), nil, sels(mustSelEnv(t, env, "client_ca", "line-b"))))
	if d := a.Evaluate(&Input{Cert: &verdict.Verdict{}, Token: tok, Now: t0}); d.Allowed {
		t.Errorf("exclude client_ca line-b on a shared-root token admitted: %s", d.Reason)
	}
	if d := a.Evaluate(&Input{Cert: underA, Now: t0}); !d.Allowed {
		t.Errorf("line-a device refused: %s", d.Reason)
	}
	if d := a.Evaluate(&Input{Cert: underB, Now: t0}); d.Allowed {
		t.Errorf("line-b device admitted")
	}
}

func mustSelEnv(t *testing.T, env *Env, k string, v any) Selector {
	t.Helper()
	s, err := ParseSelectorIn(env, k, v)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
