package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/policy"
)

func TestMinimalFileTakesDefaults(t *testing.T) {
	cfg, err := parseIn(t, base)
	if err != nil {
		t.Fatal(err)
	}
	want := Gateway{
		Listen: "127.0.0.1:8443", AdminListen: "127.0.0.1:9443", Issuer: "https://fleetgate.local",
		HandshakeQueue: 4096, HandshakeTimeout: 5 * time.Second, HeaderTimeout: 10 * time.Second,
		IdleTimeout: 60 * time.Second, DrainTimeout: 15 * time.Second, MaxConnectionAge: time.Hour, MaxConnections: 200000,
		MaxHeaderBytes: 16 << 10, MaxHeaderCount: 100, MaxBodyBytes: 8 << 20,
		OriginConnectTimeout: 5 * time.Second, OriginTimeout: 30 * time.Second,
		MaxConnsPerOrigin: 512, VerdictCacheSize: 100000, TokenCacheSize: 100000,
		GCHeapTarget: 64 << 20, MemoryReleaseAfter: 500 * time.Millisecond,
	}
	if !reflect.DeepEqual(cfg.Gateway, want) {
		t.Errorf("gateway:\n got %+v\nwant %+v", cfg.Gateway, want)
	}
	if tk := cfg.Tokens; tk.CookieName != "CF_Authorization" || tk.CookieSameSite != "lax" || tk.SigningKey == nil || tk.EphemeralKey || len(tk.PreviousKeys) != 0 {
		t.Errorf("tokens: %+v", tk)
	}
	sum := sha256.Sum256([]byte(base))
	if cfg.Path != "fleetgate.toml" || cfg.Hash != hex.EncodeToString(sum[:]) || len(cfg.Warnings) != 0 {
		t.Errorf("path %q hash %q warnings %v", cfg.Path, cfg.Hash, cfg.Warnings)
	}

	p := fixtures(t)
	if len(cfg.ClientCAs) != 1 {
		t.Fatalf("client CAs: %d", len(cfg.ClientCAs))
	}
	ca := cfg.ClientCAs[0]
	rootSum := sha256.Sum256(p.root.DER)
	switch {
	case ca.Name != "fleet" || len(ca.ID) != 32:
		t.Errorf("name %q id %q", ca.Name, ca.ID)
	case len(ca.Roots) != 1 || !ca.Roots[0].Equal(p.root.Cert):
		t.Errorf("roots: %v", ca.Roots)
	case len(ca.Intermediates) != 1 || !ca.Intermediates[0].Equal(p.inter.Cert):
		t.Errorf("intermediates: %v", ca.Intermediates)
	case !ca.ExpiresOn.Equal(p.inter.Cert.NotAfter): // the intermediate expires first
		t.Errorf("expires on %v, want %v", ca.ExpiresOn, p.inter.Cert.NotAfter)
	case ca.Fingerprint != hex.EncodeToString(rootSum[:]):
		t.Errorf("fingerprint %s", ca.Fingerprint)
	case strings.Join(ca.Hostnames, ",") != "devices.fleet.test,app.fleet.test":
		t.Errorf("hostnames %v", ca.Hostnames)
	}

	if len(cfg.Applications) != 1 {
		t.Fatalf("applications: %d", len(cfg.Applications))
	}
	app := cfg.Applications[0]
	switch {
	case app.Name != "telemetry" || app.Domain != "devices.fleet.test" || app.AUD != policy.DeriveAUD("telemetry"):
		t.Errorf("app %q %q %q", app.Name, app.Domain, app.AUD)
	case app.SessionDuration != 24*time.Hour:
		t.Errorf("session duration %v, want the 24h default", app.SessionDuration)
	case app.Origin.String() != "http://127.0.0.1:9000":
		t.Errorf("origin %v", app.Origin)
	case app.Certificate.Leaf == nil || app.Certificate.Leaf.Subject.CommonName != "devices.fleet.test" || len(app.Certificate.Certificate) != 2:
		t.Errorf("certificate: %+v", app.Certificate)
	case len(app.ClientCAs) != 1 || app.ClientCAs[0] != &cfg.ClientCAs[0]:
		t.Errorf("client CAs %v", app.ClientCAs)
	case app.ForwardClientCert || app.SessionTickets || app.RejectInvalidCert || app.ServiceAuth401:
		t.Errorf("flags should default to false: %+v", app)
	case len(app.Policies) != 1 || app.Policies[0].Action != policy.NonIdentity || len(app.Policies[0].Include) != 1 || app.Policies[0].HasSessionDuration:
		t.Errorf("policies %+v", app.Policies)
	}
}

func TestEphemeralKey(t *testing.T) {
	noTokens := strings.Replace(base, "[tokens]\nsigning_key_file = \"keys/token.pem\"\n", "\n\n", 1)
	dir := t.TempDir()
	writeDemoDir(t, dir)
	if _, err := Parse("fleetgate.toml", []byte(noTokens), dir); err == nil {
		t.Fatal("a file without signing_key_file loaded with the default options")
	}
	cfg, err := Options{AllowEphemeralKey: true}.Parse("fleetgate.toml", []byte(noTokens), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Tokens.EphemeralKey || cfg.Tokens.SigningKey != nil {
		t.Errorf("tokens %+v", cfg.Tokens)
	}
	if got, want := warnings(cfg.Warnings), "fleetgate.toml: tokens: no signing_key_file: tokens are signed with a key generated at start and stop verifying after a restart"; got != want {
		t.Errorf("warnings:\n got %s\nwant %s", got, want)
	}
}

func TestSessionDurationAbsentVersusZero(t *testing.T) {
	for _, tc := range []struct {
		name             string
		app, pol         string // lines added to the application / policy
		wantApp, wantPol time.Duration
		wantHas          bool
	}{
		{name: "both absent", wantApp: 24 * time.Hour},
		{name: "application 0s", app: `session_duration = "0s"`, wantApp: 0},
		{name: "application 1h", app: `session_duration = "1h"`, wantApp: time.Hour},
		{name: "policy 0s overrides", pol: `session_duration = "0s"`, wantApp: 24 * time.Hour, wantPol: 0, wantHas: true},
		{name: "policy 30m, application 0s", app: `session_duration = "0s"`, pol: `session_duration = "30m"`, wantPol: 30 * time.Minute, wantHas: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := strings.Replace(base, `origin = "http://127.0.0.1:9000"`, `origin = "http://127.0.0.1:9000"`+"\n"+tc.app, 1)
			s = strings.Replace(s, `decision = "non_identity"`, `decision = "non_identity"`+"\n"+tc.pol, 1)
			cfg, err := parseIn(t, s)
			if err != nil {
				t.Fatal(err)
			}
			app := cfg.Applications[0]
			p := app.Policies[0]
			if app.SessionDuration != tc.wantApp || p.SessionDuration != tc.wantPol || p.HasSessionDuration != tc.wantHas {
				t.Errorf("application %v, policy %v (set %v); want %v, %v (set %v)",
					app.SessionDuration, p.SessionDuration, p.HasSessionDuration, tc.wantApp, tc.wantPol, tc.wantHas)
			}
		})
	}
}

func TestRelativePathsResolveAgainstTheFilesFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "fleetgate")
	writeDemoDir(t, dir)
	path := filepath.Join(dir, "fleetgate.toml")
	must(t, os.WriteFile(path, []byte(base), 0o644))
	// The test's working directory is the package folder, not dir.
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path != path || cfg.Dir != dir {
		t.Errorf("path %q dir %q", cfg.Path, cfg.Dir)
	}

	// Absolute names are used as they are.
	abs := strings.Replace(base, `"pki/ca-chain.pem"`, `"`+filepath.Join(dir, "pki/ca-chain.pem")+`"`, 1)
	if _, err := Parse("abs.toml", []byte(abs), filepath.Join(dir, "keys", "..")); err != nil {
		t.Fatal(err)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	if err == nil || !strings.HasPrefix(err.Error(), "configs: open ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestInlinePEM(t *testing.T) {
	p := fixtures(t)
	chain := "pem = \"\"\"\n" + string(p.inter.CertPEM()) + string(p.root.CertPEM()) + "\"\"\""
	cfg, err := parseIn(t, strings.Replace(base, `pem_file = "pki/ca-chain.pem"`, chain, 1))
	if err != nil {
		t.Fatal(err)
	}
	ca := cfg.ClientCAs[0]
	if len(ca.Roots) != 1 || !ca.Roots[0].Equal(p.root.Cert) || len(ca.Intermediates) != 1 {
		t.Errorf("roots %d intermediates %d", len(ca.Roots), len(ca.Intermediates))
	}
}

func TestClientCAsFor(t *testing.T) {
	cfg, err := parseIn(t, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		domain string
		want   int
	}{
		{"devices.fleet.test", 1},
		{"App.Fleet.Test", 1},
		{"other.fleet.test", 0},
		{"*.fleet.test", 0},
	} {
		if got := cfg.ClientCAsFor(tc.domain); len(got) != tc.want {
			t.Errorf("ClientCAsFor(%q) = %d CAs, want %d", tc.domain, len(got), tc.want)
		}
	}
}

// TestClientCASubjectsRepeatWithTheirKey: a CA certificate may appear more
// than once under one subject as long as its public key is the same: the
// same chain in two entries, or an intermediate cross-signed by another root.
func TestClientCASubjectsRepeatWithTheirKey(t *testing.T) {
	p := fixtures(t)
	otherRoot := pki.MustRoot(pki.Root("Other Root"))
	crossOpts := pki.Intermediate("Fleet Intermediate")
	crossOpts.Key = p.inter.Key
	cross := otherRoot.MustIssue(crossOpts)
	for _, tc := range []struct {
		name  string
		other []*pki.Cert
	}{
		{name: "same chain twice", other: []*pki.Cert{p.inter, p.root}},
		{name: "cross-signed intermediate", other: []*pki.Cert{cross, otherRoot}},
		{name: "both in one upload", other: []*pki.Cert{p.inter, cross, p.root, otherRoot}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeDemoDir(t, dir)
			must(t, writeFile(filepath.Join(dir, "pki/other.pem"), pki.ChainPEM(tc.other...)))
			src := base + "\n[[client_cas]]\nname = \"other\"\npem_file = \"pki/other.pem\"\nassociated_hostnames = [\"app.fleet.test\"]\n"
			cfg, err := Parse("fleetgate.toml", []byte(src), dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.ClientCAs) != 2 {
				t.Errorf("client CAs: %d, want 2", len(cfg.ClientCAs))
			}
		})
	}
}

func TestProxyProtocolFrom(t *testing.T) {
	cfg, err := parseIn(t, base+"[gateway]\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\", \"::1\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128"),
	}
	if !reflect.DeepEqual(cfg.Gateway.ProxyProtocolFrom, want) {
		t.Errorf("proxy_protocol_from = %v, want %v", cfg.Gateway.ProxyProtocolFrom, want)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %s", warnings(cfg.Warnings))
	}
	// Every address: allowed (a gateway reachable only through its
	// balancers), with a warning naming the line.
	cfg, err = parseIn(t, base+"[gateway]\nproxy_protocol_from = [\n  \"0.0.0.0/0\",\n]\n")
	if err != nil {
		t.Fatal(err)
	}
	want1 := `fleetgate.toml:22: gateway.proxy_protocol_from[0]: "0.0.0.0/0" believes a PROXY header from every address: any client can claim any device address; list the load balancers`
	if got := warnings(cfg.Warnings); got != want1 {
		t.Errorf("warnings:\n%s\nwant\n%s", got, want1)
	}
}
