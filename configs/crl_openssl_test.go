package configs

import (
	"bytes"
	"encoding/pem"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/crltest"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// CRLs made by the real `openssl ca`, as small fleet CAs publish them: a
// configuration without crl_extensions, revoking without -crl_reason, makes
// a version 1 CRL; one with crl_extensions and a reason, a version 2 CRL.

// opensslCA returns an `openssl ca` over ca, whose certificate and key are
// written as PEM into a fresh folder. It skips the test without openssl.
func opensslCA(t *testing.T, ca *pki.Cert, v crltest.Version) *crltest.CA {
	t.Helper()
	crltest.Binary(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	must(t, ca.WriteFiles(cert, key))
	return crltest.OpenSSL(t, dir, cert, key, v)
}

// opensslRevoke revokes certs with ca and returns its new CRL (PEM), after
// checking that openssl says it is of ca's version.
func opensslRevoke(t *testing.T, ca *crltest.CA, v crltest.Version, certs ...*pki.Cert) []byte {
	t.Helper()
	for _, c := range certs {
		path := filepath.Join(t.TempDir(), "revoked.pem")
		must(t, writeFile(path, c.CertPEM()))
		ca.Revoke(path)
	}
	crl := ca.GenCRL()
	if got := ca.Version(crl); got != v.Want() {
		t.Fatalf("openssl crl -text says %q, want %q", got, v.Want())
	}
	return crl
}

// derOf returns the DER of a one-block PEM CRL.
func derOf(t *testing.T, crlPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(crlPEM)
	if b == nil || b.Type != "X509 CRL" {
		t.Fatalf("not a PEM CRL: %q", crlPEM)
	}
	return b.Bytes
}

// TestOpenSSLCRLsLoad: version 1 and version 2 CRLs of `openssl ca` load, in
// PEM and DER, with crl_stale = "reject" (their nextUpdate is honoured),
// are matched to the intermediate that signed them, and revoke the device
// once tlsengine builds the set from them, as the gateway does.
func TestOpenSSLCRLsLoad(t *testing.T) {
	p := fixtures(t)
	for _, v := range []crltest.Version{crltest.Version1, crltest.Version2} {
		t.Run(v.String(), func(t *testing.T) {
			dev := p.inter.MustIssue(pki.Device("sensor-0001"))
			other := p.inter.MustIssue(pki.Device("sensor-0002"))
			crlPEM := opensslRevoke(t, opensslCA(t, p.inter, v), v, dev)
			for _, form := range []struct {
				name string
				data []byte
			}{{"PEM", crlPEM}, {"DER", derOf(t, crlPEM)}} {
				t.Run(form.name, func(t *testing.T) {
					dir := t.TempDir()
					writeDemoDir(t, dir)
					must(t, writeFile(filepath.Join(dir, "pki/fleet.crl"), form.data))
					cfg, err := Parse("fleetgate.toml", []byte(withCRL(`["pki/fleet.crl"]`, `"reject"`)(t)), dir)
					if err != nil {
						t.Fatal(err)
					}
					if len(cfg.Warnings) != 0 {
						t.Errorf("warnings:\n%s", warnings(cfg.Warnings))
					}
					crls := cfg.ClientCAs[0].CRLs
					if len(crls) != 1 {
						t.Fatalf("%d CRLs", len(crls))
					}
					c := crls[0]
					if c.Issuer != p.inter.Cert && !c.Issuer.Equal(p.inter.Cert) {
						t.Errorf("issuer %q, want the fleet intermediate", c.Issuer.Subject)
					}
					if err := c.List.CheckSignatureFrom(c.Issuer); err != nil {
						t.Errorf("signature: %v", err)
					}
					if !bytes.Equal(c.List.Raw, derOf(t, crlPEM)) {
						t.Error("List.Raw is not the CRL as signed")
					}
					if until := time.Until(c.NextUpdate); until < 29*24*time.Hour || until > 31*24*time.Hour {
						t.Errorf("nextUpdate %v, want in 30 days (default_crl_days)", c.NextUpdate)
					}
					entries := c.List.RevokedCertificateEntries
					if len(entries) != 1 || entries[0].SerialNumber.Cmp(dev.Cert.SerialNumber) != 0 {
						t.Fatalf("entries %+v, want the device's serial", entries)
					}
					wantReason, akid := 0, []byte(nil) // v1: no reason, no extensions
					if v == crltest.Version2 {
						wantReason, akid = 1, p.inter.Cert.SubjectKeyId // keyCompromise
						if c.List.Number == nil {
							t.Error("v2: no CRL number")
						}
					} else if c.List.Number != nil || len(c.List.Extensions) != 0 || len(entries[0].Extensions) != 0 {
						t.Errorf("v1: number %v, extensions %v, entry extensions %v", c.List.Number, c.List.Extensions, entries[0].Extensions)
					}
					if entries[0].ReasonCode != wantReason || !bytes.Equal(c.List.AuthorityKeyId, akid) {
						t.Errorf("reason %d, authority key id %x; want %d, %x", entries[0].ReasonCode, c.List.AuthorityKeyId, wantReason, akid)
					}

					rev, err := tlsengine.NewRevocation([]tlsengine.CRL{{Name: "fleet: " + c.Name(), List: c.List, Issuer: c.Issuer}}, nil, nil)
					if err != nil {
						t.Fatal(err)
					}
					if !rev.Revoked(dev.Cert) || rev.Revoked(other.Cert) || rev.Revoked(p.inter.Cert) {
						t.Errorf("revoked: device %v, other device %v, intermediate %v; want true, false, false",
							rev.Revoked(dev.Cert), rev.Revoked(other.Cert), rev.Revoked(p.inter.Cert))
					}
				})
			}
		})
	}
}

// TestOpenSSLCRLsRefused: a CRL of `openssl ca` signed by another CA that
// has our intermediate's name, or with a corrupted signature, is refused,
// in both versions (a version 1 list has no authority key identifier: the
// signature alone tells the CAs apart).
func TestOpenSSLCRLsRefused(t *testing.T) {
	p := fixtures(t)
	impostor := pki.MustRoot(pki.Root("Impostor Root")).MustIssue(pki.Intermediate("Fleet Intermediate"))
	dev := p.inter.MustIssue(pki.Device("sensor-0001"))
	const wrongKey = `fleetgate.toml:8: client_cas[0].crl_files[0]: pki/fleet.crl: signature does not verify with the key of "Fleet Intermediate": this CRL was not signed by this client CA`
	for _, v := range []crltest.Version{crltest.Version1, crltest.Version2} {
		t.Run(v.String(), func(t *testing.T) {
			byImpostor := opensslRevoke(t, opensslCA(t, impostor, v), v, dev)
			corrupt, err := crltest.CorruptSignature(derOf(t, opensslRevoke(t, opensslCA(t, p.inter, v), v, dev)))
			must(t, err)
			runErrorCases(t, []errorCase{
				{name: "signed by another CA of the same name", setup: writeCRL("fleet.crl", func(*testPKI) []byte { return byImpostor }),
					src: withCRL(`["pki/fleet.crl"]`, ""), want: []string{wrongKey}},
				{name: "corrupted signature, PEM", setup: writeCRL("fleet.crl", func(*testPKI) []byte { return pki.CRLPEM(corrupt) }),
					src: withCRL(`["pki/fleet.crl"]`, ""), want: []string{wrongKey}},
				{name: "corrupted signature, DER", setup: writeCRL("fleet.crl", func(*testPKI) []byte { return corrupt }),
					src: withCRL(`["pki/fleet.crl"]`, ""), want: []string{wrongKey}},
			})
		})
	}
}
