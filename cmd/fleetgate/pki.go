package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// maxPKIDays bounds -days: a hundred years is more than any test fleet
// needs, and far below where days as a time.Duration would overflow (and
// the certificates come out already expired).
const maxPKIDays = 36500

func cmdPKI(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("pki", flag.ContinueOnError)
	fset.SetOutput(stderr)
	out := fset.String("out", "pki", "output `folder`")
	hosts := fset.String("hosts", "devices.fleet.test", "comma-separated `names` the server certificate covers")
	cns := fset.String("cn", "sensor-0001", "comma-separated device common `names`; the first is example.pem / key.pem")
	keyType := fset.String("key", "p256", "key `type` of the certificates: p256, p384, rsa, ed25519 (ed25519: the server and device certificates; the CAs are P-256)")
	days := fset.Int("days", 365, "validity of server and device certificates, in `days`")
	force := fset.Bool("force", false, "overwrite existing files")
	fset.Usage = func() {
		fmt.Fprintf(stderr, `Usage: fleetgate pki [flags]

Makes, in the output folder:
  ca.pem, ca-key.pem                       the root CA
  intermediate.pem, intermediate-key.pem   an intermediate CA signed by the root
  ca-chain.pem                             intermediate then root: the client_cas upload
  server.pem, server-key.pem               the gateway's certificate for -hosts (with the intermediate)
  example.pem, key.pem                     the first device certificate (with the intermediate)
  devices/<cn>.pem, devices/<cn>-key.pem   every device certificate
  token.pem                                a token signing key (P-256, PKCS#8)

`)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return parseExit(err)
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetgate pki: unexpected argument %q (device names go in one -cn, separated by commas)\n", fset.Arg(0))
		return 2
	}
	kt, ok := map[string]pki.KeyType{"p256": pki.ECDSAP256, "p384": pki.ECDSAP384, "rsa": pki.RSA2048, "ed25519": pki.Ed25519}[*keyType]
	if !ok {
		fmt.Fprintf(stderr, "fleetgate pki: unknown key type %q\n", *keyType)
		return 2
	}
	names := splitList(*cns)
	serverHosts := splitList(*hosts)
	if len(names) == 0 || len(serverHosts) == 0 || *days <= 0 || *days > maxPKIDays {
		fmt.Fprintf(stderr, "fleetgate pki: -cn and -hosts need at least one name, -days must be from 1 to %d\n", maxPKIDays)
		return 2
	}
	for _, cn := range names {
		if strings.Trim(cn, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" || strings.HasPrefix(cn, ".") {
			fmt.Fprintf(stderr, "fleetgate pki: device name %q: use letters, digits, '.', '_' and '-' (it names a file)\n", cn)
			return 2
		}
	}
	for _, h := range serverHosts {
		if err := checkHost(h); err != nil {
			fmt.Fprintf(stderr, "fleetgate pki: -hosts: %v\n", err)
			return 2
		}
	}
	if !*force {
		// Any file this would write: a token.pem or a server key kept in
		// the folder must not be replaced behind the operator's back.
		for _, f := range pkiFiles(*out, names) {
			if _, err := os.Lstat(f); err == nil {
				fmt.Fprintf(stderr, "fleetgate pki: %s already exists (use -force to overwrite)\n", f)
				return 1
			} else if !errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintln(stderr, "fleetgate pki:", err)
				return 1
			}
		}
	}
	if err := makePKI(*out, serverHosts, names, kt, time.Duration(*days)*24*time.Hour); err != nil {
		fmt.Fprintln(stderr, "fleetgate pki:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote a root CA, an intermediate, a server certificate for %s and %d device certificates to %s\n",
		strings.Join(serverHosts, ", "), len(names), *out)
	return 0
}

// pkiFiles lists every file makePKI writes into out.
func pkiFiles(out string, cns []string) []string {
	files := []string{"ca.pem", "ca-key.pem", "intermediate.pem", "intermediate-key.pem", "ca-chain.pem",
		"server.pem", "server-key.pem", "example.pem", "key.pem", "token.pem"}
	for _, cn := range cns {
		files = append(files, filepath.Join("devices", cn+".pem"), filepath.Join("devices", cn+"-key.pem"))
	}
	for i, f := range files {
		files[i] = filepath.Join(out, f)
	}
	return files
}

func makePKI(out string, hosts, cns []string, kt pki.KeyType, validity time.Duration) error {
	p := func(name string) string { return filepath.Join(out, name) }
	// Each PKI's CAs get names of their own: fleetgate refuses two client
	// CAs with one subject but different keys (CRLs are keyed by issuer
	// name), so a second `fleetgate pki` (a CA rotation) must not clash.
	var id [4]byte
	_, _ = rand.Read(id[:])
	suffix := " " + hex.EncodeToString(id[:])
	// The CAs outlive every certificate they issue: a chain stops verifying
	// when its intermediate expires, whatever the leaf says.
	now := time.Now()
	leafNotAfter := now.Add(validity)
	interOpts := pki.Intermediate("fleetgate intermediate CA" + suffix)
	interOpts.KeyType = caKeyType(kt)
	interOpts.NotAfter = latest(interOpts.NotAfter, leafNotAfter)
	rootOpts := pki.Root("fleetgate root CA" + suffix)
	rootOpts.KeyType = caKeyType(kt)
	rootOpts.NotAfter = latest(rootOpts.NotAfter, interOpts.NotAfter)
	root, err := pki.NewRoot(rootOpts)
	if err != nil {
		return err
	}
	inter, err := root.Issue(interOpts)
	if err != nil {
		return err
	}
	if err := root.WriteFiles(p("ca.pem"), p("ca-key.pem")); err != nil {
		return err
	}
	if err := inter.WriteFiles(p("intermediate.pem"), p("intermediate-key.pem")); err != nil {
		return err
	}
	// The intermediate and the root, written as every other file: a new
	// file renamed into place, never through a link left at that name.
	if err := inter.WriteFiles(p("ca-chain.pem"), "", root); err != nil {
		return err
	}
	srvOpts := pki.Server(hosts...)
	srvOpts.KeyType, srvOpts.NotBefore, srvOpts.NotAfter = kt, now.Add(-time.Hour), leafNotAfter
	srv, err := inter.Issue(srvOpts)
	if err != nil {
		return err
	}
	if err := srv.WriteFiles(p("server.pem"), p("server-key.pem"), inter); err != nil {
		return err
	}
	for i, cn := range cns {
		o := pki.Device(cn)
		o.KeyType, o.NotBefore, o.NotAfter = kt, now.Add(-time.Hour), leafNotAfter
		dev, err := inter.Issue(o)
		if err != nil {
			return err
		}
		if err := dev.WriteFiles(p(filepath.Join("devices", cn+".pem")), p(filepath.Join("devices", cn+"-key.pem")), inter); err != nil {
			return err
		}
		if i == 0 {
			if err := dev.WriteFiles(p("example.pem"), p("key.pem"), inter); err != nil {
				return err
			}
		}
	}
	tokenKey, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		return err
	}
	return pki.WriteKey(p("token.pem"), tokenKey)
}

// caKeyType is the key type of the CAs for leaves of type kt: the same,
// except that Ed25519 leaves get P-256 CAs, because a client CA must be
// signed with RSA or ECDSA (configs refuses an Ed25519-signed upload).
func caKeyType(kt pki.KeyType) pki.KeyType {
	if kt == pki.Ed25519 {
		return pki.ECDSAP256
	}
	return kt
}

// checkHost accepts what a server certificate can name and a client can
// match: an IP address, or a DNS name of at most 253 bytes whose labels hold
// 1 to 63 letters, digits, '-' or '_', "*." first for a wildcard.
func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	ok := len(name) <= 253
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%q is neither a DNS name nor an IP address (write the bare name, without scheme, port or path)", h)
	}
	return nil
}

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
