package configs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"net/url"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/policy"
)

func TestDemoParsesAgainstAGeneratedFolder(t *testing.T) {
	dir := t.TempDir()
	writeDemoDir(t, dir)
	cfg, err := Parse(DemoName, Demo(), dir)
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Gateway
	if g.Listen != "127.0.0.1:8443" || g.AdminListen != "127.0.0.1:9443" || g.Issuer != "https://access.fleet.test" {
		t.Errorf("gateway %+v", g)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings:\n%s", warnings(cfg.Warnings))
	}
	if len(cfg.Applications) != 4 {
		t.Fatalf("applications: %d", len(cfg.Applications))
	}
	for i, want := range []struct {
		domain   string
		protocol Protocol
		origin   string
		duration time.Duration
		include  string
	}{
		{DemoDevicesDomain, ProtocolHTTP, DemoOrigin, 0, `common_name = "sensor-0001"`},
		{DemoAppDomain, ProtocolHTTP, DemoOrigin, 24 * time.Hour, `valid_certificate = true`},
		{DemoMQTTDomain, ProtocolMQTT, DemoMQTTOrigin, 0, `valid_certificate = true`},
	} {
		app := cfg.Applications[i]
		if app.Domain != want.domain || app.Protocol != want.protocol || app.SessionDuration != want.duration ||
			app.Origin.String() != want.origin || len(app.ClientCAs) != 1 {
			t.Errorf("applications[%d]: %q %q %v %v %d CAs", i, app.Domain, app.Protocol, app.SessionDuration, app.Origin, len(app.ClientCAs))
		}
		if len(app.Policies) != 1 || app.Policies[0].Action != policy.NonIdentity || len(app.Policies[0].Include) != 1 ||
			app.Policies[0].Include[0].(interface{ String() string }).String() != want.include {
			t.Errorf("applications[%d] policies: %+v", i, app.Policies)
		}
	}

	// The mqtt application binds the client id and the username to the CN.
	mq := cfg.Applications[2]
	if mq.MQTT == nil || *mq.MQTT != (MQTTSettings{ClientID: MQTTCNPlaceholder, Username: MQTTCommonName, Password: MQTTKeep, MaxConnectBytes: defaultMaxConnectBytes}) {
		t.Errorf("applications[2] mqtt settings: %+v", mq.MQTT)
	}
	if id, ok := mq.MQTT.ExpectedClientID("sensor-0001"); !ok || id != "sensor-0001" {
		t.Errorf("expected client id of sensor-0001: %q %v", id, ok)
	}

	// The console: people log in at the demo identity provider, and the
	// policy that admits them requires an enrolled laptop's certificate.
	if len(cfg.IdentityProviders) != 1 {
		t.Fatalf("%d identity providers, want 1", len(cfg.IdentityProviders))
	}
	idp := cfg.IdentityProviders[0]
	if idp.Name != DemoIdP || idp.Issuer != DemoIdPIssuer || idp.ClientID != "fleetgate" || idp.ClientSecretFile != DemoIdPSecret ||
		idp.ClientSecret.Reveal() != demoSecret || idp.OriginCAs == nil || idp.GroupsClaim != "groups" ||
		!reflect.DeepEqual(idp.Scopes, []string{"openid", "email", "profile"}) {
		t.Errorf("identity_providers[0]: %+v", idp)
	}
	if u, _ := url.Parse(DemoIdPIssuer); u.Hostname() != DemoIdPDomain || u.Port() == "" || !strings.HasSuffix(DemoIdPListen, ":"+u.Port()) {
		t.Errorf("the issuer %s is not served by %s on %s", DemoIdPIssuer, DemoIdPDomain, DemoIdPListen)
	}
	con := cfg.Applications[3]
	if con.Domain != DemoConsoleDomain || con.Protocol != ProtocolHTTP || con.Origin.String() != DemoOrigin ||
		con.SessionDuration != 8*time.Hour || !reflect.DeepEqual(con.IdentityProviders, []string{DemoIdP}) || len(con.ClientCAs) != 1 {
		t.Errorf("applications[3]: %q %v %v %v %d CAs", con.Domain, con.Origin, con.SessionDuration, con.IdentityProviders, len(con.ClientCAs))
	}
	if len(con.Policies) != 1 || con.Policies[0].Action != policy.Allow || len(con.Policies[0].Include) != 2 || len(con.Policies[0].Require) != 1 ||
		!policy.NeedsIdentity(con.Policies[0].Include[0]) || !policy.NeedsIdentity(con.Policies[0].Include[1]) ||
		con.Policies[0].Require[0].(interface{ String() string }).String() != "valid_certificate = true" {
		t.Errorf("applications[3] policies: %+v", con.Policies)
	}

	// Demo returns a copy: changing it changes nothing for the next caller.
	d := Demo()
	d[0] = 'X'
	if bytes.Equal(d, Demo()) {
		t.Error("Demo shares its bytes")
	}
}

// TestDemoNamesItsFiles checks that demo.toml refers to exactly the Demo*
// constants, so the gateway writes the files the demo reads.
func TestDemoNamesItsFiles(t *testing.T) {
	dir := t.TempDir() // empty: every file is missing
	_, err := Parse(DemoName, Demo(), dir)
	var e *Errors
	if !errors.As(err, &e) {
		t.Fatalf("want *Errors, got %v", err)
	}
	var got []string
	for _, p := range e.Problems {
		name, found := strings.CutPrefix(p.Msg, "open "+dir+string(filepath.Separator))
		name, _, _ = strings.Cut(name, ": no such file")
		if !found {
			t.Errorf("unexpected problem: %s", p)
		}
		got = append(got, filepath.ToSlash(name))
	}
	want := []string{DemoTokenKey, DemoCAChain, DemoIdPSecret, DemoRootCA, DemoDevicesCert, DemoDevicesKey, DemoAppCert, DemoAppKey, DemoMQTTCert, DemoMQTTKey, DemoConsoleCert, DemoConsoleKey}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("demo files:\n got %v\nwant %v", got, want)
	}
}

func TestExampleFileLoads(t *testing.T) {
	dir := t.TempDir()
	writeDemoDir(t, dir)
	example, err := os.ReadFile("fleetgate.toml")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "fleetgate.toml"), example, 0o644))
	cfg, err := Load(filepath.Join(dir, "fleetgate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings:\n%s", warnings(cfg.Warnings))
	}
	if cfg.Gateway.DefaultSite != "devices.fleet.test" || len(cfg.Tokens.PreviousKeys) != 1 || len(cfg.Applications) != 4 {
		t.Errorf("gateway %+v, %d previous keys, %d applications", cfg.Gateway, len(cfg.Tokens.PreviousKeys), len(cfg.Applications))
	}
	if ca := cfg.ClientCAs[0]; len(ca.CRLs) != 1 || ca.CRLs[0].Issuer.Subject.CommonName != "Fleet Intermediate" || ca.CRLStale != "warn" {
		t.Errorf("client_cas[0]: %d CRLs, crl_stale %q", len(ca.CRLs), ca.CRLStale)
	}
	if r := cfg.Revocation; len(r.DeniedSerials) != 1 || r.DeniedSerials[0].Text(16) != "4f1a9c03d2" || len(r.DeniedFingerprints) != 1 {
		t.Errorf("revocation: %+v", r)
	}
	app := cfg.Applications[0]
	if !strings.HasPrefix(app.AUD, "7c1b3f0e") || !app.ForwardClientCert || len(app.Policies) != 2 || app.SessionDuration != 0 || app.Protocol != ProtocolHTTP {
		t.Errorf("applications[0]: %+v", app)
	}
	tcp := cfg.Applications[2]
	if tcp.Protocol != ProtocolTCP || tcp.Origin.String() != "tcp://127.0.0.1:7000" || tcp.ProxyProtocol != ProxyProtocolV2 ||
		!tcp.ForwardClientCert || tcp.IdleTimeout != 10*time.Minute || tcp.MaxConnectionAge != 0 || tcp.RelayBuffer != 256<<10 ||
		tcp.OriginConnectTimeout != 5*time.Second || tcp.SessionDuration != 0 || len(tcp.ClientCAs) != 1 {
		t.Errorf("applications[2]: %+v", tcp)
	}
	mq := cfg.Applications[3]
	if mq.Protocol != ProtocolMQTT || mq.MQTT == nil || *mq.MQTT != (MQTTSettings{ClientID: "{cn}", Username: MQTTCommonName, Password: MQTTToken, MaxConnectBytes: 64 << 10}) ||
		mq.Origin.Host != "127.0.0.1:1883" || len(mq.ClientCAs) != 1 {
		t.Errorf("applications[3]: %+v %+v", mq, mq.MQTT)
	}
}

// TestExampleDocumentsEveryKey checks that fleetgate.toml sets (or shows in
// a comment) every key of the schema.
func TestExampleDocumentsEveryKey(t *testing.T) {
	example, err := os.ReadFile("fleetgate.toml")
	must(t, err)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := f.Tag.Get("toml")
			ft := f.Type
			for ft.Kind() == reflect.Pointer || (ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct) {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != timeType {
				walk(prefix+key+".", ft)
				continue
			}
			if !regexp.MustCompile(`(?m)^#? ?` + key + ` = `).Match(example) {
				t.Errorf("fleetgate.toml does not show %s%s", prefix, key)
			}
		}
	}
	walk("", reflect.TypeFor[fileConfig]())
}

func TestWarnings(t *testing.T) {
	p := fixtures(t)
	soonOpts := pki.Root("Soon Root")
	soonOpts.NotAfter = time.Now().Add(40 * 24 * time.Hour)
	soon := pki.MustRoot(soonOpts)
	wild := p.inter.MustIssue(pki.Server("*.fleet.test"))

	dir := t.TempDir()
	writeDemoDir(t, dir)
	must(t, writeFile(filepath.Join(dir, "pki/soon.pem"), soon.CertPEM()))
	must(t, wild.WriteFiles(filepath.Join(dir, "pki/wild.pem"), filepath.Join(dir, "pki/wild-key.pem")))
	src := base + `
[[applications]]
name = "other"
domain = "other.fleet.test"
origin = "http://127.0.0.1:9000"
tls_cert_file = "pki/app.fleet.test.pem"
tls_key_file = "pki/app.fleet.test-key.pem"

[[applications]]
name = "wildcard"
domain = "*.fleet.test"
origin = "http://127.0.0.1:9000"
tls_cert_file = "pki/wild.pem"
tls_key_file = "pki/wild-key.pem"

[[applications.policies]]
name = "anyone"
decision = "allow"
include = [{ everyone = true }]

[[client_cas]]
name = "soon"
pem_file = "pki/soon.pem"
`
	// Ten days and an hour before the soon root expires.
	now := soon.Cert.NotAfter.Add(-10*24*time.Hour - time.Hour)
	cfg, err := Options{Now: now}.Parse("fleetgate.toml", []byte(src), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		`fleetgate.toml:21: applications[1]: no policies: every request to "other.fleet.test" is denied`,
		`fleetgate.toml:25: applications[1].tls_cert_file: server certificate "app.fleet.test" does not cover "other.fleet.test" (DNS names: app.fleet.test)`,
		`fleetgate.toml:40: client_cas[1]: no associated_hostnames: no application uses this CA`,
		`fleetgate.toml:42: client_cas[1].pem_file: certificate 1 ("Soon Root") expires on ` + soon.Cert.NotAfter.UTC().Format(time.DateOnly) + `, in 10 days`,
	}, "\n")
	if got := warnings(cfg.Warnings); got != want {
		t.Errorf("warnings:\n got %s\nwant %s", got, want)
	}

	// When the load fails, the warnings travel with the errors.
	_, err = Options{Now: now}.Parse("fleetgate.toml", []byte(src+"bogus = 1\n"), dir)
	var e *Errors
	if !errors.As(err, &e) || len(e.Problems) != 1 || warnings(e.Warnings) != want {
		t.Errorf("failed load: %v, warnings:\n%s", err, warnings(e.Warnings))
	}
}
