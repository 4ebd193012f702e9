package bench

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// Files of a bench PKI folder (InitPKI). Names are relative to the folder.
const (
	RootFile       = "root.pem"             // the fleet root CA, what servers trust for devices
	RootKeyFile    = "root-key.pem"         // its key
	InterFile      = "intermediate.pem"     // the intermediate that issues devices and the server
	InterKeyFile   = "intermediate-key.pem" // its key
	ChainFile      = "ca-chain.pem"         // intermediate then root, fleetgate's client_cas shape
	ServerFile     = "server.pem"           // the server certificate, then the intermediate
	ServerKeyFile  = "server-key.pem"       // its key
	TokenKeyFile   = "token.pem"            // a P-256 token signing key for fleetgate
	DevicesDirName = "devices"              // device certificates: sensor-NNNN.pem and sensor-NNNN-key.pem
)

// DefaultServerNames are the names InitPKI's server certificate covers.
var DefaultServerNames = []string{"devices.fleet.test", "app.fleet.test", "bench.fleet.test", "mqtt.fleet.test", "localhost", "127.0.0.1"}

// InitPKI creates, in dir, a P-256 root CA, an intermediate, a server
// certificate for names (DefaultServerNames when empty) and a token signing
// key. An existing folder is left as it is (created is false): later runs
// reuse it, and so do the device certificates LoadFleet adds under it.
func InitPKI(dir string, names ...string) (created bool, err error) {
	if _, err := os.Stat(filepath.Join(dir, RootFile)); err == nil {
		return false, nil
	}
	// Another bench process may be creating the folder right now: create it
	// under the folder's lock, and look again once holding it.
	unlock, err := lockDir(dir)
	if err != nil {
		return false, fmt.Errorf("bench: init %s: %w", dir, err)
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, RootFile)); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("bench: init %s: %w", dir, err)
	}
	if len(names) == 0 {
		names = DefaultServerNames
	}
	root, err := pki.NewRoot(pki.Root("fleetgate bench root"))
	if err != nil {
		return false, fmt.Errorf("bench: init %s: %w", dir, err)
	}
	inter, err := root.Issue(pki.Intermediate("fleetgate bench intermediate"))
	if err != nil {
		return false, fmt.Errorf("bench: init %s: %w", dir, err)
	}
	server, err := inter.Issue(pki.Server(names...))
	if err != nil {
		return false, fmt.Errorf("bench: init %s: %w", dir, err)
	}
	tokenKey, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		return false, fmt.Errorf("bench: init %s: token key: %w", dir, err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	// The root goes last: its presence marks a complete folder.
	steps := []func() error{
		func() error { return inter.WriteFiles(path(InterFile), path(InterKeyFile)) },
		func() error { return writeFile(path(ChainFile), pki.ChainPEM(inter, root), 0o644) },
		func() error { return server.WriteFiles(path(ServerFile), path(ServerKeyFile), inter) },
		func() error { return pki.WriteKey(path(TokenKeyFile), tokenKey) },
		func() error { return root.WriteFiles(path(RootFile), path(RootKeyFile)) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return false, fmt.Errorf("bench: init %s: %w", dir, err)
		}
	}
	return true, nil
}

// FleetOptions says where the simulated devices' certificates live and who
// issues the missing ones.
type FleetOptions struct {
	// Dir is the folder; the devices go in Dir/devices.
	Dir string
	// N is the number of devices, named sensor-0001 … sensor-N.
	N int
	// CACertFile and CAKeyFile (PEM) name the CA that issues missing device
	// certificates: the first certificate of CACertFile is the issuer, any
	// further non-root ones are sent after the leaf as its chain. Both empty:
	// the intermediate of an InitPKI folder at Dir.
	CACertFile, CAKeyFile string
}

// LoadFleet returns N device certificates (leaf then chain, as a device
// sends them), generating and writing those that are missing. When every
// device is on disk and no CA is given, no CA is needed (a folder of
// devices made by someone else, such as the demo's, works). A device on
// disk that the given CA did not sign is an error rather than silently
// replaced: point Dir elsewhere for another CA.
func LoadFleet(o FleetOptions) ([]tls.Certificate, error) {
	if o.N < 1 {
		return nil, fmt.Errorf("bench: fleet: %d devices: want at least 1", o.N)
	}
	if (o.CACertFile == "") != (o.CAKeyFile == "") {
		return nil, errors.New("bench: fleet: -ca-cert and -ca-key go together")
	}
	devDir := filepath.Join(o.Dir, DevicesDirName)
	out := make([]tls.Certificate, o.N)
	var missing []int
	for i := range o.N {
		// Without the lock a device may be half written by another process:
		// any failure is looked at again under the lock.
		if tc, err := readDevice(devDir, i+1); err == nil {
			out[i] = tc
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 && o.CACertFile == "" {
		return out, nil
	}
	if len(missing) > 0 {
		// Issue the missing devices under the folder's lock: two bench
		// processes issuing the same device at once could each write half of
		// a pair (one's certificate, the other's key). Once holding the lock,
		// read again what another process may have written meanwhile.
		unlock, err := lockDir(o.Dir)
		if err != nil {
			return nil, fmt.Errorf("bench: fleet: %w", err)
		}
		defer unlock()
		still := missing[:0]
		for _, i := range missing {
			tc, err := readDevice(devDir, i+1)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				still = append(still, i)
			case err != nil:
				return nil, err
			default:
				out[i] = tc
			}
		}
		missing = still
		if len(missing) == 0 && o.CACertFile == "" {
			return out, nil
		}
	}
	certFile, keyFile := o.CACertFile, o.CAKeyFile
	if certFile == "" {
		certFile, keyFile = filepath.Join(o.Dir, InterFile), filepath.Join(o.Dir, InterKeyFile)
	}
	issuer, chain, err := loadIssuer(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w (%d of %d devices missing in %s: give -ca-cert and -ca-key, or -init the folder)", err, len(missing), o.N, devDir)
	}
	for i := range out {
		if out[i].Leaf == nil {
			continue
		}
		if err := out[i].Leaf.CheckSignatureFrom(issuer.Cert); err != nil {
			return nil, fmt.Errorf("bench: fleet: %s was not issued by %q (%v): use another folder for another CA",
				filepath.Join(devDir, DeviceName(i+1)+".pem"), issuer.Cert.Subject.CommonName, err)
		}
	}
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: fleet: %w", err)
	}
	errs := make([]error, o.N)
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				out[i], errs[i] = issueDevice(devDir, i+1, issuer, chain)
			}
		})
	}
	for _, i := range missing {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// DeviceName is the common name of device i (from 1): sensor-0001 …
func DeviceName(i int) string { return fmt.Sprintf("sensor-%04d", i) }

// devicePaths are the certificate and key files of device i in dir.
func devicePaths(dir string, i int) (certPath, keyPath string) {
	name := DeviceName(i)
	return filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
}

// readDevice reads device i from dir; a missing file is fs.ErrNotExist.
func readDevice(dir string, i int) (tls.Certificate, error) {
	certPath, keyPath := devicePaths(dir, i)
	tc, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("bench: fleet: %s: %w", certPath, err)
	}
	return tc, err
}

// issueDevice issues device i and writes it to dir.
func issueDevice(dir string, i int, issuer *pki.Cert, chain []*pki.Cert) (tls.Certificate, error) {
	certPath, keyPath := devicePaths(dir, i)
	dev, err := issuer.Issue(pki.Device(DeviceName(i)))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("bench: fleet: issue %s: %w", DeviceName(i), err)
	}
	full := chain
	if !bytes.Equal(issuer.Cert.RawIssuer, issuer.Cert.RawSubject) {
		full = append([]*pki.Cert{issuer}, chain...) // an intermediate: sent after the leaf
	}
	// Temporary names, then renames, key first: a reader sees a device's
	// certificate only once its key is complete.
	if err := dev.WriteFiles(certPath+".tmp", keyPath+".tmp", full...); err != nil {
		return tls.Certificate{}, fmt.Errorf("bench: fleet: %w", err)
	}
	if err := os.Rename(keyPath+".tmp", keyPath); err != nil {
		return tls.Certificate{}, fmt.Errorf("bench: fleet: %w", err)
	}
	if err := os.Rename(certPath+".tmp", certPath); err != nil {
		return tls.Certificate{}, fmt.Errorf("bench: fleet: %w", err)
	}
	return dev.TLSCertificate(full...), nil
}

// loadIssuer reads a CA certificate file (issuer first, then its chain) and
// the issuer's key. Self-signed certificates are left out of the chain: a
// device never needs to send its root.
func loadIssuer(certFile, keyFile string) (*pki.Cert, []*pki.Cert, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: CA certificate: %w", err)
	}
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: CA certificate %s: %w", certFile, err)
	}
	if !certs[0].IsCA {
		return nil, nil, fmt.Errorf("bench: CA certificate %s: %q is not a CA", certFile, certs[0].Subject.CommonName)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: CA key: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: CA key %s: %w", keyFile, err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, nil, fmt.Errorf("bench: CA key %s does not match the certificate %q of %s", keyFile, certs[0].Subject.CommonName, certFile)
	}
	issuer := &pki.Cert{Cert: certs[0], DER: certs[0].Raw, Key: key}
	var chain []*pki.Cert
	for _, c := range certs[1:] {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			continue // a root
		}
		chain = append(chain, &pki.Cert{Cert: c, DER: c.Raw})
	}
	return issuer, chain, nil
}

// parseKey reads the first private key of a PEM file: PKCS#8, SEC 1 or
// PKCS#1.
func parseKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: %T is not a signing key", block.Type, k)
		}
		return s, nil
	}
}

// lockFile is the file bench processes lock (flock) in a PKI folder while
// they create it or issue devices into it.
const lockFile = ".bench.lock"

// lockDir takes the exclusive lock of dir (creating dir when missing),
// waiting for another process that holds it; unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { _ = f.Close() }, nil // closing the file releases the lock
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}
