// Package demo prepares what `make run` needs: a demo PKI, token key and
// identity provider client secret in a folder (created on first start,
// reused after), a loopback echo origin, a loopback MQTT broker, a loopback
// OpenID Provider for the people's console, and the curl, mosquitto and
// browser steps that show the Access flow end to end.
package demo

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
)

// Device certificate names the demo issues.
var Devices = []string{"sensor-0001", "sensor-0002"}

// Files the demo writes besides those the embedded configuration names,
// and the laptop's name and .p12 password.
const (
	// RootCA is the root alone: what curl --cacert takes, the CA a browser
	// imports, and the gateway's origin_ca_file for the demo IdP.
	RootCA = configs.DemoRootCA
	// IdPCert and IdPKey are the demo identity provider's server
	// certificate (with the intermediate) and key, for idp.fleet.test.
	IdPCert = "pki/idp.fleet.test.pem"
	IdPKey  = "pki/idp.fleet.test-key.pem"
	// Laptop is the common name of the operator's enrolled laptop: the
	// client certificate the console's policy requires beside the login.
	Laptop = "ops-laptop"
	// LaptopCert and LaptopKey are the laptop's certificate (with the
	// intermediate) and key, for curl and Go clients.
	LaptopCert = "pki/laptops/ops-laptop.pem"
	LaptopKey  = "pki/laptops/ops-laptop-key.pem"
	// LaptopP12 is the same certificate, chain and key as PKCS#12 for a
	// browser (pk12util, Firefox's or Chromium's certificate settings),
	// encrypted (AES-256, PBKDF2) with LaptopP12Password.
	LaptopP12 = "pki/laptops/ops-laptop.p12"
	// LaptopP12Password opens LaptopP12. It is public on purpose, like
	// the demo user's password: the file only ever holds a demo key.
	LaptopP12Password = "fleet-laptop"
)

// DeviceCert and DeviceKey are the paths of a device's certificate (with its
// intermediate, so the chain is sent) and key: the seed's example.pem and
// key.pem shapes.
func DeviceCert(name string) string { return filepath.Join("pki", "devices", name+".pem") }

// DeviceKey is the path of a device's private key.
func DeviceKey(name string) string { return filepath.Join("pki", "devices", name+"-key.pem") }

// Files returns the files, relative to the demo folder, that Prepare writes.
func Files() []string {
	files := []string{configs.DemoCAChain, RootCA, configs.DemoTokenKey, configs.DemoIdPSecret}
	for _, s := range servers {
		files = append(files, s.cert, s.key)
	}
	for _, d := range Devices {
		files = append(files, DeviceCert(d), DeviceKey(d))
	}
	return append(files, LaptopCert, LaptopKey, LaptopP12)
}

// servers are the demo's server certificates: one per domain.
var servers = []struct{ host, cert, key string }{
	{configs.DemoDevicesDomain, configs.DemoDevicesCert, configs.DemoDevicesKey},
	{configs.DemoAppDomain, configs.DemoAppCert, configs.DemoAppKey},
	{configs.DemoMQTTDomain, configs.DemoMQTTCert, configs.DemoMQTTKey},
	{configs.DemoConsoleDomain, configs.DemoConsoleCert, configs.DemoConsoleKey},
	{configs.DemoIdPDomain, IdPCert, IdPKey},
}

// Prepare makes sure dir holds the demo PKI: a root and an intermediate CA,
// server certificates for the demo domains and the demo identity provider,
// device certificates, the operator's laptop certificate (also as a .p12),
// a token signing key and a random client secret for the identity provider
// (mode 0600, in a folder of mode 0700). When every file is there it leaves
// the folder untouched; when any is missing (a folder made by an older
// fleetgate, before the console, or one partly deleted) it creates them all
// anew, since the intermediate's key is not kept. It reports whether it
// created them.
func Prepare(dir string) (created bool, err error) {
	complete := true
	for _, f := range Files() {
		if _, err := os.Stat(filepath.Join(dir, f)); errors.Is(err, fs.ErrNotExist) {
			complete = false
			break
		} else if err != nil {
			return false, fmt.Errorf("demo: %w", err)
		}
	}
	if complete {
		return false, nil
	}
	root, err := pki.NewRoot(pki.Root("fleetgate demo root CA"))
	if err != nil {
		return false, err
	}
	inter, err := root.Issue(pki.Intermediate("fleetgate demo intermediate CA"))
	if err != nil {
		return false, err
	}
	path := func(rel string) string { return filepath.Join(dir, rel) }
	if err := writeAll(path(configs.DemoCAChain), pki.ChainPEM(inter, root)); err != nil {
		return false, err
	}
	if err := writeAll(path(RootCA), root.CertPEM()); err != nil {
		return false, err
	}
	for _, s := range servers {
		c, err := inter.Issue(pki.Server(s.host))
		if err != nil {
			return false, err
		}
		if err := c.WriteFiles(path(s.cert), path(s.key), inter); err != nil {
			return false, err
		}
	}
	for _, name := range Devices {
		c, err := inter.Issue(pki.Device(name))
		if err != nil {
			return false, err
		}
		if err := c.WriteFiles(path(DeviceCert(name)), path(DeviceKey(name)), inter); err != nil {
			return false, err
		}
	}
	if err := writeLaptop(dir, inter, root); err != nil {
		return false, err
	}
	if err := writeSecret(path(configs.DemoIdPSecret)); err != nil {
		return false, err
	}
	tokenKey, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		return false, err
	}
	if err := pki.WriteKey(path(configs.DemoTokenKey), tokenKey); err != nil {
		return false, err
	}
	return true, nil
}

// writeLaptop issues the operator's laptop certificate (clientAuth, with
// the operator's e-mail as a SAN) and writes it as PEM files and as a
// PKCS#12 file with the intermediate and the root.
func writeLaptop(dir string, inter, root *pki.Cert) error {
	opts := pki.Device(Laptop)
	opts.EmailAddresses = []string{"ops@fleet.test"}
	c, err := inter.Issue(opts)
	if err != nil {
		return err
	}
	if err := c.WriteFiles(filepath.Join(dir, LaptopCert), filepath.Join(dir, LaptopKey), inter); err != nil {
		return err
	}
	p12, err := pkcs12.Modern2023.Encode(c.Key, c.Cert, []*x509.Certificate{inter.Cert, root.Cert}, LaptopP12Password)
	if err != nil {
		return fmt.Errorf("demo: %s: %w", LaptopP12, err)
	}
	return writePrivate(filepath.Join(dir, LaptopP12), p12)
}

// writeSecret writes a random client secret: 32 bytes, base64url.
func writeSecret(path string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("demo: client secret: %w", err)
	}
	return writePrivate(path, []byte(base64.RawURLEncoding.EncodeToString(b)+"\n"))
}

// writePrivate writes data readable by its owner only (0600, in a folder
// of 0700 when it creates it), also over an existing file of another mode:
// a temporary file (which os.CreateTemp makes 0600), then a rename.
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

func writeAll(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
