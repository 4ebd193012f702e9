package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
)

// tcpSettings are a tcp application's relay settings, from its
// [[applications]] entry (configs has applied the defaults).
type tcpSettings struct {
	originAddr     string        // host:port dialed for every connection
	originTLS      *tls.Config   // a tls:// origin's client configuration; nil: plain TCP
	connectTimeout time.Duration // origin_connect_timeout
	proxyProtocol  string        // configs.ProxyProtocolNone, V1 or V2
	forwardCert    bool          // forward_client_cert: SSL_CLIENT_CERT in the v2 header
	idleTimeout    time.Duration // idle_timeout (always > 0)
	maxAge         time.Duration // max_connection_age (0: none)
	relayBuffer    int           // relay_buffer: most bytes held per direction
	// sigAlg and keyAlg describe the gateway's certificate for the
	// domain, as HAProxy names them in the PROXY v2 SSL sub-TLVs.
	sigAlg, keyAlg string
}

func newTCPSettings(ca *configs.Application) *tcpSettings {
	return &tcpSettings{
		originAddr:     ca.Origin.Host,
		originTLS:      originTLSConfig(ca),
		connectTimeout: ca.OriginConnectTimeout,
		proxyProtocol:  ca.ProxyProtocol,
		forwardCert:    ca.ForwardClientCert,
		idleTimeout:    ca.IdleTimeout,
		maxAge:         ca.MaxConnectionAge,
		relayBuffer:    int(ca.RelayBuffer),
		sigAlg:         sigAlgName(ca.Certificate.Leaf),
		keyAlg:         keyAlgName(ca.Certificate.Leaf),
	}
}

// originTLSConfig is the client configuration of a tls:// origin (nil for
// tcp://): the origin's certificate must chain to origin_ca_file (the
// system's roots without it) and name the origin's host (a DNS name or an
// IP address SAN), or origin_server_name, as an https origin's does; the
// gateway presents origin_cert_file when the origin asks for a certificate.
func originTLSConfig(ca *configs.Application) *tls.Config {
	if ca.Origin.Scheme != "tls" {
		return nil
	}
	name := ca.Origin.Hostname()
	if ca.OriginServerName != "" {
		name = ca.OriginServerName
	}
	conf := &tls.Config{
		ServerName: name,
		RootCAs:    ca.OriginCAs,
		MinVersion: tls.VersionTLS12,
		// crypto/tls files sessions by server name: an application has one
		// origin, so one entry, the latest session its origin gave. A
		// reconnecting fleet then resumes instead of making the origin prove
		// its certificate again for every device.
		ClientSessionCache: tls.NewLRUClientSessionCache(1),
	}
	if ca.OriginCertificate != nil {
		conf.Certificates = []tls.Certificate{*ca.OriginCertificate}
	}
	return conf
}

// sigAlgName names a certificate's signature algorithm as OpenSSL's short
// names do (what HAProxy sends in SSL_SIG_ALG); "" when unknown.
func sigAlgName(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	switch c.SignatureAlgorithm {
	case x509.ECDSAWithSHA256:
		return "ecdsa-with-SHA256"
	case x509.ECDSAWithSHA384:
		return "ecdsa-with-SHA384"
	case x509.ECDSAWithSHA512:
		return "ecdsa-with-SHA512"
	case x509.SHA256WithRSA:
		return "RSA-SHA256"
	case x509.SHA384WithRSA:
		return "RSA-SHA384"
	case x509.SHA512WithRSA:
		return "RSA-SHA512"
	case x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return "RSASSA-PSS"
	case x509.PureEd25519:
		return "ED25519"
	}
	return ""
}

// keyAlgName names a certificate's key as HAProxy does in SSL_KEY_ALG:
// the algorithm and its size in bits, "EC256", "RSA2048", "ED25519".
func keyAlgName(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "EC" + strconv.Itoa(k.Curve.Params().BitSize)
	case *rsa.PublicKey:
		return "RSA" + strconv.Itoa(k.N.BitLen())
	case ed25519.PublicKey:
		return "ED25519"
	}
	return ""
}

// tcpTokenLife is how long the token handed to a tcp origin in the PROXY
// header is valid: it proves who connected, at connect time, not for the
// connection's whole life.
const tcpTokenLife = 5 * time.Minute

// tcpAdmission is what a tcp application's handshake hook decided, kept with
// the connection (tlsengine.Conn.Authorization) for the relay: the decision
// (whether to mint a token) and the input it was made on.
type tcpAdmission struct {
	decision policy.Decision
	input    policy.Input
}

// authorize is a tcp application's tlsengine.Site.Authorize: it evaluates
// the application's policies on the chain's verdict and the device's
// address, inside the handshake. A refusal is logged and counted with the
// reason an HTTP application's 403 would carry; the error makes crypto/tls
// send bad_certificate, and the origin is never dialed. The line names the
// certificate as presented only: the device's proof of its key comes later
// in the handshake, which the refusal ends.
func (a *application) authorize(v *verdict.Verdict, remote netip.Addr) (any, error) {
	now := time.Now
	if srv := a.snap.srv; srv != nil {
		now = srv.now
	}
	adm := &tcpAdmission{input: policy.Input{Cert: v, ClientIP: remote, Now: now()}}
	if srv := a.snap.srv; srv != nil {
		adm.input.Lists = srv.snap.Load().lists // the newest, as revocation
	} else {
		adm.input.Lists = a.snap.lists
	}
	adm.decision = a.policy.Evaluate(&adm.input)
	if adm.decision.Allowed {
		return adm, nil
	}
	if srv := a.snap.srv; srv != nil {
		srv.metrics.tcpRefused(a.name, adm.decision.Reason)
		attrs := []slog.Attr{
			slog.String("app", a.name),
			slog.String("client", remote.String()),
			slog.String("verdict", v.Kind.String()),
			slog.String("reason", adm.decision.Reason),
			slog.String("policy", adm.decision.Policy),
			slog.String("rule", adm.decision.Rule),
		}
		if v.Presented() {
			// Refused in VerifyConnection, before crypto/tls checks the
			// device's CertificateVerify: the certificate was presented, not
			// proven to be the device's (anyone may hold a copy of it).
			attrs = append(attrs, slog.String("cert_cn_presented", logClip(v.Identity.CommonName)),
				slog.String("cert_sha256_presented", v.Identity.SHA256))
		}
		srv.accessLg.LogAttrs(context.Background(), slog.LevelInfo, "tcp connection refused", attrs...)
	}
	return nil, errors.New("gateway: " + adm.decision.Reason)
}

// admitsWithoutCertificate reports whether some policy of a could admit a
// device that presents no certificate: a bypass or allow-type policy whose
// include list has a selector that needs no certificate and whose require
// list has none that needs one. (Exclusions can only refuse more.) A tcp
// application for which this is false makes crypto/tls require a
// certificate, so a device without one is refused by the TLS layer itself.
func admitsWithoutCertificate(a *policy.Application) bool {
	for i := range a.Policies {
		p := &a.Policies[i]
		if p.Action == policy.Deny {
			continue
		}
		include := len(p.Include) == 0
		for _, sel := range p.Include {
			if !sel.NeedsCertificate() {
				include = true
				break
			}
		}
		require := true
		for _, sel := range p.Require {
			if sel.NeedsCertificate() {
				require = false
				break
			}
		}
		if include && require {
			return true
		}
	}
	return false
}
