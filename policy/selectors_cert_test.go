package policy

import (
	"crypto/sha256"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// meterCert is a valid verdict of a leaf that carries every kind of SAN, O
// and OU, verified through rootA.
var (
	rootA  = sha256.Sum256([]byte("root A"))
	rootB  = sha256.Sum256([]byte("root B"))
	interA = sha256.Sum256([]byte("intermediate A"))
)

func meterCert() *verdict.Verdict {
	return &verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{
		CommonName:   "meter-0017",
		Organization: []string{"Acme Meters"},
		OrgUnit:      []string{"meters", "beta"},
		DNSNames:     []string{"meter-17.fleet.test"},
		URIs:         []string{"spiffe://fleet.test/meter/17"},
		Emails:       []string{"ops@fleet.test"},
		SerialHex:    "4f1a09",
		SHA256:       fp1,
	}, Path: []verdict.CertRef{{}, {SHA256: interA}, {SHA256: rootA}}}
}

func testEnv() *Env {
	return &Env{
		ClientCAs:     map[string][][32]byte{"fleet-a": {rootA, interA}, "fleet-b": {rootB}},
		Lists:         map[string]ListKind{"quarantine": ListCommonName, "nets": ListIP},
		ServiceTokens: map[string]bool{"backend-job": true},
	}
}

func TestCertificateSelectors(t *testing.T) {
	meter := meterCert()
	other := validCert("sensor-0001", fp2)
	tok := sessionToken(testAUD, "meter-0017", fp1)
	tok.CertSerial, tok.CertRoot = "4f1a09", strings.Repeat("ab", 32)
	tests := []struct {
		key   string
		value any
		in    *Input
		want  bool
	}{
		{"common_name_pattern", "meter-*", &Input{Cert: meter}, true},
		{"common_name_pattern", "meter-00?7", &Input{Cert: meter}, true},
		{"common_name_pattern", "meter-[0-9]*", &Input{Cert: meter}, true},
		{"common_name_pattern", "sensor-*", &Input{Cert: meter}, false},
		{"common_name_pattern", "meter-*", &Input{Cert: badCert(verdict.Expired, "meter-1")}, false},
		{"common_name_pattern", "meter-*", &Input{Cert: &verdict.Verdict{}, Token: tok}, true},
		{"san_dns", "meter-17.fleet.test", &Input{Cert: meter}, true},
		{"san_dns", "METER-17.fleet.test.", &Input{Cert: meter}, true},
		{"san_dns", "*.fleet.test", &Input{Cert: meter}, true},
		{"san_dns", "*.test", &Input{Cert: meter}, false}, // two labels
		{"san_dns", "*.17.fleet.test", &Input{Cert: meter}, false},
		{"san_dns", "meter-18.fleet.test", &Input{Cert: meter}, false},
		{"san_dns", "meter-17.fleet.test", &Input{Cert: other}, false},
		{"san_dns", "meter-17.fleet.test", &Input{Cert: &verdict.Verdict{}, Token: tok}, false}, // a token carries no SANs
		{"san_uri", "spiffe://fleet.test/meter/17", &Input{Cert: meter}, true},
		{"san_uri", "spiffe://fleet.test/meter/*", &Input{Cert: meter}, true},
		{"san_uri", "spiffe://fleet.test/*", &Input{Cert: meter}, true},
		{"san_uri", "spiffe://fleet.test/meter/1", &Input{Cert: meter}, false},
		{"san_uri", "spiffe://fleet.test/gauge/*", &Input{Cert: meter}, false},
		{"san_uri", "spiffe://fleet.test/meter/17/*", &Input{Cert: meter}, false}, // needs something after the '/'
		{"san_email", "ops@fleet.test", &Input{Cert: meter}, true},
		{"san_email", "OPS@Fleet.Test", &Input{Cert: meter}, true},
		{"san_email", "dev@fleet.test", &Input{Cert: meter}, false},
		{"organization", "Acme Meters", &Input{Cert: meter}, true},
		{"organization", "acme meters", &Input{Cert: meter}, false},
		{"organizational_unit", "beta", &Input{Cert: meter}, true},
		{"organizational_unit", "gauges", &Input{Cert: meter}, false},
		{"serial", "4f:1a:09", &Input{Cert: meter}, true},
		{"serial", "004F1A09", &Input{Cert: meter}, true},
		{"serial", "4f1a0a", &Input{Cert: meter}, false},
		{"serial", "4f:1a:09", &Input{Cert: &verdict.Verdict{}, Token: tok}, true},
		{"fingerprint", strings.ToUpper(fp1), &Input{Cert: meter}, true},
		{"fingerprint", fp2, &Input{Cert: meter}, false},
		{"client_ca", "fleet-a", &Input{Cert: meter}, true},
		{"client_ca", "fleet-b", &Input{Cert: meter}, false},
		{"client_ca", "fleet-a", &Input{Cert: badCert(verdict.UnknownAuthority, "x")}, false},
		{"client_ca", "fleet-a", &Input{Cert: &verdict.Verdict{}, Token: tok}, false},
		{"ip", []any{"10.0.0.0/8"}, &Input{ClientIP: netip.MustParseAddr("10.1.2.3")}, true},
		{"ip", []any{"10.0.0.0/8"}, &Input{ClientIP: netip.MustParseAddr("::ffff:10.1.2.3")}, true},
		{"ip", []any{"10.0.0.0/8", "2001:db8::/32"}, &Input{ClientIP: netip.MustParseAddr("2001:db8::1")}, true},
		{"ip", []any{"::1/128"}, &Input{ClientIP: netip.MustParseAddr("::1")}, true},
		{"ip", []any{"10.0.0.0/8"}, &Input{ClientIP: netip.MustParseAddr("11.0.0.1")}, false},
		{"ip", []any{"10.0.0.0/8"}, &Input{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+strings.ReplaceAll(strings.Trim(strings.ReplaceAll(toString(tt.value), "/", "_"), " "), " ", ""), func(t *testing.T) {
			s, err := ParseSelectorIn(testEnv(), tt.key, tt.value)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Match(tt.in); got != tt.want {
				t.Errorf("%s Match = %v, want %v", s, got, tt.want)
			}
		})
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if a, ok := v.([]any); ok {
		var b []string
		for _, e := range a {
			b = append(b, toString(e))
		}
		return strings.Join(b, ",")
	}
	return "?"
}

func TestSelectorErrors(t *testing.T) {
	tests := []struct {
		key   string
		value any
		env   *Env
		want  string
	}{
		{"common_name_pattern", "", nil, "must not be empty"},
		{"common_name_pattern", "sensor-[", nil, "malformed pattern"},
		{"common_name_pattern", int64(3), nil, "want a string, got an integer"},
		{"san_dns", "*.*.fleet.test", nil, "not a DNS name"},
		{"san_dns", "*.", nil, "not a DNS name"},
		{"san_uri", "spiffe://*/x", nil, "wildcard"},
		{"san_email", "fleet.test", nil, "not an email address"},
		{"organization", true, nil, "want a string, got a boolean"},
		{"serial", "4g", nil, "not hex"},
		{"fingerprint", "abcd", nil, "not 64 hex digits"},
		{"san_dns", ".contractors.fleet.test", nil, "is not a DNS name"},
		{"san_dns", "*..fleet.test", nil, "is not a DNS name"},
		{"client_ca", "fleet-c", testEnv(), `no [[client_cas]] entry is named "fleet-c"`},
		{"ip", "10.0.0.0/8", nil, "want an array of CIDRs"},
		{"ip", []any{}, nil, "at least one CIDR"},
		{"ip", []any{"10.0.0.1/8"}, nil, `has host bits set (did you mean "10.0.0.0/8"?)`},
		{"ip", []any{"2001:db8::1/32"}, nil, "has host bits set"},
		{"ip", []any{"10.0.0.0/33"}, nil, "is not a CIDR"},
		{"ip", []any{"banana"}, nil, "is not a CIDR"},
		{"ip", []any{int64(10)}, nil, "[0]: want a CIDR string"},
		{"list", "quarantined", testEnv(), `no [[lists]] entry is named "quarantined"`},
		{"list", "quarantine", nil, "no [[lists]] entry"},
		{"service_token", "backend", testEnv(), `no [[service_tokens]] entry is named "backend"`},
		{"service_token", "backend-job", &Env{ServiceTokens: map[string]bool{"backend-job": true}, NoHTTP: true}, "only for http applications"},
		{"any_valid_service_token", true, &Env{NoHTTP: true}, "only for http applications"},
		{"any_valid_service_token", false, nil, "must be true"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+tt.want, func(t *testing.T) {
			_, err := ParseSelectorIn(tt.env, tt.key, tt.value)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrSelectorValue) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestServiceTokens(t *testing.T) {
	secret := []byte("s3cret-value")
	ts, err := NewServiceTokens([]ServiceToken{
		{Name: "backend-job", ClientID: "abc.access", SecretSHA256: sha256.Sum256(secret), Expires: t0.Add(time.Hour)},
		{Name: "forever", ClientID: "def.access", SecretSHA256: sha256.Sum256([]byte("x"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if tok, why := ts.Check([]byte("abc.access"), secret, t0); tok == nil || tok.Name != "backend-job" || why != "" {
		t.Errorf("valid: %v %q", tok, why)
	}
	if tok, why := ts.Check([]byte("abc.access"), []byte("wrong"), t0); tok != nil || why != ReasonServiceTokenInvalid {
		t.Errorf("wrong secret: %v %q", tok, why)
	}
	if tok, why := ts.Check([]byte("nobody"), secret, t0); tok != nil || why != ReasonServiceTokenInvalid {
		t.Errorf("unknown id: %v %q", tok, why)
	}
	if tok, why := ts.Check([]byte("abc.access"), secret, t0.Add(time.Hour)); tok != nil || why != ReasonServiceTokenExpired {
		t.Errorf("expired: %v %q", tok, why)
	}
	if tok, _ := ts.Check([]byte("def.access"), []byte("x"), t0.Add(1000*time.Hour)); tok == nil {
		t.Error("a token without expiry expired")
	}
	if _, err := NewServiceTokens([]ServiceToken{{Name: "a", ClientID: "x"}, {Name: "b", ClientID: "x"}}); err == nil {
		t.Error("duplicate client id accepted")
	}

	// Evaluation: the selectors, a bad token refused as Service Auth, and
	// the minted claims.
	job, _ := ts.Check([]byte("abc.access"), secret, t0)
	a := &Application{Name: "api", Domain: "api.fleet.test", ServiceAuth401: true, SessionDuration: time.Hour, Policies: []Policy{
		pol("jobs", NonIdentity, sels(mustSelIn("service_token", "backend-job")), nil, nil),
		pol("any", Allow, sels(mustSelIn("any_valid_service_token", true)), nil, nil),
	}}
	if err := a.Compile(); err != nil {
		t.Fatal(err)
	}
	d := a.Evaluate(&Input{Cert: &verdict.Verdict{}, ServiceToken: job, Now: t0})
	if !d.Allowed || d.Policy != "jobs" || d.Rule != `include[0] service_token = "backend-job"` {
		t.Errorf("valid token: %+v", d)
	}
	d = a.Evaluate(&Input{Cert: &verdict.Verdict{}, ServiceTokenProblem: ReasonServiceTokenExpired, Now: t0})
	if d.Allowed || d.Reason != ReasonServiceTokenExpired || !d.ServiceAuthFailed {
		t.Errorf("expired token: %+v", d)
	}
	d = a.Evaluate(&Input{Cert: &verdict.Verdict{}, Now: t0})
	if d.Allowed {
		t.Errorf("no token: %+v", d)
	}
	c, err := a.NewClaims(testIssuer, &Input{Cert: &verdict.Verdict{}, ServiceToken: job, Now: t0},
		a.Evaluate(&Input{Cert: &verdict.Verdict{}, ServiceToken: job, Now: t0}))
	if err != nil {
		t.Fatal(err)
	}
	if c.CommonName != "abc.access" || c.ServiceTokenName != "backend-job" || c.CertSHA256 != "" || c.Exp > t0.Add(time.Hour).Unix() {
		t.Errorf("claims: %+v", c)
	}
}

func mustSelIn(key string, v any) Selector {
	s, err := ParseSelectorIn(testEnv(), key, v)
	if err != nil {
		panic(err)
	}
	return s
}

func TestDecisionRule(t *testing.T) {
	a := app(time.Hour,
		pol("quarantine", Deny, sels(mustSelIn("list", "quarantine")), nil, nil),
		pol("meters", Allow, sels(selCN("x"), mustSelIn("san_uri", "spiffe://fleet.test/meter/*")), nil, nil))
	lists := NewListSet(mustList(t, "quarantine", ListCommonName, "meter-0099"))
	d := a.Evaluate(&Input{Cert: meterCert(), Lists: lists})
	if !d.Allowed || d.Rule != `include[1] san_uri = "spiffe://fleet.test/meter/*"` {
		t.Errorf("decision %+v", d)
	}
	lists = NewListSet(mustList(t, "quarantine", ListCommonName, "meter-0017"))
	d = a.Evaluate(&Input{Cert: meterCert(), Lists: lists})
	if d.Allowed || d.Rule != `include[0] list = "quarantine"` {
		t.Errorf("decision %+v", d)
	}
}
