package fuzz

// The PKI every target shares, generated once per test (or fuzz worker)
// process with internal/pki: no private key is committed (DESIGN
// conventions). Committed seeds that need these certificates refer to them
// by a one-byte name (see chain_test.go) instead of embedding DER that
// would not chain to this run's roots.

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// Site names served by the engine targets.
const (
	siteDevices = "devices.fleet.test" // client CA: the fleet root; the default site
	siteOpen    = "open.fleet.test"    // no client CA: no certificate requested
	siteStrict  = "strict.fleet.test"  // RejectInvalid
	siteWild    = "*.wild.test"        // one-label wildcard
	siteTickets = "tickets.fleet.test" // SessionTickets
)

// fixture is the run's PKI.
type fixture struct {
	epoch time.Time // when it was generated: the "now" the chain target offsets from

	root, inter              *pki.Cert // the fleet CA (inter issues devices and the server)
	otherRoot, otherInter    *pki.Cert // a CA no site trusts
	device, otherDevice      *pki.Cert
	directDevice             *pki.Cert // issued by the root itself
	expiredDevice            *pki.Cert
	futureDevice             *pki.Cert
	serverAsClient           *pki.Cert // ExtKeyUsage serverAuth only
	noEKUDevice              *pki.Cert // no ExtKeyUsage at all (x509: any)
	ed25519Device, rsaDevice *pki.Cert
	notCA, underNotCA        *pki.Cert // an "intermediate" without CA:TRUE and its leaf
	expiredInter             *pki.Cert // an intermediate past NotAfter…
	underExpiredInter        *pki.Cert // …and a current device it issued
	server                   *pki.Cert // the gateway's certificate for every site name

	tokenKey, tokenKeyPrev crypto.Signer // P-256 (ES256) current, Ed25519 (EdDSA) previous
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

// getFixture returns the run's PKI, generating it on first use.
func getFixture(tb testing.TB) *fixture {
	tb.Helper()
	fixOnce.Do(func() { fix, fixErr = newFixture() })
	if fixErr != nil {
		tb.Fatalf("fixture: %v", fixErr)
	}
	return fix
}

func newFixture() (f *fixture, err error) {
	defer func() {
		// pki's Must* panic; turn that into a fixture error, not a crash
		// attributed to whichever input happened to run first.
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("%v", r)
		}
	}()
	f = &fixture{epoch: time.Now().Truncate(time.Second)}
	year := 365 * 24 * time.Hour
	f.root = pki.MustRoot(pki.Root("Fleet Root"))
	f.inter = f.root.MustIssue(pki.Intermediate("Fleet Intermediate"))
	f.otherRoot = pki.MustRoot(pki.Root("Other Root"))
	f.otherInter = f.otherRoot.MustIssue(pki.Intermediate("Other Intermediate"))
	f.device = f.inter.MustIssue(pki.Device("sensor-0001"))
	f.otherDevice = f.otherInter.MustIssue(pki.Device("intruder-0001"))
	f.directDevice = f.root.MustIssue(pki.Device("sensor-direct"))

	expired := pki.Device("sensor-expired")
	expired.NotBefore, expired.NotAfter = f.epoch.Add(-2*year), f.epoch.Add(-year)
	f.expiredDevice = f.inter.MustIssue(expired)
	future := pki.Device("sensor-future")
	future.NotBefore, future.NotAfter = f.epoch.Add(year), f.epoch.Add(2*year)
	f.futureDevice = f.inter.MustIssue(future)

	f.serverAsClient = f.inter.MustIssue(pki.Server("server-as-client.fleet.test"))
	noEKU := pki.Device("sensor-no-eku")
	noEKU.ExtKeyUsage = nil
	f.noEKUDevice = f.inter.MustIssue(noEKU)
	ed := pki.Device("sensor-ed25519")
	ed.KeyType = pki.Ed25519
	f.ed25519Device = f.inter.MustIssue(ed)
	rsaOpts := pki.Device("sensor-rsa")
	rsaOpts.KeyType = pki.RSA2048
	f.rsaDevice = f.inter.MustIssue(rsaOpts)

	notCA := pki.Intermediate("Not A CA")
	notCA.IsCA = false
	notCA.KeyUsage = x509.KeyUsageDigitalSignature
	f.notCA = f.inter.MustIssue(notCA)
	f.underNotCA = f.notCA.MustIssue(pki.Device("sensor-under-not-ca"))

	expInter := pki.Intermediate("Expired Intermediate")
	expInter.NotBefore, expInter.NotAfter = f.epoch.Add(-3*year), f.epoch.Add(-year)
	f.expiredInter = f.root.MustIssue(expInter)
	underExp := pki.Device("sensor-under-expired-inter")
	underExp.NotBefore, underExp.NotAfter = f.epoch.Add(-time.Hour), f.epoch.Add(year)
	f.underExpiredInter = f.expiredInter.MustIssue(underExp)

	f.server = f.inter.MustIssue(pki.Server(siteDevices, siteOpen, siteStrict, siteWild, siteTickets))

	if f.tokenKey, err = pki.NewKey(pki.ECDSAP256); err != nil {
		return nil, err
	}
	if f.tokenKeyPrev, err = pki.NewKey(pki.Ed25519); err != nil {
		return nil, err
	}
	return f, nil
}
