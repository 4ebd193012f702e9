// Package crltest makes certificate revocation lists the way fleet CAs
// publish them, for tests: with the real `openssl ca` command line (OpenSSL),
// and version 1 lists made in Go (V1), which crypto/x509 cannot write. It
// serves tests only; it is never used on the serving path.
//
// An OpenSSL CA of Version1 has no crl_extensions and no crlnumber, and
// revokes without -crl_reason: `openssl ca -gencrl` then writes a version 1
// CRL. One of Version2 has crl_extensions (authorityKeyIdentifier, and a
// crlnumber file) and revokes with -crl_reason keyCompromise: a version 2
// CRL.
//
//	ca := crltest.OpenSSL(t, t.TempDir(), "pki/intermediate.pem", "pki/intermediate-key.pem", crltest.Version1)
//	ca.Revoke("pki/devices/sensor-0001.pem")
//	pem := ca.GenCRL()                 // PEM "X509 CRL"
//	ca.Version(pem)                    // "Version 1 (0x0)", as `openssl crl -text` says
package crltest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Version selects the CRL version the CA's configuration makes openssl write.
type Version int

// CRL versions, numbered as `openssl crl -text` prints them.
const (
	Version1 Version = 1
	Version2 Version = 2
)

// CA is an `openssl ca` directory: openssl.cnf, index.txt and, for Version2,
// crlnumber.
type CA struct {
	t       testing.TB
	bin     string
	dir     string
	version Version
}

// OpenSSL writes a minimal openssl.cnf for the CA certificate and PEM private key
// at certPath and keyPath into dir (a fresh directory) and returns the CA. It
// skips the test when the openssl binary is not in PATH, and fails it on any
// other error.
func OpenSSL(t testing.TB, dir, certPath, keyPath string, v Version) *CA {
	t.Helper()
	bin := Binary(t)
	var err error
	if certPath, err = filepath.Abs(certPath); err == nil {
		keyPath, err = filepath.Abs(keyPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	// $dir-free: paths are absolute, so openssl may run from any directory.
	cnf := fmt.Sprintf(`[ ca ]
default_ca = fleet

[ fleet ]
database = %[1]s/index.txt
certificate = %[2]s
private_key = %[3]s
default_md = sha256
default_crl_days = 30
`, dir, certPath, keyPath)
	switch v {
	case Version1:
	case Version2:
		cnf += fmt.Sprintf("crlnumber = %s/crlnumber\ncrl_extensions = crl_ext\n\n[ crl_ext ]\nauthorityKeyIdentifier = keyid:always\n", dir)
		if err := os.WriteFile(filepath.Join(dir, "crlnumber"), []byte("1000\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("crltest: version %d: want 1 or 2", v)
	}
	if err := os.WriteFile(filepath.Join(dir, "openssl.cnf"), []byte(cnf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.txt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return &CA{t: t, bin: bin, dir: dir, version: v}
}

// Binary returns the path of the openssl binary, skipping the test when it
// is not installed.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skipf("openssl binary not found in PATH (%v): this test checks CRLs made by the real `openssl ca`; install openssl to run it", err)
	}
	return bin
}

// run runs openssl with args in the CA's directory and returns its stdout.
func (ca *CA) run(args ...string) []byte {
	ca.t.Helper()
	cmd := exec.Command(ca.bin, args...)
	cmd.Dir = ca.dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		ca.t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes()
}

// Revoke records the certificate in the PEM file certPath as revoked: with
// -crl_reason keyCompromise for a Version2 CA, without a reason for a
// Version1 CA (a reason would make openssl write a version 2 CRL).
func (ca *CA) Revoke(certPath string) {
	ca.t.Helper()
	certPath, err := filepath.Abs(certPath)
	if err != nil {
		ca.t.Fatal(err)
	}
	args := []string{"ca", "-config", "openssl.cnf", "-batch", "-revoke", certPath}
	if ca.version == Version2 {
		args = append(args, "-crl_reason", "keyCompromise")
	}
	ca.run(args...)
}

// GenCRL runs `openssl ca -gencrl` and returns the CRL as PEM, listing every
// certificate revoked so far.
func (ca *CA) GenCRL() []byte {
	ca.t.Helper()
	out := filepath.Join(ca.dir, "crl.pem")
	ca.run("ca", "-config", "openssl.cnf", "-batch", "-gencrl", "-out", out)
	b, err := os.ReadFile(out)
	if err != nil {
		ca.t.Fatal(err)
	}
	return b
}

// versionLine matches the version line of `openssl crl -text`.
var versionLine = regexp.MustCompile(`Version \d+ \(0x[0-9a-f]+\)`)

// Version returns what `openssl crl -text -noout` says of the PEM CRL's
// version, such as "Version 1 (0x0)".
func (ca *CA) Version(crlPEM []byte) string {
	ca.t.Helper()
	f, err := os.CreateTemp(ca.dir, "check-*.crl")
	if err != nil {
		ca.t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(crlPEM); err != nil {
		ca.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		ca.t.Fatal(err)
	}
	text := ca.run("crl", "-in", f.Name(), "-text", "-noout")
	v := versionLine.Find(text)
	if v == nil {
		ca.t.Fatalf("openssl crl -text printed no version line:\n%s", text)
	}
	return string(v)
}

// Want is what Version returns for a CRL of version v.
func (v Version) Want() string {
	return fmt.Sprintf("Version %d (0x%x)", int(v), int(v)-1)
}

// String names the version for subtest names: "v1", "v2".
func (v Version) String() string {
	return fmt.Sprintf("v%d", int(v))
}
