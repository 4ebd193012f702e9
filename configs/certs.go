package configs

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// expiryWarning is how long before a certificate's NotAfter loading starts
// to warn about it (Access alerts before an uploaded CA expires).
const expiryWarning = 30 * 24 * time.Hour

// maxFileBytes bounds every file the configuration refers to, so that a path
// to a device or a huge file cannot stall a load.
const maxFileBytes = 4 << 20

// allowedSignatures are the signature algorithms accepted on client-CA
// certificates: RSA (PKCS#1 v1.5 or PSS) or ECDSA with SHA-256/384/512, as
// Access requires.
var allowedSignatures = map[x509.SignatureAlgorithm]bool{
	x509.SHA256WithRSA: true, x509.SHA384WithRSA: true, x509.SHA512WithRSA: true,
	x509.SHA256WithRSAPSS: true, x509.SHA384WithRSAPSS: true, x509.SHA512WithRSAPSS: true,
	x509.ECDSAWithSHA256: true, x509.ECDSAWithSHA384: true, x509.ECDSAWithSHA512: true,
}

// readFile reads the file named at path (a key of the document), resolved
// against the configuration's folder, up to maxFileBytes. It reports and
// returns false on error.
func (l *loader) readFile(path, name string) ([]byte, bool) {
	return l.readFileMax(path, name, maxFileBytes)
}

// resolve returns name resolved against the configuration's folder.
func (l *loader) resolve(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(l.dir, name)
}

// readFileMax is readFile with another bound (a power of two of MiB).
func (l *loader) readFileMax(path, name string, limit int64) ([]byte, bool) {
	full := l.resolve(name)
	f, err := os.Open(full)
	if err != nil {
		l.errorf(path, "%v", err)
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		l.errorf(path, "%v", err)
		return nil, false
	}
	if int64(len(data)) > limit {
		l.errorf(path, "%s is larger than %d MiB", full, limit>>20)
		return nil, false
	}
	return data, true
}

// certName names the i-th certificate of an upload in messages.
func certName(i int, c *x509.Certificate) string {
	n := c.Subject.CommonName
	if n == "" {
		n = c.Subject.String()
	}
	return fmt.Sprintf("certificate %d (%q)", i+1, n)
}

// parseCAUpload checks the PEM of a [[client_cas]] entry and fills ca's
// certificates, expiry and fingerprint. path is the pem_file or pem key. It
// returns the upload's certificates in file order, and whether all of them
// are acceptable.
func (l *loader) parseCAUpload(path string, data []byte, ca *ClientCA) ([]*x509.Certificate, bool) {
	var certs []*x509.Certificate
	ok := true
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			l.errorf(path, "holds a %q PEM block: only CERTIFICATE blocks belong in a client CA", block.Type)
			ok = false
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			l.errorf(path, "certificate %d: %s", len(certs)+1, strings.TrimPrefix(err.Error(), "x509: "))
			ok = false
			certs = append(certs, nil)
			continue
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		if ok {
			l.errorf(path, "holds no PEM certificate")
		}
		return nil, false
	}
	for i, c := range certs {
		if c == nil {
			continue
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			l.errorf(path, "%s is not a CA certificate (Basic Constraints CA:TRUE is required)", certName(i, c))
			ok = false
		}
		if !allowedSignatures[c.SignatureAlgorithm] {
			l.errorf(path, "%s is signed with %v: only RSA or ECDSA with SHA-256, SHA-384 or SHA-512 are accepted", certName(i, c), c.SignatureAlgorithm)
			ok = false
		}
		if !l.checkExpiry(path, certName(i, c), c) {
			ok = false
		}
		if ca.ExpiresOn.IsZero() || c.NotAfter.Before(ca.ExpiresOn) {
			ca.ExpiresOn = c.NotAfter
		}
	}
	if !ok {
		return nil, false
	}
	for i, c := range certs {
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			ca.Roots = append(ca.Roots, c)
			continue
		}
		if !signedWithin(c, certs) {
			l.errorf(path, "%s is not signed by another certificate of this upload: upload the whole chain, intermediate then root", certName(i, c))
			ok = false
		}
		ca.Intermediates = append(ca.Intermediates, c)
	}
	if len(ca.Roots) == 0 {
		if ok {
			l.errorf(path, "holds no root (self-signed) CA certificate: upload the whole chain, intermediate then root")
		}
		return nil, false
	}
	sum := sha256.Sum256(ca.Roots[0].Raw)
	ca.Fingerprint = hex.EncodeToString(sum[:])
	return certs, ok
}

// caCert is one certificate of a client CA's upload, remembered for the
// checks that span all [[client_cas]] entries.
type caCert struct {
	cert  *x509.Certificate
	entry int    // index in client_cas
	name  string // the entry's name
	path  string // the entry's pem_file or pem key
	n     int    // position in the upload, from 0
}

// caSubjects maps a subject DN (RawSubject) to the client-CA certificates
// seen so far with that subject, one per distinct public key.
type caSubjects map[string][]caCert

// checkSubjects reports each certificate of the upload of client_cas[entry]
// (certs, from its pem_file or pem key at path) whose subject DN is that of
// an earlier client-CA certificate, of any entry or of the same upload, but
// whose public key differs, and records the upload in seen. Why refuse:
// revocation is keyed by issuer name (a CRL names its issuer by DN, and
// tlsengine looks serials up under the certificate's RawIssuer), so one CA's
// CRL would revoke the other's devices that have the same serial numbers.
// The same certificate listed twice, or a CA cross-signed under another root
// (same subject, same key), is fine.
func (l *loader) checkSubjects(seen caSubjects, entry int, name, path string, certs []*x509.Certificate) {
	for n, c := range certs {
		key := string(c.RawSubject)
		prev := seen[key]
		known := false
		var clash *caCert
		for i := range prev {
			if bytes.Equal(prev[i].cert.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) {
				known = true
			} else if clash == nil {
				clash = &prev[i]
			}
		}
		if clash != nil {
			l.errorf(path, "%s and %s share the subject %q but not the public key: CRLs and revocation are keyed by issuer name, "+
				"so one CA's CRL would revoke the other CA's devices that have the same serial numbers; give each CA a distinct subject name",
				certName(n, c), l.otherCA(clash, entry), c.Subject.String())
		}
		if !known {
			seen[key] = append(prev, caCert{cert: c, entry: entry, name: name, path: path, n: n})
		}
	}
}

// otherCA names the certificate o in a message about client_cas[entry].
func (l *loader) otherCA(o *caCert, entry int) string {
	what := certName(o.n, o.cert)
	if o.entry == entry {
		return what + " of this upload"
	}
	var where []string
	if o.name != "" {
		where = append(where, strconv.Quote(o.name))
	}
	if line := l.pos.line(o.path); line > 0 {
		where = append(where, "line "+strconv.Itoa(line))
	}
	what += " of " + indexPath("client_cas", o.entry)
	if len(where) > 0 {
		what += " (" + strings.Join(where, ", ") + ")"
	}
	return what
}

// signedWithin reports whether c is signed by another certificate of certs.
func signedWithin(c *x509.Certificate, certs []*x509.Certificate) bool {
	for _, p := range certs {
		if p != c && bytes.Equal(p.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(p) == nil {
			return true
		}
	}
	return false
}

// checkExpiry reports an expired certificate (error, false) or one that
// expires within expiryWarning (warning).
func (l *loader) checkExpiry(path, name string, c *x509.Certificate) bool {
	day := c.NotAfter.UTC().Format(time.DateOnly)
	switch left := c.NotAfter.Sub(l.now); {
	case left <= 0:
		l.errorf(path, "%s expired on %s", name, day)
		return false
	case left < expiryWarning:
		l.warnf(path, "%s expires on %s, in %d days", name, day, int(left.Hours()/24))
	}
	return true
}

// serverCertificate loads an application's tls_cert_file and tls_key_file
// and checks that they match, are in date and cover domain.
func (l *loader) serverCertificate(path string, fa *fileApplication, domain string) (tls.Certificate, bool) {
	certPath, keyPath := joinKey(path, "tls_cert_file"), joinKey(path, "tls_key_file")
	ok := true
	for _, req := range []struct{ path, value, what string }{
		{certPath, fa.TLSCertFile, "the gateway's certificate for this domain, as a PEM file"},
		{keyPath, fa.TLSKeyFile, "the private key of tls_cert_file, as a PEM file"},
	} {
		if req.value == "" {
			l.errorf(req.path, "required: %s", req.what)
			ok = false
		}
	}
	if !ok {
		return tls.Certificate{}, false
	}
	cert, ok := l.keyPair(certPath, keyPath, fa.TLSCertFile, fa.TLSKeyFile)
	if !ok {
		return tls.Certificate{}, false
	}
	name := fmt.Sprintf("server certificate %q", cert.Leaf.Subject.CommonName)
	if !l.checkExpiry(certPath, name, cert.Leaf) {
		return tls.Certificate{}, false
	}
	if domain != "" {
		host := domain
		if strings.HasPrefix(host, "*.") {
			host = "fleetgate-sample" + host[1:]
		}
		if cert.Leaf.VerifyHostname(host) != nil {
			l.warnf(certPath, "%s does not cover %q (DNS names: %s)", name, domain, strings.Join(cert.Leaf.DNSNames, ", "))
		}
	}
	return cert, true
}

// keyPair loads a certificate (leaf first, then its chain) and its private
// key from PEM files, and checks that they match.
func (l *loader) keyPair(certPath, keyPath, certFile, keyFile string) (tls.Certificate, bool) {
	certPEM, okCert := l.readFile(certPath, certFile)
	keyPEM, okKey := l.readFile(keyPath, keyFile)
	if !okCert || !okKey {
		return tls.Certificate{}, false
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		l.errorf(certPath, "%s does not start with a PEM CERTIFICATE block", certFile)
		return tls.Certificate{}, false
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		l.errorf(certPath, "%s: %s", certFile, strings.TrimPrefix(err.Error(), "x509: "))
		return tls.Certificate{}, false
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(msg, "does not match") {
			msg = fmt.Sprintf("%s does not match the certificate in %s", keyFile, certFile)
		}
		l.errorf(keyPath, "%s", msg)
		return tls.Certificate{}, false
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			l.errorf(certPath, "%s", strings.TrimPrefix(err.Error(), "x509: "))
			return tls.Certificate{}, false
		}
	}
	return cert, true
}

// originCertificate loads an application's origin_cert_file and
// origin_key_file: the certificate the gateway presents to an https or tls
// origin that asks for one (nginx's proxy_ssl_certificate, HAProxy's crt on
// a server line). It returns nil when neither key is written, and the
// SHA-256 of the chain, which tells a reload that the origin client changed.
func (l *loader) originCertificate(path string, fa *fileApplication, origin *url.URL) (*tls.Certificate, [32]byte) {
	var sum [32]byte
	if fa.OriginCertFile == "" && fa.OriginKeyFile == "" {
		return nil, sum
	}
	certPath, keyPath := joinKey(path, "origin_cert_file"), joinKey(path, "origin_key_file")
	switch {
	case fa.OriginKeyFile == "":
		l.errorf(certPath, "needs origin_key_file too: the private key of this certificate, as a PEM file")
		return nil, sum
	case fa.OriginCertFile == "":
		l.errorf(keyPath, "needs origin_cert_file too: the certificate of this key, which the gateway presents to the origin, as a PEM file")
		return nil, sum
	case !l.tlsOrigin(certPath, origin, "the gateway speaks no TLS to %s"):
		return nil, sum
	}
	cert, ok := l.keyPair(certPath, keyPath, fa.OriginCertFile, fa.OriginKeyFile)
	if !ok {
		return nil, sum
	}
	name := fmt.Sprintf("origin client certificate %q", cert.Leaf.Subject.CommonName)
	if !l.checkExpiry(certPath, name, cert.Leaf) {
		return nil, sum
	}
	if eku := cert.Leaf.ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, x509.ExtKeyUsageClientAuth) && !slices.Contains(eku, x509.ExtKeyUsageAny) {
		l.warnf(certPath, "%s is not for client authentication (no clientAuth extended key usage): an origin that verifies it will refuse it", name)
	}
	h := sha256.New()
	for _, der := range cert.Certificate {
		h.Write(der)
	}
	copy(sum[:], h.Sum(nil))
	return &cert, sum
}

// tlsOrigin reports whether origin (nil: already refused) is one the
// gateway speaks TLS to, https or tls://; otherwise it refuses path's key
// with why (a format of the origin), naming the scheme to use instead.
func (l *loader) tlsOrigin(path string, origin *url.URL, why string) bool {
	if origin == nil || origin.Scheme == "https" || origin.Scheme == "tls" {
		return true
	}
	want := "an https"
	if origin.Scheme == "tcp" {
		want = "a tls://"
	}
	l.errorf(path, "needs %s origin: "+why, want, origin)
	return false
}

// originServerName checks origin_server_name: a DNS name (or an IP
// address) for an https or tls origin.
func (l *loader) originServerName(path, name string, origin *url.URL) string {
	if !l.tlsOrigin(path, origin, "%s has no certificate to verify") {
		return ""
	}
	if ip := net.ParseIP(name); ip != nil {
		return ip.String()
	}
	h := strings.ToLower(name)
	if err := checkLabels(h, 1); err != nil {
		l.errorf(path, "%q is not a DNS name or an IP address: %v", name, err)
		return ""
	}
	return h
}

// originCAs reads an application's origin_ca_file: the PEM certificates
// that an https origin's certificate must chain to. It refuses a file
// without a certificate, a PEM block of another type, and an http origin
// (whose connections have no certificate to verify).
func (l *loader) originCAs(path, name string, origin *url.URL) (*x509.CertPool, [32]byte) {
	var sum [32]byte
	if !l.tlsOrigin(path, origin, "%s has no certificate to verify") {
		return nil, sum
	}
	data, ok := l.readFile(path, name)
	if !ok {
		return nil, sum
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			l.errorf(path, "%s holds a %q PEM block: only CERTIFICATE blocks belong in origin_ca_file", name, block.Type)
			return nil, sum
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			l.errorf(path, "%s: certificate %d: %v", name, n+1, err)
			return nil, sum
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		l.errorf(path, "%s holds no PEM certificate", name)
		return nil, sum
	}
	return pool, sha256.Sum256(data)
}
