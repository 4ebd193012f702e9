package tlsengine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"hash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

const (
	// defaultCacheCapacity is the number of verdicts kept when
	// NewVerdictCache is given no capacity: about one per device of a large
	// fleet.
	defaultCacheCapacity = 100000
	// maxCacheShards bounds lock contention: a lookup locks one shard.
	maxCacheShards = 64
	// minShardEntries keeps small caches from being split into shards too
	// small to hold their share (capacity is rounded down per shard).
	minShardEntries = 16
	// negativeTTL caps how long a refusal (UnknownAuthority, BadUsage) is
	// remembered. Why: a refusal that was caused by a CA not yet in its
	// window must not outlive the moment that CA becomes valid by much; a
	// minute still absorbs a misconfigured device reconnecting in a loop.
	negativeTTL = time.Minute
	// maxEntryBytes bounds what one cached verdict may hold: its leaf's
	// DER, identity and path (a fleet device's takes 1 to 3 KiB). A chain
	// whose verdict needs more is verified every time. Why: the chain is
	// the device's choice and crypto/tls accepts 256 KiB of certificates,
	// so a bound on the count alone would let distinct oversized chains
	// (refusals are cached too) pin 256 KiB per entry.
	maxEntryBytes = 16 << 10
	// stringBytes and certRefBytes are the sizes of a string header and of
	// a verdict.CertRef without what they point to, for verdictSize.
	stringBytes  = 16
	certRefBytes = 120
)

// VerdictCache remembers the verdicts of device chains so that a device that
// reconnects with the same chain skips path building and signature checks.
// It never skips the proof of key possession: crypto/tls checks
// CertificateVerify on every handshake, whatever the cache says.
//
// An entry belongs to one *Site, its Generation and its Revocation set (a
// reload that builds new sites or a new set starts cold for them; call Purge
// to release the old ones at once), never outlives the earliest NotAfter on
// the verified path, and is served only when the SHA-256 of the presented
// chain matches the one stored: the xxhash key picks the slot, but an
// attacker controls the chain bytes and xxhash is not collision resistant.
// Valid and Revoked verdicts are cached for their path's window,
// UnknownAuthority, BadUsage and RevocationUnknown for at most a minute; Missing, Malformed,
// TooManyIntermediates, Expired and NotYetValid are not cached.
//
// Verdicts served from the cache share their Identity slices and DER with
// every other connection of the same chain: treat them as read-only.
//
// It is bounded (at most its capacity, each entry at most 16 KiB of
// verdict) and safe for concurrent use. A nil *VerdictCache is valid and
// caches nothing.
type VerdictCache struct {
	shards   []cacheShard
	perShard int    // entries per shard
	seed     uint64 // per-cache xxhash seed, so colliding chains cannot be precomputed
	hits     atomic.Uint64
	misses   atomic.Uint64
}

// cacheShard is one lock's worth of the cache: a map from key to slot and a
// slot array evicted with the CLOCK algorithm.
type cacheShard struct {
	mu    sync.Mutex
	idx   map[uint64]int
	slots []cacheEntry
	hand  int
	_     [64]byte // keep neighbouring shards' locks off one cache line
}

// cacheEntry is one cached verdict.
type cacheEntry struct {
	key   uint64
	site  *Site
	gen   uint64
	rev   *Revocation       // the set the verdict was computed under
	sum   [sha256.Size]byte // SHA-256 over the length-prefixed chain DER
	from  time.Time         // the verdict holds from..until (inclusive)
	until time.Time
	v     verdict.Verdict
	ref   bool // CLOCK reference bit
}

// NewVerdictCache returns a cache holding at most capacity verdicts
// (capacity <= 0 means 100000).
func NewVerdictCache(capacity int) *VerdictCache {
	if capacity <= 0 {
		capacity = defaultCacheCapacity
	}
	n := 1
	for n*2 <= maxCacheShards && n*2*minShardEntries <= capacity {
		n *= 2
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails on supported platforms
	return &VerdictCache{
		shards:   make([]cacheShard, n),
		perShard: capacity / n,
		seed:     binary.LittleEndian.Uint64(seed[:]),
	}
}

// Verdict returns the verdict for chain (leaf first) on site at now: the
// cached one when the same chain was verified on the same site, generation
// and revocation set and its window still covers now, else VerifyChain's,
// which it then stores if cacheable.
func (c *VerdictCache) Verdict(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict {
	if c == nil || !worthCaching(site, chain) {
		return VerifyChain(site, chain, now)
	}
	if now.IsZero() {
		now = time.Now()
	}
	key := c.key(site, chain)
	sh := &c.shards[key%uint64(len(c.shards))]
	var sum [sha256.Size]byte
	haveSum := false
	if v, want, ok := sh.lookup(key, site, now); ok {
		sum, haveSum = chainSum(chain), true
		if sum == want {
			c.hits.Add(1)
			return v
		}
	}
	c.misses.Add(1)
	v, w := verifyChain(site, chain, now)
	switch v.Kind {
	case verdict.Valid, verdict.Revoked:
	case verdict.UnknownAuthority, verdict.BadUsage, verdict.RevocationUnknown:
		if limit := now.Add(negativeTTL); w.until.After(limit) {
			w.until = limit
		}
	default:
		return v
	}
	if now.Before(w.from) || now.After(w.until) {
		return v
	}
	if verdictSize(v) > maxEntryBytes {
		return v // not kept: verified at every handshake
	}
	if !haveSum {
		sum = chainSum(chain)
	}
	sh.store(c.perShard, cacheEntry{
		key: key, site: site, gen: site.Generation, rev: site.Revocation, sum: sum,
		from: w.from, until: w.until, v: ownCopy(v),
	}, now)
	return v
}

// verdictSize is about how many bytes a cached copy of v holds.
func verdictSize(v verdict.Verdict) int {
	id := &v.Identity
	n := len(id.DER) + len(v.Detail) + len(id.CommonName) + len(id.SerialHex) + len(id.SHA256) + len(id.IssuerCN)
	for _, list := range [...][]string{id.Organization, id.OrgUnit, id.DNSNames, id.URIs, id.Emails} {
		n += stringBytes * cap(list)
		for _, s := range list {
			n += len(s)
		}
	}
	for i := range v.Path {
		ref := &v.Path[i]
		n += certRefBytes + len(ref.Subject) + len(ref.RawIssuer)
		if ref.Serial != nil {
			n += 8 * len(ref.Serial.Bits())
		}
	}
	return n
}

// ownCopy returns v with its own copies of the bytes it shares with the
// presented certificates (the leaf's DER, the issuer names of its path).
// Why copy: crypto/tls parses a chain from one buffer, the whole
// Certificate message, and a slice of it keeps all of it alive.
func ownCopy(v verdict.Verdict) verdict.Verdict {
	v.Identity.DER = bytes.Clone(v.Identity.DER)
	if len(v.Path) > 0 {
		v.Path = slices.Clone(v.Path)
		for i := range v.Path {
			v.Path[i].RawIssuer = bytes.Clone(v.Path[i].RawIssuer)
		}
	}
	return v
}

// Purge drops every entry, for a CA or CRL reload (entries of replaced sites
// or sets are never served, but Purge releases them at once). Counters are
// kept.
func (c *VerdictCache) Purge() {
	if c == nil {
		return
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.slots) // release the sites and identities they point to
		sh.slots = sh.slots[:0]
		clear(sh.idx)
		sh.hand = 0
		sh.mu.Unlock()
	}
}

// Stats returns how many lookups were served from the cache and how many
// were verified. Chains that are never cached (empty, too long, on a site
// without client CAs) count as neither.
func (c *VerdictCache) Stats() (hits, misses uint64) {
	if c == nil {
		return 0, 0
	}
	return c.hits.Load(), c.misses.Load()
}

// len returns the number of entries, stale ones included.
func (c *VerdictCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.slots)
		sh.mu.Unlock()
	}
	return n
}

// worthCaching reports whether a chain goes through the cache at all; the
// others get a verdict from VerifyChain in a few comparisons.
func worthCaching(site *Site, chain []*x509.Certificate) bool {
	if len(chain) == 0 || site == nil || site.Roots == nil {
		return false
	}
	if _, tooMany := checkCount(site, len(chain), nil); tooMany {
		return false
	}
	for _, c := range chain {
		if c == nil || len(c.Raw) == 0 {
			return false
		}
	}
	return true
}

// key is the seeded xxhash of the site's name, generation and revocation
// set's generation and of every certificate's DER, each length-prefixed so
// that boundaries count.
func (c *VerdictCache) key(site *Site, chain []*x509.Certificate) uint64 {
	var d xxhash.Digest
	d.ResetWithSeed(c.seed)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], site.Generation)
	_, _ = d.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], site.Revocation.Generation())
	_, _ = d.Write(b[:])
	binary.LittleEndian.PutUint32(b[:4], uint32(len(site.Name)))
	_, _ = d.Write(b[:4])
	_, _ = d.WriteString(site.Name)
	for _, cert := range chain {
		binary.LittleEndian.PutUint32(b[:4], uint32(len(cert.Raw)))
		_, _ = d.Write(b[:4])
		_, _ = d.Write(cert.Raw)
	}
	return d.Sum64()
}

// chainHasher is a reusable SHA-256 state with its scratch space, pooled so
// that a cache hit does not allocate.
type chainHasher struct {
	h   hash.Hash
	len [4]byte
	sum [sha256.Size]byte
}

var chainHashers = sync.Pool{New: func() any { return &chainHasher{h: sha256.New()} }}

// chainSum is the SHA-256 over the chain's length-prefixed DER: what a cache
// hit must match.
func chainSum(chain []*x509.Certificate) [sha256.Size]byte {
	ch := chainHashers.Get().(*chainHasher)
	ch.h.Reset()
	for _, c := range chain {
		binary.BigEndian.PutUint32(ch.len[:], uint32(len(c.Raw)))
		ch.h.Write(ch.len[:])
		ch.h.Write(c.Raw)
	}
	ch.h.Sum(ch.sum[:0])
	sum := ch.sum
	chainHashers.Put(ch)
	return sum
}

// lookup returns the entry stored under key if it belongs to site's current
// generation and revocation set and its window covers now, with the SHA-256 the caller must
// confirm. It marks the entry as recently used.
func (s *cacheShard) lookup(key uint64, site *Site, now time.Time) (verdict.Verdict, [sha256.Size]byte, bool) {
	s.mu.Lock()
	i, ok := s.idx[key]
	if !ok {
		s.mu.Unlock()
		return verdict.Verdict{}, [sha256.Size]byte{}, false
	}
	e := &s.slots[i]
	if e.site != site || e.gen != site.Generation || e.rev != site.Revocation || now.Before(e.from) || now.After(e.until) {
		s.mu.Unlock()
		return verdict.Verdict{}, [sha256.Size]byte{}, false
	}
	e.ref = true
	v, sum := e.v, e.sum
	s.mu.Unlock()
	return v, sum, true
}

// store puts e under e.key, replacing what is there (a stale entry, or one
// whose hash collided), else in a free slot, else in place of the first
// entry the CLOCK hand finds unreferenced or past its window.
func (s *cacheShard) store(limit int, e cacheEntry, now time.Time) {
	if limit <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx == nil {
		s.idx = make(map[uint64]int)
	}
	if i, ok := s.idx[e.key]; ok {
		s.slots[i] = e
		return
	}
	if len(s.slots) < limit {
		s.idx[e.key] = len(s.slots)
		s.slots = append(s.slots, e)
		return
	}
	for {
		if s.hand >= len(s.slots) {
			s.hand = 0
		}
		old := &s.slots[s.hand]
		if old.ref && !now.After(old.until) {
			old.ref = false
			s.hand++
			continue
		}
		delete(s.idx, old.key)
		*old = e
		s.idx[e.key] = s.hand
		s.hand++
		return
	}
}
