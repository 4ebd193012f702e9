package configs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// maxThreads bounds event_loops and handshake_workers.
const maxThreads = 1024

// minMemoryLimit is the least memory_limit other than 0.
const minMemoryLimit = 32 << 20

// minMemoryReleaseAfter is the least memory_release_after other than 0:
// the heap is read once per interval.
const minMemoryReleaseAfter = 100 * time.Millisecond

// minGCHeapTarget is the least gc_heap_target other than 0: twice the Go
// runtime's own smallest heap goal.
const minGCHeapTarget = 8 << 20

// maxHeaderBytesLimit bounds max_header_bytes: every request worker holds a
// read buffer that large, so a typo of a unit would have each one allocate
// gigabytes (or fail to, and stop the process). Envoy's own bound on
// request headers is 8 MiB; one request header beyond 1 MiB is no device's.
const maxHeaderBytesLimit = 1 << 20

// maxBodyBytesLimit bounds max_body_bytes, which is added to other limits:
// 1 TiB is "unlimited" for any device, and far from int64's end.
const maxBodyBytesLimit = 1 << 40

// gateway checks [gateway] and copies it into g.
func (l *loader) gateway(fg *fileGateway, g *Gateway) {
	const p = "gateway"
	if err := checkListen(fg.Listen); err != nil {
		l.errorf(p+".listen", "%v", err)
	}
	if fg.AdminListen != "" {
		if err := checkListen(fg.AdminListen); err != nil {
			l.errorf(p+".admin_listen", "%v", err)
		} else if sharesPort(fg.Listen, fg.AdminListen) {
			l.errorf(p+".admin_listen", "%q takes the port of gateway.listen (%q): the admin listener needs a port of its own", fg.AdminListen, fg.Listen)
		}
	}
	if _, err := checkURL(fg.Issuer, false); err != nil {
		l.errorf(p+".issuer", "%v", err)
	}
	for _, c := range []struct {
		key      string
		v, least int64
	}{
		{"event_loops", int64(fg.EventLoops), 0},
		{"handshake_workers", int64(fg.HandshakeWorkers), 0},
		{"gomaxprocs", int64(fg.GOMAXPROCS), 0},
		{"memory_limit", int64(fg.MemoryLimit), 0},
		{"gc_heap_target", int64(fg.GCHeapTarget), 0},
		{"handshake_queue", int64(fg.HandshakeQueue), 1},
		{"max_connections", int64(fg.MaxConnections), 1},
		{"max_connections_per_ip", int64(fg.MaxConnectionsPerIP), 0},
		{"max_header_bytes", int64(fg.MaxHeaderBytes), 1024},
		{"max_header_count", int64(fg.MaxHeaderCount), 1},
		{"max_body_bytes", int64(fg.MaxBodyBytes), 1},
		{"max_conns_per_origin", int64(fg.MaxConnsPerOrigin), 1},
		{"verdict_cache_size", int64(fg.VerdictCacheSize), 0},
		{"token_cache_size", int64(fg.TokenCacheSize), 0},
		{"max_handshake_rate", int64(fg.MaxHandshakeRate), 0},
		{"max_handshake_burst", int64(fg.MaxHandshakeBurst), 0},
	} {
		if c.v < c.least {
			l.errorf(p+"."+c.key, "must be at least %d, not %d", c.least, c.v)
		}
	}
	for _, c := range []struct {
		key      string
		v, most  int64
		mostText string
	}{
		{"max_header_bytes", int64(fg.MaxHeaderBytes), maxHeaderBytesLimit, "1MiB"},
		{"max_body_bytes", int64(fg.MaxBodyBytes), maxBodyBytesLimit, "1TiB"},
	} {
		if c.v > c.most {
			l.errorf(p+"."+c.key, "must be at most %s, not %d bytes", c.mostText, c.v)
		}
	}
	// Threads, not limits: a typo such as 40000 would start that many.
	for _, c := range []struct {
		key string
		v   int
	}{{"event_loops", fg.EventLoops}, {"handshake_workers", fg.HandshakeWorkers}, {"gomaxprocs", fg.GOMAXPROCS}} {
		if c.v > maxThreads {
			l.errorf(p+"."+c.key, "must be at most %d, not %d", maxThreads, c.v)
		}
	}
	if fg.GCHeapTarget > 0 && fg.GCHeapTarget < minGCHeapTarget {
		l.errorf(p+".gc_heap_target", "must be 0 (Go's own pacing) or at least 8MiB, not %d bytes: below, the collector already runs at least that often", int64(fg.GCHeapTarget))
	}
	if r := time.Duration(fg.MemoryReleaseAfter); r != 0 && r < minMemoryReleaseAfter {
		l.errorf(p+".memory_release_after", "must be \"0s\" (never) or at least 100ms, not %s: the heap is read once per interval", r)
	}
	if fg.MemoryLimit > 0 && fg.MemoryLimit < minMemoryLimit {
		l.errorf(p+".memory_limit", "must be 0 (no limit) or at least 32MiB, not %d bytes: below, the garbage collector would run without pause", int64(fg.MemoryLimit))
	}
	for _, c := range []struct {
		key string
		v   duration
	}{
		{"handshake_timeout", fg.HandshakeTimeout},
		{"header_timeout", fg.HeaderTimeout},
		{"idle_timeout", fg.IdleTimeout},
		{"origin_connect_timeout", fg.OriginConnectTimeout},
		{"origin_timeout", fg.OriginTimeout},
	} {
		if c.v <= 0 {
			l.errorf(p+"."+c.key, "must be longer than 0s")
		}
	}
	burst := fg.MaxHandshakeBurst
	switch {
	case fg.MaxHandshakeRate > 0 && burst == 0:
		burst = fg.MaxHandshakeRate
	case fg.MaxHandshakeRate <= 0 && burst > 0:
		l.warnf(p+".max_handshake_burst", "has no effect without max_handshake_rate (0: handshakes are not rate-limited)")
		burst = 0
	}
	*g = Gateway{
		Listen: fg.Listen, AdminListen: fg.AdminListen, Issuer: fg.Issuer,
		EventLoops: fg.EventLoops, HandshakeWorkers: fg.HandshakeWorkers, HandshakeQueue: fg.HandshakeQueue,
		GOMAXPROCS: fg.GOMAXPROCS, MemoryLimit: int64(fg.MemoryLimit), GCHeapTarget: int64(fg.GCHeapTarget),
		MemoryReleaseAfter: time.Duration(fg.MemoryReleaseAfter),
		HandshakeTimeout:   time.Duration(fg.HandshakeTimeout), HeaderTimeout: time.Duration(fg.HeaderTimeout),
		MaxHandshakeRate: max(fg.MaxHandshakeRate, 0), MaxHandshakeBurst: max(burst, 0),
		IdleTimeout: time.Duration(fg.IdleTimeout), DrainTimeout: time.Duration(fg.DrainTimeout),
		MaxConnectionAge: time.Duration(fg.MaxConnectionAge),
		MaxConnections:   fg.MaxConnections, MaxConnectionsPerIP: fg.MaxConnectionsPerIP,
		MaxHeaderBytes: int64(fg.MaxHeaderBytes),
		MaxHeaderCount: fg.MaxHeaderCount, MaxBodyBytes: int64(fg.MaxBodyBytes),
		MaxResponseBytes:     int64(fg.MaxResponseBytes),
		OriginConnectTimeout: time.Duration(fg.OriginConnectTimeout), OriginTimeout: time.Duration(fg.OriginTimeout),
		MaxConnsPerOrigin: fg.MaxConnsPerOrigin, DefaultSite: strings.ToLower(fg.DefaultSite),
		VerdictCacheSize: fg.VerdictCacheSize, TokenCacheSize: fg.TokenCacheSize,
		ProxyProtocolFrom: l.proxySources(p+".proxy_protocol_from", fg.ProxyProtocolFrom),
	}
}

// proxySources reads proxy_protocol_from: CIDRs, or single addresses (a
// range of one). A range with host bits set is refused, as in an ip
// selector: "10.0.0.1/8" is more likely a mistyped address than the
// network meant.
func (l *loader) proxySources(key string, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		path := indexPath(key, i)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				l.errorf(path, "%q is not a CIDR such as \"10.0.0.0/8\" or an address such as \"192.0.2.7\"", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		switch {
		case p.Masked() != p:
			l.errorf(path, "%q has host bits set (did you mean %q?)", s, p.Masked().String())
		case p.Addr().Is4In6():
			l.errorf(path, "%q is an IPv4-mapped address: write it as IPv4", s)
		default:
			if p.Bits() == 0 {
				l.warnf(path, "%q believes a PROXY header from every address: any client can claim any device address; list the load balancers", s)
			}
			out = append(out, p)
		}
	}
	return out
}

// tokens checks [tokens], reads the keys and copies it into t.
func (l *loader) tokens(ft *fileTokens, t *Tokens) {
	t.CookieName, t.CookieSameSite = ft.CookieName, ft.CookieSameSite
	if err := checkCookieName(ft.CookieName); err != nil {
		l.errorf("tokens.cookie_name", "%v", err)
	}
	switch ft.CookieSameSite {
	case "lax", "strict", "none":
	default:
		l.errorf("tokens.cookie_same_site", "%q is not lax, strict or none", ft.CookieSameSite)
	}
	switch {
	case ft.SigningKeyFile != nil:
		t.SigningKey = l.signingKey("tokens.signing_key_file", *ft.SigningKeyFile)
	case l.bad("tokens.signing_key_file"):
	case l.opts.AllowEphemeralKey:
		t.EphemeralKey = true
		l.warnf("tokens", "no signing_key_file: tokens are signed with a key generated at start and stop verifying after a restart")
	default:
		l.errorf("tokens.signing_key_file", "required: a PKCS#8 PEM private key (P-256, Ed25519 or RSA) that signs session tokens")
	}
	// The gateway refuses a key set that holds one key twice (its kid
	// would name two entries): say so here, where check sees it too.
	held := map[string]string{}
	if t.SigningKey != nil {
		held[publicKeyID(t.SigningKey)] = "tokens.signing_key_file"
	}
	for i, name := range ft.PreviousKeyFiles {
		path := indexPath("tokens.previous_key_files", i)
		k := l.signingKey(path, name)
		if k == nil {
			continue
		}
		id := publicKeyID(k)
		if other, dup := held[id]; dup {
			l.errorf(path, "%s holds the same key as %s", name, other)
			continue
		}
		held[id] = path
		t.PreviousKeys = append(t.PreviousKeys, k)
	}
}

// publicKeyID identifies the public half of k: its PKIX encoding ("" when
// it has none, which signingKey never returns).
func publicKeyID(k crypto.Signer) string {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return ""
	}
	return string(der)
}

// signingKey reads a token key: PKCS#8 PEM holding a P-256, Ed25519 or RSA
// (at least 2048 bits) private key. It reports and returns nil on error.
func (l *loader) signingKey(path, name string) crypto.Signer {
	if name == "" {
		l.errorf(path, "empty file name")
		return nil
	}
	data, ok := l.readFile(path, name)
	if !ok {
		return nil
	}
	block, _ := pem.Decode(data)
	switch {
	case block == nil:
		l.errorf(path, "%s holds no PEM private key", name)
		return nil
	case block.Type == "EC PRIVATE KEY" || block.Type == "RSA PRIVATE KEY":
		l.errorf(path, "%s holds a %q block: convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)", name, block.Type)
		return nil
	case block.Type != "PRIVATE KEY":
		l.errorf(path, "%s holds a %q block, not an unencrypted PKCS#8 \"PRIVATE KEY\"", name, block.Type)
		return nil
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		l.errorf(path, "%s: %s", name, strings.TrimPrefix(err.Error(), "x509: "))
		return nil
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve.Params().Name == "P-256" {
			return k
		}
		l.errorf(path, "%s holds an ECDSA %s key: only P-256 (ES256) is supported", name, k.Curve.Params().Name)
	case ed25519.PrivateKey:
		return k
	case *rsa.PrivateKey:
		if k.N.BitLen() >= 2048 {
			return k
		}
		l.errorf(path, "%s holds a %d-bit RSA key: at least 2048 bits are required", name, k.N.BitLen())
	default:
		l.errorf(path, "%s holds a %T key: want P-256, Ed25519 or RSA", name, key)
	}
	return nil
}

// clientCAs checks every [[client_cas]] entry and fills cfg.ClientCAs with
// those that load.
//
// Across entries, two CA certificates with the same subject DN must have the
// same public key (checkSubjects).
func (l *loader) clientCAs(fcs []fileClientCA, cfg *Config) {
	names := map[string]int{}
	subjects := caSubjects{}
	for i := range fcs {
		fc, path := &fcs[i], indexPath("client_cas", i)
		ca := ClientCA{Name: fc.Name}
		ok := true
		if fc.Name == "" {
			l.errorf(joinKey(path, "name"), "required: a name for this CA")
			ok = false
		} else if j, dup := names[fc.Name]; dup {
			l.errorf(joinKey(path, "name"), "%q is also the name of client_cas[%d]", fc.Name, j)
			ok = false
		} else {
			names[fc.Name] = i
		}
		sum := sha256.Sum256([]byte("fleetgate/client-ca/v1\x00" + fc.Name))
		ca.ID = hex.EncodeToString(sum[:16])
		for j, h := range fc.AssociatedHostnames {
			d, err := checkDomain(h)
			if err != nil {
				l.errorf(indexPath(joinKey(path, "associated_hostnames"), j), "%v", err)
				ok = false
				continue
			}
			l.associated[d] = true
			if !slices.Contains(ca.Hostnames, d) {
				ca.Hostnames = append(ca.Hostnames, d)
			}
		}
		if len(fc.AssociatedHostnames) == 0 && !l.bad(joinKey(path, "associated_hostnames")) {
			l.warnf(path, "no associated_hostnames: no application uses this CA")
		}
		var data []byte
		var dataPath string
		switch {
		case fc.PEMFile != nil && fc.PEM != nil:
			l.errorf(joinKey(path, "pem"), "set pem_file or pem, not both")
			continue
		case fc.PEMFile != nil:
			var read bool
			dataPath = joinKey(path, "pem_file")
			if data, read = l.readFile(dataPath, *fc.PEMFile); !read {
				continue
			}
		case fc.PEM != nil:
			dataPath, data = joinKey(path, "pem"), []byte(*fc.PEM)
		default:
			if !l.bad(joinKey(path, "pem_file")) && !l.bad(joinKey(path, "pem")) {
				l.errorf(path, "set pem_file (a PEM file) or pem (inline PEM): the CA certificate, with its intermediates if any")
			}
			continue
		}
		switch ca.CRLStale = fc.CRLStale; ca.CRLStale {
		case "warn", "reject":
		default:
			l.errorf(joinKey(path, "crl_stale"), "%q is not reject or warn", fc.CRLStale)
			ok = false
		}
		certs, parsed := l.parseCAUpload(dataPath, data, &ca)
		if !parsed {
			continue
		}
		l.checkSubjects(subjects, i, fc.Name, dataPath, certs)
		if l.crlFiles(path, fc, &ca) && ok {
			cfg.ClientCAs = append(cfg.ClientCAs, ca)
		}
	}
}

// defaultSite checks that [gateway].default_site names an application.
func (l *loader) defaultSite(cfg *Config) {
	d := cfg.Gateway.DefaultSite
	if d == "" {
		return
	}
	if _, ok := l.domains[d]; !ok {
		l.errorf("gateway.default_site", "%q is not the domain of an application", d)
	}
}
