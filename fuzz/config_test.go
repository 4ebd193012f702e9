package fuzz

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
)

// maxParseTime bounds one configs.Parse: a file that takes longer is a hang
// (fuzz inputs are small; the committed ones parse in milliseconds).
const maxParseTime = 5 * time.Second

// FuzzConfigParse runs configs.Parse on fuzzed TOML with a baseDir holding
// real generated PKI files (the demo layout plus extra good and bad files,
// see writeConfigDir), so that the certificate, key and policy validation
// behind the TOML layer runs too.
//
// Invariants: exactly one of a *Config and an error; the error is a
// *configs.Errors with at least one problem, each naming the file, with a
// message, a line within the file, sorted by line; the result does not
// depend on the run (a second Parse gives the same problems or the same
// hash); no problem or warning quotes a private key file; a *Config is
// complete (hash of the bytes, every application with a domain, an origin,
// a certificate with its leaf, an AUD, and client CAs that list its domain;
// a signing key or the ephemeral flag); Parse returns within maxParseTime.
func FuzzConfigParse(f *testing.F) {
	dir := getConfigDir(f)
	// Static seeds: testdata/fuzz/FuzzConfigParse (configSeeds); the
	// current example files are added here too.
	f.Add(configs.Demo())
	if example, err := os.ReadFile(filepath.Join("..", "configs", "fleetgate.toml")); err == nil {
		f.Add(example)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		countExec("FuzzConfigParse")
		checkConfig(t, dir, data)
	})
}

// configDir is the baseDir of FuzzConfigParse and the secrets it holds.
type configDir struct {
	path    string
	secrets [][]byte // base64 lines of every private key file written
}

// getConfigDir writes the PKI files into a fresh temporary folder of tb,
// removed when tb ends (a fuzz worker keeps its F, and so the folder, for
// all its inputs).
func getConfigDir(tb testing.TB) *configDir {
	tb.Helper()
	d, err := writeConfigDir(getFixture(tb), tb.TempDir())
	if err != nil {
		tb.Fatalf("config dir: %v", err)
	}
	return d
}

// writeConfigDir lays out the files the seeds refer to:
//
//	pki/ca-chain.pem                     intermediate then root (demo layout)
//	pki/devices.fleet.test{,-key}.pem    server certificate and key (demo layout)
//	pki/app.fleet.test{,-key}.pem        (demo layout)
//	pki/wild.fleet.test{,-key}.pem       for "*.fleet.test"
//	keys/token.pem, token-previous.pem   P-256 and Ed25519 (demo layout + fleetgate.toml)
//	keys/token-rsa.pem                   RSA 2048
//	pki/root.pem, pki/other-ca.pem       a root alone; another CA's chain
//	pki/expired-ca.pem                   an expired intermediate and the root
//	pki/not-a-ca.pem                     a device certificate as a CA upload
//	pki/garbage.pem, pki/empty.pem       not PEM; empty
func writeConfigDir(fx *fixture, path string) (*configDir, error) {
	d := &configDir{path: path}
	devices, err := fx.inter.Issue(pki.Server(configs.DemoDevicesDomain))
	if err != nil {
		return nil, err
	}
	app, err := fx.inter.Issue(pki.Server(configs.DemoAppDomain))
	if err != nil {
		return nil, err
	}
	wild, err := fx.inter.Issue(pki.Server("*.fleet.test"))
	if err != nil {
		return nil, err
	}
	join := func(rel string) string { return filepath.Join(path, rel) }
	write := func(rel string, data []byte) error {
		if err := os.MkdirAll(filepath.Dir(join(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(join(rel), data, 0o600)
	}
	steps := []error{
		write(configs.DemoCAChain, pki.ChainPEM(fx.inter, fx.root)),
		devices.WriteFiles(join(configs.DemoDevicesCert), join(configs.DemoDevicesKey), fx.inter),
		app.WriteFiles(join(configs.DemoAppCert), join(configs.DemoAppKey), fx.inter),
		wild.WriteFiles(join("pki/wild.fleet.test.pem"), join("pki/wild.fleet.test-key.pem"), fx.inter),
		pki.WriteKey(join(configs.DemoTokenKey), fx.tokenKey),
		pki.WriteKey(join("keys/token-previous.pem"), fx.tokenKeyPrev),
		pki.WriteKey(join("keys/token-rsa.pem"), fx.rsaDevice.Key),
		write("pki/root.pem", pki.ChainPEM(fx.root)),
		write("pki/other-ca.pem", pki.ChainPEM(fx.otherInter, fx.otherRoot)),
		write("pki/expired-ca.pem", pki.ChainPEM(fx.expiredInter, fx.root)),
		write("pki/not-a-ca.pem", pki.ChainPEM(fx.device)),
		write("pki/garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")),
		write("pki/empty.pem", nil),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, err
	}
	for _, rel := range []string{configs.DemoDevicesKey, configs.DemoAppKey, "pki/wild.fleet.test-key.pem",
		configs.DemoTokenKey, "keys/token-previous.pem", "keys/token-rsa.pem"} {
		data, err := os.ReadFile(join(rel))
		if err != nil {
			return nil, err
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(line) >= 32 && !bytes.HasPrefix(line, []byte("-----")) {
				d.secrets = append(d.secrets, line)
			}
		}
	}
	return d, nil
}

// checkConfig asserts FuzzConfigParse's invariants for one file.
func checkConfig(t *testing.T, d *configDir, data []byte) {
	t.Helper()
	const name = "fuzz.toml"
	start := time.Now()
	cfg, err := configs.Parse(name, data, d.path)
	if el := time.Since(start); el > maxParseTime {
		t.Fatalf("Parse of %d bytes took %s (bound %s)", len(data), el, maxParseTime)
	}
	if (cfg == nil) == (err == nil) {
		t.Fatalf("Parse returned config %v and error %v", cfg != nil, err)
	}
	lines := bytes.Count(data, []byte("\n")) + 1
	var texts []string
	if err != nil {
		var e *configs.Errors
		if !errors.As(err, &e) {
			t.Fatalf("Parse error is %T, not *configs.Errors: %v", err, err)
		}
		if len(e.Problems) == 0 {
			t.Fatalf("*configs.Errors without problems")
		}
		for i, p := range e.Problems {
			if p.File != name || p.Msg == "" || p.Line < 0 || p.Line > lines {
				t.Fatalf("problem %d %+v: want file %q, a message and a line in [0, %d]", i, p, name, lines)
			}
			if i > 0 && p.Line < e.Problems[i-1].Line {
				t.Fatalf("problems not sorted by line: %d after %d", p.Line, e.Problems[i-1].Line)
			}
			texts = append(texts, p.String())
		}
		for _, w := range e.Warnings {
			texts = append(texts, w.String())
		}
	} else {
		checkLoaded(t, cfg, name, d.path, data)
		for _, w := range cfg.Warnings {
			texts = append(texts, w.String())
		}
	}
	all := []byte(strings.Join(texts, "\n"))
	for _, s := range d.secrets {
		if bytes.Contains(all, s) && !bytes.Contains(data, s) {
			t.Fatalf("a problem or warning quotes a private key file:\n%s", all)
		}
	}
	cfg2, err2 := configs.Parse(name, data, d.path)
	switch {
	case (err == nil) != (err2 == nil):
		t.Fatalf("Parse is not deterministic: %v, then %v", err, err2)
	case err != nil && err.Error() != err2.Error():
		t.Fatalf("Parse is not deterministic:\n%v\nthen\n%v", err, err2)
	case err == nil && (cfg.Hash != cfg2.Hash || len(cfg.Applications) != len(cfg2.Applications) || len(cfg.Warnings) != len(cfg2.Warnings)):
		t.Fatalf("Parse is not deterministic: two different configs")
	}
}

// checkLoaded asserts that a loaded *Config is complete.
func checkLoaded(t *testing.T, cfg *configs.Config, name, dir string, data []byte) {
	t.Helper()
	sum := sha256.Sum256(data)
	if cfg.Path != name || cfg.Dir != dir || cfg.Hash != hex.EncodeToString(sum[:]) {
		t.Fatalf("config path %q, dir %q, hash %q: want %q, %q and the SHA-256 of the file", cfg.Path, cfg.Dir, cfg.Hash, name, dir)
	}
	if (cfg.Tokens.SigningKey == nil) == !cfg.Tokens.EphemeralKey {
		t.Fatalf("tokens: signing key %v, ephemeral %v: want exactly one", cfg.Tokens.SigningKey != nil, cfg.Tokens.EphemeralKey)
	}
	for i := range cfg.ClientCAs {
		ca := &cfg.ClientCAs[i]
		if len(ca.Roots) == 0 || len(ca.Fingerprint) != 64 {
			t.Fatalf("client_cas[%d]: %d roots, fingerprint %q", i, len(ca.Roots), ca.Fingerprint)
		}
	}
	domains := map[string]bool{}
	for i := range cfg.Applications {
		a := &cfg.Applications[i]
		switch {
		case a.Domain == "" || a.Domain != strings.ToLower(a.Domain):
			t.Fatalf("applications[%d]: domain %q", i, a.Domain)
		case domains[a.Domain]:
			t.Fatalf("applications[%d]: domain %q twice", i, a.Domain)
		case a.Origin == nil || (a.Origin.Scheme != "http" && a.Origin.Scheme != "https"):
			t.Fatalf("applications[%d]: origin %v", i, a.Origin)
		case len(a.Certificate.Certificate) == 0 || a.Certificate.Leaf == nil || a.Certificate.PrivateKey == nil:
			t.Fatalf("applications[%d]: incomplete certificate", i)
		case a.AUD == "":
			t.Fatalf("applications[%d]: no AUD", i)
		case a.RejectInvalidCert && len(a.ClientCAs) == 0:
			t.Fatalf("applications[%d]: reject_invalid_cert without a client CA", i)
		}
		domains[a.Domain] = true
		for _, ca := range a.ClientCAs {
			found := false
			for _, h := range ca.Hostnames {
				found = found || h == a.Domain
			}
			if !found {
				t.Fatalf("applications[%d] (%s) uses client CA %q, which does not list it", i, a.Domain, ca.Name)
			}
		}
		if got := cfg.ClientCAsFor(a.Domain); len(got) != len(a.ClientCAs) {
			t.Fatalf("applications[%d]: %d client CAs, ClientCAsFor gives %d", i, len(a.ClientCAs), len(got))
		}
	}
}

// configSeed is a static FuzzConfigParse input.
type configSeed struct {
	name, toml string
}

// configBase is a small valid file over writeConfigDir's layout.
const configBase = `[tokens]
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

func configSeeds() []configSeed {
	with := func(old, new string) string { return strings.Replace(configBase, old, new, 1) }
	deepTables := strings.Repeat("a = { ", 2000) + "b = 1" + strings.Repeat(" }", 2000) + "\n"
	deepArrays := "a = " + strings.Repeat("[", 3000) + strings.Repeat("]", 3000) + "\n"
	longKey := "[gateway]\n" + strings.Repeat("k", 64<<10) + " = 1\n"
	manyKeys := func() string {
		var b strings.Builder
		b.WriteString("[gateway]\n")
		for i := range 1100 {
			b.WriteString("k")
			b.WriteString(strings.Repeat("x", i%7))
			b.WriteString(hex.EncodeToString([]byte{byte(i >> 8), byte(i)}))
			b.WriteString(" = 1\n")
		}
		return b.String()
	}()
	manyApps := strings.Repeat("[[applications]]\nname = \"a\"\n", 300)
	return []configSeed{
		{"base", configBase},
		{"base-crlf", strings.ReplaceAll(configBase, "\n", "\r\n")},
		{"base-bom", "\xef\xbb\xbf" + configBase},
		{"wildcard-app", configBase + `
[[client_cas]]
name = "wild"
pem_file = "pki/ca-chain.pem"
associated_hostnames = ["*.fleet.test"]

[[applications]]
name = "wild"
domain = "*.fleet.test"
origin = "https://127.0.0.1:9001"
tls_cert_file = "pki/wild.fleet.test.pem"
tls_key_file = "pki/wild.fleet.test-key.pem"
reject_invalid_cert = true
session_duration = "744h"
`},
		{"inline-pem", with(`pem_file = "pki/ca-chain.pem"`, "pem = \"\"\"\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\"\"\"")},
		{"pem-and-pem-file", with(`pem_file = "pki/ca-chain.pem"`, "pem_file = \"pki/ca-chain.pem\"\npem = \"x\"")},
		{"ca-is-key", with(`pki/ca-chain.pem`, `keys/token.pem`)},
		{"ca-root-only", with(`pki/ca-chain.pem`, `pki/root.pem`)},
		{"ca-other", with(`pki/ca-chain.pem`, `pki/other-ca.pem`)},
		{"ca-expired", with(`pki/ca-chain.pem`, `pki/expired-ca.pem`)},
		{"ca-not-a-ca", with(`pki/ca-chain.pem`, `pki/not-a-ca.pem`)},
		{"ca-garbage", with(`pki/ca-chain.pem`, `pki/garbage.pem`)},
		{"ca-empty", with(`pki/ca-chain.pem`, `pki/empty.pem`)},
		{"ca-dev-null", with(`pki/ca-chain.pem`, `/dev/null`)},
		{"ca-proc", with(`pki/ca-chain.pem`, `/proc/self/status`)},
		{"ca-directory", with(`pki/ca-chain.pem`, `pki`)},
		{"ca-traversal", with(`pki/ca-chain.pem`, `../../../../etc/passwd`)},
		{"cert-is-ca-chain", with(`tls_cert_file = "pki/devices.fleet.test.pem"`, `tls_cert_file = "pki/ca-chain.pem"`)},
		{"key-mismatch", with(`pki/devices.fleet.test-key.pem`, `pki/app.fleet.test-key.pem`)},
		{"cert-is-key", with(`tls_cert_file = "pki/devices.fleet.test.pem"`, `tls_cert_file = "pki/devices.fleet.test-key.pem"`)},
		{"token-rsa", with(`keys/token.pem`, `keys/token-rsa.pem`)},
		{"token-ed25519-with-previous", with(`signing_key_file = "keys/token.pem"`, "signing_key_file = \"keys/token-previous.pem\"\nprevious_key_files = [\"keys/token.pem\", \"keys/token-rsa.pem\"]")},
		{"token-is-cert", with(`keys/token.pem`, `pki/devices.fleet.test.pem`)},
		{"token-missing", with(`signing_key_file = "keys/token.pem"`, ``)},
		{"token-same-key-twice", with(`signing_key_file = "keys/token.pem"`, "signing_key_file = \"keys/token.pem\"\nprevious_key_files = [\"keys/token.pem\"]")},
		{"unknown-selector", with(`valid_certificate = true`, `comon_name = "x"`)},
		{"selector-wrong-type", with(`valid_certificate = true`, `valid_certificate = "yes"`)},
		{"policy-bypass-everyone", with(`decision = "non_identity"`, `decision = "bypass"`) + "\n"},
		{"unknown-decision", with(`decision = "non_identity"`, `decision = "maybe"`)},
		{"duplicate-domain", configBase + strings.Replace(configBase[strings.Index(configBase, "[[applications]]"):], "telemetry", "telemetry2", 1)},
		{"no-client-ca-for-cert-policy", strings.Replace(configBase, `associated_hostnames = ["devices.fleet.test", "app.fleet.test"]`, `associated_hostnames = ["app.fleet.test"]`, 1)},
		{"gateway-limits", "[gateway]\nlisten = \":0\"\nadmin_listen = \"\"\nevent_loops = 1025\nhandshake_queue = -1\nhandshake_timeout = \"-5s\"\nmax_header_bytes = \"1B\"\nmax_body_bytes = \"9EiB\"\nmax_response_bytes = 9223372036854775807\nidle_timeout = \"1ns\"\ndefault_site = \"nowhere.fleet.test\"\n" + configBase},
		{"gateway-wrong-types", "[gateway]\nlisten = 8443\nevent_loops = \"4\"\nhandshake_timeout = 5\nmax_connections = 1.5\nverdict_cache_size = true\norigin_timeout = 1979-05-27T07:32:00Z\n" + configBase},
		{"origin-forms", with(`origin = "http://127.0.0.1:9000"`, `origin = "http://user:pass@127.0.0.1:9000/path?q#f"`)},
		{"origin-unix", with(`origin = "http://127.0.0.1:9000"`, `origin = "unix:///var/run/x.sock"`)},
		{"domain-forms", with(`domain = "devices.fleet.test"`, `domain = "DEVICES.fleet.test."`)},
		{"domain-idn", with(`domain = "devices.fleet.test"`, `domain = "dévices.fleet.test"`)},
		{"aud-bad", with(`origin = "http://127.0.0.1:9000"`, "origin = \"http://127.0.0.1:9000\"\naud = \"xyz\"")},
		{"duplicate-key", "[gateway]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n"},
		{"table-redefined", "[gateway]\n[gateway]\n"},
		{"dotted-keys", "gateway.listen = \"127.0.0.1:1\"\ngateway.listen.x = 1\n"},
		{"array-of-tables-vs-table", "[[gateway]]\n[gateway]\n"},
		{"applications-not-array", "applications = 3\nclient_cas = \"x\"\ntokens = []\n"},
		{"nested-garbage", "[[applications]]\n[[applications.policies]]\ninclude = [[{}], {a={b={c=1}}}, 3]\nrequire = \"x\"\nexclude = {}\n"},
		{"deep-inline-tables", deepTables},
		{"deep-arrays", deepArrays},
		{"long-key", longKey},
		{"many-keys", manyKeys},
		{"many-apps", manyApps},
		{"long-string", "[gateway]\nissuer = \"" + strings.Repeat("x", 100<<10) + "\"\n"},
		{"invalid-utf8", "[gateway]\nissuer = \"\xff\xfe\"\n"},
		{"nul-bytes", "[gateway]\x00\nlisten = \"\x00\"\n"},
		{"unterminated-string", "[gateway]\nlisten = \"127.0.0.1\n"},
		{"unterminated-multiline", "[gateway]\nissuer = '''\n"},
		{"only-comments", "# nothing\n# at all\n"},
		{"empty", ""},
		{"huge-integers", "[gateway]\nmax_connections = 99999999999999999999999\nhandshake_workers = -9223372036854775808\n"},
		{"special-floats", "[gateway]\nmax_body_bytes = nan\nhandshake_timeout = inf\nmax_header_count = -inf\n"},
		{"durations", "[gateway]\nhandshake_timeout = \"9999999999999h\"\nidle_timeout = \"1.5.5s\"\nheader_timeout = \"\"\n"},
		{"sizes", "[gateway]\nmax_header_bytes = \"16 KiBs\"\nmax_body_bytes = \"-1MiB\"\nmax_response_bytes = \"0x10\"\n"},
	}
}
