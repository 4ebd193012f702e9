package configs

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/crltest"
	"github.com/fleetgate/fleetgate/internal/pki"
)

// withCRL returns base with crl_files (line 8) and, if not empty, crl_stale
// (line 9) added to its client CA.
func withCRL(files, stale string) func(*testing.T) string {
	more := "\ncrl_files = " + files
	if stale != "" {
		more += "\ncrl_stale = " + stale
	}
	return edited(`associated_hostnames = ["devices.fleet.test", "app.fleet.test"]`,
		`associated_hostnames = ["devices.fleet.test", "app.fleet.test"]`+more)
}

// writeCRL writes data (DER or PEM) as pki/name.
func writeCRL(name string, data func(p *testPKI) []byte) func(*testing.T, string, *testPKI) {
	return func(t *testing.T, dir string, p *testPKI) {
		must(t, writeFile(filepath.Join(dir, "pki", name), data(p)))
	}
}

// crlOf signs a CRL with template fields set by edit (may be nil).
func crlOf(t testing.TB, ca *pki.Cert, edit func(*x509.RevocationList)) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour)}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCRLLoads(t *testing.T) {
	p := fixtures(t)
	now := time.Now()
	dev := p.inter.MustIssue(pki.Device("sensor-0001"))
	interCRL := p.inter.MustCRL(pki.Serials(dev), now.Add(-time.Hour), now.Add(48*time.Hour))
	rootCRL := p.root.MustCRL(pki.Serials(p.inter), now.Add(-time.Hour), now.Add(24*time.Hour))
	cases := []struct {
		name    string
		files   map[string][]byte
		list    string
		issuers []string // CN of each CRL's Issuer, in order
		names   []string
	}{
		{name: "PEM", files: map[string][]byte{"fleet.crl": pki.CRLPEM(interCRL)}, list: `["pki/fleet.crl"]`,
			issuers: []string{"Fleet Intermediate"}, names: []string{"pki/fleet.crl"}},
		{name: "DER", files: map[string][]byte{"fleet.der": interCRL}, list: `["pki/fleet.der"]`,
			issuers: []string{"Fleet Intermediate"}, names: []string{"pki/fleet.der"}},
		{name: "two PEM blocks in one file", files: map[string][]byte{"both.crl": append(pki.CRLPEM(interCRL), pki.CRLPEM(rootCRL)...)}, list: `["pki/both.crl"]`,
			issuers: []string{"Fleet Intermediate", "Fleet Root"}, names: []string{"pki/both.crl", "pki/both.crl#2"}},
		{name: "two files", files: map[string][]byte{"root.crl": rootCRL, "fleet.crl": pki.CRLPEM(interCRL)}, list: `["pki/root.crl", "pki/fleet.crl"]`,
			issuers: []string{"Fleet Root", "Fleet Intermediate"}, names: []string{"pki/root.crl", "pki/fleet.crl"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeDemoDir(t, dir)
			for name, data := range tc.files {
				must(t, writeFile(filepath.Join(dir, "pki", name), data))
			}
			cfg, err := Parse("fleetgate.toml", []byte(withCRL(tc.list, "")(t)), dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Warnings) != 0 {
				t.Errorf("warnings:\n%s", warnings(cfg.Warnings))
			}
			ca := cfg.ClientCAs[0]
			if ca.CRLStale != "warn" || len(ca.CRLs) != len(tc.issuers) {
				t.Fatalf("crl_stale %q, %d CRLs", ca.CRLStale, len(ca.CRLs))
			}
			for i, c := range ca.CRLs {
				if c.Issuer.Subject.CommonName != tc.issuers[i] || c.Name() != tc.names[i] || c.List.CheckSignatureFrom(c.Issuer) != nil {
					t.Errorf("CRLs[%d]: issuer %q, name %q", i, c.Issuer.Subject.CommonName, c.Name())
				}
				if c.Path != filepath.Join(dir, c.File) || !c.NextUpdate.Equal(c.List.NextUpdate) || c.NextUpdate.IsZero() {
					t.Errorf("CRLs[%d]: path %q, next update %v", i, c.Path, c.NextUpdate)
				}
				if len(c.List.RevokedCertificateEntries) != 1 || c.List.RevokedCertificates != nil {
					t.Errorf("CRLs[%d]: %d entries, deprecated field %v", i, len(c.List.RevokedCertificateEntries), c.List.RevokedCertificates)
				}
			}
		})
	}
}

func TestCRLErrors(t *testing.T) {
	p := fixtures(t)
	now := time.Now()
	// Another CA whose intermediate has our intermediate's name: its CRL
	// names the right issuer but is signed by the wrong key.
	impostor := pki.MustRoot(pki.Root("Impostor Root")).MustIssue(pki.Intermediate("Fleet Intermediate"))
	other := pki.MustRoot(pki.Root("Other Root"))
	// Our intermediate's key, certified once with cRLSign (which signs the
	// CRL) and once without (which is uploaded).
	signer := pki.Intermediate("Restricted Intermediate")
	signer.Key = pki.MustRoot(pki.Root("key holder")).Key
	withCRLSign := p.root.MustIssue(signer)
	signer.KeyUsage = x509.KeyUsageCertSign
	noCRLSign := p.root.MustIssue(signer)

	staleAt := now.Add(-time.Hour).UTC().Format(time.RFC3339)
	stale := func(p *testPKI) []byte {
		return pki.CRLPEM(p.inter.MustCRL(nil, now.Add(-48*time.Hour), now.Add(-time.Hour)))
	}
	issuerExt, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("other.test")}})
	must(t, err)

	runErrorCases(t, []errorCase{
		{name: "signed by another key of the same name", setup: writeCRL("fleet.crl", func(*testPKI) []byte { return pki.CRLPEM(impostor.MustCRL(nil, time.Time{}, time.Time{})) }),
			src:  withCRL(`["pki/fleet.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl: signature does not verify with the key of "Fleet Intermediate": this CRL was not signed by this client CA`}},
		{name: "issued by a CA outside the upload", setup: writeCRL("other.crl", func(*testPKI) []byte { return other.MustCRL(nil, time.Time{}, time.Time{}) }),
			src:  withCRL(`["pki/fleet.crl", "pki/other.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[1]: pki/other.crl: issued by "CN=Other Root", which is not a certificate of this client CA`}},
		{name: "the same file twice", setup: writeCRL("fleet.crl", func(p *testPKI) []byte { return pki.CRLPEM(p.inter.MustCRL(nil, time.Time{}, time.Time{})) }),
			src:  withCRL(`["pki/fleet.crl", "pki/../pki/fleet.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[1]: pki/../pki/fleet.crl is already crl_files[0]`}},
		{name: "issuer without cRLSign", setup: func(t *testing.T, dir string, p *testPKI) {
			must(t, writeFile(filepath.Join(dir, "pki/ca-chain.pem"), pki.ChainPEM(noCRLSign, p.root)))
			must(t, writeFile(filepath.Join(dir, "pki/restricted.crl"), withCRLSign.MustCRL(nil, time.Time{}, time.Time{})))
		}, src: withCRL(`["pki/restricted.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/restricted.crl: "Restricted Intermediate" may not sign CRLs: its key usage lacks cRLSign`}},
		{name: "stale, rejected", setup: writeCRL("fleet.crl", stale), src: withCRL(`["pki/fleet.crl"]`, `"reject"`),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl is stale: its nextUpdate was ` + staleAt + `; publish a newer CRL, or set crl_stale = "warn" to serve with it`}},
		{name: "crl_stale misspelt", src: withCRL(`["pki/fleet.crl"]`, `"ignore"`),
			want: []string{`fleetgate.toml:9: client_cas[0].crl_stale: "ignore" is not reject or warn`}},
		{name: "missing file", src: withCRL(`["pki/missing.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: open $DIR/pki/missing.crl: no such file or directory`}},
		{name: "empty file name", src: withCRL(`[""]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: empty file name`}},
		{name: "neither PEM nor DER", setup: writeCRL("garbage.crl", func(*testPKI) []byte { return []byte("hello") }), src: withCRL(`["pki/garbage.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/garbage.crl is neither PEM nor a DER CRL: malformed crl`}},
		{name: "a certificate instead of a CRL", setup: writeCRL("cert.crl", func(p *testPKI) []byte { return p.inter.CertPEM() }), src: withCRL(`["pki/cert.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/cert.crl holds a "CERTIFICATE" PEM block: only X509 CRL blocks belong in crl_files`}},
		{name: "PEM without blocks", setup: writeCRL("empty.crl", func(*testPKI) []byte { return []byte("-----BEGIN nothing\n") }), src: withCRL(`["pki/empty.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/empty.crl holds no PEM X509 CRL block`}},
		{name: "garbage PEM block", setup: writeCRL("bad.crl", func(*testPKI) []byte { return pki.CRLPEM([]byte("garbage")) }), src: withCRL(`["pki/bad.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/bad.crl: CRL 1: malformed crl`}},
		{name: "unknown critical extension", setup: writeCRL("ext.crl", func(p *testPKI) []byte {
			return crlOf(t, p.inter, func(rl *x509.RevocationList) {
				rl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}}
			})
		}), src: withCRL(`["pki/ext.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/ext.crl: unsupported critical extension 1.2.3.4`}},
		{name: "indirect CRL", setup: writeCRL("indirect.crl", func(p *testPKI) []byte {
			return crlOf(t, p.inter, func(rl *x509.RevocationList) {
				rl.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: big.NewInt(9), RevocationTime: now,
					ExtraExtensions: []pkix.Extension{{Id: oidCertificateIssuer, Critical: true, Value: issuerExt}}}}
			})
		}), src: withCRL(`["pki/indirect.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/indirect.crl: entry 1 names another certificate issuer: indirect CRLs are not supported`}},
		{name: "CRL of a CA that did not load", setup: writeCRL("fleet.crl", stale),
			src: func(t *testing.T) string {
				return edit(t, withCRL(`["pki/fleet.crl"]`, `"reject"`)(t), `pem_file = "pki/ca-chain.pem"`, `pem_file = "pki/none.pem"`)
			},
			want: []string{`fleetgate.toml:6: client_cas[0].pem_file: open $DIR/pki/none.pem: no such file or directory`}},
		{name: "deny-lists", src: appended("\n[revocation]\ndenied_serials = [\"0x1a\", \"\", \"1a:2b\", \"" + strings.Repeat("f", 129) + "\"]\n" +
			"denied_fingerprints = [\"ab:cd\", \"" + strings.Repeat("g", 64) + "\"]\n"),
			want: []string{
				`fleetgate.toml:22: revocation.denied_serials[0]: "0x1a" is not a serial number: want up to 128 hex digits, optionally separated by colons, such as "1a:2b:3c"`,
				`fleetgate.toml:22: revocation.denied_serials[1]: "" is not a serial number: want up to 128 hex digits, optionally separated by colons, such as "1a:2b:3c"`,
				`fleetgate.toml:22: revocation.denied_serials[3]: "` + strings.Repeat("f", 129) + `" is not a serial number: want up to 128 hex digits, optionally separated by colons, such as "1a:2b:3c"`,
				`fleetgate.toml:23: revocation.denied_fingerprints[0]: "ab:cd" is not a SHA-256 fingerprint: want 64 hex digits, optionally separated by colons`,
				`fleetgate.toml:23: revocation.denied_fingerprints[1]: "` + strings.Repeat("g", 64) + `" is not a SHA-256 fingerprint: want 64 hex digits, optionally separated by colons`,
			}},
		{name: "deny-lists of the wrong type", src: appended("\n[revocation]\ndenied_serials = \"1a\"\ndenied_fingerprints = [1]\n"),
			want: []string{
				`fleetgate.toml:22: revocation.denied_serials: expected an array, got string`,
				`fleetgate.toml:23: revocation.denied_fingerprints[0]: expected a string, got integer`,
			}},
	})
}

func TestCRLStaleWarns(t *testing.T) {
	p := fixtures(t)
	dir := t.TempDir()
	writeDemoDir(t, dir)
	now := time.Now()
	next := now.Add(-time.Hour)
	must(t, writeFile(filepath.Join(dir, "pki/fleet.crl"), pki.CRLPEM(p.inter.MustCRL(nil, now.Add(-48*time.Hour), next))))
	for _, stale := range []string{"", `"warn"`} {
		cfg, err := Parse("fleetgate.toml", []byte(withCRL(`["pki/fleet.crl"]`, stale)(t)), dir)
		if err != nil {
			t.Fatal(err)
		}
		want := `fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl is stale since ` + next.UTC().Format(time.RFC3339) +
			`: revocations issued after it are not known; publish a newer CRL`
		if got := warnings(cfg.Warnings); got != want {
			t.Errorf("crl_stale %s: warnings:\n got %s\nwant %s", stale, got, want)
		}
		if len(cfg.ClientCAs) != 1 || len(cfg.ClientCAs[0].CRLs) != 1 || !cfg.ClientCAs[0].CRLs[0].NextUpdate.Equal(next.Truncate(time.Second)) {
			t.Errorf("crl_stale %s: the stale CRL was not loaded", stale)
		}
	}
}

func TestDenyLists(t *testing.T) {
	fp := "9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08"
	cfg, err := parseIn(t, base+"\n[revocation]\ndenied_serials = [\"4F:1A:9c:03\", \"00ff\", \"0\"]\ndenied_fingerprints = [\""+fp+"\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Revocation
	if len(r.DeniedSerials) != 3 || r.DeniedSerials[0].Int64() != 0x4f1a9c03 || r.DeniedSerials[1].Int64() != 0xff || r.DeniedSerials[2].Sign() != 0 {
		t.Errorf("serials %v", r.DeniedSerials)
	}
	if len(r.DeniedFingerprints) != 1 || r.DeniedFingerprints[0][0] != 0x9f || r.DeniedFingerprints[0][31] != 0x08 {
		t.Errorf("fingerprints %x", r.DeniedFingerprints)
	}
	// Absent table: empty lists.
	cfg, err = parseIn(t, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Revocation.DeniedSerials)+len(cfg.Revocation.DeniedFingerprints) != 0 || len(cfg.ClientCAs[0].CRLs) != 0 || cfg.ClientCAs[0].CRLStale != "warn" {
		t.Errorf("defaults: %+v, CRLs %v", cfg.Revocation, cfg.ClientCAs[0].CRLs)
	}
}

// TestLargeCRLFile loads a CRL file above the 4 MiB bound of other files
// (a 100,000-entry CRL is about 4 MiB of DER, 5.5 MiB of PEM): here a PEM
// file padded with text outside its block, which PEM allows.
func TestLargeCRLFile(t *testing.T) {
	p := fixtures(t)
	dir := t.TempDir()
	writeDemoDir(t, dir)
	padding := strings.Repeat("padding outside the PEM block\n", 6<<20/30)
	must(t, writeFile(filepath.Join(dir, "pki/fleet.crl"), append([]byte(padding), pki.CRLPEM(p.crl)...)))
	if fi, err := os.Stat(filepath.Join(dir, "pki/fleet.crl")); err != nil || fi.Size() <= maxFileBytes {
		t.Fatalf("CRL file: %v, %v bytes", err, fi)
	}
	cfg, err := Parse("fleetgate.toml", []byte(withCRL(`["pki/fleet.crl"]`, "")(t)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.ClientCAs[0].CRLs); n != 1 {
		t.Fatalf("%d CRLs", n)
	}
}

// v1CRL returns a version 1 CRL of ca (DER) revoking serials, made in Go.
func v1CRL(t testing.TB, ca *pki.Cert, next time.Time, opts crltest.V1Options, entries ...x509.RevocationListEntry) []byte {
	t.Helper()
	der, err := crltest.V1(ca, x509.RevocationList{ThisUpdate: time.Now().Add(-2 * time.Hour), NextUpdate: next, RevokedCertificateEntries: entries}, opts)
	must(t, err)
	return der
}

// TestParseCRLVersions: ParseCRL reads version 2 exactly as
// x509.ParseRevocationList does, and version 1 into a list whose Raw and
// RawTBSRevocationList are the bytes as signed; it refuses, without
// panicking, every truncation of a version 1 list and a version 1 list
// carrying extensions.
func TestParseCRLVersions(t *testing.T) {
	p := fixtures(t)
	serial := big.NewInt(0x4f1a)
	entry := x509.RevocationListEntry{SerialNumber: serial, RevocationTime: time.Now().Add(-time.Hour)}

	v2, err := ParseCRL(p.crl)
	want, _ := x509.ParseRevocationList(p.crl)
	if err != nil || !bytes.Equal(v2.Raw, want.Raw) || !bytes.Equal(v2.RawTBSRevocationList, want.RawTBSRevocationList) || v2.Number.Cmp(want.Number) != 0 {
		t.Fatalf("version 2: %v", err)
	}

	der := v1CRL(t, p.inter, time.Now().Add(time.Hour), crltest.V1Options{}, entry)
	if _, err := x509.ParseRevocationList(der); err == nil {
		t.Fatal("crypto/x509 parsed the version 1 list: the test no longer covers the version 1 path")
	}
	v1, err := ParseCRL(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v1.Raw, der) || !bytes.Contains(der, v1.RawTBSRevocationList) || v1.RawTBSRevocationList[0] != 0x30 {
		t.Error("version 1: Raw or RawTBSRevocationList is not the list as signed")
	}
	if err := v1.CheckSignatureFrom(p.inter.Cert); err != nil {
		t.Errorf("version 1: signature: %v", err)
	}
	if err := v1.CheckSignatureFrom(p.root.Cert); err == nil {
		t.Error("version 1: the root's key verifies the intermediate's list")
	}
	if !bytes.Equal(v1.RawIssuer, p.inter.Cert.RawSubject) || v1.AuthorityKeyId != nil || v1.Number != nil ||
		len(v1.RevokedCertificateEntries) != 1 || v1.RevokedCertificateEntries[0].SerialNumber.Cmp(serial) != 0 {
		t.Errorf("version 1: issuer %q, key id %x, number %v, entries %v", v1.Issuer, v1.AuthorityKeyId, v1.Number, v1.RevokedCertificateEntries)
	}
	corrupt, err := crltest.CorruptSignature(der)
	must(t, err)
	if l, err := ParseCRL(corrupt); err != nil || l.CheckSignatureFrom(p.inter.Cert) == nil {
		t.Errorf("version 1 with a corrupted signature: parse %v, and it verifies", err)
	}
	for n := range len(der) {
		if _, err := ParseCRL(der[:n]); err == nil {
			t.Fatalf("version 1 cut to %d of %d bytes: parsed", n, len(der))
		}
	}

	withExt := v1CRL(t, p.inter, time.Now().Add(time.Hour), crltest.V1Options{KeepExtensions: true})
	if _, err := ParseCRL(withExt); err == nil || err.Error() != "version 1 CRL with extensions: RFC 5280 allows extensions only in version 2 CRLs" {
		t.Errorf("version 1 with extensions: %v", err)
	}
}

// TestCRLVersion1 loads and refuses version 1 lists (made in Go) through the
// configuration: the nextUpdate and crl_stale rules are those of version 2,
// and a list without nextUpdate never goes stale.
func TestCRLVersion1(t *testing.T) {
	p := fixtures(t)
	now := time.Now()
	entry := x509.RevocationListEntry{SerialNumber: big.NewInt(0x4f1a), RevocationTime: now.Add(-time.Hour)}

	dir := t.TempDir()
	writeDemoDir(t, dir)
	must(t, writeFile(filepath.Join(dir, "pki/fleet.crl"), pki.CRLPEM(v1CRL(t, p.inter, time.Time{}, crltest.V1Options{NoNextUpdate: true}, entry))))
	cfg, err := Parse("fleetgate.toml", []byte(withCRL(`["pki/fleet.crl"]`, `"reject"`)(t)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.ClientCAs[0].CRLs; len(cfg.Warnings) != 0 || len(c) != 1 || !c[0].NextUpdate.IsZero() || !c[0].List.NextUpdate.IsZero() ||
		c[0].Issuer.Subject.CommonName != "Fleet Intermediate" || len(c[0].List.RevokedCertificateEntries) != 1 {
		t.Fatalf("version 1 without nextUpdate: warnings %q, CRLs %+v", warnings(cfg.Warnings), c)
	}

	next := now.Add(-time.Hour)
	stale := v1CRL(t, p.inter, next, crltest.V1Options{})
	must(t, writeFile(filepath.Join(dir, "pki/fleet.crl"), stale))
	cfg, err = Parse("fleetgate.toml", []byte(withCRL(`["pki/fleet.crl"]`, `"warn"`)(t)), dir)
	if err != nil {
		t.Fatal(err)
	}
	wantWarning := `fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl is stale since ` + next.UTC().Format(time.RFC3339) +
		`: revocations issued after it are not known; publish a newer CRL`
	if got := warnings(cfg.Warnings); got != wantWarning {
		t.Errorf("stale version 1, crl_stale = \"warn\": warnings\n got %s\nwant %s", got, wantWarning)
	}

	withReason := entry
	withReason.ReasonCode = 1
	runErrorCases(t, []errorCase{
		{name: "stale, rejected", setup: writeCRL("fleet.crl", func(*testPKI) []byte { return stale }), src: withCRL(`["pki/fleet.crl"]`, `"reject"`),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl is stale: its nextUpdate was ` + next.UTC().Format(time.RFC3339) + `; publish a newer CRL, or set crl_stale = "warn" to serve with it`}},
		{name: "signed by another key of the same name", setup: writeCRL("fleet.crl", func(*testPKI) []byte {
			return v1CRL(t, pki.MustRoot(pki.Root("Impostor Root")).MustIssue(pki.Intermediate("Fleet Intermediate")), now.Add(time.Hour), crltest.V1Options{}, entry)
		}), src: withCRL(`["pki/fleet.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl: signature does not verify with the key of "Fleet Intermediate": this CRL was not signed by this client CA`}},
		{name: "extensions, PEM", setup: writeCRL("fleet.crl", func(*testPKI) []byte {
			return pki.CRLPEM(v1CRL(t, p.inter, now.Add(time.Hour), crltest.V1Options{KeepExtensions: true}))
		}), src: withCRL(`["pki/fleet.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl: CRL 1: version 1 CRL with extensions: RFC 5280 allows extensions only in version 2 CRLs`}},
		{name: "extensions, DER", setup: writeCRL("fleet.crl", func(*testPKI) []byte {
			return v1CRL(t, p.inter, now.Add(time.Hour), crltest.V1Options{KeepExtensions: true})
		}), src: withCRL(`["pki/fleet.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl: version 1 CRL with extensions: RFC 5280 allows extensions only in version 2 CRLs`}},
		{name: "entry extensions", setup: writeCRL("fleet.crl", func(*testPKI) []byte {
			return pki.CRLPEM(v1CRL(t, p.inter, now.Add(time.Hour), crltest.V1Options{}, entry, withReason))
		}), src: withCRL(`["pki/fleet.crl"]`, ""),
			want: []string{`fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl: CRL 1: version 1 CRL: entry 2 has extensions: RFC 5280 allows them only in version 2 CRLs`}},
	})
}
