package browsertest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// nssDB is the NSS certificate database chromium reads on Linux:
// $HOME/.pki/nssdb, in the SQL format.
type nssDB struct {
	dir string // the folder; certutil and pk12util take "sql:" + dir
}

// newNSSDB creates an empty database without a password under home.
func newNSSDB(home string) (*nssDB, error) {
	dir := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("browsertest: NSS database: %w", err)
	}
	db := &nssDB{dir: dir}
	if err := db.run("certutil", "-N", "-d", "sql:"+dir, "--empty-password"); err != nil {
		return nil, err
	}
	return db, nil
}

// run runs one of the NSS tools on the database; its output goes into the
// error, as the tools say what went wrong only there.
func (db *nssDB) run(tool string, args ...string) error {
	path, err := exec.LookPath(tool)
	if err != nil {
		return fmt.Errorf("browsertest: %s not found (install the Debian package libnss3-tools): %w", tool, err)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("browsertest: %s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// trustCA imports every certificate in pemData as a certificate authority
// trusted to identify servers (trust flags "C,,"), so that chromium accepts
// a server certificate it issued without any bypass of certificate errors.
func (db *nssDB) trustCA(pemData []byte, name string) error {
	certs, err := parseCertsPEM(pemData)
	if err != nil {
		return err
	}
	for i, c := range certs {
		f, err := os.CreateTemp(db.dir, "ca-*.pem")
		if err != nil {
			return fmt.Errorf("browsertest: %w", err)
		}
		_, err = f.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("browsertest: %w", err)
		}
		nick := fmt.Sprintf("%s %d (%s)", name, i, c.Subject.CommonName)
		err = db.run("certutil", "-A", "-d", "sql:"+db.dir, "-n", nick, "-t", "C,,", "-i", f.Name())
		os.Remove(f.Name())
		if err != nil {
			return err
		}
	}
	return nil
}

// importClient imports the client certificate chain and its private key as
// PKCS#12 with pk12util. The PKCS#12 file is made by `openssl pkcs12
// -export` from PEM files: the standard library has no PKCS#12 encoder. Its
// one-use password never leaves the temporary folder.
func (db *nssDB) importClient(cert tls.Certificate, nick string) error {
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return errors.New("browsertest: client certificate: no certificate or no private key")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("browsertest: client certificate key: %w", err)
	}
	work, err := os.MkdirTemp(db.dir, "p12-")
	if err != nil {
		return fmt.Errorf("browsertest: %w", err)
	}
	defer os.RemoveAll(work)
	var leaf, chain []byte
	for i, der := range cert.Certificate {
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if i == 0 {
			leaf = b
		} else {
			chain = append(chain, b...)
		}
	}
	files := map[string][]byte{
		"cert.pem": leaf,
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	args := []string{"pkcs12", "-export", "-in", filepath.Join(work, "cert.pem"), "-inkey", filepath.Join(work, "key.pem"),
		"-name", nick, "-out", filepath.Join(work, "client.p12"), "-passout", "file:" + filepath.Join(work, "pass")}
	if len(chain) > 0 {
		files["chain.pem"] = chain
		args = append(args, "-certfile", filepath.Join(work, "chain.pem"))
	}
	pass := make([]byte, 16)
	if _, err := rand.Read(pass); err != nil {
		return fmt.Errorf("browsertest: %w", err)
	}
	files["pass"] = []byte(hex.EncodeToString(pass))
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(work, name), data, 0o600); err != nil {
			return fmt.Errorf("browsertest: %w", err)
		}
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return fmt.Errorf("browsertest: openssl not found (install the Debian package openssl): %w", err)
	}
	if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("browsertest: openssl pkcs12 -export: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return db.run("pk12util", "-i", filepath.Join(work, "client.p12"), "-d", "sql:"+db.dir,
		"-w", filepath.Join(work, "pass"), "-K", "")
}

// parseCertsPEM returns the certificates of the CERTIFICATE blocks in data,
// refusing data that holds none.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("browsertest: trusted CA: %w", err)
	}
	return certs, nil
}
