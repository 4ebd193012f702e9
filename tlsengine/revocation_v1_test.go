package tlsengine

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/crltest"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// rvV1CRL returns a version 1 CRL of ca revoking certs (no extensions, so no
// authority key identifier), as configs.ParseCRL hands it on. A zero next
// leaves nextUpdate out.
func rvV1CRL(t testing.TB, name string, ca *pki.Cert, next time.Time, certs ...*pki.Cert) CRL {
	t.Helper()
	tmpl := x509.RevocationList{ThisUpdate: vtNow.Add(-time.Hour), NextUpdate: next}
	for _, c := range certs {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.Cert.SerialNumber, RevocationTime: vtNow.Add(-time.Hour)})
	}
	der, err := crltest.V1(ca, tmpl, crltest.V1Options{NoNextUpdate: next.IsZero()})
	if err != nil {
		t.Fatal(err)
	}
	list, err := configs.ParseCRL(der)
	if err != nil {
		t.Fatal(err)
	}
	return CRL{Name: name, List: list, Issuer: ca.Cert}
}

// TestRevocationVersion1: a version 1 list revokes like a version 2 one —
// on new chains, through the verdict cache and on live verdicts — its
// signature is checked again by NewRevocation, and the stale rule follows
// its nextUpdate (none: never stale).
func TestRevocationVersion1(t *testing.T) {
	p := vtNewPKI(t)
	stolen := p.inter.MustIssue(pki.Device("sensor-stolen"))
	v1 := rvV1CRL(t, "fleet: pki/fleet.crl", p.inter, time.Time{}, stolen)
	set := rvSet(t, []CRL{v1}, nil)
	site := rvSiteWith(p.site, set)

	want := `leaf "sensor-stolen" (serial ` + stolen.Cert.SerialNumber.Text(16) + `) is revoked by CRL fleet: pki/fleet.crl since ` +
		vtNow.Add(-time.Hour).UTC().Format(time.RFC3339) + ` (unspecified)`
	for _, via := range []string{"VerifyChain", "cache"} {
		var v verdict.Verdict
		if via == "VerifyChain" {
			v = VerifyChain(site, vtChain(stolen, p.inter), vtNow)
		} else {
			v = NewVerdictCache(16).Verdict(site, vtChain(stolen, p.inter), vtNow)
		}
		if v.Kind != verdict.Revoked || v.Detail != want {
			t.Errorf("%s: %s %q, want revoked %q", via, v.Kind, v.Detail, want)
		}
	}
	if v := VerifyChain(site, vtChain(p.device, p.inter), vtNow); v.Kind != verdict.Valid {
		t.Errorf("unlisted device: %s (%s)", v.Kind, v.Detail)
	}

	// A live verdict computed before the list, rechecked under it.
	live := VerifyChain(p.site, vtChain(stolen, p.inter), vtNow)
	if live.Kind != verdict.Valid || !set.Recheck(&live, vtNow) || live.Kind != verdict.Revoked {
		t.Errorf("recheck: %s, want revoked", live.Kind)
	}

	// crl_stale = "reject": without nextUpdate the list never goes stale.
	never := v1
	never.RejectAfter = never.List.NextUpdate
	later := vtNow.Add(300 * 24 * time.Hour) // before the device expires
	neverSet := rvSet(t, []CRL{never}, nil)
	v := VerifyChain(rvSiteWith(p.site, neverSet), vtChain(p.device, p.inter), later)
	if v.Kind != verdict.Valid {
		t.Fatalf("version 1 without nextUpdate, 300 days later: %s (%s), want valid", v.Kind, v.Detail)
	}
	if neverSet.StaleRef(&v.Path[0], vtNow.Add(100*365*24*time.Hour)) {
		t.Error("version 1 without nextUpdate is stale a century later")
	}
	// With nextUpdate, the version 2 rule applies.
	dated := rvV1CRL(t, "fleet: pki/fleet.crl", p.inter, vtNow.Add(24*time.Hour))
	dated.RejectAfter = dated.List.NextUpdate
	strict := rvSiteWith(p.site, rvSet(t, []CRL{dated}, nil))
	if v := VerifyChain(strict, vtChain(p.device, p.inter), vtNow); v.Kind != verdict.Valid {
		t.Errorf("version 1 before nextUpdate: %s (%s)", v.Kind, v.Detail)
	}
	if v := VerifyChain(strict, vtChain(p.device, p.inter), vtNow.Add(25*time.Hour)); v.Kind != verdict.RevocationUnknown || !strings.Contains(v.Detail, "past its nextUpdate") {
		t.Errorf("version 1 after nextUpdate: %s (%s), want revocation_unknown", v.Kind, v.Detail)
	}

	// NewRevocation checks the signature of a version 1 list again.
	impostor := rvV1CRL(t, "impostor", p.otherInter, time.Time{}, p.device) // same issuer name, another key
	impostor.Issuer = p.inter.Cert
	corruptDER, err := crltest.CorruptSignature(v1.List.Raw)
	if err != nil {
		t.Fatal(err)
	}
	corruptList, err := configs.ParseCRL(corruptDER)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []CRL{impostor, {Name: "corrupt", List: corruptList, Issuer: p.inter.Cert}} {
		if r, err := NewRevocation([]CRL{c}, nil, nil); err == nil || r != nil ||
			!strings.Contains(err.Error(), `signature does not verify with the key of "CN=Fleet Intermediate"`) {
			t.Errorf("%s: NewRevocation = %v, %v; want a signature error", c.Name, r, err)
		}
	}
}
