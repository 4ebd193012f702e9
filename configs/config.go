package configs

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// Config is a loaded, validated configuration: plain data, the input from
// which the gateway builds one immutable snapshot (sites, pools, policies,
// keys). Nothing in it is shared with the file or with a previous load, and
// nothing in it changes after Load returns.
type Config struct {
	// Path is the file name as given to Load or Parse.
	Path string
	// Dir is the folder relative file names were resolved against.
	Dir string
	// Hash is the hex SHA-256 of the file's bytes. It does not cover the
	// files the configuration refers to (PEM, keys).
	Hash      string
	Gateway   Gateway
	Tokens    Tokens
	ClientCAs []ClientCA
	// Revocation holds the [revocation] deny-lists; the CRLs are per client
	// CA (ClientCA.CRLs).
	Revocation Revocation
	// Lists are the [[lists]] entries, in file order: sets of device
	// values (common names, fingerprints, serials, URI SANs, addresses) the
	// `list` selector consults.
	Lists []List
	// ServiceTokens are the [[service_tokens]] entries, in file order:
	// credentials for machines without certificates (HTTP applications).
	ServiceTokens []policy.ServiceToken
	// IdentityProviders are the [[identity_providers]] entries, in file
	// order: OpenID Connect providers people log in with (identity.go).
	IdentityProviders []IdentityProvider
	Applications      []Application
	// Warnings are problems that do not prevent serving, such as a client CA
	// that expires within 30 days, in file order.
	Warnings []Problem
}

// Gateway holds the [gateway] table: listeners and every limit. Each field
// shows its key and its default when the key is absent.
type Gateway struct {
	Listen           string        // listen = "127.0.0.1:8443": the TLS listener
	AdminListen      string        // admin_listen = "127.0.0.1:9443"; "" disables the admin listener
	Issuer           string        // issuer = "https://fleetgate.local": iss of every token
	EventLoops       int           // event_loops = 0: one per CPU; at most 1024
	HandshakeWorkers int           // handshake_workers = 0: one per CPU; at most 1024
	HandshakeQueue   int           // handshake_queue = 4096: handshakes in flight; beyond it new connections are refused
	HandshakeTimeout time.Duration // handshake_timeout = "5s"
	// GOMAXPROCS is the Go scheduler's processors (gomaxprocs = 0: one per
	// CPU the process may use, plus one per event loop when an application
	// has an https origin, whose answers wait in Go's own network poller,
	// which a loop blocked waiting for events would hold up; the GOMAXPROCS
	// environment variable, when set, wins over 0). At most 1024. A reload
	// applies it.
	GOMAXPROCS int
	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (memory_limit = 0: none, or the GOMEMLIMIT environment variable): the
	// garbage collector runs more often as the heap nears it, which keeps the
	// resident size of many idle connections close to their live heap. A
	// reload changes it. 0 or at least 32 MiB (below, the collector would
	// run without pause).
	MemoryLimit int64
	// GCHeapTarget is the heap the garbage collector lets a small live heap
	// grow toward before it collects (gc_heap_target = "64MiB"; 0: Go's own
	// pacing, GOGC=100). A gateway whose devices reconnect for every request
	// keeps little alive and allocates a handshake's worth per request: at
	// GOGC=100 it collects tens of times a second. After every collection
	// the collector's percentage is set from the live heap (up to 500, never
	// under 100), so a heap under half the target is collected up to five
	// times less often, and a larger one exactly as before. A GOGC
	// environment variable wins. A reload changes it. 0 or at least 8 MiB.
	GCHeapTarget int64
	// MemoryReleaseAfter is how long the process must have allocated
	// (almost) nothing before it returns the heap it holds unused to the
	// operating system (memory_release_after = "500ms"; 0: never). After a
	// reconnect storm the storm's garbage is about as large again as the
	// connections' own state, and the collector keeps it for allocations
	// that an idle fleet does not make. Released at most once a minute, and
	// only when the unused heap is at least 16 MiB and a quarter of the
	// live heap. A reload changes it. 0 or at least 100ms.
	MemoryReleaseAfter time.Duration
	// MaxHandshakeRate bounds the new TLS handshakes started per second,
	// across all listeners and applications (max_handshake_rate = 0: no
	// bound). Connections beyond it are refused at once, before any
	// cryptography: under a reconnect storm the fleet is admitted at the rate
	// the CPUs sustain instead of every handshake timing out.
	MaxHandshakeRate int
	// MaxHandshakeBurst is the token bucket's size: how many handshakes may
	// start at once after a quiet period (max_handshake_burst = 0: equal to
	// the rate). The loader applies that default, so it is at least 1
	// whenever MaxHandshakeRate is set, and 0 when it is not.
	MaxHandshakeBurst int
	// HeaderTimeout is the time a client has to send a complete request
	// header once it started one (header_timeout = "10s"): the slowloris guard.
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration // idle_timeout = "60s": keep-alive connections with no request are closed
	// MaxConnectionAge (max_connection_age = "1h", nginx's keepalive_time):
	// a keep-alive connection older than this closes after its current
	// request, so a device reconnects, and a reload's CAs and policies reach
	// it (a connection keeps the configuration it started with); 0: no limit.
	MaxConnectionAge time.Duration
	DrainTimeout     time.Duration // drain_timeout = "15s": on shutdown, in-flight requests get this long; 0 closes at once
	MaxConnections   int           // max_connections = 200000
	MaxHeaderBytes   int64         // max_header_bytes = "16KiB" (at least 1KiB); larger headers get 431
	MaxHeaderCount   int           // max_header_count = 100; more header fields get 431
	MaxBodyBytes     int64         // max_body_bytes = "8MiB"; larger request bodies get 413
	MaxResponseBytes int64         // max_response_bytes = 0: origin responses above it get 502; 0 is unlimited
	// OriginConnectTimeout bounds dialing an origin (origin_connect_timeout =
	// "5s"); a failure answers 502.
	OriginConnectTimeout time.Duration
	// OriginTimeout bounds each read from and write to an origin
	// (origin_timeout = "30s"); a timeout answers 504.
	OriginTimeout     time.Duration
	MaxConnsPerOrigin int // max_conns_per_origin = 512: connections to an application's origin, all of its pools together
	// DefaultSite is the domain of the application whose certificate answers
	// ClientHellos without SNI (default_site = ""). "" refuses them.
	DefaultSite string
	// VerdictCacheSize bounds the cache of client-chain verdicts
	// (verdict_cache_size = 100000); 0 disables it. An entry holds at most
	// 16 KiB (a typical device chain's, 1 to 3 KiB); a chain that would need
	// more is verified on every handshake.
	VerdictCacheSize int
	// TokenCacheSize bounds the cache of verified tokens (token_cache_size =
	// 100000); 0 disables it.
	TokenCacheSize int
	// MaxConnectionsPerIP caps the open connections of one client address
	// (max_connections_per_ip = 0: no cap); beyond it new ones are refused.
	// Off by default: fleets often sit behind NAT, one address for many devices.
	MaxConnectionsPerIP int
	// ProxyProtocolFrom are the load balancers in front of the gateway
	// (proxy_protocol_from = []: none). A connection from an address in one
	// of these ranges must start with a PROXY protocol header (version 1 or
	// 2), and the client address in it is the device's address for
	// everything the gateway does with one: max_connections_per_ip, ip
	// selectors and lists, logs, X-Forwarded-For and the PROXY header a tcp
	// origin receives. Connections from elsewhere send no header. Whoever
	// connects from a listed address can claim any device address, so the
	// list names the balancers and nothing wider. A reload applies it to new
	// connections.
	ProxyProtocolFrom []netip.Prefix
}

// Tokens holds the [tokens] table: the keys that sign and verify session
// tokens and the session cookie's settings.
type Tokens struct {
	// SigningKey signs new tokens: an *ecdsa.PrivateKey (P-256, ES256), an
	// ed25519.PrivateKey (EdDSA) or an *rsa.PrivateKey (RS256, at least 2048
	// bits), read from signing_key_file. Nil when EphemeralKey is set.
	SigningKey crypto.Signer
	// EphemeralKey is true when the file has no signing_key_file and the
	// loader allowed it (Options.AllowEphemeralKey): the gateway generates a
	// P-256 key once at start and keeps it across reloads, so tokens do not
	// survive a restart.
	EphemeralKey bool
	// PreviousKeys (previous_key_files = []) are still published in the JWKS
	// and accepted when verifying, for a grace period after a rotation.
	PreviousKeys []crypto.Signer
	// CookieName is the session cookie (cookie_name = "CF_Authorization").
	CookieName string
	// CookieSameSite is the cookie's SameSite attribute: "lax" (the
	// default), "strict" or "none".
	CookieSameSite string
}

// ClientCA is one [[client_cas]] entry: Access's "mTLS certificate", a root
// CA with its intermediates, associated with the hostnames where devices may
// present certificates it issued. Across all entries of a Config, CA
// certificates with the same subject DN have the same public key (loading
// refuses others: revocation is keyed by issuer name).
type ClientCA struct {
	Name string
	// ID identifies the entry in logs and metrics. It is derived from Name,
	// so it survives a rotation of the certificates.
	ID string
	// Roots are the self-signed CA certificates of the upload (at least one).
	Roots []*x509.Certificate
	// Intermediates are the upload's CA certificates that are not
	// self-signed, each signed by another certificate of the upload.
	Intermediates []*x509.Certificate
	// Hostnames are the associated_hostnames, lower-case: FQDNs, or "*."
	// wildcards that only an application with that exact wildcard domain uses.
	Hostnames []string
	// ExpiresOn is the earliest NotAfter of the upload's certificates.
	ExpiresOn time.Time
	// Fingerprint is the hex SHA-256 of the first root's DER.
	Fingerprint string
	// CRLs are the revocation lists of crl_files, in file order (a PEM file
	// may hold several), each signed by a certificate of Roots or
	// Intermediates. Empty when the entry has no crl_files.
	CRLs []CRL
	// CRLStale is crl_stale: "warn" (the default) loads a CRL past its
	// nextUpdate with a warning, "reject" refuses the file, and once a loaded
	// list passes its nextUpdate while the gateway runs, refuses the CA's
	// devices (verdict revocation_unknown) until a newer list is loaded.
	// Either way a stale list still revokes what it lists.
	CRLStale string
}

// CRL is one certificate revocation list of a client CA, read from
// crl_files (PEM "X509 CRL" blocks or DER), its signature checked. It is
// what the gateway hands to tlsengine.NewRevocation and watches for changes.
type CRL struct {
	// File is the name as written in crl_files.
	File string
	// Path is File resolved against Config.Dir: what a file watch follows.
	Path string
	// Index is the list's position among the PEM blocks of File (0 for the
	// first, and for DER).
	Index int
	// List is the parsed list. Its deprecated RevokedCertificates field is
	// cleared (RevokedCertificateEntries holds the same entries) to halve
	// what a large list keeps in memory.
	List *x509.RevocationList
	// Issuer is the certificate of the client CA (a root or an intermediate)
	// whose key signed List.
	Issuer *x509.Certificate
	// NextUpdate is the list's nextUpdate: the time by which its issuer
	// promises a newer list, and past which it is stale (the metric "seconds
	// until the CRL expires" counts down to it). Zero when the list has none.
	NextUpdate time.Time
}

// Name names the list in logs and verdict details: "pki/fleet.crl", or
// "pki/fleet.crl#2" for the second PEM block of a file.
func (c *CRL) Name() string {
	if c.Index == 0 {
		return c.File
	}
	return c.File + "#" + strconv.Itoa(c.Index+1)
}

// Revocation holds the [revocation] table: certificates denied whatever
// their issuer, in addition to the client CAs' CRLs. Both apply to every
// certificate of a device's verified path (leaf, intermediates, root).
type Revocation struct {
	// DeniedSerials (denied_serials = []) are serial numbers revoked whatever
	// the issuer, written in hex, case-insensitive, with optional colons
	// ("1a:2b:3c", as `openssl x509 -serial` prints them without colons).
	DeniedSerials []*big.Int
	// DeniedFingerprints (denied_fingerprints = []) are SHA-256 fingerprints
	// of certificate DER: 64 hex digits, optional colons (as `openssl x509
	// -fingerprint -sha256` prints them, and Cf-Client-Cert-Sha256 carries).
	DeniedFingerprints [][sha256.Size]byte
}

// Protocol is what an application speaks to its devices and its origin
// (protocol = "http").
type Protocol string

// The protocols an application may have.
const (
	// ProtocolHTTP: HTTP/1.1 requests, each decided by the policies and
	// proxied with the token in Cf-Access-Jwt-Assertion.
	ProtocolHTTP Protocol = "http"
	// ProtocolTCP: raw TCP over mutual TLS, decided once per connection in
	// the handshake and relayed to a tcp:// origin, optionally after a PROXY
	// protocol header that carries the device's identity.
	ProtocolTCP Protocol = "tcp"
	// ProtocolMQTT: a tcp application whose first packet must be an MQTT
	// CONNECT: the handshake always completes, the policies decide on the
	// certificate's verdict when the CONNECT arrives, refusals are CONNACKs,
	// and the client id, username and password can be bound to the
	// certificate (mqtt.go).
	ProtocolMQTT Protocol = "mqtt"
)

// Relayed reports whether connections of the protocol are relayed to a
// tcp:// origin (tcp and mqtt), not proxied as HTTP requests.
func (p Protocol) Relayed() bool { return p == ProtocolTCP || p == ProtocolMQTT }

// The proxy_protocol values of a tcp application.
const (
	ProxyProtocolNone = ""   // no header: the origin sees the gateway's address
	ProxyProtocolV1   = "v1" // the text line: addresses only
	ProxyProtocolV2   = "v2" // binary: addresses, SNI, connection id, TLS facts, CN, certificate, token
)

// Application is one [[applications]] entry, ready for the gateway: the
// policy engine's application plus what the gateway needs to serve it.
type Application struct {
	// Application carries name, domain (lower-case), AUD (aud, or derived
	// from the name with policy.DeriveAUD), session duration, service_auth_401
	// and the policies in file order. The session duration is 24h when
	// absent and 0 for "0s" ("no duration"); a tcp application has no
	// sessions, so its duration is always 0: each connection's token is
	// minted for that connection alone.
	policy.Application
	// Protocol is ProtocolHTTP (the default), ProtocolTCP or ProtocolMQTT.
	Protocol Protocol
	// Origin is the upstream: scheme://host[:port] with scheme http or https
	// for an http application, tcp://host:port or tls://host:port (port
	// always present) for a tcp or mqtt application, whose relay dials
	// Origin.Host, and with tls:// speaks TLS to it.
	Origin *url.URL
	// OriginCAs, from origin_ca_file (PEM certificates), are the roots an
	// https or tls origin's certificate is verified against instead of the
	// system's (nginx's proxy_ssl_trusted_certificate); nil: the system's.
	OriginCAs *x509.CertPool
	// OriginCAsSum is the SHA-256 of origin_ca_file's contents: a reload
	// that changes the file gets a new origin client.
	OriginCAsSum [32]byte
	// OriginCertificate, from origin_cert_file and origin_key_file, is what
	// the gateway presents to an https or tls origin that asks for a client
	// certificate; nil: none.
	OriginCertificate *tls.Certificate
	// OriginCertSum is the SHA-256 of OriginCertificate's chain (zero
	// without one): a reload that changes it gets a new origin client.
	OriginCertSum [32]byte
	// OriginServerName, from origin_server_name, is the name an https or
	// tls origin's certificate must carry, sent as SNI, when the origin is
	// dialed by another name or by address (HAProxy's sni and verifyhost);
	// "": the origin's host.
	OriginServerName string
	// Certificate is the gateway's server certificate for Domain, with its
	// chain as in tls_cert_file and Leaf set.
	Certificate tls.Certificate
	// ForwardClientCert adds Cf-Client-Cert-* and Client-Cert headers to
	// origin requests of an http application, and the SSL_CLIENT_CERT
	// sub-TLV (the leaf's DER) to the PROXY v2 header of a tcp application,
	// which then needs ProxyProtocol "v2" (forward_client_cert = false).
	ForwardClientCert bool
	// SessionTickets enables TLS session resumption (session_tickets =
	// false). Off by default: a resumed session proves no key possession.
	SessionTickets bool
	// RejectInvalidCert refuses devices without a valid chain with a TLS
	// alert instead of an HTTP 403 (reject_invalid_cert = false). It needs a
	// client CA associated with Domain.
	RejectInvalidCert bool
	// ClientCAs are the client CAs associated with Domain (pointers into
	// Config.ClientCAs); empty means no client certificate is requested.
	ClientCAs []*ClientCA
	// OriginConnectTimeout bounds dialing this application's origin
	// (origin_connect_timeout; default [gateway] origin_connect_timeout).
	OriginConnectTimeout time.Duration

	// The fields below are set for tcp applications only (zero for http,
	// where the [gateway] values of the same names apply); the loader
	// refuses their keys on an http application.

	// ProxyProtocol is the PROXY protocol header written to the origin
	// before the device's bytes: ProxyProtocolNone (the default),
	// ProxyProtocolV1 or ProxyProtocolV2 (proxy_protocol).
	ProxyProtocol string
	// IdleTimeout closes a relayed connection when no byte has moved in
	// either direction for this long (idle_timeout = "10m"; always > 0).
	IdleTimeout time.Duration
	// MaxConnectionAge closes a relayed connection this long after it was
	// admitted, with ±10% jitter so that a fleet admitted together does not
	// reconnect together; it makes devices pick up a reload's CAs and
	// policies (max_connection_age = "0s": no limit).
	MaxConnectionAge time.Duration
	// RelayBuffer is the most bytes held for one direction of one relayed
	// connection (relay_buffer = "256KiB", between 16KiB and 64MiB): when the
	// receiving side is slower, the gateway stops reading from the sender.
	RelayBuffer int64

	// IdentityProviders names the [[identity_providers]] people log in
	// with on this application (identity_providers = []), in file order.
	// When set, policy.Application.Login is set too: allow and deny
	// policies need a logged-in person. Only on an http application with
	// sessions and an exact (not wildcard) domain.
	IdentityProviders []string

	// MQTT holds the keys of an mqtt application (nil for http and tcp);
	// the tcp keys above apply to it too.
	MQTT *MQTTSettings
}

// ClientCAsFor returns the client CAs associated with domain: those that list
// it, compared case-insensitively, in their associated_hostnames. Matching is
// exact: a CA associated with "*.fleet.test" serves the application whose
// domain is "*.fleet.test", not "devices.fleet.test". Nil when none.
func (c *Config) ClientCAsFor(domain string) []*ClientCA {
	domain = strings.ToLower(domain)
	var out []*ClientCA
	for i := range c.ClientCAs {
		for _, h := range c.ClientCAs[i].Hostnames {
			if h == domain {
				out = append(out, &c.ClientCAs[i])
				break
			}
		}
	}
	return out
}
