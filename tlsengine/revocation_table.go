package tlsengine

import (
	"crypto/rand"
	"encoding/binary"
	"math/big"
	"math/bits"
	"slices"
)

// revTable is the hash set behind a Revocation: (issuer, serial) → entry,
// open addressing with linear probing, at most half full. One probe
// sequence per lookup, no allocation, and compact enough for 100,000-entry
// CRLs (about 70 bytes per entry, all in four slices).
//
// Serials are hashed and compared as the big.Int's words (its absolute
// value) and sign, so nothing is converted at lookup. A hit is always
// confirmed against the stored issuer, sign and words: the hash only picks
// the slot.
type revTable struct {
	slots   []revSlot
	mask    uint64
	entries []revEntry
	words   []big.Word // serial magnitudes of all entries, back to back
	seed    uint64
}

// revSlot is one slot of the table; idx is 1 + the entry's index, 0 when
// the slot is empty.
type revSlot struct {
	hash uint64
	idx  uint32
}

// revEntry is one revoked serial: what a CRL says about it, or a denied
// serial (issuer anyIssuer).
type revEntry struct {
	at     int64  // revocation time, Unix seconds (CRL entries)
	off    uint32 // serial words are words[off : off+n]
	issuer uint32 // anyIssuer, or 1 + the index of the issuer in Revocation.issuers
	crl    uint32 // index into Revocation.crls (CRL entries)
	reason int16  // CRLReason code (CRL entries)
	n      uint16
	neg    bool
}

// anyIssuer is the issuer of denied serials, which apply whatever the
// issuer.
const anyIssuer = 0

// maxSerialWords bounds the serials the table holds: 64 bytes, far beyond
// RFC 5280's 20 octets. Longer serials cannot be stored (NewRevocation
// refuses them) and are never found.
const maxSerialWords = 64 * 8 / bits.UintSize

// newRevTable returns a table for n entries whose serials have words words
// in all. Its hash seed is random, so that which serials collide cannot be
// known in advance.
func newRevTable(n, words int) revTable {
	size := 2
	for size < 2*n {
		size <<= 1
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails on supported platforms
	return revTable{
		slots:   make([]revSlot, size),
		mask:    uint64(size - 1),
		entries: make([]revEntry, 0, n),
		words:   make([]big.Word, 0, words),
		seed:    binary.LittleEndian.Uint64(seed[:]),
	}
}

// serialOK reports whether serial fits in the table.
func serialOK(serial *big.Int) bool {
	return len(serial.Bits()) <= maxSerialWords
}

// revKey is a serial number ready for lookups: hashed once, then probed
// under each issuer.
type revKey struct {
	hash uint64
	neg  bool
	w    []big.Word
}

// key hashes serial's sign and words (its absolute value).
func (t *revTable) key(serial *big.Int) revKey {
	k := revKey{neg: serial.Sign() < 0, w: serial.Bits()}
	h := t.seed
	if k.neg {
		h ^= 1
	}
	for _, x := range k.w {
		h = mix64(h ^ uint64(x))
	}
	k.hash = h ^ uint64(len(k.w))<<32
	return k
}

// slotHash is the hash of k under issuer.
func slotHash(k *revKey, issuer uint32) uint64 {
	return mix64(k.hash ^ uint64(issuer)*0x9e3779b97f4a7c15)
}

// mix64 is the splitmix64 finalizer: every input bit affects every output
// bit.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// add stores e under k unless the table already holds that issuer and
// serial (the first one added is kept). It reports whether e was stored.
// The table must have been sized for it by newRevTable.
func (t *revTable) add(e revEntry, k revKey) bool {
	h := slotHash(&k, e.issuer)
	i := h & t.mask
	for ; t.slots[i].idx != 0; i = (i + 1) & t.mask {
		if t.slots[i].hash == h && t.equal(&t.entries[t.slots[i].idx-1], e.issuer, &k) {
			return false
		}
	}
	e.off, e.n, e.neg = uint32(len(t.words)), uint16(len(k.w)), k.neg
	t.words = append(t.words, k.w...)
	t.entries = append(t.entries, e)
	t.slots[i] = revSlot{hash: h, idx: uint32(len(t.entries))}
	return true
}

// get returns the entry of issuer and the serial of k, or nil.
func (t *revTable) get(issuer uint32, k *revKey) *revEntry {
	h := slotHash(k, issuer)
	for i := h & t.mask; t.slots[i].idx != 0; i = (i + 1) & t.mask {
		if t.slots[i].hash == h {
			if e := &t.entries[t.slots[i].idx-1]; t.equal(e, issuer, k) {
				return e
			}
		}
	}
	return nil
}

// equal reports whether e is issuer's serial k.
func (t *revTable) equal(e *revEntry, issuer uint32, k *revKey) bool {
	return e.issuer == issuer && e.neg == k.neg && slices.Equal(t.words[e.off:e.off+uint32(e.n)], k.w)
}

// maxTableEntries bounds a table: entry indexes and word offsets are 32-bit.
const maxTableEntries = (1<<32 - 1) / maxSerialWords
