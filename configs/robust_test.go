package configs

import (
	"errors"
	"strings"
	"testing"
)

func TestMultipleErrorsReportedTogether(t *testing.T) {
	src := strings.Join([]string{
		`[gateway]`,                           // 1
		`listen = "nope"`,                     // 2
		`max_header_bytes = "16 KiBs"`,        // 3
		`colour = "blue"`,                     // 4
		``,                                    // 5
		`[tokens]`,                            // 6
		`signing_key_file = "keys/token.pem"`, // 7
		`cookie_same_site = "sideways"`,       // 8
		``,                                    // 9
		`[[client_cas]]`,                      // 10
		`name = "fleet"`,                      // 11
		`pem_file = "pki/ca-chain.pem"`,       // 12
		`associated_hostnames = ["devices.fleet.test"]`, // 13
		``,                                 // 14
		`[[applications]]`,                 // 15
		`name = "a"`,                       // 16
		`domain = "devices.fleet.test"`,    // 17
		`origin = "http://127.0.0.1:9000"`, // 18
		`tls_cert_file = "pki/devices.fleet.test.pem"`,    // 19
		`tls_key_file = "pki/devices.fleet.test-key.pem"`, // 20
		`[[applications.policies]]`,                       // 21
		`name = "p"`,                                      // 22
		`decision = "allow"`,                              // 23
		`include = [{ comon_name = "x" }]`,                // 24
		`[[applications]]`,                                // 25
		`name = "b"`,                                      // 26
		`domain = "DEVICES.fleet.test"`,                   // 27
		`origin = "http://127.0.0.1:9000"`,                // 28
		`tls_cert_file = "pki/app.fleet.test.pem"`,        // 29
		`tls_key_file = "pki/app.fleet.test-key.pem"`,     // 30
		``,
	}, "\n")
	_, err := parseIn(t, src)
	want := []string{
		`fleetgate.toml:2: gateway.listen: "nope" is not host:port (e.g. "127.0.0.1:8443" or ":8443")`,
		`fleetgate.toml:3: gateway.max_header_bytes: invalid size "16 KiBs" (use bytes or units such as "16KiB", "8MiB" or "1GB")`,
		`fleetgate.toml:4: gateway.colour: unknown key`,
		`fleetgate.toml:8: tokens.cookie_same_site: "sideways" is not lax, strict or none`,
		`fleetgate.toml:24: applications[0].policies[0].include[0]: unknown selector "comon_name"`,
		`fleetgate.toml:27: applications[1].domain: "devices.fleet.test" is also the domain of applications[0]`,
	}
	if got := problems(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("Error():\n%s", got)
	}
	// The warnings (applications[1] has no policies) travel with them.
	var e *Errors
	if errors.As(err, &e) && len(e.Warnings) != 1 {
		t.Errorf("warnings: %v", e.Warnings)
	}
}

// garbage are inputs that must come back as errors, never as a panic.
var garbage = []string{
	"",
	"\x00\xff\xfe",
	"[[[",
	"a = [[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]",
	strings.Repeat("[", 5000),
	"gateway = 1\ntokens = []\nclient_cas = {}\napplications = [1, \"x\", true]",
	"[gateway]\nlisten = 1979-05-27T07:32:00Z\nmax_body_bytes = nan\nhandshake_timeout = inf\nevent_loops = 9223372036854775807",
	"[[applications]]\n[[applications.policies]]\ninclude = [[{}], {a={b={c=1}}}, 3]\nrequire = \"x\"\nexclude = {}",
	"[[applications]]\npolicies = [1]\n[[client_cas]]\npem = \"-----BEGIN CERTIFICATE-----\\n\\n-----END CERTIFICATE-----\"\nassociated_hostnames = [1, [\"x\"]]",
	"[[applications]]\ndomain = \"\\u0000.\\u00e9\"\norigin = \"http://[::1\"\naud = \"\"\nsession_duration = \"9999999999999h\"",
	"[tokens]\nsigning_key_file = \"/dev/null\"\nprevious_key_files = [\"/\", \"\"]\n[[client_cas]]\npem_file = \"/proc/self/nonexistent\"",
}

func TestGarbageNeverPanics(t *testing.T) {
	for _, g := range garbage {
		cfg, err := Parse("garbage.toml", []byte(g), t.TempDir())
		if err == nil && g != "" {
			t.Errorf("%.40q loaded: %+v", g, cfg)
		}
	}
}
