package policy

import (
	"errors"
	"reflect"
	"regexp"
	"testing"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

func TestParseAction(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Action
		wantErr bool
	}{
		{name: "allow", in: "allow", want: Allow},
		{name: "deny", in: "deny", want: Deny},
		{name: "bypass", in: "bypass", want: Bypass},
		{name: "non_identity", in: "non_identity", want: NonIdentity},
		{name: "block is the UI name, not the key", in: "block", wantErr: true},
		{name: "case matters", in: "Allow", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAction(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if want := `policy: unknown decision "` + tt.in + `"`; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
					t.Errorf("err = %q, want prefix %q", err, want)
				}
				return
			}
			if got != tt.want || got.String() != tt.in {
				t.Errorf("got %v (%q), want %v", got, got.String(), tt.want)
			}
		})
	}
	if s := Action(42).String(); s != "action(42)" {
		t.Errorf("Action(42).String() = %q", s)
	}
}

func TestParseSelector(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		value     any
		wantErr   error
		wantMsg   string
		needsCert bool
	}{
		{name: "valid_certificate true", key: "valid_certificate", value: true, needsCert: true},
		{name: "valid_certificate false", key: "valid_certificate", value: false, wantErr: ErrSelectorValue,
			wantMsg: "valid_certificate: must be true (remove the rule instead of setting false)"},
		{name: "valid_certificate string", key: "valid_certificate", value: "true", wantErr: ErrSelectorValue,
			wantMsg: "valid_certificate: want true, got a string"},
		{name: "common_name", key: "common_name", value: "sensor-0001", needsCert: true},
		{name: "common_name empty", key: "common_name", value: "", wantErr: ErrSelectorValue,
			wantMsg: "common_name: must not be empty"},
		{name: "common_name integer", key: "common_name", value: int64(7), wantErr: ErrSelectorValue,
			wantMsg: "common_name: want a string, got an integer"},
		{name: "common_name array", key: "common_name", value: []any{"a"}, wantErr: ErrSelectorValue,
			wantMsg: "common_name: want a string, got an array"},
		{name: "everyone", key: "everyone", value: true},
		{name: "everyone false", key: "everyone", value: false, wantErr: ErrSelectorValue},
		{name: "everyone nil", key: "everyone", value: nil, wantErr: ErrSelectorValue,
			wantMsg: "everyone: want true, got nothing"},
		{name: "unknown key", key: "comon_name", value: "x", wantErr: ErrUnknownSelector,
			wantMsg: `unknown selector "comon_name"`},
		{name: "empty key", key: "", value: true, wantErr: ErrUnknownSelector},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSelector(tt.key, tt.value)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				var se *SelectorError
				if !errors.As(err, &se) || se.Key != tt.key {
					t.Fatalf("err %v is not a *SelectorError for %q", err, tt.key)
				}
				if tt.wantMsg != "" && (se.Msg != tt.wantMsg || err.Error() != "policy: "+tt.wantMsg) {
					t.Errorf("Msg = %q, Error = %q, want %q", se.Msg, err.Error(), tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Key() != tt.key || s.NeedsCertificate() != tt.needsCert {
				t.Errorf("Key %q NeedsCertificate %v", s.Key(), s.NeedsCertificate())
			}
		})
	}
}

func TestSelectorKeys(t *testing.T) {
	want := []string{"any_valid_service_token", "client_ca", "common_name", "common_name_pattern", "email", "email_domain", "everyone",
		"fingerprint", "group", "ip", "list", "login_method", "organization", "organizational_unit", "san_dns", "san_email", "san_uri",
		"serial", "service_token", "valid_certificate"}
	if got := SelectorKeys(); !reflect.DeepEqual(got, want) {
		t.Errorf("SelectorKeys() = %v, want %v", got, want)
	}
}

func TestSelectorMatch(t *testing.T) {
	aud := DeriveAUD("x")
	inputs := map[string]*Input{
		"no cert":                {},
		"missing verdict":        {Cert: &verdict.Verdict{}},
		"valid s1":               {Cert: validCert("sensor-0001", fp1)},
		"valid s2":               {Cert: validCert("sensor-0002", fp2)},
		"expired s1":             {Cert: badCert(verdict.Expired, "sensor-0001")},
		"unknown CA s1":          {Cert: badCert(verdict.UnknownAuthority, "sensor-0001")},
		"token s1":               {Token: sessionToken(aud, "sensor-0001", fp1)},
		"token without cert":     {Token: sessionToken(aud, "", "")},
		"no-duration token s1":   {Token: func() *Claims { c := sessionToken(aud, "sensor-0001", fp1); c.NoDuration = true; return c }()},
		"expired cert, token s1": {Cert: badCert(verdict.Expired, "sensor-0001"), Token: sessionToken(aud, "sensor-0001", fp1)},
		"valid s2, token s1":     {Cert: validCert("sensor-0002", fp2), Token: sessionToken(aud, "sensor-0001", fp1)},
	}
	tests := []struct {
		name  string
		sel   Selector
		input string
		want  bool
	}{
		{"valid_certificate: valid", selValid, "valid s1", true},
		{"valid_certificate: no cert", selValid, "no cert", false},
		{"valid_certificate: missing verdict", selValid, "missing verdict", false},
		{"valid_certificate: expired", selValid, "expired s1", false},
		{"valid_certificate: unknown CA", selValid, "unknown CA s1", false},
		{"valid_certificate: token after a cert", selValid, "token s1", true},
		{"valid_certificate: token minted without cert", selValid, "token without cert", false},
		{"valid_certificate: no-duration token", selValid, "no-duration token s1", false},
		{"valid_certificate: invalid cert never falls back to token", selValid, "expired cert, token s1", false},
		{"common_name: same CN", selCN("sensor-0001"), "valid s1", true},
		{"common_name: other CN", selCN("sensor-0001"), "valid s2", false},
		{"common_name: case-sensitive", selCN("Sensor-0001"), "valid s1", false},
		{"common_name: prefix is not a match", selCN("sensor-000"), "valid s1", false},
		{"common_name: CN of an invalid cert", selCN("sensor-0001"), "expired s1", false},
		{"common_name: token CN", selCN("sensor-0001"), "token s1", true},
		{"common_name: cert wins over token", selCN("sensor-0001"), "valid s2, token s1", false},
		{"common_name: no cert", selCN("sensor-0001"), "no cert", false},
		{"everyone: no cert", selEveryone, "no cert", true},
		{"everyone: expired", selEveryone, "expired s1", true},
		{"everyone: valid", selEveryone, "valid s1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, ok := inputs[tt.input]
			if !ok {
				t.Fatalf("no input %q", tt.input)
			}
			if got := tt.sel.Match(in); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSelectorString(t *testing.T) {
	for _, tt := range []struct {
		name string
		sel  Selector
		want string
	}{
		{"valid_certificate", selValid, "valid_certificate = true"},
		{"common_name", selCN(`a"b`), `common_name = "a\"b"`},
		{"everyone", selEveryone, "everyone = true"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.(interface{ String() string }).String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDeriveAUD(t *testing.T) {
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	tests := []struct {
		name string
		app  string
	}{
		{"simple", "telemetry"},
		{"empty", ""},
		{"unicode", "télémétrie"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := DeriveAUD(tt.app)
			if !hex64.MatchString(a) {
				t.Errorf("DeriveAUD(%q) = %q, not 64 lower-case hex", tt.app, a)
			}
			if DeriveAUD(tt.app) != a {
				t.Error("not deterministic")
			}
			if other, dup := seen[a]; dup {
				t.Errorf("same AUD for %q and %q", tt.app, other)
			}
			seen[a] = tt.app
		})
	}
	// Pinned: a change here changes every deployed application's AUD, which
	// breaks every origin that checks it.
	if got, want := DeriveAUD("telemetry"), pinnedTelemetryAUD; got != want {
		t.Errorf("DeriveAUD(telemetry) = %s, pinned %s", got, want)
	}
}

// pinnedTelemetryAUD is SHA-256("fleetgate/aud/v1\x00telemetry"), computed
// outside this package.
const pinnedTelemetryAUD = "2854543ec247442ba158bcd217201be078577a05d93b9b43dcbdbec39bfe7942"
