package configs

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// edit replaces the one occurrence of old in src, so that the line numbers
// of base stay known.
func edit(t testing.TB, src, old, repl string) string {
	t.Helper()
	if strings.Count(src, old) != 1 {
		t.Fatalf("edit: %q occurs %d times", old, strings.Count(src, old))
	}
	return strings.Replace(src, old, repl, 1)
}

// errorCase is one file with problems; want lists every problem, in order,
// formatted; "$DIR" stands for the test's folder.
type errorCase struct {
	name  string
	setup func(t *testing.T, dir string, p *testPKI) // extra files, optional
	src   func(t *testing.T) string
	want  []string
}

func runErrorCases(t *testing.T, cases []errorCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeDemoDir(t, dir)
			if tc.setup != nil {
				tc.setup(t, dir, p)
			}
			cfg, err := Parse("fleetgate.toml", []byte(tc.src(t)), dir)
			if err == nil {
				t.Fatalf("loaded (%d applications), want errors", len(cfg.Applications))
			}
			got := problems(t, err)
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = strings.ReplaceAll(w, "$DIR", dir)
			}
			if !slices.Equal(got, want) {
				t.Errorf("problems:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
		})
	}
}

// src returns a constant source.
func src(s string) func(*testing.T) string { return func(*testing.T) string { return s } }

// edited returns base with one edit.
func edited(old, repl string) func(*testing.T) string {
	return func(t *testing.T) string { return edit(t, base, old, repl) }
}

// appended returns base followed by more lines (the first is line 20).
func appended(more string) func(*testing.T) string {
	return func(*testing.T) string { return base + more }
}

func TestDecodeErrors(t *testing.T) {
	runErrorCases(t, []errorCase{
		{name: "syntax error", src: edited(`name = "fleet"`, `name = "fleet`),
			want: []string{`fleetgate.toml:5: basic strings cannot have new lines`}},
		{name: "duplicate key", src: edited("name = \"fleet\"\n", "name = \"fleet\"\nname = \"again\"\n"),
			want: []string{`fleetgate.toml:6: client_cas[0].name: key name is already defined`}},
		{name: "unknown key with suggestion", src: appended("[gateway]\nlisen = \":8443\"\nfoo = 1\n"),
			want: []string{
				`fleetgate.toml:21: gateway.lisen: unknown key (did you mean "listen"?)`,
				`fleetgate.toml:22: gateway.foo: unknown key`,
			}},
		{name: "unknown top-level table", src: appended("[gatway]\nlisten = \":8443\"\n"),
			want: []string{`fleetgate.toml:20: gatway: unknown key (did you mean "gateway"?)`}},
		{name: "unknown key in array of tables", src: edited(`decision = "non_identity"`, `decison = "non_identity"`),
			want: []string{
				`fleetgate.toml:16: applications[0].policies[0].decision: required: allow, deny, bypass or non_identity`,
				`fleetgate.toml:18: applications[0].policies[0].decison: unknown key (did you mean "decision"?)`,
			}},
		{name: "wrong types", src: appended("[gateway]\nmax_connections = \"lots\"\nlisten = 8443\nevent_loops = 1.5\n"),
			want: []string{
				`fleetgate.toml:21: gateway.max_connections: expected an integer, got string`,
				`fleetgate.toml:22: gateway.listen: expected a string, got integer`,
				`fleetgate.toml:23: gateway.event_loops: expected an integer, got float`,
			}},
		{name: "table where a string is expected", src: edited(`origin = "http://127.0.0.1:9000"`, `origin = { url = "x" }`),
			want: []string{`fleetgate.toml:12: applications[0].origin: expected a string, got table`}},
		{name: "bad durations", src: appended("[gateway]\nhandshake_timeout = \"5 seconds\"\nidle_timeout = \"-1s\"\ndrain_timeout = 15\n"),
			want: []string{
				`fleetgate.toml:21: gateway.handshake_timeout: invalid duration "5 seconds" (use Go units such as "90s", "15m" or "24h")`,
				`fleetgate.toml:22: gateway.idle_timeout: negative duration "-1s"`,
				`fleetgate.toml:23: gateway.drain_timeout: expected a duration string such as "30s", got integer`,
			}},
		{name: "bad sizes", src: appended("[gateway]\nmax_body_bytes = \"8 furlongs\"\nmax_header_bytes = -1\nmax_response_bytes = \"99999999999TiB\"\n"),
			want: []string{
				`fleetgate.toml:21: gateway.max_body_bytes: invalid size "8 furlongs" (use bytes or units such as "16KiB", "8MiB" or "1GB")`,
				`fleetgate.toml:22: gateway.max_header_bytes: negative size -1`,
				`fleetgate.toml:23: gateway.max_response_bytes: size "99999999999TiB" is too large`,
			}},
		{name: "selector entry that is not a table", src: edited(`include = [{ valid_certificate = true }]`, `include = [{ valid_certificate = true }, "common_name"]`),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[1]: expected an inline table such as { valid_certificate = true }, got string`}},
		{name: "too many keys in one table", src: func(*testing.T) string {
			var b strings.Builder
			b.WriteString("[gateway]\n")
			for i := range maxTableKeys + 1 {
				fmt.Fprintf(&b, "k%d = 1\n", i)
			}
			return b.String()
		}, want: []string{fmt.Sprintf("fleetgate.toml:%d: gateway: more than %d keys in one table", maxTableKeys+2, maxTableKeys)}},
		{name: "client_cas not an array of tables", src: src("client_cas = \"pki/ca-chain.pem\"\n[tokens]\nsigning_key_file = \"keys/token.pem\"\n"),
			want: []string{`fleetgate.toml:1: client_cas: expected an array, got string`}},
	})
}

func TestGatewayAndTokenErrors(t *testing.T) {
	runErrorCases(t, []errorCase{
		{name: "listeners and issuer", src: appended("[gateway]\nlisten = \"8443\"\nadmin_listen = \"localhost:http\"\nissuer = \"ftp://access.fleet.test\"\n"),
			want: []string{
				`fleetgate.toml:21: gateway.listen: "8443" is not host:port (e.g. "127.0.0.1:8443" or ":8443")`,
				`fleetgate.toml:22: gateway.admin_listen: "localhost:http" is not host:port (e.g. "127.0.0.1:8443" or ":8443")`,
				`fleetgate.toml:23: gateway.issuer: "ftp://access.fleet.test" is not an http:// or https:// URL with a host`,
			}},
		{name: "admin on the gateway's port", src: appended("[gateway]\nlisten = \":8443\"\nadmin_listen = \"127.0.0.1:8443\"\n"),
			want: []string{
				`fleetgate.toml:22: gateway.admin_listen: "127.0.0.1:8443" takes the port of gateway.listen (":8443"): the admin listener needs a port of its own`,
			}},
		{name: "admin on the same address", src: appended("[gateway]\nlisten = \"[::1]:9000\"\nadmin_listen = \"[::1]:9000\"\n"),
			want: []string{
				`fleetgate.toml:22: gateway.admin_listen: "[::1]:9000" takes the port of gateway.listen ("[::1]:9000"): the admin listener needs a port of its own`,
			}},
		{name: "limits out of range", src: appended("[gateway]\nhandshake_queue = 0\nmax_header_bytes = \"512\"\nheader_timeout = \"0s\"\nmax_conns_per_origin = -3\nevent_loops = 40000\n"),
			want: []string{
				`fleetgate.toml:21: gateway.handshake_queue: must be at least 1, not 0`,
				`fleetgate.toml:22: gateway.max_header_bytes: must be at least 1024, not 512`,
				`fleetgate.toml:23: gateway.header_timeout: must be longer than 0s`,
				`fleetgate.toml:24: gateway.max_conns_per_origin: must be at least 1, not -3`,
				`fleetgate.toml:25: gateway.event_loops: must be at most 1024, not 40000`,
			}},
		{name: "sizes too large", src: appended("[gateway]\nmax_header_bytes = \"1024TiB\"\nmax_body_bytes = 9223372036854775807\n"),
			want: []string{
				`fleetgate.toml:21: gateway.max_header_bytes: must be at most 1MiB, not 1125899906842624 bytes`,
				`fleetgate.toml:22: gateway.max_body_bytes: must be at most 1TiB, not 9223372036854775807 bytes`,
			}},
		{name: "runtime settings out of range", src: appended("[gateway]\ngomaxprocs = 2000\nmemory_limit = \"1MiB\"\ngc_heap_target = \"4MiB\"\nmemory_release_after = \"10ms\"\n"),
			want: []string{
				`fleetgate.toml:21: gateway.gomaxprocs: must be at most 1024, not 2000`,
				`fleetgate.toml:22: gateway.memory_limit: must be 0 (no limit) or at least 32MiB, not 1048576 bytes: below, the garbage collector would run without pause`,
				`fleetgate.toml:23: gateway.gc_heap_target: must be 0 (Go's own pacing) or at least 8MiB, not 4194304 bytes: below, the collector already runs at least that often`,
				`fleetgate.toml:24: gateway.memory_release_after: must be "0s" (never) or at least 100ms, not 10ms: the heap is read once per interval`,
			}},
		{name: "load balancer ranges", src: appended("[gateway]\nproxy_protocol_from = [\n  \"10.0.0.1/8\",\n  \"lb.fleet.test\",\n  \"::ffff:10.0.0.0/104\",\n  \"fe80::1%eth0\",\n  \"10.1.0.0/16\",\n]\n"),
			want: []string{
				`fleetgate.toml:22: gateway.proxy_protocol_from[0]: "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)`,
				`fleetgate.toml:23: gateway.proxy_protocol_from[1]: "lb.fleet.test" is not a CIDR such as "10.0.0.0/8" or an address such as "192.0.2.7"`,
				`fleetgate.toml:24: gateway.proxy_protocol_from[2]: "::ffff:10.0.0.0/104" is an IPv4-mapped address: write it as IPv4`,
				`fleetgate.toml:25: gateway.proxy_protocol_from[3]: "fe80::1%eth0" is not a CIDR such as "10.0.0.0/8" or an address such as "192.0.2.7"`,
			}},
		{name: "default site not an application", src: appended("[gateway]\ndefault_site = \"App.Fleet.Test\"\n"),
			want: []string{`fleetgate.toml:21: gateway.default_site: "app.fleet.test" is not the domain of an application`}},
		{name: "cookie settings", src: edited(`signing_key_file = "keys/token.pem"`, "signing_key_file = \"keys/token.pem\"\ncookie_name = \"CF Auth\"\ncookie_same_site = \"Lax\""),
			want: []string{
				`fleetgate.toml:3: tokens.cookie_name: "CF Auth" is not a valid cookie name: ' ' is not allowed (letters, digits and !#$%&'*+-.^_` + "`" + `|~ only)`,
				`fleetgate.toml:4: tokens.cookie_same_site: "Lax" is not lax, strict or none`,
			}},
		{name: "missing signing key", src: edited(`signing_key_file = "keys/token.pem"`, `cookie_name = "session"`),
			want: []string{`fleetgate.toml:1: tokens.signing_key_file: required: a PKCS#8 PEM private key (P-256, Ed25519 or RSA) that signs session tokens`}},
		{name: "unreadable key file", src: edited(`keys/token.pem`, `keys/missing.pem`),
			want: []string{`fleetgate.toml:2: tokens.signing_key_file: open $DIR/keys/missing.pem: no such file or directory`}},
		{name: "token keys of the wrong kind", setup: func(t *testing.T, dir string, p *testPKI) {
			k, err := pki.NewKey(pki.ECDSAP384)
			must(t, err)
			must(t, pki.WriteKey(filepath.Join(dir, "keys/p384.pem"), k))
			k256, err := pki.NewKey(pki.ECDSAP256)
			must(t, err)
			sec1, err := x509.MarshalECPrivateKey(k256.(*ecdsa.PrivateKey))
			must(t, err)
			must(t, writeFile(filepath.Join(dir, "keys/sec1.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})))
			must(t, writeFile(filepath.Join(dir, "keys/cert.pem"), p.root.CertPEM()))
			must(t, writeFile(filepath.Join(dir, "keys/empty.pem"), []byte("not pem\n")))
			small, err := rsa.GenerateKey(rand.Reader, 1024)
			must(t, err)
			must(t, pki.WriteKey(filepath.Join(dir, "keys/rsa1024.pem"), small))
		}, src: edited(`signing_key_file = "keys/token.pem"`, "signing_key_file = \"keys/p384.pem\"\nprevious_key_files = [\n  \"keys/sec1.pem\",\n  \"keys/cert.pem\",\n  \"keys/empty.pem\",\n  \"keys/rsa1024.pem\",\n]"),
			want: []string{
				`fleetgate.toml:2: tokens.signing_key_file: keys/p384.pem holds an ECDSA P-384 key: only P-256 (ES256) is supported`,
				`fleetgate.toml:4: tokens.previous_key_files[0]: keys/sec1.pem holds a "EC PRIVATE KEY" block: convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)`,
				`fleetgate.toml:5: tokens.previous_key_files[1]: keys/cert.pem holds a "CERTIFICATE" block, not an unencrypted PKCS#8 "PRIVATE KEY"`,
				`fleetgate.toml:6: tokens.previous_key_files[2]: keys/empty.pem holds no PEM private key`,
				`fleetgate.toml:7: tokens.previous_key_files[3]: keys/rsa1024.pem holds a 1024-bit RSA key: at least 2048 bits are required`,
			}},
	})
}

func TestClientCAErrors(t *testing.T) {
	now := time.Now()
	writeCA := func(name string, certs ...*pki.Cert) func(*testing.T, string, *testPKI) {
		return func(t *testing.T, dir string, _ *testPKI) {
			must(t, writeFile(filepath.Join(dir, "pki", name), pki.ChainPEM(certs...)))
		}
	}
	p := fixtures(t)
	expiredOpts := pki.Root("Old Root")
	expiredOpts.NotBefore, expiredOpts.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	expired := pki.MustRoot(expiredOpts)
	edOpts := pki.Root("Edwards Root")
	edOpts.KeyType = pki.Ed25519
	edRoot := pki.MustRoot(edOpts)
	useCA := func(name string) func(*testing.T) string { return edited("pki/ca-chain.pem", "pki/"+name) }
	// CAs named like the fixture's but with keys of their own (line 23 is
	// the second entry's pem_file).
	otherRoot := pki.MustRoot(pki.Root("Other Root"))
	twinInter := otherRoot.MustIssue(pki.Intermediate("Fleet Intermediate"))
	twinRoot := pki.MustRoot(pki.Root("Fleet Root"))
	rekeyedInter := p.root.MustIssue(pki.Intermediate("Fleet Intermediate"))
	secondCA := appended("\n[[client_cas]]\nname = \"other\"\npem_file = \"pki/other.pem\"\n")
	const clashWhy = `but not the public key: CRLs and revocation are keyed by issuer name, so one CA's CRL would revoke the other CA's devices that have the same serial numbers; give each CA a distinct subject name`
	runErrorCases(t, []errorCase{
		{name: "not a CA", setup: writeCA("server.pem", p.devices, p.root), src: useCA("server.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: certificate 1 ("devices.fleet.test") is not a CA certificate (Basic Constraints CA:TRUE is required)`}},
		{name: "no certificate", setup: func(t *testing.T, dir string, _ *testPKI) {
			must(t, writeFile(filepath.Join(dir, "pki/empty.pem"), []byte("hello\n")))
		}, src: useCA("empty.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: holds no PEM certificate`}},
		{name: "garbage certificate", setup: func(t *testing.T, dir string, _ *testPKI) {
			must(t, writeFile(filepath.Join(dir, "pki/garbage.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")})))
		}, src: useCA("garbage.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: certificate 1: malformed certificate`}},
		{name: "private key in the upload", setup: func(t *testing.T, dir string, _ *testPKI) {
			must(t, writeFile(filepath.Join(dir, "pki/withkey.pem"), append(p.root.CertPEM(), p.root.KeyPEM()...)))
		}, src: useCA("withkey.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: holds a "PRIVATE KEY" PEM block: only CERTIFICATE blocks belong in a client CA`}},
		{name: "Ed25519 signature", setup: writeCA("ed.pem", edRoot), src: useCA("ed.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: certificate 1 ("Edwards Root") is signed with Ed25519: only RSA or ECDSA with SHA-256, SHA-384 or SHA-512 are accepted`}},
		{name: "expired", setup: writeCA("expired.pem", expired), src: useCA("expired.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: certificate 1 ("Old Root") expired on ` + expired.Cert.NotAfter.UTC().Format(time.DateOnly)}},
		{name: "intermediate without its root", setup: writeCA("inter.pem", p.inter), src: useCA("inter.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: certificate 1 ("Fleet Intermediate") is not signed by another certificate of this upload: upload the whole chain, intermediate then root`}},
		{name: "unreadable file", src: useCA("missing.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: open $DIR/pki/missing.pem: no such file or directory`}},
		{name: "both pem and pem_file", src: edited(`pem_file = "pki/ca-chain.pem"`, "pem_file = \"pki/ca-chain.pem\"\npem = \"x\""),
			want: []string{`fleetgate.toml:7: client_cas[0].pem: set pem_file or pem, not both`}},
		{name: "neither pem nor pem_file", src: edited(`pem_file = "pki/ca-chain.pem"`, `# no pem`),
			want: []string{`fleetgate.toml:4: client_cas[0]: set pem_file (a PEM file) or pem (inline PEM): the CA certificate, with its intermediates if any`}},
		{name: "inline garbage", src: edited(`pem_file = "pki/ca-chain.pem"`, `pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"`),
			want: []string{`fleetgate.toml:6: client_cas[0].pem: certificate 1: malformed certificate`}},
		{name: "associated hostnames not FQDNs", src: edited(`["devices.fleet.test", "app.fleet.test"]`, `["devices.fleet.test", "https://app.fleet.test/", "fleet"]`),
			want: []string{
				`fleetgate.toml:7: client_cas[0].associated_hostnames[1]: "https://app.fleet.test/" is not a domain name: write the bare hostname, without scheme, port or path`,
				`fleetgate.toml:7: client_cas[0].associated_hostnames[2]: "fleet" is not a valid domain name: want at least 2 labels`,
			}},
		{name: "intermediate subject of another entry, another key", setup: writeCA("other.pem", twinInter, otherRoot), src: secondCA,
			want: []string{`fleetgate.toml:23: client_cas[1].pem_file: certificate 1 ("Fleet Intermediate") and certificate 1 ("Fleet Intermediate") of client_cas[0] ("fleet", line 6) share the subject "CN=Fleet Intermediate" ` + clashWhy}},
		{name: "root subject of another entry, another key", setup: writeCA("other.pem", twinRoot), src: secondCA,
			want: []string{`fleetgate.toml:23: client_cas[1].pem_file: certificate 1 ("Fleet Root") and certificate 2 ("Fleet Root") of client_cas[0] ("fleet", line 6) share the subject "CN=Fleet Root" ` + clashWhy}},
		{name: "root and intermediate of one entry, both another key", setup: writeCA("other.pem", twinRoot.MustIssue(pki.Intermediate("Fleet Intermediate")), twinRoot), src: secondCA,
			want: []string{
				`fleetgate.toml:23: client_cas[1].pem_file: certificate 1 ("Fleet Intermediate") and certificate 1 ("Fleet Intermediate") of client_cas[0] ("fleet", line 6) share the subject "CN=Fleet Intermediate" ` + clashWhy,
				`fleetgate.toml:23: client_cas[1].pem_file: certificate 2 ("Fleet Root") and certificate 2 ("Fleet Root") of client_cas[0] ("fleet", line 6) share the subject "CN=Fleet Root" ` + clashWhy,
			}},
		{name: "same subject, another key, in one upload", setup: writeCA("rekeyed.pem", p.inter, rekeyedInter, p.root), src: useCA("rekeyed.pem"),
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: certificate 2 ("Fleet Intermediate") and certificate 1 ("Fleet Intermediate") of this upload share the subject "CN=Fleet Intermediate" ` + clashWhy}},
		{name: "duplicate names and missing name", src: appended("\n[[client_cas]]\nname = \"fleet\"\npem_file = \"pki/ca-chain.pem\"\n\n[[client_cas]]\npem_file = \"pki/ca-chain.pem\"\n"),
			want: []string{
				`fleetgate.toml:22: client_cas[1].name: "fleet" is also the name of client_cas[0]`,
				`fleetgate.toml:25: client_cas[2].name: required: a name for this CA`,
			}},
	})
}
