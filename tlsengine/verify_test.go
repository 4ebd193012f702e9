package tlsengine

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// vtNow is the time every verification test runs at. Certificates are
// generated relative to the real clock (pki's defaults), so vtNow is too.
var vtNow = time.Now()

// vtPKI is the verify, cache, revocation and SNI tests' view of the shared
// fixture: one fleet's root and intermediate, the site that trusts them, and
// another site's CA.
type vtPKI struct {
	root, inter *pki.Cert
	device      *pki.Cert // leaf from inter, with every identity field set
	site        *Site     // trusts root only; intermediates come from the device
	other       *pki.Cert // another site's root
	otherInter  *pki.Cert // its intermediate, with the same name as inter
}

// vtNewPKI returns the fixture's PKI with a fresh site (a test may change
// its site; the certificates are shared and never changed).
func vtNewPKI(t testing.TB) *vtPKI {
	t.Helper()
	f := fixture(t)
	return &vtPKI{root: f.root, inter: f.inter, device: f.device, site: vtSite(t, teDevices, f.root),
		other: f.otherRoot, otherInter: f.otherInter}
}

// vtSite returns a site named name whose client CAs are roots, serving the
// fixture's server certificate (the SNI tests only need one to exist).
func vtSite(t testing.TB, name string, roots ...*pki.Cert) *Site {
	t.Helper()
	s := &Site{Name: name, Certificates: []tls.Certificate{fixture(t).server}, Generation: 1}
	if len(roots) > 0 {
		s.Roots = pki.Pool(roots...)
	}
	return s
}

func vtChain(certs ...*pki.Cert) []*x509.Certificate {
	out := make([]*x509.Certificate, len(certs))
	for i, c := range certs {
		out[i] = c.Cert
	}
	return out
}

func vtRaw(certs ...*pki.Cert) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.DER
	}
	return out
}

func TestVerifyChainKinds(t *testing.T) {
	p := vtNewPKI(t)
	hour, day := time.Hour, 24*time.Hour

	// Intermediates with something wrong.
	expiredInterOpts := pki.Intermediate("Expired Intermediate")
	expiredInterOpts.NotBefore, expiredInterOpts.NotAfter = vtNow.Add(-3*day), vtNow.Add(-day)
	expiredInter := p.root.MustIssue(expiredInterOpts)
	futureInterOpts := pki.Intermediate("Future Intermediate")
	futureInterOpts.NotBefore = vtNow.Add(day)
	futureInter := p.root.MustIssue(futureInterOpts)
	notCA := p.root.MustIssue(pki.Options{CommonName: "Not A CA", KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign})
	serverOnlyInterOpts := pki.Intermediate("Server-only Intermediate")
	serverOnlyInterOpts.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serverOnlyInter := p.root.MustIssue(serverOnlyInterOpts)

	// A renewed intermediate: same subject and key as an expired one.
	staleOpts := pki.Intermediate("Rotating Intermediate")
	staleOpts.NotBefore, staleOpts.NotAfter = vtNow.Add(-3*day), vtNow.Add(-day)
	stale := p.root.MustIssue(staleOpts)
	renewedOpts := pki.Intermediate("Rotating Intermediate")
	renewedOpts.Key = stale.Key
	renewed := p.root.MustIssue(renewedOpts)
	rotated := stale.MustIssue(pki.Device("sensor-rotated"))

	// Roots with something wrong.
	expiredRootOpts := pki.Root("Expired Root")
	expiredRootOpts.NotBefore, expiredRootOpts.NotAfter = vtNow.Add(-30*day), vtNow.Add(-day)
	expiredRoot := pki.MustRoot(expiredRootOpts)
	expiredRootInterOpts := pki.Intermediate("Intermediate of Expired Root")
	expiredRootInterOpts.NotBefore = vtNow.Add(-20 * day)
	expiredRootInter := expiredRoot.MustIssue(expiredRootInterOpts)
	expiredRootDevOpts := pki.Device("sensor-old-root")
	expiredRootDevOpts.NotBefore = vtNow.Add(-10 * day)
	expiredRootDev := expiredRootInter.MustIssue(expiredRootDevOpts)

	// Leaves with something wrong.
	expiredLeafOpts := pki.Device("sensor-expired")
	expiredLeafOpts.NotBefore, expiredLeafOpts.NotAfter = vtNow.Add(-2*day), vtNow.Add(-hour)
	futureLeafOpts := pki.Device("sensor-future")
	futureLeafOpts.NotBefore = vtNow.Add(hour)
	selfSignedOpts := pki.Device("rogue")
	noClientAuth := p.inter.MustIssue(pki.Options{CommonName: "sensor-serverauth", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})

	// A CA whose path length forbids the intermediate below it.
	pathLen0Opts := pki.Intermediate("Path-length-0 Intermediate")
	pathLen0Opts.MaxPathLen = 0
	pathLen0 := p.root.MustIssue(pathLen0Opts)
	belowPathLen0 := pathLen0.MustIssue(pki.Intermediate("Too Deep Intermediate"))

	siteWithInter := vtSite(t, "devices.fleet.test", p.root)
	siteWithInter.Intermediates = pki.Pool(p.inter)
	siteExpiredInter := vtSite(t, "devices.fleet.test", p.root)
	siteExpiredInter.Intermediates = pki.Pool(expiredInter)
	siteFutureInter := vtSite(t, "devices.fleet.test", p.root)
	siteFutureInter.Intermediates = pki.Pool(futureInter)
	siteRenewed := vtSite(t, "devices.fleet.test", p.root)
	siteRenewed.Intermediates = pki.Pool(renewed)
	siteMax1 := vtSite(t, "devices.fleet.test", p.root)
	siteMax1.MaxIntermediates = 1

	cases := []struct {
		name  string
		site  *Site
		chain []*pki.Cert
		want  verdict.Kind
		cn    string // expected Identity.CommonName; "" means none
	}{
		{name: "valid leaf and intermediate", site: p.site, chain: []*pki.Cert{p.device, p.inter}, want: verdict.Valid, cn: "sensor-0001"},
		{name: "valid leaf, intermediate and root", site: p.site, chain: []*pki.Cert{p.device, p.inter, p.root}, want: verdict.Valid, cn: "sensor-0001"},
		{name: "valid leaf, intermediate uploaded with the site", site: siteWithInter, chain: []*pki.Cert{p.device}, want: verdict.Valid, cn: "sensor-0001"},
		{name: "valid leaf, intermediate sent in wrong order", site: p.site, chain: []*pki.Cert{p.device, p.root, p.inter}, want: verdict.Valid, cn: "sensor-0001"},
		{name: "stale expired intermediate sent, renewed one uploaded", site: siteRenewed, chain: []*pki.Cert{rotated, stale}, want: verdict.Valid, cn: "sensor-rotated"},
		{name: "missing", site: p.site, chain: nil, want: verdict.Missing},
		{name: "no client CAs on the site", site: vtSite(t, "open.fleet.test"), chain: []*pki.Cert{p.device, p.inter}, want: verdict.UnknownAuthority, cn: "sensor-0001"},
		{name: "nil site", site: nil, chain: []*pki.Cert{p.device, p.inter}, want: verdict.UnknownAuthority, cn: "sensor-0001"},
		{name: "intermediate not sent", site: p.site, chain: []*pki.Cert{p.device}, want: verdict.UnknownAuthority, cn: "sensor-0001"},
		{name: "another site's CA", site: p.site, chain: []*pki.Cert{p.otherInter.MustIssue(pki.Device("sensor-other")), p.otherInter}, want: verdict.UnknownAuthority, cn: "sensor-other"},
		{name: "another site's root sent along", site: p.site, chain: []*pki.Cert{p.otherInter.MustIssue(pki.Device("sensor-other")), p.otherInter, p.other}, want: verdict.UnknownAuthority, cn: "sensor-other"},
		{name: "self-signed leaf", site: p.site, chain: []*pki.Cert{pki.MustRoot(selfSignedOpts)}, want: verdict.UnknownAuthority, cn: "rogue"},
		{name: "expired leaf", site: p.site, chain: []*pki.Cert{p.inter.MustIssue(expiredLeafOpts), p.inter}, want: verdict.Expired, cn: "sensor-expired"},
		{name: "expired leaf of another CA", site: p.site, chain: []*pki.Cert{p.otherInter.MustIssue(expiredLeafOpts), p.otherInter}, want: verdict.Expired, cn: "sensor-expired"},
		{name: "expired intermediate sent by the device", site: p.site, chain: []*pki.Cert{expiredInter.MustIssue(pki.Device("sensor-ei")), expiredInter}, want: verdict.Expired, cn: "sensor-ei"},
		{name: "expired intermediate uploaded with the site", site: siteExpiredInter, chain: []*pki.Cert{expiredInter.MustIssue(pki.Device("sensor-ei2"))}, want: verdict.Expired, cn: "sensor-ei2"},
		{name: "expired root", site: vtSite(t, "devices.fleet.test", expiredRoot), chain: []*pki.Cert{expiredRootDev, expiredRootInter}, want: verdict.Expired, cn: "sensor-old-root"},
		{name: "not yet valid leaf", site: p.site, chain: []*pki.Cert{p.inter.MustIssue(futureLeafOpts), p.inter}, want: verdict.NotYetValid, cn: "sensor-future"},
		{name: "not yet valid intermediate sent by the device", site: p.site, chain: []*pki.Cert{futureInter.MustIssue(pki.Device("sensor-fi")), futureInter}, want: verdict.NotYetValid, cn: "sensor-fi"},
		{name: "not yet valid intermediate uploaded with the site", site: siteFutureInter, chain: []*pki.Cert{futureInter.MustIssue(pki.Device("sensor-fi2"))}, want: verdict.NotYetValid, cn: "sensor-fi2"},
		{name: "intermediate is not a CA", site: p.site, chain: []*pki.Cert{notCA.MustIssue(pki.Device("sensor-nca")), notCA}, want: verdict.BadUsage, cn: "sensor-nca"},
		{name: "leaf without clientAuth", site: p.site, chain: []*pki.Cert{noClientAuth, p.inter}, want: verdict.BadUsage, cn: "sensor-serverauth"},
		{name: "intermediate restricted to serverAuth", site: p.site, chain: []*pki.Cert{serverOnlyInter.MustIssue(pki.Device("sensor-soi")), serverOnlyInter}, want: verdict.BadUsage, cn: "sensor-soi"},
		{name: "intermediate beyond a CA's path length", site: p.site, chain: []*pki.Cert{belowPathLen0.MustIssue(pki.Device("sensor-deep")), belowPathLen0, pathLen0}, want: verdict.BadUsage, cn: "sensor-deep"},
		{name: "five intermediates, default limit four", site: p.site, chain: []*pki.Cert{p.device, p.inter, p.inter, p.inter, p.inter, p.inter}, want: verdict.TooManyIntermediates, cn: "sensor-0001"},
		{name: "four intermediates, default limit four", site: p.site, chain: []*pki.Cert{p.device, p.inter, p.inter, p.inter, p.inter}, want: verdict.Valid, cn: "sensor-0001"},
		{name: "two intermediates, site limit one", site: siteMax1, chain: []*pki.Cert{p.device, p.inter, p.root}, want: verdict.TooManyIntermediates, cn: "sensor-0001"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, form := range []string{"parsed", "raw"} {
				var v verdict.Verdict
				if form == "parsed" {
					v = VerifyChain(tc.site, vtChain(tc.chain...), vtNow)
				} else {
					v = VerifyRawChain(tc.site, vtRaw(tc.chain...), vtNow)
				}
				if v.Kind != tc.want {
					t.Errorf("%s: kind = %v, want %v (detail %q)", form, v.Kind, tc.want, v.Detail)
				}
				if v.Identity.CommonName != tc.cn {
					t.Errorf("%s: identity CN = %q, want %q", form, v.Identity.CommonName, tc.cn)
				}
				if v.Kind != verdict.Valid && v.Kind != verdict.Missing && v.Detail == "" {
					t.Errorf("%s: %v verdict without detail", form, v.Kind)
				}
			}
		})
	}
}

// TestVerifyChainExpiredIntermediateAmbiguity covers the paths on which
// crypto/x509 reports an expired intermediate not as expired but as an
// unknown authority (or as whichever candidate it tried last): the verdict
// must still say expired.
func TestVerifyChainExpiredIntermediateAmbiguity(t *testing.T) {
	p := vtNewPKI(t)
	expOpts := pki.Intermediate("Rotating Intermediate")
	expOpts.NotBefore, expOpts.NotAfter = vtNow.Add(-48*time.Hour), vtNow.Add(-24*time.Hour)
	expired := p.root.MustIssue(expOpts)
	// Same subject and key, valid now, but signed by a root the site does
	// not trust: x509 finds it, fails further up, and reports that.
	crossOpts := pki.Intermediate("Rotating Intermediate")
	crossOpts.Key = expired.Key
	cross := p.other.MustIssue(crossOpts)
	leaf := expired.MustIssue(pki.Device("sensor-rot"))

	cases := []struct {
		name  string
		chain []*pki.Cert
	}{
		{name: "only the expired intermediate", chain: []*pki.Cert{leaf, expired}},
		{name: "expired first, untrusted cross-sign second", chain: []*pki.Cert{leaf, expired, cross}},
		{name: "untrusted cross-sign first, expired second", chain: []*pki.Cert{leaf, cross, expired}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			chain := vtChain(tc.chain...)
			pool := x509.NewCertPool()
			for _, c := range chain[1:] {
				pool.AddCert(c)
			}
			_, err := chain[0].Verify(x509.VerifyOptions{Roots: p.site.Roots, Intermediates: pool, CurrentTime: vtNow,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			t.Logf("crypto/x509 says: %T: %v", err, err)
			if v := VerifyChain(p.site, chain, vtNow); v.Kind != verdict.Expired {
				t.Fatalf("kind = %v, want expired (detail %q)", v.Kind, v.Detail)
			}
		})
	}
}

func TestVerifyRawChainMalformed(t *testing.T) {
	p := vtNewPKI(t)
	truncated := p.inter.DER[:len(p.inter.DER)/2]
	cases := []struct {
		name string
		raw  [][]byte
		want verdict.Kind
		cn   string
	}{
		{name: "nil chain", raw: nil, want: verdict.Missing},
		{name: "empty chain", raw: [][]byte{}, want: verdict.Missing},
		{name: "garbage leaf", raw: [][]byte{[]byte("not a certificate")}, want: verdict.Malformed},
		{name: "empty leaf", raw: [][]byte{{}}, want: verdict.Malformed},
		{name: "truncated intermediate", raw: [][]byte{p.device.DER, truncated}, want: verdict.Malformed, cn: "sensor-0001"},
		{name: "trailing bytes after intermediate", raw: [][]byte{p.device.DER, append(slices.Clone(p.inter.DER), 0)}, want: verdict.Malformed, cn: "sensor-0001"},
		{name: "too many counted before parsing", raw: [][]byte{p.device.DER, {1}, {2}, {3}, {4}, {5}}, want: verdict.TooManyIntermediates, cn: "sensor-0001"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := VerifyRawChain(p.site, tc.raw, vtNow)
			if v.Kind != tc.want {
				t.Fatalf("kind = %v, want %v (detail %q)", v.Kind, tc.want, v.Detail)
			}
			if v.Identity.CommonName != tc.cn {
				t.Errorf("identity CN = %q, want %q", v.Identity.CommonName, tc.cn)
			}
		})
	}
}

func TestVerifyChainUnparsedCertificates(t *testing.T) {
	p := vtNewPKI(t)
	cases := []struct {
		name  string
		chain []*x509.Certificate
	}{
		{name: "nil leaf", chain: []*x509.Certificate{nil}},
		{name: "leaf without DER", chain: []*x509.Certificate{{}}},
		{name: "nil intermediate", chain: []*x509.Certificate{p.device.Cert, nil}},
		{name: "intermediate without DER", chain: []*x509.Certificate{p.device.Cert, {}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v := VerifyChain(p.site, tc.chain, vtNow); v.Kind != verdict.Malformed {
				t.Fatalf("kind = %v, want malformed", v.Kind)
			}
			if v := NewVerdictCache(16).Verdict(p.site, tc.chain, vtNow); v.Kind != verdict.Malformed {
				t.Fatalf("through the cache: kind = %v, want malformed", v.Kind)
			}
		})
	}
}

func TestVerifyChainOddInputs(t *testing.T) {
	p := vtNewPKI(t)
	junk := &x509.Certificate{Raw: []byte{0x30, 0x00}, NotAfter: vtNow.Add(time.Hour)}
	negative := vtSite(t, "devices.fleet.test", p.root)
	negative.MaxIntermediates = -3
	cases := []struct {
		name  string
		site  *Site
		chain []*x509.Certificate
		now   time.Time
		want  verdict.Kind
	}{
		{name: "zero now means the current time", site: p.site, chain: vtChain(p.device, p.inter), want: verdict.Valid},
		{name: "negative limit means the default", site: negative, chain: vtChain(p.device, p.inter, p.inter, p.inter, p.inter), now: vtNow, want: verdict.Valid},
		{name: "unparsed leaf struct with DER", site: p.site, chain: []*x509.Certificate{junk}, now: vtNow, want: verdict.UnknownAuthority},
		{name: "unparsed intermediate struct with DER", site: p.site, chain: []*x509.Certificate{p.device.Cert, junk}, now: vtNow, want: verdict.UnknownAuthority},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v := VerifyChain(tc.site, tc.chain, tc.now); v.Kind != tc.want {
				t.Fatalf("kind = %v, want %v (detail %q)", v.Kind, tc.want, v.Detail)
			}
			if v := NewVerdictCache(16).Verdict(tc.site, tc.chain, tc.now); v.Kind != tc.want {
				t.Fatalf("through the cache: kind = %v, want %v (detail %q)", v.Kind, tc.want, v.Detail)
			}
		})
	}
}

func TestVerifyChainIdentity(t *testing.T) {
	p := vtNewPKI(t)
	leaf := p.device.Cert
	sum := sha256.Sum256(p.device.DER)
	want := verdict.Identity{
		CommonName:   "sensor-0001",
		Organization: []string{"Acme Fleet"},
		OrgUnit:      leaf.Subject.OrganizationalUnit, // DER sorts the SET: line-3, sensors
		DNSNames:     []string{"sensor-0001.devices.fleet.test"},
		URIs:         []string{"spiffe://fleet.test/device/sensor-0001"},
		SerialHex:    leaf.SerialNumber.Text(16),
		SHA256:       hex.EncodeToString(sum[:]),
		IssuerCN:     "Fleet Intermediate",
		NotBefore:    leaf.NotBefore,
		NotAfter:     leaf.NotAfter,
		DER:          p.device.DER,
	}
	cases := []struct {
		name  string
		site  *Site
		chain []*pki.Cert
		kind  verdict.Kind
	}{
		{name: "valid", site: p.site, chain: []*pki.Cert{p.device, p.inter}, kind: verdict.Valid},
		{name: "unknown authority still names the device", site: vtSite(t, "x.fleet.test", p.other), chain: []*pki.Cert{p.device, p.inter}, kind: verdict.UnknownAuthority},
		{name: "too many intermediates still names the device", site: p.site, chain: []*pki.Cert{p.device, p.inter, p.inter, p.inter, p.inter, p.inter}, kind: verdict.TooManyIntermediates},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := VerifyChain(tc.site, vtChain(tc.chain...), vtNow)
			if v.Kind != tc.kind {
				t.Fatalf("kind = %v, want %v (detail %q)", v.Kind, tc.kind, v.Detail)
			}
			id := v.Identity
			if id.CommonName != want.CommonName || id.IssuerCN != want.IssuerCN ||
				id.SerialHex != want.SerialHex || id.SHA256 != want.SHA256 ||
				!slices.Equal(id.Organization, want.Organization) || !slices.Equal(id.OrgUnit, want.OrgUnit) ||
				!slices.Equal(id.DNSNames, want.DNSNames) || !slices.Equal(id.URIs, want.URIs) ||
				!id.NotBefore.Equal(want.NotBefore) || !id.NotAfter.Equal(want.NotAfter) ||
				string(id.DER) != string(want.DER) {
				t.Fatalf("identity =\n%+v\nwant\n%+v", id, want)
			}
			if len(id.OrgUnit) != 2 || !slices.Contains(id.OrgUnit, "sensors") || !slices.Contains(id.OrgUnit, "line-3") {
				t.Errorf("OrgUnit = %q, want sensors and line-3", id.OrgUnit)
			}
			if id.SerialHex != strings.ToLower(id.SerialHex) || id.SHA256 != strings.ToLower(id.SHA256) {
				t.Errorf("hex not lower-case: serial %q sha256 %q", id.SerialHex, id.SHA256)
			}
		})
	}
}

// BenchmarkVerifyChainCold measures a full verification (no cache): a P-256
// leaf and intermediate sent by the device, the root in the site's pool.
func BenchmarkVerifyChainCold(b *testing.B) {
	p := vtNewPKI(b)
	chain := vtChain(p.device, p.inter)
	b.ReportAllocs()
	for b.Loop() {
		if v := VerifyChain(p.site, chain, vtNow); v.Kind != verdict.Valid {
			b.Fatalf("kind = %v (%s)", v.Kind, v.Detail)
		}
	}
}
