package configs

// The file schema: what the TOML file may hold, key by key. The `toml` tag
// is the key (a contract: keys may be added, never renamed) and `default` the
// value a missing key takes, written as it would be in the file. decode.go
// fills these structs; validate.go, certs.go and apps.go turn them into a
// Config. Field types: string, bool, int, duration (a Go duration string),
// size ("16KiB" or an integer of bytes), []string, nested structs (tables),
// slices of structs (arrays of tables), selector (an inline table with one
// key), and pointers for optional values whose absence matters.

type fileConfig struct {
	Gateway       fileGateway        `toml:"gateway"`
	Tokens        fileTokens         `toml:"tokens"`
	ClientCAs     []fileClientCA     `toml:"client_cas"`
	Revocation    fileRevocation     `toml:"revocation"`
	Lists         []fileList         `toml:"lists"`
	ServiceTokens []fileServiceToken `toml:"service_tokens"`
	// IdentityProviders are the [[identity_providers]] (identity.go).
	IdentityProviders []fileIdentityProvider `toml:"identity_providers"`
	Applications      []fileApplication      `toml:"applications"`
}

// fileIdentityProvider is one [[identity_providers]] entry. scopes has no
// `default` tag (a list): identity.go applies ["openid", "email", "profile"].
type fileIdentityProvider struct {
	Name             string   `toml:"name"`
	Type             string   `toml:"type" default:"oidc"`
	Issuer           string   `toml:"issuer"`
	ClientID         string   `toml:"client_id"`
	ClientSecretFile string   `toml:"client_secret_file"`
	Scopes           []string `toml:"scopes"`
	GroupsClaim      string   `toml:"groups_claim" default:"groups"`
	OriginCAFile     string   `toml:"origin_ca_file"`
}

type fileList struct {
	Name   string   `toml:"name"`
	Kind   string   `toml:"kind"`
	File   *string  `toml:"file"`
	Values []string `toml:"values"`
}

type fileServiceToken struct {
	Name               string     `toml:"name"`
	ClientID           string     `toml:"client_id"`
	ClientSecretSHA256 string     `toml:"client_secret_sha256"`
	Expires            *timestamp `toml:"expires"`
}

type fileGateway struct {
	Listen               string   `toml:"listen" default:"127.0.0.1:8443"`
	AdminListen          string   `toml:"admin_listen" default:"127.0.0.1:9443"`
	Issuer               string   `toml:"issuer" default:"https://fleetgate.local"`
	EventLoops           int      `toml:"event_loops" default:"0"`
	HandshakeWorkers     int      `toml:"handshake_workers" default:"0"`
	GOMAXPROCS           int      `toml:"gomaxprocs" default:"0"`
	MemoryLimit          size     `toml:"memory_limit" default:"0"`
	GCHeapTarget         size     `toml:"gc_heap_target" default:"64MiB"`
	MemoryReleaseAfter   duration `toml:"memory_release_after" default:"500ms"`
	HandshakeQueue       int      `toml:"handshake_queue" default:"4096"`
	HandshakeTimeout     duration `toml:"handshake_timeout" default:"5s"`
	MaxHandshakeRate     int      `toml:"max_handshake_rate" default:"0"`
	MaxHandshakeBurst    int      `toml:"max_handshake_burst" default:"0"`
	HeaderTimeout        duration `toml:"header_timeout" default:"10s"`
	IdleTimeout          duration `toml:"idle_timeout" default:"60s"`
	MaxConnectionAge     duration `toml:"max_connection_age" default:"1h"`
	DrainTimeout         duration `toml:"drain_timeout" default:"15s"`
	MaxConnections       int      `toml:"max_connections" default:"200000"`
	MaxConnectionsPerIP  int      `toml:"max_connections_per_ip" default:"0"`
	MaxHeaderBytes       size     `toml:"max_header_bytes" default:"16KiB"`
	MaxHeaderCount       int      `toml:"max_header_count" default:"100"`
	MaxBodyBytes         size     `toml:"max_body_bytes" default:"8MiB"`
	MaxResponseBytes     size     `toml:"max_response_bytes" default:"0"`
	OriginConnectTimeout duration `toml:"origin_connect_timeout" default:"5s"`
	OriginTimeout        duration `toml:"origin_timeout" default:"30s"`
	MaxConnsPerOrigin    int      `toml:"max_conns_per_origin" default:"512"`
	DefaultSite          string   `toml:"default_site"`
	VerdictCacheSize     int      `toml:"verdict_cache_size" default:"100000"`
	TokenCacheSize       int      `toml:"token_cache_size" default:"100000"`
	ProxyProtocolFrom    []string `toml:"proxy_protocol_from"`
}

type fileTokens struct {
	SigningKeyFile   *string  `toml:"signing_key_file"`
	PreviousKeyFiles []string `toml:"previous_key_files"`
	CookieName       string   `toml:"cookie_name" default:"CF_Authorization"`
	CookieSameSite   string   `toml:"cookie_same_site" default:"lax"`
}

type fileClientCA struct {
	Name                string   `toml:"name"`
	PEMFile             *string  `toml:"pem_file"`
	PEM                 *string  `toml:"pem"`
	AssociatedHostnames []string `toml:"associated_hostnames"`
	CRLFiles            []string `toml:"crl_files"`
	CRLStale            string   `toml:"crl_stale" default:"warn"`
}

type fileRevocation struct {
	DeniedSerials      []string `toml:"denied_serials"`
	DeniedFingerprints []string `toml:"denied_fingerprints"`
}

// fileApplication: the keys whose absence matters are pointers without a
// `default` tag. Their default depends on protocol (session_duration is 24h
// for http; idle_timeout 10m and relay_buffer 256KiB for tcp), and a key that
// does not fit the protocol is an error when written at all, whatever its
// value: apps.go applies the defaults.
type fileApplication struct {
	Name                 string       `toml:"name"`
	Domain               string       `toml:"domain"`
	Protocol             string       `toml:"protocol" default:"http"`
	Origin               string       `toml:"origin"`
	OriginCAFile         string       `toml:"origin_ca_file"`
	OriginCertFile       string       `toml:"origin_cert_file"`
	OriginKeyFile        string       `toml:"origin_key_file"`
	OriginServerName     string       `toml:"origin_server_name"`
	TLSCertFile          string       `toml:"tls_cert_file"`
	TLSKeyFile           string       `toml:"tls_key_file"`
	SessionDuration      *duration    `toml:"session_duration"`
	ForwardClientCert    bool         `toml:"forward_client_cert"`
	ServiceAuth401       *bool        `toml:"service_auth_401"`
	SessionTickets       *bool        `toml:"session_tickets"`
	RejectInvalidCert    bool         `toml:"reject_invalid_cert"`
	AUD                  string       `toml:"aud"`
	ProxyProtocol        *string      `toml:"proxy_protocol"`
	OriginConnectTimeout *duration    `toml:"origin_connect_timeout"`
	IdleTimeout          *duration    `toml:"idle_timeout"`
	MaxConnectionAge     *duration    `toml:"max_connection_age"`
	RelayBuffer          *size        `toml:"relay_buffer"`
	MQTTClientID         *string      `toml:"mqtt_client_id"`
	MQTTUsername         *string      `toml:"mqtt_username"`
	MQTTPassword         *string      `toml:"mqtt_password"`
	MaxConnectBytes      *size        `toml:"max_connect_bytes"`
	IdentityProviders    []string     `toml:"identity_providers"`
	Policies             []filePolicy `toml:"policies"`
}

type filePolicy struct {
	Name            string     `toml:"name"`
	Decision        string     `toml:"decision"`
	SessionDuration *duration  `toml:"session_duration"`
	Include         []selector `toml:"include"`
	Require         []selector `toml:"require"`
	Exclude         []selector `toml:"exclude"`
}

// selector is one rule entry as written, { common_name = "sensor-0001" }:
// the decoded inline table, checked and parsed by apps.go.
type selector map[string]any
