package tlsengine

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cespare/xxhash/v2"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Site is one hostname's TLS settings: the server certificate(s) the gateway
// presents for it and the client-CA pool device chains must lead to. Sites are
// immutable once built; a reload builds new ones.
type Site struct {
	// Name is the FQDN, or a wildcard "*.fleet.test" that covers exactly one
	// extra label. It is matched case-insensitively, with or without one
	// trailing dot; NewSites rejects invalid names.
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
	// Revocation is the set of revoked certificates checked on every
	// verified path (CRL entries, denied serials and fingerprints); nil
	// revokes nothing. One set is normally shared by all the sites of a
	// snapshot. The verdict cache never serves a verdict computed under
	// another set.
	Revocation *Revocation
	// MaxIntermediates caps the intermediates a device may send; 0 (or a
	// negative value) means 4.
	MaxIntermediates int
	// SessionTickets enables TLS session resumption. Off by default: a resumed
	// session proves no key possession (DESIGN decision 4).
	SessionTickets bool
	// RejectInvalid refuses devices without a valid chain with a TLS alert
	// during the handshake instead of letting the gateway answer 403. It saves
	// CPU under attack at the cost of an opaque error.
	RejectInvalid bool
	// RequireCertificate makes crypto/tls require a client certificate
	// (RequireAnyClientCert) without refusing an invalid chain by itself: a
	// device that sends none gets certificate_required (TLS 1.3) or
	// handshake_failure (TLS 1.2). The gateway sets it on tcp applications
	// whose policies can never admit a device without a certificate. It
	// needs Roots.
	RequireCertificate bool
	// Authorize, when set, decides inside the handshake, in crypto/tls's
	// VerifyConnection: it is called with the chain's verdict (Kind Missing
	// when none was sent) and the device's address (invalid when the
	// transport has none), after RejectInvalid's check, and an error fails
	// the handshake, so crypto/tls sends bad_certificate (42) and the
	// handshake ends with ReasonBadCertificate. What it returns with a nil
	// error is kept with the connection (Conn.Authorization): the gateway
	// keeps its decision there. Why here rather than after
	// the handshake: a raw TCP device cannot read an HTTP 403, and a refused
	// device must not cost an origin connection. It runs for every
	// handshake, resumed ones too, on the handshake goroutine: it must be
	// quick and safe for concurrent use. The engine knows nothing of what it
	// checks.
	Authorize func(v *verdict.Verdict, remote netip.Addr) (any, error)
	// App is the gateway's own handle for this site (its application); the
	// engine never looks at it.
	App any
}

// SetClientCAs fills Roots, Intermediates and Generation with the client CAs
// associated with the site. The generation is a hash of the certificates,
// so an unchanged set keeps its cached verdicts across a reload while any
// change invalidates them. With none, no client certificate is requested.
func (s *Site) SetClientCAs(roots, intermediates []*x509.Certificate) {
	if len(roots) == 0 && len(intermediates) == 0 {
		s.Roots, s.Intermediates, s.Generation = nil, nil, 0
		return
	}
	s.Roots, s.Intermediates = x509.NewCertPool(), x509.NewCertPool()
	h := xxhash.New()
	add := func(pool *x509.CertPool, role byte, c *x509.Certificate) {
		pool.AddCert(c)
		// The role and length go into the hash too: a root that becomes an
		// intermediate is another trust set.
		_, _ = h.Write(binary.BigEndian.AppendUint32([]byte{role}, uint32(len(c.Raw))))
		_, _ = h.Write(c.Raw)
	}
	for _, c := range roots {
		add(s.Roots, 'R', c)
	}
	for _, c := range intermediates {
		add(s.Intermediates, 'I', c)
	}
	s.Generation = h.Sum64() | 1 // never 0, which no pool has
}

// maxNameLen is the longest DNS name in presentation form, without the
// trailing dot (RFC 1035 section 2.3.4).
const maxNameLen = 253

// maxLabelLen is the longest DNS label (RFC 1035 section 2.3.4).
const maxLabelLen = 63

// nameByte maps every byte allowed in a server name to its lower-case form
// and every other byte to 0. Allowed: letters, digits, '-', '_' and '.'.
// Why so strict: anything else ("*", spaces, NUL, UTF-8) can never name a
// site, and rejecting it here keeps a literal "*" label in a ClientHello from
// matching a wildcard entry.
var nameByte = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c)
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = byte(c)
		t[c-'a'+'A'] = byte(c)
	}
	t['-'], t['_'], t['.'] = '-', '_', '.'
	return t
}()

// Sites is an immutable SNI table: exact names, one-label wildcards, and an
// optional default site for ClientHellos without SNI. Lookup is O(1) and does
// not allocate: it runs once per handshake.
type Sites struct {
	exact nameTable // "devices.fleet.test" → site
	wild  nameTable // "fleet.test" (from "*.fleet.test") → site
	def   *Site
	all   []*Site
}

// NewSites builds the SNI table from sites. Names are matched
// case-insensitively and may carry one trailing dot. defaultName, if not
// empty, names the site used for ClientHellos without SNI; a ClientHello that
// names an unknown host never gets the default site (the engine answers it
// with an unrecognized_name alert instead of another site's certificate).
//
// It fails on a nil site, a site without certificates, an invalid name, a
// wildcard other than "*." followed by at least two labels, duplicate names,
// and a defaultName that is not one of the sites.
func NewSites(sites []*Site, defaultName string) (*Sites, error) {
	var exact, wild []nameEntry
	seen := make(map[string]int, len(sites))
	for i, s := range sites {
		if s == nil {
			return nil, fmt.Errorf("tlsengine: sites[%d]: nil site", i)
		}
		name, isWild, err := canonicalSiteName(s.Name)
		if err != nil {
			return nil, fmt.Errorf("tlsengine: sites[%d]: %w", i, err)
		}
		if len(s.Certificates) == 0 {
			return nil, fmt.Errorf("tlsengine: sites[%d] %q: no server certificate", i, s.Name)
		}
		for j, c := range s.Certificates {
			if len(c.Certificate) == 0 {
				return nil, fmt.Errorf("tlsengine: sites[%d] %q: certificates[%d] is empty", i, s.Name, j)
			}
		}
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("tlsengine: sites[%d]: duplicate site name %q (also sites[%d])", i, s.Name, prev)
		}
		seen[name] = i
		if isWild {
			wild = append(wild, nameEntry{name: name[2:], site: s}) // key is the part after "*."
		} else {
			exact = append(exact, nameEntry{name: name, site: s})
		}
	}
	t := &Sites{exact: newNameTable(exact), wild: newNameTable(wild), all: append([]*Site(nil), sites...)}
	if defaultName != "" {
		name, _, err := canonicalSiteName(defaultName)
		if err != nil {
			return nil, fmt.Errorf("tlsengine: default site: %w", err)
		}
		i, ok := seen[name]
		if !ok {
			return nil, fmt.Errorf("tlsengine: default site %q is not one of the sites", defaultName)
		}
		t.def = sites[i]
	}
	return t, nil
}

// Lookup returns the site for a ClientHello's server name ("" when the client
// sent no SNI), or false when no site serves it: exact name first, then a
// wildcard covering exactly one more label, then (only for "") the default
// site. Invalid names (over 253 bytes, empty labels, bytes other than
// letters, digits, '-', '_', '.') are not found. It never allocates.
func (t *Sites) Lookup(serverName string) (*Site, bool) {
	if t == nil {
		return nil, false
	}
	if serverName == "" {
		return t.def, t.def != nil
	}
	n := len(serverName)
	if serverName[n-1] == '.' {
		n-- // one trailing dot: the absolute form of the same name
	}
	if n == 0 || n > maxNameLen {
		return nil, false
	}
	var buf [maxNameLen]byte
	firstDot, labelStart := -1, 0
	for i := 0; i < n; i++ {
		c := nameByte[serverName[i]]
		switch c {
		case 0:
			return nil, false
		case '.':
			if i == labelStart {
				return nil, false // empty label
			}
			if firstDot < 0 {
				firstDot = i
			}
			labelStart = i + 1
		default:
			if i-labelStart >= maxLabelLen {
				return nil, false
			}
		}
		buf[i] = c
	}
	if labelStart == n {
		return nil, false // empty last label ("a.b.." after the one tolerated dot)
	}
	name := buf[:n]
	if s := t.exact.get(name); s != nil {
		return s, true
	}
	if firstDot > 0 {
		if s := t.wild.get(name[firstDot+1:]); s != nil {
			return s, true
		}
	}
	return nil, false
}

// All returns the sites in the order given to NewSites (for building per-site
// state such as tls.Configs). The slice is shared: do not modify it.
func (t *Sites) All() []*Site {
	if t == nil {
		return nil
	}
	return t.all
}

// canonicalSiteName validates a configured site name and returns its
// lower-case form without a trailing dot, and whether it is a wildcard.
func canonicalSiteName(name string) (string, bool, error) {
	orig := name
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if name == "" {
		return "", false, fmt.Errorf("site name %q is empty", orig)
	}
	if len(name) > maxNameLen {
		return "", false, fmt.Errorf("site name %.40q... is longer than %d bytes", orig, maxNameLen)
	}
	isWild := false
	rest := name
	if len(name) >= 2 && name[0] == '*' && name[1] == '.' {
		isWild, rest = true, name[2:]
	}
	b := make([]byte, 0, len(name))
	if isWild {
		b = append(b, '*', '.')
	}
	labels, labelStart := 1, 0
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c == '*' {
			return "", false, fmt.Errorf("site name %q: a wildcard must be \"*.\" followed by at least two labels", orig)
		}
		l := nameByte[c]
		switch l {
		case 0:
			return "", false, fmt.Errorf("site name %q: invalid byte %q at offset %d", orig, c, i+len(name)-len(rest))
		case '.':
			if i == labelStart {
				return "", false, fmt.Errorf("site name %q: empty label", orig)
			}
			labels++
			labelStart = i + 1
		default:
			if i-labelStart >= maxLabelLen {
				return "", false, fmt.Errorf("site name %q: label longer than %d bytes", orig, maxLabelLen)
			}
		}
		b = append(b, l)
	}
	if labelStart == len(rest) {
		return "", false, fmt.Errorf("site name %q: empty label", orig)
	}
	if isWild && labels < 2 {
		return "", false, fmt.Errorf("site name %q: a wildcard must be \"*.\" followed by at least two labels", orig)
	}
	return string(b), isWild, nil
}

// nameEntry is one slot of a nameTable; site == nil marks an empty slot.
type nameEntry struct {
	hash uint64
	name string
	site *Site
}

// nameTable is an open-addressing hash table keyed by the xxhash of a
// canonical name. A hit is confirmed by comparing the stored name: the hash
// alone never decides.
type nameTable struct {
	slots []nameEntry
	mask  uint64
}

// newNameTable builds a table at most half full, so probes stay short and
// always reach an empty slot. Names must be canonical and unique.
func newNameTable(entries []nameEntry) nameTable {
	if len(entries) == 0 {
		return nameTable{}
	}
	size := 2
	for size < 2*len(entries) {
		size <<= 1
	}
	t := nameTable{slots: make([]nameEntry, size), mask: uint64(size - 1)}
	for _, e := range entries {
		e.hash = xxhash.Sum64String(e.name)
		i := e.hash & t.mask
		for t.slots[i].site != nil {
			i = (i + 1) & t.mask
		}
		t.slots[i] = e
	}
	return t
}

// get returns the site stored under name (canonical form), or nil.
func (t *nameTable) get(name []byte) *Site {
	if len(t.slots) == 0 {
		return nil
	}
	h := xxhash.Sum64(name)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		e := &t.slots[i]
		if e.site == nil {
			return nil
		}
		if e.hash == h && e.name == string(name) {
			return e.site
		}
	}
}
