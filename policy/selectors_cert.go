package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// The TOML keys of the certificate selectors beyond common_name.
const (
	keyCommonNamePattern  = "common_name_pattern"
	keySANDNS             = "san_dns"
	keySANURI             = "san_uri"
	keySANEmail           = "san_email"
	keyOrganization       = "organization"
	keyOrganizationalUnit = "organizational_unit"
	keySerial             = "serial"
	keyFingerprint        = "fingerprint"
	keyClientCA           = "client_ca"
)

// leaf returns the identity of a valid certificate presented with the
// request, nil otherwise. The selectors on what only the certificate itself
// carries (SANs, O, OU) use it: a session token names the certificate by
// common name, fingerprint, serial and root only, so on a request that
// presents a token instead of the certificate they cannot tell (see
// leafOutcome).
func (in *Input) leaf() *verdict.Identity {
	if c := in.Cert; c != nil && c.Kind == verdict.Valid {
		return &c.Identity
	}
	return nil
}

// tokenStandsIn reports whether the request's identity is a session token
// standing in for a certificate not presented (as Subject decides).
func (in *Input) tokenStandsIn() bool {
	if c := in.Cert; c != nil && c.Kind != verdict.Missing {
		return false
	}
	return in.Token.standsIn()
}

// noLeaf is the outcome of a leaf-only selector on a request without a
// valid certificate: Unknown when a session token stands in for one (the
// certificate may well carry the value), NoMatch when there is no identity.
func (in *Input) noLeaf() Outcome {
	if in.tokenStandsIn() {
		return Unknown
	}
	return NoMatch
}

// outcome turns a definite answer into an Outcome.
func outcome(b bool) Outcome {
	if b {
		return Matched
	}
	return NoMatch
}

// commonNamePattern is { common_name_pattern = "sensor-*" }: the CN matches
// the glob (path.Match syntax: *, ?, [classes]; * does not cross a '/').
type commonNamePattern string

func parseCommonNamePattern(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	if _, err := path.Match(s, ""); err != nil {
		return nil, fmt.Errorf("malformed pattern %q (path.Match syntax: *, ?, [a-z], \\ escapes)", s)
	}
	return commonNamePattern(s), nil
}

func (commonNamePattern) Key() string            { return keyCommonNamePattern }
func (commonNamePattern) NeedsCertificate() bool { return true }
func (p commonNamePattern) String() string {
	return keyCommonNamePattern + " = " + strconv.Quote(string(p))
}

func (p commonNamePattern) Match(in *Input) bool {
	s, ok := in.Subject()
	if !ok {
		return false
	}
	m, _ := path.Match(string(p), s.CommonName)
	return m
}

// sanDNS is { san_dns = "meter-17.fleet.test" }: some DNS SAN of the leaf
// equals the name (case-insensitively, a trailing dot ignored), or, for
// "*.fleet.test", is exactly one label under fleet.test.
type sanDNS struct {
	name   string // lower-case; for a wildcard, the suffix ".fleet.test"
	wild   bool
	source string
}

func parseSANDNS(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	n := strings.ToLower(strings.TrimSuffix(s, "."))
	wild := strings.HasPrefix(n, "*.")
	rest := n
	if wild {
		n = n[1:]
		rest = n[1:]
	}
	if rest == "" || strings.Contains(rest, "*") || strings.Contains(rest, "..") || strings.HasPrefix(rest, ".") {
		// A leading dot ("this domain and its subdomains" to some tools)
		// would be an exact name no certificate carries.
		return nil, fmt.Errorf("%q is not a DNS name or a \"*.\" wildcard of one", s)
	}
	return sanDNS{name: n, wild: wild, source: s}, nil
}

func (sanDNS) Key() string            { return keySANDNS }
func (sanDNS) NeedsCertificate() bool { return true }
func (d sanDNS) String() string       { return keySANDNS + " = " + strconv.Quote(d.source) }

func (d sanDNS) Match(in *Input) bool { return d.Judge(in) == Matched }

// Judge is Unknown on a session token: it carries no SANs.
func (d sanDNS) Judge(in *Input) Outcome {
	id := in.leaf()
	if id == nil {
		return in.noLeaf()
	}
	for _, n := range id.DNSNames {
		n = strings.TrimSuffix(n, ".")
		if !d.wild {
			if strings.EqualFold(n, d.name) {
				return Matched
			}
			continue
		}
		if len(n) <= len(d.name) || !strings.EqualFold(n[len(n)-len(d.name):], d.name) {
			continue
		}
		if label := n[:len(n)-len(d.name)]; !strings.ContainsRune(label, '.') {
			return Matched
		}
	}
	return NoMatch
}

// sanURI is { san_uri = "spiffe://fleet.test/meter/*" }: some URI SAN of the
// leaf equals the value, or, when it ends in "/*", starts with what comes
// before the '*' and has something after it.
type sanURI struct {
	value  string // exact value, or the prefix ending in '/'
	prefix bool
}

func parseSANURI(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(s, "/*") {
		p := s[:len(s)-1]
		if strings.Contains(p, "*") || len(p) < 2 {
			return nil, fmt.Errorf("%q: only a final \"/*\" is a wildcard", s)
		}
		return sanURI{value: p, prefix: true}, nil
	}
	if strings.Contains(s, "*") {
		return nil, fmt.Errorf("%q: a wildcard is only allowed as a final \"/*\"", s)
	}
	return sanURI{value: s}, nil
}

func (sanURI) Key() string            { return keySANURI }
func (sanURI) NeedsCertificate() bool { return true }
func (u sanURI) String() string {
	if u.prefix {
		return keySANURI + " = " + strconv.Quote(u.value+"*")
	}
	return keySANURI + " = " + strconv.Quote(u.value)
}

func (u sanURI) Match(in *Input) bool { return u.Judge(in) == Matched }

// Judge is Unknown on a session token: it carries no SANs.
func (u sanURI) Judge(in *Input) Outcome {
	id := in.leaf()
	if id == nil {
		return in.noLeaf()
	}
	for _, s := range id.URIs {
		if s == u.value && !u.prefix || u.prefix && len(s) > len(u.value) && strings.HasPrefix(s, u.value) {
			return Matched
		}
	}
	return NoMatch
}

// sanEmail is { san_email = "ops@fleet.test" }: some email SAN of the leaf
// equals the address, case-insensitively.
type sanEmail string

func parseSANEmail(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	if i := strings.IndexByte(s, '@'); i <= 0 || i == len(s)-1 || strings.Count(s, "@") != 1 {
		return nil, fmt.Errorf("%q is not an email address", s)
	}
	return sanEmail(s), nil
}

func (sanEmail) Key() string            { return keySANEmail }
func (sanEmail) NeedsCertificate() bool { return true }
func (e sanEmail) String() string       { return keySANEmail + " = " + strconv.Quote(string(e)) }

func (e sanEmail) Match(in *Input) bool { return e.Judge(in) == Matched }

// Judge is Unknown on a session token: it carries no SANs.
func (e sanEmail) Judge(in *Input) Outcome {
	if id := in.leaf(); id != nil {
		return outcome(anyEqual(id.Emails, string(e), true))
	}
	return in.noLeaf()
}

// organization is { organization = "Acme Meters" }: one of the leaf
// subject's O values is exactly this.
type organization string

func parseOrganization(v any) (Selector, error) {
	s, err := parseString(v)
	return organization(s), err
}

func (organization) Key() string            { return keyOrganization }
func (organization) NeedsCertificate() bool { return true }
func (o organization) String() string       { return keyOrganization + " = " + strconv.Quote(string(o)) }

func (o organization) Match(in *Input) bool { return o.Judge(in) == Matched }

// Judge is Unknown on a session token: it carries no O.
func (o organization) Judge(in *Input) Outcome {
	if id := in.leaf(); id != nil {
		return outcome(anyEqual(id.Organization, string(o), false))
	}
	return in.noLeaf()
}

// organizationalUnit is { organizational_unit = "meters" }: one of the leaf
// subject's OU values is exactly this.
type organizationalUnit string

func parseOrganizationalUnit(v any) (Selector, error) {
	s, err := parseString(v)
	return organizationalUnit(s), err
}

func (organizationalUnit) Key() string            { return keyOrganizationalUnit }
func (organizationalUnit) NeedsCertificate() bool { return true }
func (o organizationalUnit) String() string {
	return keyOrganizationalUnit + " = " + strconv.Quote(string(o))
}

func (o organizationalUnit) Match(in *Input) bool { return o.Judge(in) == Matched }

// Judge is Unknown on a session token: it carries no OU.
func (o organizationalUnit) Judge(in *Input) Outcome {
	if id := in.leaf(); id != nil {
		return outcome(anyEqual(id.OrgUnit, string(o), false))
	}
	return in.noLeaf()
}

func anyEqual(vals []string, want string, fold bool) bool {
	for _, v := range vals {
		if v == want || fold && strings.EqualFold(v, want) {
			return true
		}
	}
	return false
}

// serial is { serial = "4f:1a:09" }: the leaf's serial number. Stored as
// lower-case hex without separators or leading zeros, the form of
// Subject.CertSerial.
type serial struct{ hex, source string }

// NormalizeSerial returns a serial written in hex (colons optional,
// case-insensitive, leading zeros ignored) as lower-case hex without
// separators or leading zeros, as verdict.Identity.SerialHex has it.
func NormalizeSerial(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if h == "" {
		return "", errors.New("empty serial")
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("serial %q is not hex (colons allowed)", s)
		}
	}
	if len(h) > 64 {
		return "", fmt.Errorf("serial %q is longer than 32 bytes", s)
	}
	h = strings.TrimLeft(h, "0")
	if h == "" {
		h = "0"
	}
	return h, nil
}

func parseSerial(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	h, err := NormalizeSerial(s)
	if err != nil {
		return nil, err
	}
	return serial{hex: h, source: s}, nil
}

func (serial) Key() string            { return keySerial }
func (serial) NeedsCertificate() bool { return true }
func (s serial) String() string       { return keySerial + " = " + strconv.Quote(s.source) }

func (s serial) Match(in *Input) bool { return s.Judge(in) == Matched }

// Judge is Unknown on a session token that does not record the serial.
func (s serial) Judge(in *Input) Outcome {
	sub, ok := in.Subject()
	if ok && sub.FromToken && sub.CertSerial == "" {
		return Unknown
	}
	return outcome(ok && sub.CertSerial == s.hex)
}

// fingerprint is { fingerprint = "9c0e…" }: the SHA-256 of the leaf's DER.
type fingerprint struct{ hex, source string } // hex: lower-case, 64 digits

// NormalizeFingerprint returns a SHA-256 fingerprint written as 64 hex
// digits (colons optional, case-insensitive) in lower case without colons.
func NormalizeFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if len(h) != 64 {
		return "", fmt.Errorf("fingerprint %q is not 64 hex digits (a SHA-256)", s)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("fingerprint %q is not hex", s)
	}
	return h, nil
}

func parseFingerprint(v any) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	h, err := NormalizeFingerprint(s)
	if err != nil {
		return nil, err
	}
	return fingerprint{hex: h, source: s}, nil
}

func (fingerprint) Key() string            { return keyFingerprint }
func (fingerprint) NeedsCertificate() bool { return true }
func (f fingerprint) String() string       { return keyFingerprint + " = " + strconv.Quote(f.source) }

func (f fingerprint) Match(in *Input) bool {
	sub, ok := in.Subject()
	return ok && sub.CertSHA256 == f.hex
}

// clientCA is { client_ca = "fleet-root" }: the [[client_cas]] entry the
// device's chain verified against is that one. Entries may share
// certificates (two product lines under one root, each with its own
// intermediate), so the entry is the most specific one: walking the
// verified path from the leaf's issuer up to the root, the first
// certificate that belongs to any entry decides, and the selector matches
// when its entry owns that certificate. From a session token, which records
// only the root: the root must be this entry's, and a root another entry
// also holds cannot decide (Unknown).
type clientCA struct {
	name   string
	own    [][32]byte // this entry's certificates (roots and intermediates)
	others [][32]byte // those of every other entry
	hex    []string   // own, lower-case hex: what a token carries
	oHex   []string   // others, the same
}

func parseClientCA(v any, env *Env) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	sums, ok := env.ClientCAs[s]
	if !ok {
		return nil, fmt.Errorf("no [[client_cas]] entry is named %q", s)
	}
	c := clientCA{name: s, own: sums}
	for _, sum := range sums {
		c.hex = append(c.hex, hex.EncodeToString(sum[:]))
	}
	for name, sums := range env.ClientCAs {
		if name == s {
			continue
		}
		for _, sum := range sums {
			c.others = append(c.others, sum)
			c.oHex = append(c.oHex, hex.EncodeToString(sum[:]))
		}
	}
	return c, nil
}

func (clientCA) Key() string            { return keyClientCA }
func (clientCA) NeedsCertificate() bool { return true }
func (c clientCA) String() string       { return keyClientCA + " = " + strconv.Quote(c.name) }

func (c clientCA) Match(in *Input) bool { return c.Judge(in) == Matched }

// Judge finds the most specific entry on the verified path; on a token,
// Unknown when the root is shared with another entry or not recorded.
func (c clientCA) Judge(in *Input) Outcome {
	if cert := in.Cert; cert != nil && cert.Kind != verdict.Missing {
		if cert.Kind != verdict.Valid || len(cert.Path) < 2 {
			return NoMatch
		}
		for i := 1; i < len(cert.Path); i++ {
			sum := &cert.Path[i].SHA256
			if hasSum(c.own, sum) {
				return Matched
			}
			if hasSum(c.others, sum) {
				return NoMatch // another entry is more specific
			}
		}
		return NoMatch
	}
	sub, ok := in.Subject()
	switch {
	case !ok:
		return NoMatch
	case sub.CertRoot == "":
		return Unknown
	case !anyEqual(c.hex, sub.CertRoot, false):
		return NoMatch
	case anyEqual(c.oHex, sub.CertRoot, false):
		return Unknown // the chain may have gone through the other entry
	}
	return Matched
}

func hasSum(sums [][32]byte, sum *[32]byte) bool {
	for i := range sums {
		if sums[i] == *sum {
			return true
		}
	}
	return false
}
