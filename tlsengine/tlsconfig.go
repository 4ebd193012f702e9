package tlsengine

import (
	"crypto/rand"
	"crypto/tls"
)

// tls12Suites are the TLS 1.2 cipher suites offered: ECDHE key exchange
// (forward secrecy) and AEAD ciphers only. TLS 1.3 suites are not
// configurable in crypto/tls and are all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// table is one Sites snapshot with its tls.Configs, built once when the
// table is installed and shared by every connection: building them per
// connection would cost an allocation-heavy Clone per handshake. A
// connection keeps the table it was opened with, so a reload never changes a
// handshake midway.
type table struct {
	sites *Sites
	base  *tls.Config
	confs map[*Site]*tls.Config // read-only after newTable
}

func newTable(sites *Sites) *table {
	t := &table{sites: sites, confs: make(map[*Site]*tls.Config, len(sites.All()))}
	for _, s := range sites.All() {
		t.confs[s] = buildSiteConfig(s)
	}
	t.base = &tls.Config{
		MinVersion:             tls.VersionTLS12,
		MaxVersion:             tls.VersionTLS13,
		CipherSuites:           tls12Suites,
		SessionTicketsDisabled: true,
		GetConfigForClient:     t.configForClient,
	}
	return t
}

// configForClient routes a ClientHello to its site's tls.Config. An unknown
// name gets no certificate at all — never another site's — and the shim turns
// crypto/tls's internal_error alert into unrecognized_name.
func (t *table) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	s, ok := hello.Conn.(*shim)
	if !ok {
		return nil, errForeignConn
	}
	c := s.conn
	c.serverName = hello.ServerName // also for an unknown name: logs and metrics say which
	var site *Site
	if t.sites != nil {
		site, ok = t.sites.Lookup(hello.ServerName)
	}
	if !ok || site == nil {
		s.unknownSNI.Store(true)
		return nil, ErrUnknownServerName
	}
	c.site = site
	conf := t.siteConfig(site)
	if (site.RejectInvalid && site.Roots != nil) || site.Authorize != nil {
		// The one per-connection config: VerifyConnection must record this
		// connection's verdict (and decide with its address). It runs for
		// resumed sessions too.
		conf = conf.Clone()
		conf.VerifyConnection = c.verifyDuringHandshake
	}
	return conf, nil
}

func (t *table) siteConfig(site *Site) *tls.Config {
	if conf, ok := t.confs[site]; ok {
		return conf
	}
	return buildSiteConfig(site) // not in All(): correct, just not shared
}

// buildSiteConfig is the tls.Config for one site.
func buildSiteConfig(site *Site) *tls.Config {
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS13,
		CipherSuites: tls12Suites,
		Certificates: site.Certificates,
		// CurvePreferences stays nil: Go's defaults, including X25519MLKEM768.
		// ClientCAs stays nil on purpose: with RequestClientCert crypto/tls
		// does not verify against it, and listing the CAs would make clients
		// withhold certificates from other CAs, turning "unknown_authority"
		// into "missing" and leaking the CA names.
		ClientAuth:             tls.NoClientCert,
		SessionTicketsDisabled: !site.SessionTickets,
	}
	if site.Roots != nil {
		// Requested, not required (DESIGN decision 2): a device without a
		// valid certificate gets a 403 with the reason, not a TLS alert.
		conf.ClientAuth = tls.RequestClientCert
		if site.RejectInvalid || site.RequireCertificate {
			// The site opted into rejecting at the handshake: a missing
			// certificate gets certificate_required (TLS 1.3).
			conf.ClientAuth = tls.RequireAnyClientCert
		}
	}
	if site.SessionTickets {
		// Per-site keys: a ticket issued for one site never resumes on
		// another. They rotate with each Sites table (each reload).
		var key [32]byte
		if _, err := rand.Read(key[:]); err == nil {
			conf.SetSessionTicketKeys([][32]byte{key})
		} else {
			conf.SessionTicketsDisabled = true
		}
	}
	return conf
}
