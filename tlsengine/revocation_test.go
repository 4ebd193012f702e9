package tlsengine

import (
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// rvCRL returns the parsed CRL of ca revoking certs, as configs hands it on.
func rvCRL(t testing.TB, name string, ca *pki.Cert, certs ...*pki.Cert) CRL {
	t.Helper()
	der, err := ca.CRL(pki.Serials(certs...), vtNow.Add(-time.Hour), vtNow.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return CRL{Name: name, List: list, Issuer: ca.Cert}
}

func rvSet(t testing.TB, crls []CRL, serials []*big.Int, fingerprints ...[sha256.Size]byte) *Revocation {
	t.Helper()
	r, err := NewRevocation(crls, serials, fingerprints)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rvSiteWith returns a copy of site that checks r.
func rvSiteWith(site *Site, r *Revocation) *Site {
	s := *site
	s.Revocation = r
	return &s
}

func TestRevocationVerdicts(t *testing.T) {
	p := vtNewPKI(t)
	revokedDev := p.inter.MustIssue(pki.Device("sensor-stolen"))
	chain := []*pki.Cert{p.device, p.inter}
	stolen := []*pki.Cert{revokedDev, p.inter}

	// A second intermediate whose CRL the root publishes.
	badInter := p.root.MustIssue(pki.Intermediate("Compromised Intermediate"))
	underBad := badInter.MustIssue(pki.Device("sensor-under-bad"))

	// Two paths to trusted roots for one leaf: the intermediate's key is
	// certified by the root and by a second root; the root's CRL revokes
	// its certificate, the second root's does not.
	root2 := pki.MustRoot(pki.Root("Second Root"))
	crossA := p.root.MustIssue(pki.Intermediate("Cross Intermediate"))
	crossOpts := pki.Intermediate("Cross Intermediate")
	crossOpts.Key = crossA.Key
	crossB := root2.MustIssue(crossOpts)
	underCross := crossA.MustIssue(pki.Device("sensor-cross"))
	bothRoots := vtSite(t, "devices.fleet.test", p.root, root2)

	interCRL := rvCRL(t, "fleet: pki/fleet.crl", p.inter, revokedDev)
	rootCRL := rvCRL(t, "fleet: pki/root.crl", p.root, badInter, crossA)
	// The root's CRL listing the device's serial: the device's issuer is the
	// intermediate, so this entry is about another certificate.
	rootListsDevice := rvCRL(t, "fleet: pki/wrong-issuer.crl", p.root, p.device)
	devSum := sha256.Sum256(p.device.DER)
	rootSum := sha256.Sum256(p.root.DER)

	cases := []struct {
		name   string
		site   *Site
		chain  []*pki.Cert
		want   verdict.Kind
		detail string // substring of Detail
		path   int    // expected len(Path); 0 means no Path
	}{
		{name: "no set", site: p.site, chain: chain, want: verdict.Valid, path: 3},
		{name: "empty set", site: rvSiteWith(p.site, rvSet(t, nil, nil)), chain: chain, want: verdict.Valid, path: 3},
		{name: "revoked by its issuer's CRL", site: rvSiteWith(p.site, rvSet(t, []CRL{interCRL}, nil)), chain: stolen, want: verdict.Revoked, path: 3,
			detail: `leaf "sensor-stolen" (serial ` + revokedDev.Cert.SerialNumber.Text(16) + `) is revoked by CRL fleet: pki/fleet.crl since ` + vtNow.Add(-time.Hour).UTC().Format(time.RFC3339) + ` (unspecified)`},
		{name: "same CA, not listed", site: rvSiteWith(p.site, rvSet(t, []CRL{interCRL}, nil)), chain: chain, want: verdict.Valid, path: 3},
		{name: "revoked intermediate revokes its leaves", site: rvSiteWith(p.site, rvSet(t, []CRL{rootCRL}, nil)), chain: []*pki.Cert{underBad, badInter}, want: verdict.Revoked, path: 3,
			detail: `intermediate "Compromised Intermediate" (serial ` + badInter.Cert.SerialNumber.Text(16) + `) is revoked by CRL fleet: pki/root.crl`},
		{name: "another issuer's CRL", site: rvSiteWith(p.site, rvSet(t, []CRL{rootListsDevice}, nil)), chain: chain, want: verdict.Valid, path: 3},
		{name: "denied serial", site: rvSiteWith(p.site, rvSet(t, nil, pki.Serials(p.device))), chain: chain, want: verdict.Revoked, path: 3,
			detail: `leaf "sensor-0001" (serial ` + p.device.Cert.SerialNumber.Text(16) + `) is revoked: its serial number is denied`},
		{name: "denied serial of the intermediate", site: rvSiteWith(p.site, rvSet(t, nil, pki.Serials(p.inter))), chain: chain, want: verdict.Revoked, path: 3,
			detail: `intermediate "Fleet Intermediate"`},
		{name: "denied fingerprint", site: rvSiteWith(p.site, rvSet(t, nil, nil, devSum)), chain: chain, want: verdict.Revoked, path: 3,
			detail: `leaf "sensor-0001" (serial ` + p.device.Cert.SerialNumber.Text(16) + `) is revoked: its SHA-256 fingerprint ` + p.deviceSHA256() + ` is denied`},
		{name: "denied root fingerprint", site: rvSiteWith(p.site, rvSet(t, nil, nil, rootSum)), chain: chain, want: verdict.Revoked, path: 3,
			detail: `root "Fleet Root"`},
		{name: "one of two paths revoked", site: rvSiteWith(bothRoots, rvSet(t, []CRL{rootCRL}, nil)), chain: []*pki.Cert{underCross, crossA, crossB}, want: verdict.Valid, path: 3},
		{name: "revocation is checked after the path: unknown CA stays unknown", site: rvSiteWith(vtSite(t, "x.fleet.test", p.other), rvSet(t, nil, pki.Serials(p.device))), chain: chain, want: verdict.UnknownAuthority,
			detail: "unknown authority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, via := range []string{"VerifyChain", "cache"} {
				var v verdict.Verdict
				if via == "VerifyChain" {
					v = VerifyChain(tc.site, vtChain(tc.chain...), vtNow)
				} else {
					v = NewVerdictCache(16).Verdict(tc.site, vtChain(tc.chain...), vtNow)
				}
				if v.Kind != tc.want {
					t.Fatalf("%s: kind = %v, want %v (detail %q)", via, v.Kind, tc.want, v.Detail)
				}
				if !strings.Contains(v.Detail, tc.detail) || (tc.detail == "") != (v.Detail == "") {
					t.Errorf("%s: detail = %q, want %q", via, v.Detail, tc.detail)
				}
				if len(v.Path) != tc.path {
					t.Fatalf("%s: len(Path) = %d, want %d", via, len(v.Path), tc.path)
				}
				if tc.path > 0 {
					leaf := tc.chain[0].Cert
					if ref := v.Path[0]; ref.Subject != leaf.Subject.CommonName || ref.Serial.Cmp(leaf.SerialNumber) != 0 ||
						ref.SHA256 != sha256.Sum256(leaf.Raw) || string(ref.RawIssuer) != string(leaf.RawIssuer) {
						t.Errorf("%s: Path[0] = %+v", via, ref)
					}
				}
				if tc.name == "one of two paths revoked" && v.Path[1].SHA256 != sha256.Sum256(crossB.DER) {
					t.Errorf("%s: the accepted path goes through %q's certificate from %s, want the unrevoked one", via, v.Path[1].Subject, v.Path[2].Subject)
				}
			}
		})
	}
}

func (p *vtPKI) deviceSHA256() string { return leafIdentity(p.device.Cert).SHA256 }

// TestRevocationLiveRecheck is what the gateway does on each request of a
// keep-alive connection after a reload: re-check the verdict the connection
// got at its handshake against the new set.
func TestRevocationLiveRecheck(t *testing.T) {
	p := vtNewPKI(t)
	other := p.inter.MustIssue(pki.Device("sensor-0002"))
	atHandshake := VerifyChain(p.site, vtChain(p.device, p.inter), vtNow) // no set yet
	otherAtHandshake := VerifyChain(p.site, vtChain(other, p.inter), vtNow)
	reloaded := rvSet(t, []CRL{rvCRL(t, "fleet: pki/fleet.crl", p.inter, p.device)}, nil)

	cases := []struct {
		name    string
		r       *Revocation
		v       verdict.Verdict
		revoked bool
	}{
		{name: "device revoked after its handshake", r: reloaded, v: atHandshake, revoked: true},
		{name: "another device of the same CA", r: reloaded, v: otherAtHandshake},
		{name: "nil set", r: nil, v: atHandshake},
		{name: "not valid to begin with", r: reloaded, v: verdict.Verdict{Kind: verdict.Expired, Path: atHandshake.Path}},
		{name: "valid without path", r: reloaded, v: verdict.Verdict{Kind: verdict.Valid}},
		{name: "intermediate denied by serial", r: rvSet(t, nil, pki.Serials(p.inter)), v: otherAtHandshake, revoked: true},
		{name: "leaf denied by fingerprint", r: rvSet(t, nil, nil, sha256.Sum256(other.DER)), v: otherAtHandshake, revoked: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.v
			before := v.Kind
			if got := tc.r.Recheck(&v, time.Now()); got != tc.revoked {
				t.Fatalf("Recheck = %v, want %v", got, tc.revoked)
			}
			if tc.revoked && (v.Kind != verdict.Revoked || !strings.Contains(v.Detail, "is revoked")) {
				t.Fatalf("after Recheck: %v %q", v.Kind, v.Detail)
			}
			if !tc.revoked && v.Kind != before {
				t.Fatalf("Recheck changed an unrevoked verdict to %v", v.Kind)
			}
		})
	}
	if reloaded.Recheck(nil, time.Now()) {
		t.Error("Recheck(nil) = true")
	}

	// The per-request path allocates nothing when the device is not revoked.
	v := otherAtHandshake
	full := rvSet(t, []CRL{rvCRL(t, "fleet", p.inter, p.device)}, pki.Serials(p.root), sha256.Sum256(p.device.DER))
	if n := testing.AllocsPerRun(100, func() { full.Recheck(&v, time.Now()) }); n != 0 {
		t.Errorf("Recheck allocates %.0f times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { full.Revoked(other.Cert) }); n != 0 {
		t.Errorf("Revoked allocates %.0f times per call", n)
	}
}

func TestRevokedAndRevokedRef(t *testing.T) {
	p := vtNewPKI(t)
	r := rvSet(t, []CRL{rvCRL(t, "fleet", p.inter, p.device)}, nil)
	other := p.inter.MustIssue(pki.Device("sensor-0002"))
	if !r.Revoked(p.device.Cert) || r.Revoked(other.Cert) || r.Revoked(nil) || r.RevokedRef(nil) {
		t.Fatal("Revoked: wrong answers")
	}
	path := VerifyChain(p.site, vtChain(p.device, p.inter), vtNow).Path
	if !r.RevokedRef(&path[0]) || r.RevokedRef(&path[1]) {
		t.Fatal("RevokedRef: wrong answers")
	}
	var none *Revocation
	if none.Revoked(p.device.Cert) || none.RevokedRef(&path[0]) || none.Generation() != 0 {
		t.Fatal("nil set revokes")
	}
	if c, s, f := r.Size(); c != 1 || s != 0 || f != 0 {
		t.Fatalf("Size = %d, %d, %d", c, s, f)
	}
	if r2 := rvSet(t, nil, nil); r2.Generation() == r.Generation() || r2.Generation() == 0 {
		t.Fatalf("generations %d and %d", r.Generation(), r2.Generation())
	}
}

// TestRevocationSerialKeys pins the serial matching: by value, sign
// included, up to 64 bytes.
func TestRevocationSerialKeys(t *testing.T) {
	one := big.NewInt(1)
	max := new(big.Int).Sub(new(big.Int).Lsh(one, 512), one) // 64 bytes of 0xff
	tooLong := new(big.Int).Lsh(one, 512)                    // 65 bytes
	twoWords := new(big.Int).Lsh(big.NewInt(0x1234), 64)
	cases := []struct {
		name    string
		denied  *big.Int
		serial  *big.Int
		revoked bool
	}{
		{name: "equal", denied: big.NewInt(0x1234), serial: big.NewInt(0x1234), revoked: true},
		{name: "different", denied: big.NewInt(0x1234), serial: big.NewInt(0x1235)},
		{name: "negative is not positive", denied: big.NewInt(-0x1234), serial: big.NewInt(0x1234)},
		{name: "negative equal", denied: big.NewInt(-0x1234), serial: big.NewInt(-0x1234), revoked: true},
		{name: "zero", denied: big.NewInt(0), serial: big.NewInt(0), revoked: true},
		{name: "zero is not 256", denied: big.NewInt(0), serial: big.NewInt(256)},
		{name: "high word only", denied: twoWords, serial: new(big.Int).Set(twoWords), revoked: true},
		{name: "high word versus low word", denied: twoWords, serial: big.NewInt(0x1234)},
		{name: "64 bytes", denied: max, serial: new(big.Int).Set(max), revoked: true},
		{name: "65 bytes is never found", denied: max, serial: tooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rvSet(t, nil, []*big.Int{tc.denied})
			cert := &x509.Certificate{SerialNumber: tc.serial, Raw: []byte{1}}
			if got := r.Revoked(cert); got != tc.revoked {
				t.Fatalf("Revoked = %v, want %v", got, tc.revoked)
			}
		})
	}
}

func TestNewRevocationErrors(t *testing.T) {
	p := vtNewPKI(t)
	good := rvCRL(t, "fleet", p.inter, p.device)
	// Another CA with the same name as ours signs a CRL: same issuer name,
	// wrong key.
	impostor := rvCRL(t, "impostor", p.otherInter, p.device)
	impostor.Issuer = p.inter.Cert

	// An indirect CRL: an entry names another certificate issuer.
	issuerExt, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("other.test")}})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateRevocationList(crand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: vtNow, NextUpdate: vtNow.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{
			SerialNumber: big.NewInt(7), RevocationTime: vtNow,
			ExtraExtensions: []pkix.Extension{{Id: oidCertificateIssuer, Critical: true, Value: issuerExt}},
		}},
	}, p.inter.Cert, p.inter.Key)
	if err == nil {
		_, err = x509.ParseRevocationList(der)
	}
	if err != nil {
		t.Fatal(err)
	}
	indirect, _ := x509.ParseRevocationList(der)

	cases := []struct {
		name    string
		crls    []CRL
		serials []*big.Int
		want    string
	}{
		{name: "no list", crls: []CRL{{Name: "a.crl", Issuer: p.inter.Cert}}, want: "tlsengine: CRL 0 (a.crl): no list"},
		{name: "no issuer", crls: []CRL{good, {Name: "b.crl", List: good.List}}, want: "tlsengine: CRL 1 (b.crl): no issuer certificate"},
		{name: "issuer of another name", crls: []CRL{{Name: "c.crl", List: good.List, Issuer: p.root.Cert}}, want: `tlsengine: CRL 0 (c.crl): issued by "CN=Fleet Intermediate", not by "CN=Fleet Root"`},
		{name: "same name, wrong key", crls: []CRL{impostor}, want: `tlsengine: CRL 0 (impostor): signature does not verify with the key of "CN=Fleet Intermediate": `},
		{name: "indirect CRL", crls: []CRL{{Name: "d.crl", List: indirect, Issuer: p.inter.Cert}}, want: "tlsengine: CRL 0 (d.crl): entry 0 names another certificate issuer: indirect CRLs are not supported"},
		{name: "nil serial", serials: []*big.Int{big.NewInt(1), nil}, want: "tlsengine: denied serial 1 is nil"},
		{name: "serial too long", serials: []*big.Int{new(big.Int).Lsh(big.NewInt(1), 512)}, want: "tlsengine: denied serial 0 is longer than 64 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRevocation(tc.crls, tc.serials, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || r != nil {
				t.Fatalf("NewRevocation = %v, %v; want error %q", r, err, tc.want)
			}
		})
	}
}

// TestRevocationRemoveFromCRL: a delta-CRL entry that lifts a hold revokes
// nothing; other reasons are reported.
func TestRevocationRemoveFromCRL(t *testing.T) {
	p := vtNewPKI(t)
	held := p.inter.MustIssue(pki.Device("sensor-held"))
	compromised := p.inter.MustIssue(pki.Device("sensor-compromised"))
	der, err := x509.CreateRevocationList(crand.Reader, &x509.RevocationList{
		Number: big.NewInt(2), ThisUpdate: vtNow, NextUpdate: vtNow.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: held.Cert.SerialNumber, RevocationTime: vtNow, ReasonCode: reasonRemoveFromCRL},
			{SerialNumber: compromised.Cert.SerialNumber, RevocationTime: vtNow, ReasonCode: 1},
		},
	}, p.inter.Cert, p.inter.Key)
	if err != nil {
		t.Fatal(err)
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	site := rvSiteWith(p.site, rvSet(t, []CRL{{Name: "delta", List: list, Issuer: p.inter.Cert}}, nil))
	if v := VerifyChain(site, vtChain(held, p.inter), vtNow); v.Kind != verdict.Valid {
		t.Errorf("held: %v %q", v.Kind, v.Detail)
	}
	if v := VerifyChain(site, vtChain(compromised, p.inter), vtNow); v.Kind != verdict.Revoked || !strings.HasSuffix(v.Detail, "(keyCompromise)") {
		t.Errorf("compromised: %v %q", v.Kind, v.Detail)
	}
}

// TestVerdictCacheRevocation: the cache never serves a verdict computed
// under another revocation set, even on the same *Site.
func TestVerdictCacheRevocation(t *testing.T) {
	p := vtNewPKI(t)
	chain := vtChain(p.device, p.inter)
	none := rvSet(t, nil, nil)
	revoking := rvSet(t, []CRL{rvCRL(t, "fleet", p.inter, p.device)}, nil)
	site := rvSiteWith(p.site, none)
	rebuilt := rvSiteWith(p.site, revoking)

	steps := []struct {
		name   string
		before func()
		site   *Site
		want   verdict.Kind
		hit    bool
	}{
		{name: "valid under the empty set", site: site, want: verdict.Valid},
		{name: "served from the cache", site: site, want: verdict.Valid, hit: true},
		{name: "set swapped on the same site", before: func() { site.Revocation = revoking }, site: site, want: verdict.Revoked},
		{name: "revoked verdict cached", site: site, want: verdict.Revoked, hit: true},
		{name: "set swapped back: its own entry still holds", before: func() { site.Revocation = none }, site: site, want: verdict.Valid, hit: true},
		{name: "a rebuilt site with the new set", site: rebuilt, want: verdict.Revoked},
	}
	c := NewVerdictCache(64)
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		h0, _ := c.Stats()
		v := c.Verdict(st.site, chain, vtNow)
		h1, _ := c.Stats()
		if v.Kind != st.want || (h1 > h0) != st.hit {
			t.Fatalf("%s: kind %v (detail %q), hit %v; want %v, hit %v", st.name, v.Kind, v.Detail, h1 > h0, st.want, st.hit)
		}
	}
}

// rvBigCRL signs a CRL of inter listing n random 16-byte serials plus
// extra's, once per test binary run of the benchmark.
func rvBigCRL(b *testing.B, inter *pki.Cert, n int, extra ...*pki.Cert) ([]byte, *x509.RevocationList) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	serials := make([]*big.Int, 0, n+len(extra))
	for range n - len(extra) {
		var s [16]byte
		for i := range s {
			s[i] = byte(rng.Uint32())
		}
		s[0] &= 0x7f
		serials = append(serials, new(big.Int).SetBytes(s[:]))
	}
	serials = append(serials, pki.Serials(extra...)...)
	der, err := inter.CRL(serials, vtNow.Add(-time.Hour), vtNow.Add(24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		b.Fatal(err)
	}
	return der, list
}

// BenchmarkRevocationLookup measures one lookup in a set built from a
// 100,000-entry CRL: a device not listed (the common case), one listed, the
// per-request re-check of a three-certificate path, and Revoked on a parsed
// certificate with denied fingerprints (which hashes the DER).
func BenchmarkRevocationLookup(b *testing.B) {
	p := vtNewPKI(b)
	listed := p.inter.MustIssue(pki.Device("sensor-listed"))
	_, list := rvBigCRL(b, p.inter, 100_000, listed)
	r := rvSet(b, []CRL{{Name: "big", List: list, Issuer: p.inter.Cert}}, []*big.Int{big.NewInt(42)})
	if n, _, _ := r.Size(); n != 100_000 {
		b.Fatalf("%d entries", n)
	}
	valid := VerifyChain(p.site, vtChain(p.device, p.inter), vtNow)
	path := valid.Path
	listedRef := VerifyChain(p.site, vtChain(listed, p.inter), vtNow).Path[0]
	withFP := rvSet(b, []CRL{{Name: "big", List: list, Issuer: p.inter.Cert}}, nil, [sha256.Size]byte{1})

	b.Run("RevokedRef/not-listed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r.RevokedRef(&path[0]) {
				b.Fatal("revoked")
			}
		}
	})
	b.Run("RevokedRef/listed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !r.RevokedRef(&listedRef) {
				b.Fatal("not revoked")
			}
		}
	})
	b.Run("Recheck/path-of-3", func(b *testing.B) {
		now := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			v := valid
			if r.Recheck(&v, now) {
				b.Fatal("revoked")
			}
		}
	})
	b.Run("Revoked/cert", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r.Revoked(p.device.Cert) {
				b.Fatal("revoked")
			}
		}
	})
	b.Run("Revoked/cert-with-fingerprints", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if withFP.Revoked(p.device.Cert) {
				b.Fatal("revoked")
			}
		}
	})
}

// BenchmarkRevocationBuild measures building a set from a 100,000-entry CRL
// (what a reload costs): from the parsed list, and from the DER (parse,
// then build).
func BenchmarkRevocationBuild(b *testing.B) {
	p := vtNewPKI(b)
	der, list := rvBigCRL(b, p.inter, 100_000)
	b.Logf("CRL: %d entries, %d bytes DER", len(list.RevokedCertificateEntries), len(der))
	b.Run("NewRevocation", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rvSet(b, []CRL{{Name: "big", List: list, Issuer: p.inter.Cert}}, nil)
		}
	})
	b.Run("ParseRevocationList+NewRevocation", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l, err := x509.ParseRevocationList(der)
			if err != nil {
				b.Fatal(err)
			}
			rvSet(b, []CRL{{Name: "big", List: l, Issuer: p.inter.Cert}}, nil)
		}
	})
}

// TestStaleCRLRejects: under crl_stale = "reject" (CRL.RejectAfter), a list
// past its nextUpdate stops vouching for its issuer's certificates while
// the gateway runs: new handshakes get RevocationUnknown, a live
// connection's verdict turns RevocationUnknown at its next request, a
// cached Valid verdict is not served past that moment; under "warn" (no
// RejectAfter) nothing changes.
func TestStaleCRLRejects(t *testing.T) {
	p := vtNewPKI(t)
	chain := vtChain(p.device, p.inter)
	stale := rvCRL(t, "fleet: pki/fleet.crl", p.inter) // nextUpdate vtNow+24h
	stale.RejectAfter = stale.List.NextUpdate
	later := stale.RejectAfter.Add(time.Hour)
	strict := rvSiteWith(p.site, rvSet(t, []CRL{stale}, nil))

	v, w := verifyChain(strict, chain, vtNow)
	if v.Kind != verdict.Valid {
		t.Fatalf("before nextUpdate: %s (%s)", v.Kind, v.Detail)
	}
	if !w.until.Equal(stale.RejectAfter) {
		t.Errorf("a Valid verdict's window ends %v, want the CRL's nextUpdate %v", w.until, stale.RejectAfter)
	}
	if got := VerifyChain(strict, chain, later); got.Kind != verdict.RevocationUnknown ||
		!strings.Contains(got.Detail, "past its nextUpdate") || !strings.Contains(got.Detail, "fleet: pki/fleet.crl") {
		t.Errorf("after nextUpdate: %s (%s), want revocation_unknown naming the list", got.Kind, got.Detail)
	}
	live := v
	if strict.Revocation.Recheck(&live, vtNow) || live.Kind != verdict.Valid {
		t.Errorf("recheck before nextUpdate changed the verdict to %s", live.Kind)
	}
	if !strict.Revocation.Recheck(&live, later) || live.Kind != verdict.RevocationUnknown {
		t.Errorf("recheck after nextUpdate: %s, want revocation_unknown", live.Kind)
	}
	leaf := v.Path[0]
	if strict.Revocation.StaleRef(&leaf, vtNow) || !strict.Revocation.StaleRef(&leaf, later) {
		t.Error("StaleRef does not follow the list's nextUpdate")
	}
	root := v.Path[len(v.Path)-1] // issued by the root, whose list is not stale
	if strict.Revocation.StaleRef(&root, later) {
		t.Error("a certificate of another issuer counts as stale")
	}

	c := NewVerdictCache(16)
	if got := c.Verdict(strict, chain, vtNow); got.Kind != verdict.Valid {
		t.Fatalf("cache, before nextUpdate: %s", got.Kind)
	}
	if got := c.Verdict(strict, chain, later); got.Kind != verdict.RevocationUnknown {
		t.Errorf("cache, after nextUpdate: %s, want revocation_unknown (a cached Valid outlived the list)", got.Kind)
	}

	// When the list stops vouching: for tokens (VouchedUntil) and for the
	// watch that closes live relays (StaleBetween).
	if got := strict.Revocation.VouchedUntil(v.Path); !got.Equal(stale.RejectAfter) {
		t.Errorf("VouchedUntil %v, want %v", got, stale.RejectAfter)
	}
	if got := strict.Revocation.VouchedUntil(v.Path[1:]); !got.IsZero() {
		t.Errorf("VouchedUntil of the path above the leaf %v, want none (the root's list is not stale-bounded)", got)
	}
	at := stale.RejectAfter
	for _, tc := range []struct {
		after, upTo time.Time
		want        bool
	}{
		{at.Add(-time.Second), at, true},
		{at.Add(-time.Hour), later, true},
		{at, later, false}, // passed before this look: checked by the last one
		{vtNow, at.Add(-time.Second), false},
	} {
		if got := strict.Revocation.StaleBetween(tc.after, tc.upTo); got != tc.want {
			t.Errorf("StaleBetween(%v, %v) = %v", tc.after.Sub(at), tc.upTo.Sub(at), got)
		}
	}

	warn := rvCRL(t, "fleet: pki/fleet.crl", p.inter)
	lenient := rvSiteWith(p.site, rvSet(t, []CRL{warn}, nil))
	if got := VerifyChain(lenient, chain, later); got.Kind != verdict.Valid {
		t.Errorf("crl_stale = warn, after nextUpdate: %s, want valid", got.Kind)
	}
	if lenient.Revocation.StaleBetween(vtNow, later) || !lenient.Revocation.VouchedUntil(v.Path).IsZero() {
		t.Error("crl_stale = warn: a list stops vouching")
	}
	var none *Revocation
	if none.StaleBetween(vtNow, later) || !none.VouchedUntil(v.Path).IsZero() {
		t.Error("no revocation set: a list stops vouching")
	}
}
