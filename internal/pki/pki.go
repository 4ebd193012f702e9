// Package pki generates certificate authorities, intermediates, server and
// device certificates. It serves tests, the demo and `fleetgate pki`; it is
// never used on the serving path.
//
//	root, _ := pki.NewRoot(pki.Options{CommonName: "Fleet Root"})
//	inter, _ := root.Issue(pki.Intermediate("Fleet Intermediate"))
//	device, _ := inter.Issue(pki.Device("sensor-0001"))
//	server, _ := inter.Issue(pki.Server("devices.fleet.test"))
//	crl, _ := inter.CRL(pki.Serials(device), time.Time{}, time.Time{}) // DER; pki.CRLPEM for PEM
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// KeyType selects the key algorithm of a generated certificate.
type KeyType int

// Key types. The zero value is ECDSA P-256, the fleet default.
const (
	ECDSAP256 KeyType = iota
	RSA2048
	Ed25519
	ECDSAP384
)

// Options describes one certificate to generate. Zero fields take defaults:
// ECDSA P-256, valid from an hour ago for one year, a random serial.
type Options struct {
	CommonName   string
	Organization []string
	OrgUnit      []string
	KeyType      KeyType
	NotBefore    time.Time
	NotAfter     time.Time
	IsCA         bool
	// MaxPathLen is copied when IsCA is set; -1 means unlimited.
	MaxPathLen int
	// KeyUsage is copied as is when set. When zero, a CA gets certSign,
	// cRLSign and digitalSignature, a leaf digitalSignature (plus
	// keyEncipherment for RSA), unless NoKeyUsage is set.
	KeyUsage x509.KeyUsage
	// NoKeyUsage leaves the KeyUsage extension out of the certificate, to
	// test how a certificate without one is treated. KeyUsage must then be
	// zero.
	NoKeyUsage  bool
	ExtKeyUsage []x509.ExtKeyUsage
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []string
	// EmailAddresses are rfc822Name SANs.
	EmailAddresses []string
	Serial         *big.Int
	// Key, when set, is used instead of generating a new one.
	Key crypto.Signer
}

// Cert is a generated certificate with its private key.
type Cert struct {
	Cert *x509.Certificate
	DER  []byte
	Key  crypto.Signer
}

// Root returns Options for a self-signed root CA.
func Root(cn string) Options {
	return Options{CommonName: cn, IsCA: true, MaxPathLen: -1, NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
}

// Intermediate returns Options for an intermediate CA.
func Intermediate(cn string) Options {
	return Options{CommonName: cn, IsCA: true, MaxPathLen: -1, NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour)}
}

// Server returns Options for a TLS server certificate covering hosts (DNS
// names or IP addresses); the first host is also the common name.
func Server(hosts ...string) Options {
	o := Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			o.IPAddresses = append(o.IPAddresses, ip)
		} else {
			o.DNSNames = append(o.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		o.CommonName = hosts[0]
	}
	return o
}

// Device returns Options for a device (client) certificate with the given
// common name and ExtKeyUsage clientAuth.
func Device(cn string) Options {
	return Options{CommonName: cn, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

// NewRoot generates a self-signed certificate from opts (normally Root(...)).
func NewRoot(opts Options) (*Cert, error) {
	return create(opts, nil)
}

// Issue generates a certificate from opts signed by c.
func (c *Cert) Issue(opts Options) (*Cert, error) {
	return create(opts, c)
}

// MustRoot is NewRoot for tests: it panics on error.
func MustRoot(opts Options) *Cert {
	c, err := NewRoot(opts)
	if err != nil {
		panic(err)
	}
	return c
}

// MustIssue is Issue for tests: it panics on error.
func (c *Cert) MustIssue(opts Options) *Cert {
	n, err := c.Issue(opts)
	if err != nil {
		panic(err)
	}
	return n
}

// NewKey generates a private key of type t.
func NewKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("pki: unknown key type %d", t)
}

func create(opts Options, parent *Cert) (*Cert, error) {
	if opts.NoKeyUsage && opts.KeyUsage != 0 {
		return nil, fmt.Errorf("pki: create %q: KeyUsage and NoKeyUsage are both set", opts.CommonName)
	}
	key := opts.Key
	if key == nil {
		var err error
		if key, err = NewKey(opts.KeyType); err != nil {
			return nil, err
		}
	}
	serial := opts.Serial
	if serial == nil {
		var err error
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
		if err != nil {
			return nil, fmt.Errorf("pki: serial: %w", err)
		}
		serial.Add(serial, big.NewInt(1))
	}
	notBefore, notAfter := opts.NotBefore, opts.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.Add(365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         opts.CommonName,
			Organization:       opts.Organization,
			OrganizationalUnit: opts.OrgUnit,
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              opts.KeyUsage,
		ExtKeyUsage:           opts.ExtKeyUsage,
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPAddresses,
		EmailAddresses:        opts.EmailAddresses,
		BasicConstraintsValid: true,
		IsCA:                  opts.IsCA,
	}
	for _, u := range opts.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("pki: URI SAN %q: %w", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if opts.IsCA {
		if tmpl.KeyUsage == 0 && !opts.NoKeyUsage {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		}
		switch {
		case opts.MaxPathLen < 0:
			tmpl.MaxPathLen = -1
		case opts.MaxPathLen == 0:
			tmpl.MaxPathLenZero = true
		default:
			tmpl.MaxPathLen = opts.MaxPathLen
		}
		ski := sha256.Sum256(publicKeyBytes(key.Public()))
		tmpl.SubjectKeyId = ski[:20]
	} else if tmpl.KeyUsage == 0 && !opts.NoKeyUsage {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if _, isRSA := key.(*rsa.PrivateKey); isRSA {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
	}
	issuerTmpl, issuerKey := tmpl, key
	if parent != nil {
		issuerTmpl, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerTmpl, key.Public(), issuerKey)
	if err != nil {
		return nil, fmt.Errorf("pki: create %q: %w", opts.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %q: %w", opts.CommonName, err)
	}
	return &Cert{Cert: cert, DER: der, Key: key}, nil
}

func publicKeyBytes(pub crypto.PublicKey) []byte {
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	return b
}

// CertPEM returns the certificate as a PEM block.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
}

// KeyPEM returns the private key as a PKCS#8 PEM block.
func (c *Cert) KeyPEM() []byte {
	b, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(fmt.Sprintf("pki: marshal key: %v", err)) // only for key types NewKey makes
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
}

// ParseCertsPEM returns the certificates of the CERTIFICATE blocks in data,
// in order, skipping blocks of other types (a key beside them), and refuses
// data that holds none. A certificate that does not parse is an error that
// names its place (1 for the first).
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// ChainPEM concatenates the PEM forms of certs, in order.
func ChainPEM(certs ...*Cert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.CertPEM()...)
	}
	return out
}

// TLSCertificate returns c as a tls.Certificate whose chain continues with
// the given intermediates (leaf first, as TLS sends it).
func (c *Cert) TLSCertificate(intermediates ...*Cert) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, i := range intermediates {
		tc.Certificate = append(tc.Certificate, i.DER)
	}
	return tc
}

// Pool returns an x509.CertPool holding the given certificates.
func Pool(certs ...*Cert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Cert)
	}
	return p
}

// WriteFiles writes the certificate (with the given chain appended) to
// certPath and the key to keyPath (mode 0600), creating folders as needed.
func (c *Cert) WriteFiles(certPath, keyPath string, chain ...*Cert) error {
	if err := writeFile(certPath, ChainPEM(append([]*Cert{c}, chain...)...), 0o644); err != nil {
		return err
	}
	if keyPath == "" {
		return nil
	}
	return writeFile(keyPath, c.KeyPEM(), 0o600)
}

// WriteKey writes a bare private key as PKCS#8 PEM (mode 0600), such as a
// token signing key.
func WriteKey(path string, key crypto.Signer) error {
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: marshal key: %w", err)
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b}), 0o600)
}

// writeFile writes data to path with mode, also over an existing file of
// another mode (os.WriteFile keeps an existing file's mode: an overwritten
// key would stay world-readable): a temporary file with mode, then a
// rename.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// CRL returns a DER-encoded X.509 v2 certificate revocation list signed by c
// (a CA made by this package: it has the cRLSign key usage and a subject key
// identifier), listing serials as revoked at thisUpdate. A zero thisUpdate
// means now; a zero nextUpdate means seven days after thisUpdate. The CRL
// number is thisUpdate in Unix seconds, so a later list has a higher number.
// Use Serials to list certificates, and CRLPEM for the PEM form.
func (c *Cert) CRL(serials []*big.Int, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if thisUpdate.IsZero() {
		thisUpdate = time.Now()
	}
	if nextUpdate.IsZero() {
		nextUpdate = thisUpdate.Add(7 * 24 * time.Hour)
	}
	entries := make([]x509.RevocationListEntry, len(serials))
	for i, s := range serials {
		if s == nil {
			return nil, fmt.Errorf("pki: CRL of %q: serial %d is nil", c.Cert.Subject.CommonName, i)
		}
		entries[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: thisUpdate}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    big.NewInt(thisUpdate.Unix()),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
	}, c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: CRL of %q: %w", c.Cert.Subject.CommonName, err)
	}
	return der, nil
}

// MustCRL is CRL for tests: it panics on error.
func (c *Cert) MustCRL(serials []*big.Int, thisUpdate, nextUpdate time.Time) []byte {
	der, err := c.CRL(serials, thisUpdate, nextUpdate)
	if err != nil {
		panic(err)
	}
	return der
}

// Serials returns the serial numbers of certs, for CRL.
func Serials(certs ...*Cert) []*big.Int {
	out := make([]*big.Int, len(certs))
	for i, c := range certs {
		out[i] = c.Cert.SerialNumber
	}
	return out
}

// CRLPEM returns a DER CRL as an "X509 CRL" PEM block, the form
// `openssl crl` writes and crl_files accepts.
func CRLPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}
