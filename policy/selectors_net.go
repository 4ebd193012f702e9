package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The TOML keys of the address and list selectors.
const (
	keyIP   = "ip"
	keyList = "list"
)

// ipRanges is { ip = ["10.0.0.0/8", "2001:db8::/32"] }: the device's address
// is in one of the ranges. An IPv4-mapped IPv6 address counts as its IPv4
// address.
type ipRanges struct {
	prefixes []netip.Prefix
	text     string
}

func parseIP(v any) (Selector, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want an array of CIDRs such as [\"10.0.0.0/8\"], got %s", typeName(v))
	}
	if len(arr) == 0 {
		return nil, fmt.Errorf("must list at least one CIDR")
	}
	r := ipRanges{}
	quoted := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("[%d]: want a CIDR string, got %s", i, typeName(e))
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %q is not a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\"", i, s)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("[%d]: %q has host bits set (did you mean %q?)", i, s, p.Masked().String())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("[%d]: %q is an IPv4-mapped range: write it as IPv4", i, s)
		}
		r.prefixes = append(r.prefixes, p)
		quoted = append(quoted, strconv.Quote(s))
	}
	r.text = keyIP + " = [" + strings.Join(quoted, ", ") + "]"
	return r, nil
}

func (ipRanges) Key() string            { return keyIP }
func (ipRanges) NeedsCertificate() bool { return false }
func (r ipRanges) String() string       { return r.text }

func (r ipRanges) Match(in *Input) bool {
	a := in.ClientIP.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	for _, p := range r.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// inList is { list = "quarantine" }: the device's value of the list's kind
// is in the list. The list itself is looked up by name in Input.Lists at
// each evaluation, so a reload of the list reaches connections opened
// before it; a list the newest configuration no longer has matches nothing.
type inList struct {
	name string
	kind ListKind
}

func parseList(v any, env *Env) (Selector, error) {
	s, err := parseString(v)
	if err != nil {
		return nil, err
	}
	kind, ok := env.Lists[s]
	if !ok {
		return nil, fmt.Errorf("no [[lists]] entry is named %q", s)
	}
	return inList{name: s, kind: kind}, nil
}

func (inList) Key() string              { return keyList }
func (l inList) NeedsCertificate() bool { return l.kind != ListIP }
func (l inList) String() string         { return keyList + " = " + strconv.Quote(l.name) }

// ListName returns the name of the list the selector consults.
func (l inList) ListName() string { return l.name }

func (l inList) Match(in *Input) bool { return l.Judge(in) == Matched }

// Judge is Unknown when a session token stands in for the certificate and
// does not carry the list's kind of value (a URI SAN; a serial on an older
// token).
func (l inList) Judge(in *Input) Outcome {
	list := in.Lists.Get(l.name)
	if list == nil || list.Kind != l.kind {
		return NoMatch
	}
	if l.kind == ListIP {
		return outcome(list.ContainsAddr(in.ClientIP))
	}
	if l.kind == ListSANURI {
		id := in.leaf()
		if id == nil {
			return in.noLeaf()
		}
		for _, u := range id.URIs {
			if list.Contains(u) {
				return Matched
			}
		}
		return NoMatch
	}
	sub, ok := in.Subject()
	if !ok {
		return NoMatch
	}
	switch l.kind {
	case ListCommonName:
		return outcome(list.Contains(sub.CommonName))
	case ListFingerprint:
		return outcome(list.Contains(sub.CertSHA256))
	case ListSerial:
		if sub.FromToken && sub.CertSerial == "" {
			return Unknown
		}
		return outcome(list.Contains(sub.CertSerial))
	}
	return NoMatch
}
