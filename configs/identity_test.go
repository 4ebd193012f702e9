package configs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/policy"
)

// idpSecret is the client secret the tests write; it must appear in no
// message, dump or log.
const idpSecret = "s3cr3t-Value-that-must-never-print"

// idpConfig is base with an identity provider and a console application
// that offers it; edit replaces parts of the text.
func idpConfig(provider, app string) string {
	if provider == "" {
		provider = `
[[identity_providers]]
name = "corp"
type = "oidc"
issuer = "https://idp.fleet.test"
client_id = "fleetgate"
client_secret_file = "secrets/oidc-secret"
`
	}
	if app == "" {
		app = `identity_providers = ["corp"]
session_duration = "8h"`
	}
	return base + provider + `
[[applications]]
name = "console"
domain = "app.fleet.test"
origin = "http://127.0.0.1:9100"
tls_cert_file = "pki/app.fleet.test.pem"
tls_key_file = "pki/app.fleet.test-key.pem"
` + app + `

[[applications.policies]]
name = "ops on enrolled laptops"
decision = "allow"
include = [{ email_domain = "fleet.test" }, { group = "ops" }]
require = [{ valid_certificate = true }]
`
}

// parseIdP parses src in a demo folder that also holds the secret file.
func parseIdP(t *testing.T, src string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	writeDemoDir(t, dir)
	must(t, writeFile(filepath.Join(dir, "secrets/oidc-secret"), []byte(idpSecret+"\n")))
	must(t, writeFile(filepath.Join(dir, "pki/idp-ca.pem"), fixtures(t).root.CertPEM()))
	return Parse("fleetgate.toml", []byte(src), dir)
}

func TestIdentityProviderLoads(t *testing.T) {
	cfg, err := parseIdP(t, idpConfig("", ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.IdentityProviders) != 1 {
		t.Fatalf("providers %d", len(cfg.IdentityProviders))
	}
	p := cfg.IdentityProviders[0]
	if p.ClientSecret.Reveal() != idpSecret || p.GroupsClaim != "groups" || strings.Join(p.Scopes, " ") != "openid email profile" || p.OriginCAs != nil {
		t.Fatalf("provider %+v (scopes %v)", p, p.Scopes)
	}
	app := cfg.Applications[1]
	if !app.Login || len(app.IdentityProviders) != 1 || app.IdentityProviders[0] != "corp" {
		t.Fatalf("application: Login %v providers %v", app.Login, app.IdentityProviders)
	}
	if cfg.IdentityProvider("corp") == nil || cfg.IdentityProvider("other") != nil {
		t.Fatal("IdentityProvider lookup")
	}
	// The secret never prints: fmt verbs, JSON, slog.
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("provider", "p", p, "secret", p.ClientSecret)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("provider", "p", p, "secret", p.ClientSecret)
	js, _ := json.Marshal(p)
	for _, out := range []string{fmt.Sprintf("%v", p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), fmt.Sprintf("%s", p.ClientSecret),
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", &p), string(js), logs.String()} {
		if strings.Contains(out, idpSecret) {
			t.Fatalf("the client secret leaked: %s", out)
		}
	}
	if !strings.Contains(string(js), redacted) {
		t.Fatalf("JSON %s does not say redacted", js)
	}
}

func TestIdentityProviderScopesAndCA(t *testing.T) {
	cfg, err := parseIdP(t, idpConfig(`
[[identity_providers]]
name = "corp"
issuer = "https://idp.fleet.test/realms/fleet"
client_id = "fleetgate"
client_secret_file = "secrets/oidc-secret"
scopes = ["openid", "email"]
groups_claim = "roles"
origin_ca_file = "pki/idp-ca.pem"
`, ""))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.IdentityProviders[0]
	if p.Type != "oidc" || p.GroupsClaim != "roles" || len(p.Scopes) != 2 || p.OriginCAs == nil || p.Issuer != "https://idp.fleet.test/realms/fleet" {
		t.Fatalf("provider %+v", p)
	}
}

func TestIdentityProviderErrors(t *testing.T) {
	provider := func(lines string) string { return "\n[[identity_providers]]\n" + lines + "\n" }
	for _, tc := range []struct {
		name     string
		provider string
		app      string
		want     []string
	}{
		{name: "unknown provider name", app: `identity_providers = ["crop"]`,
			want: []string{`applications[1].identity_providers[0]: unknown identity provider "crop"`}},
		{name: "listed twice", app: `identity_providers = ["corp", "corp"]`,
			want: []string{`applications[1].identity_providers[1]: "corp" is listed twice`}},
		{name: "duplicate provider name", provider: provider(`name = "corp"
issuer = "https://idp.fleet.test"
client_id = "a"
client_secret_file = "secrets/oidc-secret"`) + provider(`name = "corp"
issuer = "https://idp2.fleet.test"
client_id = "b"
client_secret_file = "secrets/oidc-secret"`),
			want: []string{`identity_providers[1].name: "corp" is also the name of identity_providers[0]`}},
		{name: "missing fields", provider: provider(`name = "corp"`),
			want: []string{"identity_providers[0].issuer: required", "identity_providers[0].client_id: required", "identity_providers[0].client_secret_file: required"}},
		{name: "unreadable secret file", provider: provider(`name = "corp"
issuer = "https://idp.fleet.test"
client_id = "fleetgate"
client_secret_file = "secrets/missing"`),
			want: []string{"identity_providers[0].client_secret_file:", "secrets/missing"}},
		{name: "wrong type, plain http issuer, no openid scope", provider: provider(`name = "corp"
type = "saml"
issuer = "http://idp.fleet.test"
client_id = "fleetgate"
client_secret_file = "secrets/oidc-secret"
scopes = ["email"]`),
			want: []string{`identity_providers[0].type: "saml" is not "oidc"`, "identity_providers[0].issuer: \"http://idp.fleet.test\": an issuer must be https://", `identity_providers[0].scopes: must include "openid"`}},
		{name: "no duration", app: `identity_providers = ["corp"]
session_duration = "0s"`,
			want: []string{`applications[1].identity_providers: needs sessions`}},
		{name: "identity selector without providers", app: `session_duration = "8h"`,
			want: []string{`applications[1].policies[0].include[0]: email_domain needs a logged-in person`, "include[1]: group needs a logged-in person"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIdP(t, idpConfig(tc.provider, tc.app))
			if err == nil {
				t.Fatal("loaded")
			}
			all := strings.Join(problems(t, err), "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("missing %q in:\n%s", w, all)
				}
			}
			if strings.Contains(all, idpSecret) {
				t.Fatalf("the secret leaked:\n%s", all)
			}
		})
	}
}

func TestIdentityProvidersRefusedOnWildcardAndTCP(t *testing.T) {
	src := base + `
[[identity_providers]]
name = "corp"
issuer = "https://idp.fleet.test"
client_id = "fleetgate"
client_secret_file = "secrets/oidc-secret"

[[applications]]
name = "wild"
domain = "*.fleet.test"
origin = "http://127.0.0.1:9100"
tls_cert_file = "pki/app.fleet.test.pem"
tls_key_file = "pki/app.fleet.test-key.pem"
identity_providers = ["corp"]

[[applications]]
name = "stream"
domain = "stream.fleet.test"
protocol = "tcp"
origin = "tcp://127.0.0.1:7000"
tls_cert_file = "pki/app.fleet.test.pem"
tls_key_file = "pki/app.fleet.test-key.pem"
identity_providers = ["corp"]

[[applications]]
name = "broker"
domain = "mqtt.fleet.test"
protocol = "mqtt"
origin = "tcp://127.0.0.1:1883"
tls_cert_file = "pki/app.fleet.test.pem"
tls_key_file = "pki/app.fleet.test-key.pem"
identity_providers = ["corp"]
`
	_, err := parseIdP(t, src)
	all := strings.Join(problems(t, err), "\n")
	for _, w := range []string{
		"applications[1].identity_providers: not for a wildcard domain",
		"applications[2].identity_providers: not for a tcp application",
		"applications[3].identity_providers: not for an mqtt application",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("missing %q in:\n%s", w, all)
		}
	}
}

func TestSecretFileChangeIsRead(t *testing.T) {
	dir := t.TempDir()
	writeDemoDir(t, dir)
	path := filepath.Join(dir, "secrets/oidc-secret")
	must(t, writeFile(path, []byte("first\n")))
	src := []byte(idpConfig("", ""))
	a, err := Parse("fleetgate.toml", src, dir)
	must(t, err)
	must(t, os.WriteFile(path, []byte("second"), 0o600))
	b, err := Parse("fleetgate.toml", src, dir)
	must(t, err)
	if a.IdentityProviders[0].ClientSecret.Reveal() != "first" || b.IdentityProviders[0].ClientSecret.Reveal() != "second" {
		t.Fatal("a reload must read the secret file again")
	}
	if policy.NeedsIdentity(a.Applications[1].Policies[0].Include[0]) != true {
		t.Fatal("email_domain is an identity selector")
	}
}
