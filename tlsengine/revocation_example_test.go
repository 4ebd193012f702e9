package tlsengine_test

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// revocationFrom is what the gateway does once per snapshot: the CRLs of
// every client CA (already signature-checked by configs) and the
// [revocation] deny-lists become one set, shared by all sites.
func revocationFrom(cfg *configs.Config) (*tlsengine.Revocation, error) {
	var crls []tlsengine.CRL
	for _, ca := range cfg.ClientCAs {
		for _, c := range ca.CRLs {
			crls = append(crls, tlsengine.CRL{Name: ca.Name + ": " + c.Name(), List: c.List, Issuer: c.Issuer})
		}
	}
	return tlsengine.NewRevocation(crls, cfg.Revocation.DeniedSerials, cfg.Revocation.DeniedFingerprints)
}

// A fleet operator revokes a stolen device with a CRL: its next handshake
// gets the verdict revoked, other devices of the same CA stay valid, and a
// connection it opened before the reload is refused on its next request.
func ExampleNewRevocation() {
	root := pki.MustRoot(pki.Root("Fleet Root"))
	inter := root.MustIssue(pki.Intermediate("Fleet Intermediate"))
	stolen := inter.MustIssue(pki.Device("sensor-0007"))
	other := inter.MustIssue(pki.Device("sensor-0008"))

	dir, err := os.MkdirTemp("", "fleetgate-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, "ca.pem"), pki.ChainPEM(inter, root), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "fleet.crl"), pki.CRLPEM(inter.MustCRL(pki.Serials(stolen), time.Time{}, time.Time{})), 0o600)
	cfg, err := configs.Options{AllowEphemeralKey: true}.Parse("fleetgate.toml", []byte(`
[[client_cas]]
name = "fleet"
pem_file = "ca.pem"
associated_hostnames = ["devices.fleet.test"]
crl_files = ["fleet.crl"]
`), dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	rev, err := revocationFrom(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}

	before := &tlsengine.Site{Name: "devices.fleet.test", Roots: pki.Pool(root)} // the snapshot before the reload
	after := *before
	after.Revocation = rev
	chain := func(c *pki.Cert) []*x509.Certificate { return []*x509.Certificate{c.Cert, inter.Cert} }

	live := tlsengine.VerifyChain(before, chain(stolen), time.Time{})
	fmt.Println("before the reload:", live.Kind)
	fmt.Println("stolen device, new handshake:", tlsengine.VerifyChain(&after, chain(stolen), time.Time{}).Kind)
	fmt.Println("other device, new handshake:", tlsengine.VerifyChain(&after, chain(other), time.Time{}).Kind)
	fmt.Println("live connection, next request:", rev.Recheck(&live, time.Now()), live.Kind == verdict.Revoked)
	// Output:
	// before the reload: valid
	// stolen device, new handshake: revoked
	// other device, new handshake: valid
	// live connection, next request: true true
}
