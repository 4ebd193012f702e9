package configs

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/policy"
)

// secondApp is a second application for base, starting at line 21; its
// policy's include is on line 31.
func secondApp(domain, include string) string {
	return `
[[applications]]
name = "dashboard"
domain = "` + domain + `"
origin = "http://127.0.0.1:9000"
tls_cert_file = "pki/app.fleet.test.pem"
tls_key_file = "pki/app.fleet.test-key.pem"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = ` + include + `
`
}

func TestApplicationErrors(t *testing.T) {
	runErrorCases(t, []errorCase{
		{name: "the issue's example", src: appended(secondApp("app.fleet.test",
			`[{ valid_certificate = true }, { common_name = "sensor-0001" }, { comon_name = "sensor-0002" }]`)),
			want: []string{`fleetgate.toml:31: applications[1].policies[0].include[2]: unknown selector "comon_name"`}},
		{name: "duplicate domain, any case", src: appended(secondApp("Devices.Fleet.TEST", `[{ valid_certificate = true }]`)),
			want: []string{`fleetgate.toml:23: applications[1].domain: "devices.fleet.test" is also the domain of applications[0]`}},
		{name: "duplicate name", src: func(t *testing.T) string {
			return base + edit(t, secondApp("app.fleet.test", `[{ valid_certificate = true }]`), `"dashboard"`, `"telemetry"`)
		}, want: []string{`fleetgate.toml:22: applications[1].name: "telemetry" is also the name of applications[0]`}},
		{name: "certificate selector without a client CA", src: appended(secondApp("other.fleet.test", `[{ everyone = true }, { common_name = "sensor-0001" }]`)),
			want: []string{`fleetgate.toml:31: applications[1].policies[0].include[1]: common_name needs a client CA associated with "other.fleet.test": add "other.fleet.test" to the associated_hostnames of a [[client_cas]] entry`}},
		{name: "wildcard domain needs the same wildcard associated", src: appended(secondApp("*.fleet.test", `[{ valid_certificate = true }]`)),
			want: []string{`fleetgate.toml:31: applications[1].policies[0].include[0]: valid_certificate needs a client CA associated with "*.fleet.test": add "*.fleet.test" to the associated_hostnames of a [[client_cas]] entry`}},
		{name: "bad origins", src: func(t *testing.T) string {
			s := edit(t, base, `origin = "http://127.0.0.1:9000"`, `origin = "127.0.0.1:9000"`)
			return s + edit(t, secondApp("app.fleet.test", `[{ valid_certificate = true }]`), `origin = "http://127.0.0.1:9000"`, `origin = "https://127.0.0.1:9000/api"`)
		}, want: []string{
			`fleetgate.toml:12: applications[0].origin: "127.0.0.1:9000" is not an http:// or https:// URL with a host`,
			`fleetgate.toml:24: applications[1].origin: "https://127.0.0.1:9000/api": an origin is scheme://host[:port], without a path`,
		}},
		{name: "bad domains", src: func(t *testing.T) string {
			s := edit(t, base, `domain = "devices.fleet.test"`, `domain = "devices.fleet.test:8443"`)
			return s + secondApp("a*.fleet.test", `[{ valid_certificate = true }]`)
		}, want: []string{
			`fleetgate.toml:11: applications[0].domain: "devices.fleet.test:8443" is not a domain name: write the bare hostname, without scheme, port or path`,
			`fleetgate.toml:23: applications[1].domain: "a*.fleet.test": a wildcard must be the whole first label, as in "*.fleet.test"`,
		}},
		{name: "unknown decision", src: edited(`decision = "non_identity"`, `decision = "permit"`),
			want: []string{`fleetgate.toml:18: applications[0].policies[0].decision: unknown decision "permit" (want allow, deny, bypass or non_identity)`}},
		{name: "selector entries with zero and two keys", src: edited(`include = [{ valid_certificate = true }]`, `include = [{}, { valid_certificate = true, common_name = "a" }]`),
			want: []string{
				`fleetgate.toml:19: applications[0].policies[0].include[0]: empty selector: write exactly one key, such as { valid_certificate = true }`,
				`fleetgate.toml:19: applications[0].policies[0].include[1]: 2 selectors in one entry (common_name, valid_certificate): write each as its own entry`,
			}},
		{name: "empty include", src: edited(`include = [{ valid_certificate = true }]`, "include = []\nrequire = [{ valid_certificate = false }]"),
			want: []string{
				`fleetgate.toml:19: applications[0].policies[0].include: must list at least one selector, such as [{ valid_certificate = true }]`,
				`fleetgate.toml:20: applications[0].policies[0].require[0]: valid_certificate: must be true (remove the rule instead of setting false)`,
			}},
		{name: "missing include", src: edited(`include = [{ valid_certificate = true }]`, `exclude = [{ common_name = "x" }]`),
			want: []string{`fleetgate.toml:16: applications[0].policies[0].include: must list at least one selector, such as [{ valid_certificate = true }]`}},
		{name: "durations out of range and aud", src: edited(`tls_key_file = "pki/devices.fleet.test-key.pem"`,
			"tls_key_file = \"pki/devices.fleet.test-key.pem\"\nsession_duration = \"2000h\"\naud = \"xyz\""),
			want: []string{
				`fleetgate.toml:15: applications[0].session_duration: 2000h0m0s is longer than one month (744h0m0s)`,
				`fleetgate.toml:16: applications[0].aud: "xyz" is not an AUD tag: want 64 hex characters`,
			}},
		{name: "duplicate aud", src: func(t *testing.T) string {
			return base + edit(t, secondApp("app.fleet.test", `[{ valid_certificate = true }]`), `name = "dashboard"`, `name = "dashboard"`+"\naud = \""+deriveTelemetryAUD+"\"")
		}, want: []string{`fleetgate.toml:23: applications[1].aud: AUD ` + deriveTelemetryAUD + ` is also the AUD of applications[0]: tokens would be valid for both`}},
		{name: "policy session duration", src: edited(`decision = "non_identity"`, "decision = \"non_identity\"\nsession_duration = \"1d\""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].session_duration: invalid duration "1d" (use Go units such as "90s", "15m" or "24h")`}},
		{name: "reject_invalid_cert without a client CA", src: appended(edit(t, secondApp("other.fleet.test", `[{ everyone = true }]`), `name = "dashboard"`, "name = \"dashboard\"\nreject_invalid_cert = true")),
			want: []string{`fleetgate.toml:23: applications[1].reject_invalid_cert: needs a client CA associated with "other.fleet.test": without one every device would be rejected`}},
		{name: "key does not match certificate", src: edited(`pki/devices.fleet.test-key.pem`, `pki/app.fleet.test-key.pem`),
			want: []string{`fleetgate.toml:14: applications[0].tls_key_file: pki/app.fleet.test-key.pem does not match the certificate in pki/devices.fleet.test.pem`}},
		{name: "missing and unreadable certificate files", src: func(t *testing.T) string {
			s := edit(t, base, `tls_key_file = "pki/devices.fleet.test-key.pem"`, ``)
			return s + edit(t, secondApp("app.fleet.test", `[{ valid_certificate = true }]`), `pki/app.fleet.test.pem`, `pki/nope.pem`)
		}, want: []string{
			`fleetgate.toml:9: applications[0].tls_key_file: required: the private key of tls_cert_file, as a PEM file`,
			`fleetgate.toml:25: applications[1].tls_cert_file: open $DIR/pki/nope.pem: no such file or directory`,
		}},
		{name: "certificate file without a certificate", src: edited(`tls_cert_file = "pki/devices.fleet.test.pem"`, `tls_cert_file = "pki/devices.fleet.test-key.pem"`),
			want: []string{`fleetgate.toml:13: applications[0].tls_cert_file: pki/devices.fleet.test-key.pem does not start with a PEM CERTIFICATE block`}},
		{name: "expired server certificate", setup: func(t *testing.T, dir string, p *testPKI) {
			o := pki.Server(DemoDevicesDomain)
			o.NotBefore, o.NotAfter = time.Now().Add(-72*time.Hour), time.Now().Add(-time.Hour)
			c := p.inter.MustIssue(o)
			must(t, c.WriteFiles(filepath.Join(dir, "pki/old.pem"), filepath.Join(dir, "pki/old-key.pem")))
		}, src: func(t *testing.T) string {
			s := edit(t, base, `pki/devices.fleet.test.pem`, `pki/old.pem`)
			return edit(t, s, `pki/devices.fleet.test-key.pem`, `pki/old-key.pem`)
		}, want: []string{`fleetgate.toml:13: applications[0].tls_cert_file: server certificate "devices.fleet.test" expired on ` + time.Now().Add(-time.Hour).UTC().Format(time.DateOnly)}},
	})
}

// deriveTelemetryAUD is the AUD derived for base's application.
var deriveTelemetryAUD = policy.DeriveAUD("telemetry")

// TestOriginCAFile: origin_ca_file gives an https origin its own roots; it
// is refused on an http origin, and a file without a certificate is refused.
func TestOriginCAFile(t *testing.T) {
	withCA := func(origin, file string) string {
		return strings.Replace(base, `origin = "http://127.0.0.1:9000"`,
			`origin = "`+origin+`"`+"\n"+`origin_ca_file = "`+file+`"`, 1)
	}
	cfg, err := parseIn(t, withCA("https://127.0.0.1:9443", "pki/ca-chain.pem"))
	if err != nil {
		t.Fatalf("https origin with origin_ca_file: %v", err)
	}
	if a := cfg.Applications[0]; a.OriginCAs == nil || a.OriginCAsSum == [32]byte{} {
		t.Fatal("origin_ca_file loaded no roots")
	}
	for _, tc := range []struct{ name, src, want string }{
		{"http origin", withCA("http://127.0.0.1:9000", "pki/ca-chain.pem"),
			`fleetgate.toml:13: applications[0].origin_ca_file: needs an https origin: http://127.0.0.1:9000 has no certificate to verify`},
		{"a key, not certificates", withCA("https://127.0.0.1:9443", "keys/token.pem"),
			`fleetgate.toml:13: applications[0].origin_ca_file: keys/token.pem holds a `},
		{"missing file", withCA("https://127.0.0.1:9443", "pki/none.pem"),
			`fleetgate.toml:13: applications[0].origin_ca_file: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIn(t, tc.src)
			if err == nil {
				t.Fatal("loaded")
			}
			if got := strings.Join(problems(t, err), "\n"); !strings.Contains(got, tc.want) {
				t.Errorf("problems:\n%s\nwant one starting %q", got, tc.want)
			}
		})
	}
}
