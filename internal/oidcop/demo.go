package oidcop

import (
	"crypto/tls"
	"fmt"
	"net/url"
)

// The demo identity provider's one client and one user. The password is
// public on purpose: the demo provider only runs on the operator's own
// machine, for `make run`.
const (
	DemoClientID = "fleetgate"
	DemoSubject  = "ops"
	DemoEmail    = "ops@fleet.test"
	DemoName     = "Fleet Operator"
	DemoPassword = "fleet-demo"
	DemoGroup    = "ops"
)

// DemoOptions returns the Options of the demo provider: client DemoClientID
// with clientSecret and redirectURI, whose post-logout redirect is the root
// of redirectURI's origin (scheme://host/), and the user DemoEmail (subject
// DemoSubject, password DemoPassword, e-mail verified, groups [DemoGroup]).
// PKCE is required. cert is the server certificate for an https issuer, nil
// for an http one. The caller may adjust the result before New.
func DemoOptions(issuer, clientSecret, redirectURI string, cert *tls.Certificate) (Options, error) {
	u, err := url.Parse(redirectURI)
	if err != nil || u.Host == "" {
		return Options{}, fmt.Errorf("oidcop: demo redirect URI %q: not an absolute URL", redirectURI)
	}
	return Options{
		Issuer:         issuer,
		TLSCertificate: cert,
		RequirePKCE:    true,
		Clients: []Client{{
			ID:                     DemoClientID,
			Secret:                 clientSecret,
			RedirectURIs:           []string{redirectURI},
			PostLogoutRedirectURIs: []string{u.Scheme + "://" + u.Host + "/"},
		}},
		Users: []User{{
			Subject:       DemoSubject,
			Email:         DemoEmail,
			EmailVerified: true,
			Name:          DemoName,
			Groups:        []string{DemoGroup},
			Password:      DemoPassword,
		}},
	}, nil
}

// NewDemo returns the demo provider, ready to Start:
//
//	p, err := oidcop.NewDemo("https://idp.fleet.test:8443", secret,
//		"https://console.fleet.test:8443/cdn-cgi/access/callback", &idpCert)
//	ln, _ := net.Listen("tcp", "127.0.0.1:8443")
//	p.Start(ln)
//
// Log in as ops@fleet.test with password "fleet-demo".
func NewDemo(issuer, clientSecret, redirectURI string, cert *tls.Certificate) (*Provider, error) {
	opts, err := DemoOptions(issuer, clientSecret, redirectURI, cert)
	if err != nil {
		return nil, err
	}
	return New(opts)
}
