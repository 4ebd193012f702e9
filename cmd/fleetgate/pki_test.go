package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/pki"
)

// runPKI runs `fleetgate pki` into dir/out.
func runPKI(t testing.TB, dir, out string, cns string) {
	t.Helper()
	code, stdout, stderr := runInProcess(t, "pki", "-out", filepath.Join(dir, out), "-hosts", "devices.fleet.test,app.fleet.test", "-cn", cns)
	if code != 0 {
		t.Fatalf("pki: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestPKI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "pki")
	runPKI(t, dir, "pki", "sensor-0001,sensor-0002")
	files := []string{"ca.pem", "ca-key.pem", "intermediate.pem", "intermediate-key.pem", "ca-chain.pem",
		"server.pem", "server-key.pem", "example.pem", "key.pem", "token.pem",
		"devices/sensor-0001.pem", "devices/sensor-0001-key.pem", "devices/sensor-0002.pem", "devices/sensor-0002-key.pem"}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(out, f))
		if err != nil {
			t.Fatalf("missing %s: %v", f, err)
		}
		if strings.HasSuffix(f, "key.pem") || f == "token.pem" {
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is readable by others (%v)", f, fi.Mode())
			}
		}
	}
	// example.pem / key.pem: sensor-0001, a client certificate that chains to ca.pem.
	pair, err := tls.LoadX509KeyPair(filepath.Join(out, "example.pem"), filepath.Join(out, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if leaf.Subject.CommonName != "sensor-0001" || len(pair.Certificate) != 2 {
		t.Fatalf("example.pem: CN %q, chain of %d", leaf.Subject.CommonName, len(pair.Certificate))
	}
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(out, "ca.pem"))
	roots.AppendCertsFromPEM(caPEM)
	inter, _ := x509.ParseCertificate(pair.Certificate[1])
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("example.pem does not verify for client auth against ca.pem: %v", err)
	}

	// The result loads in a configuration, and check says so.
	cfgPath := filepath.Join(dir, "fleetgate.toml")
	writeServeConfig(t, cfgPath, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	if _, err := configs.Load(cfgPath); err != nil {
		t.Fatalf("a configuration of the pki output does not load: %v", err)
	}

	// A second run refuses to overwrite, unless -force.
	if code, _, stderr := runInProcess(t, "pki", "-out", out); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("second pki: exit %d, %q", code, stderr)
	}
	// Not even when ca.pem is gone: a kept token.pem is not replaced.
	if err := os.Remove(filepath.Join(out, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runInProcess(t, "pki", "-out", out); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("pki over a folder without ca.pem: exit %d, %q", code, stderr)
	}
	// -force rewrites, and a key made world-readable meanwhile comes back 0600.
	if err := os.Chmod(filepath.Join(out, "token.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Files replaced by symbolic links meanwhile are replaced, not written
	// through: -force never writes outside -out.
	outside := filepath.Join(dir, "outside.txt")
	if err := os.WriteFile(outside, []byte("not fleetgate's"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := []string{"ca-chain.pem", "ca.pem", "server-key.pem"}
	for _, f := range links {
		if err := os.Remove(filepath.Join(out, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(out, f)); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, stderr := runInProcess(t, "pki", "-out", out, "-force", "-key", "ed25519"); code != 0 {
		t.Fatalf("pki -force: exit %d, %q", code, stderr)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "not fleetgate's" {
		t.Errorf("pki -force wrote through a symbolic link: %q, %v", b, err)
	}
	for _, f := range links {
		if fi, err := os.Lstat(filepath.Join(out, f)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s after -force: %v, %v; want a regular file", f, fi.Mode(), err)
		}
	}
	for _, f := range []string{"token.pem", "ca-key.pem", "devices/sensor-0001-key.pem"} {
		fi, err := os.Stat(filepath.Join(out, f))
		if err != nil {
			t.Errorf("%s after -force: %v", f, err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s after -force: %v, want mode 0600", f, fi.Mode())
		}
	}
	bad := []struct {
		name string
		args []string
	}{
		{"unknown key type", []string{"-key", "dsa"}},
		{"device name with a slash", []string{"-cn", "../evil"}},
		{"no days", []string{"-days", "0"}},
		{"days past a time.Duration", []string{"-days", "200000"}},
		{"server name with a scheme", []string{"-hosts", "https://devices.fleet.test"}},
		{"server name with a port", []string{"-hosts", "devices.fleet.test,app.fleet.test:8443"}},
		{"server name with a space", []string{"-hosts", "devices fleet.test"}},
		{"server name with an empty label", []string{"-hosts", "devices..fleet.test"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			other := filepath.Join(t.TempDir(), "other")
			if code, _, _ := runInProcess(t, append([]string{"pki", "-out", other}, tc.args...)...); code != 2 {
				t.Fatalf("exit %d, want 2", code)
			}
			if _, err := os.Stat(other); err == nil {
				t.Fatalf("a refused pki wrote %s", other)
			}
		})
	}
}

// TestPKILeavesWithinTheirCAs: with a -days longer than the CAs' default
// lifetimes (an intermediate of five years), the device and server
// certificates still verify until their own last day: the CAs are made to
// outlive them, not the reverse.
func TestPKILeavesWithinTheirCAs(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "pki")
	if code, _, stderr := runInProcess(t, "pki", "-out", out, "-days", "3650"); code != 0 {
		t.Fatalf("pki -days 3650: exit %d, %q", code, stderr)
	}
	read := func(name string) []*x509.Certificate {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pki.ParseCertsPEM(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return certs
	}
	root, inter := read("ca.pem")[0], read("intermediate.pem")[0]
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inters.AddCert(inter)
	for _, tc := range []struct {
		file  string
		usage x509.ExtKeyUsage
	}{
		{"server.pem", x509.ExtKeyUsageServerAuth},
		{"example.pem", x509.ExtKeyUsageClientAuth},
	} {
		leaf := read(tc.file)[0]
		if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 3650*24*time.Hour {
			t.Fatalf("%s is valid for %v, want 3650 days", tc.file, d)
		}
		lastDay := leaf.NotAfter.Add(-24 * time.Hour)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: lastDay, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s (until %s) no longer verifies on its last day: %v (intermediate until %s, root until %s)",
				tc.file, leaf.NotAfter.Format(time.DateOnly), err, inter.NotAfter.Format(time.DateOnly), root.NotAfter.Format(time.DateOnly))
		}
	}
}

// TestPKIEveryKeyTypeLoads: whatever -key says, the folder `fleetgate pki`
// writes makes a configuration that check accepts: ca-chain.pem is the
// client_cas upload, whose CA certificates must be signed with RSA or ECDSA.
func TestPKIEveryKeyTypeLoads(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"p256", "p384", "rsa", "ed25519"} {
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if code, _, stderr := runInProcess(t, "pki", "-out", filepath.Join(dir, "pki"), "-hosts", "devices.fleet.test,app.fleet.test", "-key", key); code != 0 {
				t.Fatalf("pki -key %s: exit %d, %q", key, code, stderr)
			}
			cfg := filepath.Join(dir, "fleetgate.toml")
			writeServeConfig(t, cfg, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
			if code, stdout, stderr := runInProcess(t, "check", "-c", cfg); code != 0 {
				t.Fatalf("check of a pki -key %s folder: exit %d\n%s%s", key, code, stdout, stderr)
			}
			leaf, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", "example.pem"), filepath.Join(dir, "pki", "key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprintf("%T", leaf.PrivateKey), map[string]string{"p256": "*ecdsa.PrivateKey", "p384": "*ecdsa.PrivateKey", "rsa": "*rsa.PrivateKey", "ed25519": "ed25519.PrivateKey"}[key]; got != want {
				t.Errorf("pki -key %s: device key %s, want %s", key, got, want)
			}
		})
	}
}
