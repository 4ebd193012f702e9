package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestChainVerifies(t *testing.T) {
	for _, kt := range []struct {
		name string
		kt   KeyType
	}{{"p256", ECDSAP256}, {"rsa", RSA2048}, {"ed25519", Ed25519}} {
		t.Run(kt.name, func(t *testing.T) {
			root := MustRoot(Options{CommonName: "root", IsCA: true, MaxPathLen: -1, KeyType: kt.kt})
			inter := root.MustIssue(Options{CommonName: "inter", IsCA: true, MaxPathLen: -1, KeyType: kt.kt})
			dev := inter.MustIssue(Options{CommonName: "sensor-0001", KeyType: kt.kt, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			_, err := dev.Cert.Verify(x509.VerifyOptions{
				Roots: Pool(root), Intermediates: Pool(inter),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if dev.Cert.Subject.CommonName != "sensor-0001" || !inter.Cert.IsCA || dev.Cert.IsCA {
				t.Fatalf("unexpected fields: %+v", dev.Cert.Subject)
			}
		})
	}
}

func TestValidityWindowAndServer(t *testing.T) {
	root := MustRoot(Root("root"))
	nb := time.Now().Add(-48 * time.Hour)
	na := time.Now().Add(-24 * time.Hour)
	old := root.MustIssue(Options{CommonName: "old", NotBefore: nb, NotAfter: na})
	if !old.Cert.NotAfter.Equal(na.Truncate(time.Second)) && old.Cert.NotAfter.After(time.Now()) {
		t.Fatalf("NotAfter not applied: %v", old.Cert.NotAfter)
	}
	srv := root.MustIssue(Server("devices.fleet.test", "127.0.0.1"))
	if err := srv.Cert.VerifyHostname("devices.fleet.test"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	tc := srv.TLSCertificate(root)
	if len(tc.Certificate) != 2 {
		t.Fatalf("chain length %d", len(tc.Certificate))
	}
}

func TestCRL(t *testing.T) {
	root := MustRoot(Root("root"))
	inter := root.MustIssue(Intermediate("inter"))
	dev := inter.MustIssue(Device("sensor-0001"))
	now := time.Now().Truncate(time.Second)
	der, err := inter.CRL(Serials(dev), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(inter.Cert); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Cmp(dev.Cert.SerialNumber) != 0 {
		t.Fatalf("entries: %+v", rl.RevokedCertificateEntries)
	}
	if !rl.ThisUpdate.Equal(now) || !rl.NextUpdate.Equal(now.Add(time.Hour)) || rl.Number.Int64() != now.Unix() {
		t.Fatalf("thisUpdate %v nextUpdate %v number %v", rl.ThisUpdate, rl.NextUpdate, rl.Number)
	}
	if block, _ := pem.Decode(CRLPEM(der)); block == nil || block.Type != "X509 CRL" || !bytes.Equal(block.Bytes, der) {
		t.Fatalf("CRLPEM: %v", block)
	}
	if _, err := dev.CRL(nil, time.Time{}, time.Time{}); err == nil {
		t.Fatal("a device certificate signed a CRL")
	}
	if _, err := inter.CRL([]*big.Int{nil}, time.Time{}, time.Time{}); err == nil {
		t.Fatal("nil serial accepted")
	}
}

func TestKeyUsageOptions(t *testing.T) {
	root := MustRoot(Root("root"))
	hasKeyUsageExt := func(c *x509.Certificate) bool {
		for _, e := range c.Extensions {
			if e.Id.String() == "2.5.29.15" {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		name    string
		opts    Options
		wantExt bool
		want    x509.KeyUsage
		wantCA  bool
	}{
		{name: "leaf default", opts: Device("d"), wantExt: true, want: x509.KeyUsageDigitalSignature},
		{name: "leaf explicit", opts: Options{CommonName: "d", KeyUsage: x509.KeyUsageCertSign}, wantExt: true, want: x509.KeyUsageCertSign},
		{name: "leaf without extension", opts: Options{CommonName: "d", NoKeyUsage: true}},
		{name: "CA default", opts: Intermediate("i"), wantExt: true, want: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, wantCA: true},
		{name: "CA without extension", opts: Options{CommonName: "i", IsCA: true, NoKeyUsage: true}, wantCA: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := root.Issue(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := hasKeyUsageExt(c.Cert); got != tc.wantExt || c.Cert.KeyUsage != tc.want || c.Cert.IsCA != tc.wantCA {
				t.Errorf("extension %v key usage %v CA %v; want %v, %v, %v", got, c.Cert.KeyUsage, c.Cert.IsCA, tc.wantExt, tc.want, tc.wantCA)
			}
		})
	}
	if _, err := root.Issue(Options{CommonName: "d", KeyUsage: x509.KeyUsageDigitalSignature, NoKeyUsage: true}); err == nil {
		t.Error("KeyUsage with NoKeyUsage: no error")
	}
}

// TestParseCertsPEM: the CERTIFICATE blocks in order, a key beside them
// skipped; no certificate, or one that does not parse, is refused, naming
// its place.
func TestParseCertsPEM(t *testing.T) {
	root, err := NewRoot(Root("parse root"))
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Issue(Intermediate("parse inter"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertsPEM(append(append(inter.CertPEM(), inter.KeyPEM()...), root.CertPEM()...))
	if err != nil || len(certs) != 2 || certs[0].Subject.CommonName != "parse inter" || certs[1].Subject.CommonName != "parse root" {
		t.Fatalf("ParseCertsPEM = %d certificates, %v; want the intermediate, then the root", len(certs), err)
	}
	if _, err := ParseCertsPEM(inter.KeyPEM()); err == nil || err.Error() != "no PEM CERTIFICATE block" {
		t.Errorf("a key alone: %v, want no PEM CERTIFICATE block", err)
	}
	broken := append(root.CertPEM(), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")...)
	if _, err := ParseCertsPEM(broken); err == nil || !strings.HasPrefix(err.Error(), "certificate 2: ") {
		t.Errorf("a broken second certificate: %v, want certificate 2: …", err)
	}
}
