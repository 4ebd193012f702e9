package policy

import (
	"bytes"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// ListKind is what the values of a [[lists]] entry are, and so which of the
// device's values the `list` selector looks up.
type ListKind uint8

// The list kinds, by their TOML names.
const (
	ListCommonName  ListKind = iota + 1 // "common_name": the leaf's CN
	ListFingerprint                     // "fingerprint": SHA-256 of the leaf DER, 64 hex digits
	ListSerial                          // "serial": the leaf's serial, hex, colons optional
	ListSANURI                          // "san_uri": any URI SAN of the leaf, exact
	ListIP                              // "ip": the device's address, exact (no CIDRs)
)

var listKindNames = [...]string{
	ListCommonName:  "common_name",
	ListFingerprint: "fingerprint",
	ListSerial:      "serial",
	ListSANURI:      "san_uri",
	ListIP:          "ip",
}

// String returns the kind's TOML name.
func (k ListKind) String() string {
	if k > 0 && int(k) < len(listKindNames) {
		return listKindNames[k]
	}
	return "list_kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseListKind parses a [[lists]] kind.
func ParseListKind(s string) (ListKind, error) {
	for i, n := range listKindNames {
		if i > 0 && s == n {
			return ListKind(i), nil
		}
	}
	return 0, fmt.Errorf("policy: unknown list kind %q (want common_name, fingerprint, serial, san_uri or ip)", s)
}

// List is one [[lists]] entry: a set of values of one kind. A lookup costs
// one xxhash of the value and, on average, about one probe; it never
// allocates. A hit is confirmed by comparing the stored value, so a hash
// collision never admits (or refuses) a device. A List is immutable once
// built and safe for concurrent use.
type List struct {
	Name string
	Kind ListKind
	set  valueSet
}

// Len returns the number of distinct values in the list.
func (l *List) Len() int { return l.set.n }

// ListBuilder adds values to a new List; Build finishes it. Values are
// normalized per kind (fingerprints and serials to lower-case hex without
// colons, addresses to their canonical form), so a list written by hand
// matches what the certificate carries.
type ListBuilder struct {
	name string
	kind ListKind
	data []byte   // the values, concatenated
	ends []uint32 // end offset of value i in data
}

// NewListBuilder starts a list; sizeHint is the expected number of values.
func NewListBuilder(name string, kind ListKind, sizeHint int) *ListBuilder {
	return &ListBuilder{name: name, kind: kind, ends: make([]uint32, 0, sizeHint), data: make([]byte, 0, sizeHint*16)}
}

// Add adds one value as written; it returns an error naming what is wrong
// with a value that is not of the list's kind.
func (b *ListBuilder) Add(value string) error {
	switch b.kind {
	case ListCommonName, ListSANURI:
		if value == "" {
			return fmt.Errorf("empty %s", b.kind)
		}
		b.data = append(b.data, value...)
	case ListFingerprint:
		h, err := NormalizeFingerprint(value)
		if err != nil {
			return err
		}
		b.data = append(b.data, h...)
	case ListSerial:
		h, err := NormalizeSerial(value)
		if err != nil {
			return err
		}
		b.data = append(b.data, h...)
	case ListIP:
		a, err := netip.ParseAddr(value)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%q is not an IP address (lists hold exact addresses, not CIDRs)", value)
		}
		a16 := a.Unmap().As16()
		b.data = append(b.data, a16[:]...)
	default:
		return fmt.Errorf("unknown list kind %d", b.kind)
	}
	if len(b.data) > 1<<32-1 {
		return fmt.Errorf("list %q is larger than 4 GiB", b.name)
	}
	b.ends = append(b.ends, uint32(len(b.data)))
	return nil
}

// addBytes is Add without a string copy for the kinds stored as written.
func (b *ListBuilder) addBytes(v []byte) error {
	if b.kind != ListCommonName && b.kind != ListSANURI {
		return b.Add(string(v))
	}
	if len(b.data)+len(v) > 1<<32-1 {
		return fmt.Errorf("list %q is larger than 4 GiB", b.name)
	}
	b.data = append(b.data, v...)
	b.ends = append(b.ends, uint32(len(b.data)))
	return nil
}

// Build returns the list. The builder must not be used afterwards.
func (b *ListBuilder) Build() *List {
	l := &List{Name: b.name, Kind: b.kind}
	l.set.build(b.data, b.ends)
	return l
}

// ParseList parses a list file's contents: one value per line, blank lines
// and lines starting with '#' ignored, a '#' after a space or tab starting a
// comment, surrounding spaces trimmed, and a UTF-8 byte-order mark (from a
// Windows editor) dropped: none of these may silently become part of a
// value no device has. A common name may hold spaces and '#' itself, so in
// a common_name list such a line is refused rather than guessed at. An
// error names the line (1-based) as "line N: …"; callers put the file name
// in front.
func ParseList(name string, kind ListKind, data []byte) (*List, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	b := NewListBuilder(name, kind, bytes.Count(data, []byte{'\n'})+1)
	line := 0
	for len(data) > 0 {
		line++
		i := bytes.IndexByte(data, '\n')
		var raw []byte
		if i < 0 {
			raw, data = data, nil
		} else {
			raw, data = data[:i], data[i+1:]
		}
		c := inlineComment(raw)
		v := bytes.TrimSpace(raw[:c])
		if len(v) == 0 || v[0] == '#' {
			continue
		}
		if c < len(raw) && kind == ListCommonName {
			return nil, &ListLineError{Line: line, Err: fmt.Errorf("%q: a comment after a value is ambiguous in a common_name list (a common name may hold \" #\"): put it on a line of its own, or list the name in values", bytes.TrimSpace(raw))}
		}
		if err := b.addBytes(v); err != nil {
			return nil, &ListLineError{Line: line, Err: err}
		}
	}
	return b.Build(), nil
}

// inlineComment is where a comment starts in a list line: at its first '#'
// after a space or tab, or at its end.
func inlineComment(line []byte) int {
	for i := 1; i < len(line); i++ {
		if line[i] == '#' && (line[i-1] == ' ' || line[i-1] == '\t') {
			return i
		}
	}
	return len(line)
}

// ListLineError is ParseList's error: the line of the value that is wrong.
type ListLineError struct {
	Line int
	Err  error
}

func (e *ListLineError) Error() string { return "line " + strconv.Itoa(e.Line) + ": " + e.Err.Error() }

// Unwrap returns what was wrong with the value.
func (e *ListLineError) Unwrap() error { return e.Err }

// Contains reports whether the list holds value, a string of the list's
// kind as the device presents it (a fingerprint and a serial in lower-case
// hex as verdict.Identity has them). Never allocates.
func (l *List) Contains(value string) bool {
	if l == nil {
		return false
	}
	return has(&l.set, xxhash.Sum64String(value), value)
}

// ContainsAddr reports whether an ip list holds the address (an
// IPv4-mapped IPv6 address is its IPv4 address; a zone is ignored).
func (l *List) ContainsAddr(a netip.Addr) bool {
	if l == nil || !a.IsValid() {
		return false
	}
	a16 := a.Unmap().As16()
	return has(&l.set, xxhash.Sum64(a16[:]), a16[:])
}

// valueSet is an open-addressing hash set of byte strings: the slots hold
// the index+1 of a value (0: empty) and the top bits of its hash, probed
// linearly; the table is at most half full.
type valueSet struct {
	data  []byte
	ends  []uint32
	slots []uint64 // hash's high 32 bits << 32 | index+1
	mask  uint64
	n     int
}

func (s *valueSet) value(i uint32) []byte {
	start := uint32(0)
	if i > 0 {
		start = s.ends[i-1]
	}
	return s.data[start:s.ends[i]]
}

func (s *valueSet) build(data []byte, ends []uint32) {
	size := uint64(16)
	if n := uint64(len(ends)) * 2; n > size {
		size = 1 << bits.Len64(n-1)
	}
	s.data, s.slots, s.mask = data, make([]uint64, size), size-1
	// Duplicates are dropped by compacting in place: kept values move down
	// (out never overtakes the value being read).
	kept := ends[:0]
	out := data[:0]
	start := uint32(0)
	for _, end := range ends {
		v := data[start:end]
		start = end
		h := xxhash.Sum64(v)
		s.data, s.ends = out, kept
		if !s.insertNew(h, v, uint32(len(kept))) {
			continue
		}
		out = append(out, v...)
		kept = append(kept, uint32(len(out)))
	}
	s.data, s.ends, s.n = out, kept, len(kept)
}

// insertNew adds the value v (hash h) as index idx, unless an equal value is
// already in the set; it reports whether it added it. The value itself is
// stored by the caller.
func (s *valueSet) insertNew(h uint64, v []byte, idx uint32) bool {
	tag := h >> 32 << 32
	for i := h & s.mask; ; i = (i + 1) & s.mask {
		e := s.slots[i]
		if e == 0 {
			s.slots[i] = tag | uint64(idx+1)
			return true
		}
		if e&^0xffffffff == tag && bytes.Equal(s.value(uint32(e)-1), v) {
			return false
		}
	}
}

// has reports whether the value v (hash h) is in the set: the hash finds
// the slot, and the stored value confirms it, so a collision never matches.
// One function for both spellings of a value, neither converted (no
// allocation on a lookup).
func has[V string | []byte](s *valueSet, h uint64, v V) bool {
	if len(s.slots) == 0 {
		return false
	}
	tag := h >> 32 << 32
	for i := h & s.mask; ; i = (i + 1) & s.mask {
		e := s.slots[i]
		if e == 0 {
			return false
		}
		if e&^0xffffffff == tag && string(s.value(uint32(e)-1)) == string(v) {
			return true
		}
	}
}

// ListSet holds the lists the `list` selector consults, by name. The
// gateway builds one per configuration and hands the newest to every
// evaluation (Input.Lists); a ListSet is immutable.
type ListSet struct {
	byName map[string]*List
}

// NewListSet returns a set of the lists; a later list of the same name
// replaces an earlier one.
func NewListSet(lists ...*List) *ListSet {
	s := &ListSet{byName: make(map[string]*List, len(lists))}
	for _, l := range lists {
		if l != nil {
			s.byName[l.Name] = l
		}
	}
	return s
}

// Get returns the list called name, nil when there is none.
func (s *ListSet) Get(name string) *List {
	if s == nil {
		return nil
	}
	return s.byName[name]
}
