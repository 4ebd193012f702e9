package configs

import (
	"crypto"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// testPKI is generated once per test binary (ECDSA only, to keep tests fast)
// and written into each test's own temporary folder.
type testPKI struct {
	root, inter     *pki.Cert
	devices, app    *pki.Cert
	stream          *pki.Cert     // stream.fleet.test, the tcp application of fleetgate.toml
	mqtt            *pki.Cert     // mqtt.fleet.test, the mqtt application of fleetgate.toml
	console         *pki.Cert     // console.fleet.test, the demo's application with an identity provider
	originClient    *pki.Cert     // the gateway's client certificate for its origins (origin_cert_file)
	token, previous crypto.Signer // P-256 and Ed25519
	crl             []byte        // DER: the intermediate's CRL, revoking nothing we use, fresh for a week
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
	pkiErr  error
)

func fixtures(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { pkiVal, pkiErr = newTestPKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiVal
}

func newTestPKI() (p *testPKI, err error) {
	p = &testPKI{}
	if p.root, err = pki.NewRoot(pki.Root("Fleet Root")); err != nil {
		return nil, err
	}
	if p.inter, err = p.root.Issue(pki.Intermediate("Fleet Intermediate")); err != nil {
		return nil, err
	}
	if p.devices, err = p.inter.Issue(pki.Server(DemoDevicesDomain)); err != nil {
		return nil, err
	}
	if p.app, err = p.inter.Issue(pki.Server(DemoAppDomain)); err != nil {
		return nil, err
	}
	if p.mqtt, err = p.inter.Issue(pki.Server("mqtt.fleet.test")); err != nil {
		panic(err)
	}
	if p.console, err = p.inter.Issue(pki.Server(DemoConsoleDomain)); err != nil {
		return nil, err
	}
	if p.stream, err = p.inter.Issue(pki.Server(streamDomain)); err != nil {
		return nil, err
	}
	if p.originClient, err = p.inter.Issue(pki.Device("fleetgate")); err != nil {
		return nil, err
	}
	if p.token, err = pki.NewKey(pki.ECDSAP256); err != nil {
		return nil, err
	}
	if p.previous, err = pki.NewKey(pki.Ed25519); err != nil {
		return nil, err
	}
	p.crl, err = p.inter.CRL([]*big.Int{big.NewInt(0x4f1a9c03d2)}, time.Now().Add(-time.Hour), time.Now().Add(7*24*time.Hour))
	return p, err
}

// The tcp application of fleetgate.toml: its domain and certificate files.
const (
	streamDomain = "stream.fleet.test"
	streamCert   = "pki/stream.fleet.test.pem"
	streamKey    = "pki/stream.fleet.test-key.pem"
)

// The gateway's client certificate for its origins.
const (
	originClientCert = "pki/gateway-client.pem"
	originClientKey  = "pki/gateway-client-key.pem"
)

// demoSecret is the client secret writeDemoDir writes into DemoIdPSecret.
const demoSecret = "demo-client-secret"

// writeDemoDir writes the demo layout (the Demo* files) plus
// keys/token-previous.pem, pki/fleet.crl and the stream.fleet.test
// certificate into dir: what demo.toml and fleetgate.toml need.
func writeDemoDir(t testing.TB, dir string) *testPKI {
	t.Helper()
	p := fixtures(t)
	must(t, writeFile(filepath.Join(dir, DemoCAChain), pki.ChainPEM(p.inter, p.root)))
	must(t, writeFile(filepath.Join(dir, DemoRootCA), p.root.CertPEM()))
	must(t, writeFile(filepath.Join(dir, DemoIdPSecret), []byte(demoSecret+"\n")))
	must(t, p.console.WriteFiles(filepath.Join(dir, DemoConsoleCert), filepath.Join(dir, DemoConsoleKey), p.inter))
	must(t, p.devices.WriteFiles(filepath.Join(dir, DemoDevicesCert), filepath.Join(dir, DemoDevicesKey), p.inter))
	must(t, p.app.WriteFiles(filepath.Join(dir, DemoAppCert), filepath.Join(dir, DemoAppKey), p.inter))
	must(t, p.stream.WriteFiles(filepath.Join(dir, streamCert), filepath.Join(dir, streamKey), p.inter))
	must(t, p.mqtt.WriteFiles(filepath.Join(dir, "pki/mqtt.fleet.test.pem"), filepath.Join(dir, "pki/mqtt.fleet.test-key.pem"), p.inter))
	must(t, p.originClient.WriteFiles(filepath.Join(dir, originClientCert), filepath.Join(dir, originClientKey), p.inter))
	must(t, pki.WriteKey(filepath.Join(dir, DemoTokenKey), p.token))
	must(t, pki.WriteKey(filepath.Join(dir, "keys/token-previous.pem"), p.previous))
	must(t, writeFile(filepath.Join(dir, "pki/fleet.crl"), pki.CRLPEM(p.crl)))
	return p
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// base is a small valid file over the demo layout; tests append to it or
// replace parts of it. Line numbers matter: tests assert them.
const base = `[tokens]
signing_key_file = "keys/token.pem"

[[client_cas]]
name = "fleet"
pem_file = "pki/ca-chain.pem"
associated_hostnames = ["devices.fleet.test", "app.fleet.test"]

[[applications]]
name = "telemetry"
domain = "devices.fleet.test"
origin = "http://127.0.0.1:9000"
tls_cert_file = "pki/devices.fleet.test.pem"
tls_key_file = "pki/devices.fleet.test-key.pem"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
`

// parseIn parses src as "fleetgate.toml" in a fresh demo folder.
func parseIn(t testing.TB, src string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	writeDemoDir(t, dir)
	return Parse("fleetgate.toml", []byte(src), dir)
}

// problems returns the formatted problems of err (an *Errors), failing the
// test for any other error.
func problems(t testing.TB, err error) []string {
	t.Helper()
	var e *Errors
	if !errors.As(err, &e) {
		t.Fatalf("want *Errors, got %T: %v", err, err)
	}
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.String()
	}
	return out
}

func warnings(ws []Problem) string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.String()
	}
	return strings.Join(out, "\n")
}
