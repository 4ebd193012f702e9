package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// maxJWKSBytes bounds what token verify reads from a JWKS URL or file.
const maxJWKSBytes = 1 << 20

func cmdToken(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "service" {
		return cmdTokenService(args[1:], time.Now(), stdout, stderr)
	}
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "Usage: fleetgate token verify --jwks URL|FILE [--aud TAG] [--iss URL] [--cacert FILE] TOKEN\n       fleetgate token service -name NAME [-duration 8760h]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("token verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jwks := fs.String("jwks", "", "the JWKS: an https:// or http:// `URL` (such as https://HOST/cdn-cgi/access/certs) or a file")
	aud := fs.String("aud", "", "require this application AUD `tag` in aud")
	iss := fs.String("iss", "", "require this issuer `URL` in iss")
	cacert := fs.String("cacert", "", "PEM `file` of CAs to trust when fetching an https JWKS")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetgate token verify --jwks URL|FILE [--aud TAG] [--iss URL] [--cacert FILE] TOKEN\n\nVerifies TOKEN's signature with the JWKS, its time window, and aud / iss when given; prints the claims, or why it fails (exit 1).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return parseExit(err)
	}
	if *jwks == "" || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	data, err := readJWKS(*jwks, *cacert)
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate token verify:", err)
		return 1
	}
	set, err := policy.ParseJWKS(data)
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate token verify:", err)
		return 1
	}
	claims, err := set.VerifyAny(strings.TrimSpace(fs.Arg(0)), *aud, *iss, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate token verify: invalid:", err)
		return 1
	}
	out, _ := json.MarshalIndent(claims, "", "  ")
	fmt.Fprintf(stdout, "valid\n%s\n", out)
	return 0
}

func readJWKS(src, cacert string) ([]byte, error) {
	if !strings.HasPrefix(src, "https://") && !strings.HasPrefix(src, "http://") {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readMax(src, f)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificate", cacert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: keepHTTPS}
	resp, err := client.Get(src)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
	}
	return readMax(src, resp.Body)
}

// keepHTTPS refuses a redirect from an https:// JWKS to a plain http://
// one: the keys that decide whether a token is valid would then come over a
// connection anyone on the path can change. http.Client's own limit of ten
// redirects stays.
func keepHTTPS(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refused a redirect from %s to %s: the JWKS must stay on https", via[0].URL.Redacted(), req.URL.Redacted())
	}
	return nil
}

// readMax reads a JWKS of at most maxJWKSBytes from r; a longer one is an
// error that says so (cut short, it would read as malformed JSON).
func readMax(src string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", src, maxJWKSBytes)
	}
	return data, nil
}
