// Package demo prepares what `make run` needs: a demo PKI and token key in a
// folder (created on first start, reused after), a loopback echo origin, a
// loopback MQTT broker, and the curl and mosquitto commands that show the
// Access flow end to end.
package demo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
)

// Device certificate names the demo issues.
var Devices = []string{"sensor-0001", "sensor-0002"}

// Files the demo writes besides those the embedded configuration names.
const (
	RootCA = "pki/ca.pem" // the root alone: what curl --cacert takes
)

// DeviceCert and DeviceKey are the paths of a device's certificate (with its
// intermediate, so the chain is sent) and key: the seed's example.pem and
// key.pem shapes.
func DeviceCert(name string) string { return filepath.Join("pki", "devices", name+".pem") }

// DeviceKey is the path of a device's private key.
func DeviceKey(name string) string { return filepath.Join("pki", "devices", name+"-key.pem") }

// Files returns the files, relative to the demo folder, that Prepare writes.
func Files() []string {
	files := []string{configs.DemoCAChain, RootCA, configs.DemoTokenKey}
	for _, s := range servers {
		files = append(files, s.cert, s.key)
	}
	for _, d := range Devices {
		files = append(files, DeviceCert(d), DeviceKey(d))
	}
	return files
}

// servers are the demo's server certificates: one per domain.
var servers = []struct{ host, cert, key string }{
	{configs.DemoDevicesDomain, configs.DemoDevicesCert, configs.DemoDevicesKey},
	{configs.DemoAppDomain, configs.DemoAppCert, configs.DemoAppKey},
	{configs.DemoMQTTDomain, configs.DemoMQTTCert, configs.DemoMQTTKey},
}

// Prepare makes sure dir holds the demo PKI: a root and an intermediate CA,
// server certificates for the demo domains, device certificates and a token
// signing key. When every file is there it leaves the folder untouched;
// when any is missing (a folder made by an older fleetgate, before the mqtt
// domain, or one partly deleted) it creates them all anew, since the
// intermediate's key is not kept. It reports whether it created them.
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
	tokenKey, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		return false, err
	}
	if err := pki.WriteKey(path(configs.DemoTokenKey), tokenKey); err != nil {
		return false, err
	}
	return true, nil
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
