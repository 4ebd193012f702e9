package policy

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

func TestIdentitySelectors(t *testing.T) {
	ops := &Identity{Email: "Ops@Fleet.Test", Groups: []string{"ops", "oncall"}, IdP: "corp", Subject: "u1"}
	tok := &Claims{Email: "dev@other.test", Groups: []string{"dev"}, IdP: "github", Sub: "u2"}
	for _, tc := range []struct {
		name     string
		key      string
		value    any
		identity *Identity
		token    *Claims
		want     bool
	}{
		{"email case-insensitive", "email", "ops@fleet.test", ops, nil, true},
		{"email other", "email", "dev@fleet.test", ops, nil, false},
		{"email no identity", "email", "ops@fleet.test", nil, nil, false},
		{"email_domain", "email_domain", "FLEET.test", ops, nil, true},
		{"email_domain suffix is not a domain", "email_domain", "test", ops, nil, false},
		{"group", "group", "oncall", ops, nil, true},
		{"group case-sensitive", "group", "Ops", ops, nil, false},
		{"login_method", "login_method", "corp", ops, nil, true},
		{"login_method other", "login_method", "github", ops, nil, false},
		{"from the session token", "group", "dev", nil, tok, true},
		{"token login_method", "login_method", "github", nil, tok, true},
		{"token email_domain", "email_domain", "other.test", nil, tok, true},
		{"device token has no identity", "email_domain", "fleet.test", nil, &Claims{CommonName: "sensor-0001"}, false},
		{"no-duration token never an identity", "login_method", "github", nil, &Claims{IdP: "github", NoDuration: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSel(tc.key, tc.value)
			if !NeedsIdentity(s) || s.NeedsCertificate() {
				t.Fatalf("%s: NeedsIdentity %v, NeedsCertificate %v", tc.key, NeedsIdentity(s), s.NeedsCertificate())
			}
			in := &Input{Identity: tc.identity, Token: tc.token, Now: t0}
			if got := s.Match(in); got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIdentitySelectorValues(t *testing.T) {
	for _, tc := range []struct {
		key   string
		value any
	}{
		{"email", "no-at-sign"}, {"email", "@fleet.test"}, {"email", "a@b@c"}, {"email", 3},
		{"email_domain", "@fleet.test"}, {"email_domain", ""}, {"email_domain", ".fleet.test"}, {"email_domain", "*.fleet.test"},
		{"group", ""}, {"login_method", true},
	} {
		_, err := ParseSelector(tc.key, tc.value)
		if !errors.Is(err, ErrSelectorValue) {
			t.Errorf("%s = %v: err %v, want ErrSelectorValue", tc.key, tc.value, err)
		}
	}
}

// loginApp is an application with identity providers: a bypass for a
// health path's device, a non_identity policy for sensors, and allow
// policies for people.
func loginApp(t *testing.T) *Application {
	t.Helper()
	a := &Application{Name: "console", SessionDuration: 3600e9, Login: true, Policies: []Policy{
		{Name: "sensors", Action: NonIdentity, Include: sels(selCN("sensor-0001"))},
		{Name: "ops on laptops", Action: Allow, Include: sels(mustSel("group", "ops")), Require: sels(selValid)},
		{Name: "anyone logged in, read-only", Action: Allow, Include: sels(selEveryone)},
	}}
	if err := a.Compile(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestEvaluateLogin(t *testing.T) {
	a := loginApp(t)
	laptop := validCert("laptop-7", fp1)
	ops := &Identity{Email: "ops@fleet.test", Groups: []string{"ops"}, IdP: "corp"}
	guest := &Identity{Email: "guest@fleet.test", IdP: "corp"}
	for _, tc := range []struct {
		name      string
		in        Input
		allowed   bool
		login     bool
		policy    string
		bind      bool
		reasonFor string
	}{
		{name: "non_identity needs no login", in: Input{Cert: validCert("sensor-0001", fp2)}, allowed: true, policy: "sensors", bind: true},
		{name: "a laptop alone must log in", in: Input{Cert: laptop}, login: true},
		{name: "nothing at all must log in", in: Input{Cert: &verdict.Verdict{Kind: verdict.Missing}}, login: true},
		{name: "a revoked certificate is refused, not sent to login", in: Input{Cert: badCert(verdict.Revoked, "laptop-7")}, reasonFor: verdict.Revoked.Reason()},
		{name: "ops with the laptop: bound", in: Input{Cert: laptop, Identity: ops}, allowed: true, policy: "ops on laptops", bind: true},
		{name: "everyone means any logged-in person", in: Input{Cert: laptop, Identity: guest}, allowed: true, policy: "anyone logged in, read-only"},
		{name: "ops without a certificate: not bound", in: Input{Identity: ops}, allowed: true, policy: "anyone logged in, read-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Now = t0
			d := a.Evaluate(&in)
			if d.Allowed != tc.allowed || d.LoginRequired != tc.login || d.Policy != tc.policy || d.BindCertificate != tc.bind {
				t.Fatalf("decision %+v", d)
			}
			if tc.reasonFor != "" && d.Reason != tc.reasonFor {
				t.Fatalf("reason %q, want %q", d.Reason, tc.reasonFor)
			}
		})
	}
}

func TestNewClaimsIdentityAndCnf(t *testing.T) {
	a := loginApp(t)
	der := []byte("a leaf certificate's DER")
	sum := sha256.Sum256(der)
	laptop := validCert("laptop-7", hex.EncodeToString(sum[:]))
	in := &Input{Cert: laptop, Now: t0, Identity: &Identity{Email: "ops@fleet.test", Groups: []string{"ops"}, IdP: "corp", Subject: "u1"}}
	d := a.Evaluate(in)
	c, err := a.NewClaims(testIssuer, in, d)
	if err != nil {
		t.Fatal(err)
	}
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	if c.Cnf == nil || c.Cnf.X5tS256 != want {
		t.Fatalf("cnf %+v, want x5t#S256 %s", c.Cnf, want)
	}
	if c.Email != "ops@fleet.test" || c.IdP != "corp" || c.Sub != "u1" || len(c.Groups) != 1 || c.IdentityNonce == "" {
		t.Fatalf("claims %+v", c)
	}
	if !c.BoundTo(laptop.Identity.SHA256) || c.BoundTo(fp1) || c.BoundTo("") {
		t.Fatal("BoundTo must accept exactly the minting certificate")
	}
	// Presented back: the identity (and its nonce) survives a re-mint.
	again := &Input{Cert: laptop, Token: c, Now: t0}
	d2 := a.Evaluate(again)
	c2, err := a.NewClaims(testIssuer, again, d2)
	if err != nil || !d2.Allowed {
		t.Fatalf("re-mint: %v %+v", err, d2)
	}
	if c2.IdentityNonce != c.IdentityNonce || c2.Email != c.Email {
		t.Fatalf("re-minted identity %q/%q, want %q/%q", c2.Email, c2.IdentityNonce, c.Email, c.IdentityNonce)
	}
	// An identity-only policy mints no cnf.
	guest := &Input{Now: t0, Identity: &Identity{Email: "g@fleet.test", IdP: "corp"}}
	c3, err := a.NewClaims(testIssuer, guest, a.Evaluate(guest))
	if err != nil || c3.Cnf != nil || !c3.BoundTo("") {
		t.Fatalf("identity-only: %v cnf %+v", err, c3.Cnf)
	}
}
