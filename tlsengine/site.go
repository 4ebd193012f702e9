package tlsengine

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
)

// Site is one hostname's TLS settings: the server certificate(s) the gateway
// presents for it and the client-CA pool device chains must lead to. Sites are
// immutable once built; a reload builds new ones.
type Site struct {
	// Name is the lower-case FQDN, or a wildcard "*.fleet.test" that covers
	// exactly one extra label.
	Name string
	// Certificates are the gateway's server certificates for this name
	// (leaf first in each chain).
	Certificates []tls.Certificate
	// Roots are the client CAs associated with this hostname. Nil means no
	// client certificate is requested on this site.
	Roots *x509.CertPool
	// Intermediates are the intermediates uploaded with the roots.
	Intermediates *x509.CertPool
	// Generation identifies the contents of Roots and Intermediates; verdicts
	// cached under one generation are never used under another.
	Generation uint64
	// MaxIntermediates caps the intermediates a device may send; 0 means 4.
	MaxIntermediates int
	// SessionTickets enables TLS session resumption. Off by default: a resumed
	// session proves no key possession (DESIGN decision 4).
	SessionTickets bool
	// RejectInvalid refuses devices without a valid chain with a TLS alert
	// during the handshake instead of letting the gateway answer 403. It saves
	// CPU under attack at the cost of an opaque error.
	RejectInvalid bool
	// App is the gateway's own handle for this site (its application); the
	// engine never looks at it.
	App any
}

// Sites is an immutable SNI table. (Placeholder body: the exact-name lookup is
// replaced by the xxhash table with wildcards and a default site.)
type Sites struct {
	byName map[string]*Site
	def    *Site
}

// NewSites builds the table; defaultName, if not empty, names the site used
// for ClientHellos without SNI.
func NewSites(sites []*Site, defaultName string) (*Sites, error) {
	t := &Sites{byName: make(map[string]*Site, len(sites))}
	for _, s := range sites {
		n := strings.ToLower(s.Name)
		if _, dup := t.byName[n]; dup {
			return nil, fmt.Errorf("tlsengine: duplicate site %q", n)
		}
		t.byName[n] = s
	}
	if defaultName != "" {
		t.def = t.byName[strings.ToLower(defaultName)]
		if t.def == nil {
			return nil, fmt.Errorf("tlsengine: default site %q is not a site", defaultName)
		}
	}
	return t, nil
}

// Lookup returns the site for a ClientHello's server name ("" when the client
// sent no SNI), or false when no site serves it.
func (t *Sites) Lookup(serverName string) (*Site, bool) {
	if serverName == "" {
		return t.def, t.def != nil
	}
	s, ok := t.byName[strings.ToLower(serverName)]
	return s, ok
}
