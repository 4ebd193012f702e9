package policy

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// TestLoginTokenNeverStandsInForCertificate: a session token of a person
// (idp set) carries the certificate's claims when it was minted on a
// connection that presented one, but replayed without that certificate it
// satisfies no certificate selector: only a device's token stands in.
func TestLoginTokenNeverStandsInForCertificate(t *testing.T) {
	a := &Application{Name: "console", AUD: testAUD, SessionDuration: 3600e9, Login: true, Policies: []Policy{
		{Name: "ops from the office", Action: Allow, Include: sels(mustSel("email_domain", "fleet.test")), Require: sels(mustSel("ip", []any{"127.0.0.1/32"}))},
		{Name: "ops on laptops", Action: Allow, Include: sels(mustSel("group", "ops")), Require: sels(selValid)},
	}}
	if err := a.Compile(); err != nil {
		t.Fatal(err)
	}
	laptop := validCert("laptop-7", fp1)
	login := &Input{Cert: laptop, Now: t0, ClientIP: netip.MustParseAddr("127.0.0.1"),
		Identity: &Identity{Email: "ops@fleet.test", Groups: []string{"ops"}, IdP: "corp", Subject: "u1"}}
	d := a.Evaluate(login)
	if !d.Allowed || d.Policy != "ops from the office" || d.BindCertificate {
		t.Fatalf("login: %+v", d)
	}
	tok, err := a.NewClaims(testIssuer, login, d)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CertSHA256 == "" || tok.Cnf != nil {
		t.Fatalf("the login token names the certificate (%q) without binding to it (%+v)", tok.CertSHA256, tok.Cnf)
	}
	replay := &Input{Cert: &verdict.Verdict{Kind: verdict.Missing}, Token: tok, Now: t0, ClientIP: netip.MustParseAddr("198.51.100.7")}
	if d := a.Evaluate(replay); d.Allowed {
		t.Fatalf("the cookie alone, from elsewhere, opened %q: %+v", d.Policy, d)
	}
	if _, ok := replay.Subject(); ok {
		t.Fatal("a person's token stands in for a certificate")
	}
	// A device's token still does.
	dev := &Input{Cert: &verdict.Verdict{Kind: verdict.Missing}, Token: sessionToken(testAUD, "sensor-0001", fp2), Now: t0}
	if _, ok := dev.Subject(); !ok {
		t.Fatal("a device's session token no longer stands in for its certificate")
	}
}

// TestRemintKeepsCnf: a session bound to a certificate stays bound when a
// policy without certificate selectors re-mints it.
func TestRemintKeepsCnf(t *testing.T) {
	a := loginApp(t)
	a.AUD = testAUD
	laptop := validCert("laptop-7", fp1)
	in := &Input{Cert: laptop, Now: t0, Identity: &Identity{Email: "ops@fleet.test", Groups: []string{"ops"}, IdP: "corp", Subject: "u1"}}
	c, err := a.NewClaims(testIssuer, in, a.Evaluate(in))
	if err != nil || c.Cnf == nil {
		t.Fatalf("login: %v, cnf %+v", err, c.Cnf)
	}
	// The person leaves ops: the session is re-minted by "anyone logged
	// in", which binds nothing.
	c.Groups = nil
	again := &Input{Cert: laptop, Token: c, Now: t0.Add(60e9)}
	d := a.Evaluate(again)
	if !d.Allowed || d.BindCertificate {
		t.Fatalf("re-mint decision %+v", d)
	}
	c2, err := a.NewClaims(testIssuer, again, d)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Cnf == nil || *c2.Cnf != *c.Cnf {
		t.Fatalf("re-minted cnf %+v, want %+v", c2.Cnf, c.Cnf)
	}
}

// TestRemintEndsAtLogin: re-minting a person's session never extends it
// past the login time plus the session duration; a token from before
// auth_time never past its own exp.
func TestRemintEndsAtLogin(t *testing.T) {
	a := loginApp(t)
	a.AUD = testAUD
	laptop := validCert("laptop-7", fp1)
	in := &Input{Cert: laptop, Now: t0, Identity: &Identity{Email: "ops@fleet.test", Groups: []string{"ops"}, IdP: "corp"}}
	c, err := a.NewClaims(testIssuer, in, a.Evaluate(in))
	if err != nil || c.AuthTime != t0.Unix() || c.Exp != t0.Unix()+3600 {
		t.Fatalf("login: %v auth_time %d exp %d", err, c.AuthTime, c.Exp)
	}
	later := &Input{Cert: laptop, Token: c, Now: t0.Add(50 * time.Minute)}
	c2, err := a.NewClaims(testIssuer, later, a.Evaluate(later))
	if err != nil || c2.AuthTime != c.AuthTime || c2.Exp != c.Exp {
		t.Fatalf("re-mint: %v auth_time %d exp %d, want %d %d", err, c2.AuthTime, c2.Exp, c.AuthTime, c.Exp)
	}
	legacy := *c
	legacy.AuthTime, legacy.Exp = 0, t0.Unix()+600
	old := &Input{Cert: laptop, Token: &legacy, Now: t0.Add(5 * time.Minute)}
	c3, err := a.NewClaims(testIssuer, old, a.Evaluate(old))
	if err != nil || c3.Exp != legacy.Exp {
		t.Fatalf("re-mint of a token without auth_time: %v exp %d, want %d", err, c3.Exp, legacy.Exp)
	}
}

// TestEmailMatchingIsASCII: emails and domains compare case-insensitively
// in ASCII only: Unicode folding (ſ to s, the Kelvin sign to k) must not
// turn another address into a configured one, and a selector value that is
// not ASCII is refused.
func TestEmailMatchingIsASCII(t *testing.T) {
	for _, tc := range []struct {
		name, key, value, email string
		want                    bool
	}{
		{"ASCII case folds", "email", "ops@fleet.test", "OPS@Fleet.TEST", true},
		{"ASCII domain case folds", "email_domain", "fleet.test", "ops@FLEET.test", true},
		{"long s is not s (domain)", "email_domain", "fleet.test", "ops@fleet.te\u017ft", false},
		{"long s is not s (email)", "email", "ops@fleet.test", "ops@fleet.te\u017ft", false},
		{"Kelvin sign is not k", "email", "kops@fleet.test", "\u212aops@fleet.test", false},
		{"Kelvin sign is not K (domain)", "email_domain", "kfleet.test", "ops@\u212afleet.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &Input{Identity: &Identity{Email: tc.email, IdP: "corp"}, Now: t0}
			if got := mustSel(tc.key, tc.value).Match(in); got != tc.want {
				t.Fatalf("%s = %q on %q: %v, want %v", tc.key, tc.value, tc.email, got, tc.want)
			}
		})
	}
	for _, v := range []struct{ key, value string }{{"email", "ops@fleet.te\u017ft"}, {"email_domain", "b\u00fccher.test"}, {"email", "\u212aops@fleet.test"}} {
		if _, err := ParseSelector(v.key, v.value); !errors.Is(err, ErrSelectorValue) {
			t.Errorf("%s = %q: err %v, want ErrSelectorValue", v.key, v.value, err)
		}
	}
}
