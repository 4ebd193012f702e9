package policy

import (
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// TokenCache remembers tokens that verified, so that a token presented again
// costs a map lookup instead of a signature check. It is bounded, sharded
// for concurrency, and safe for concurrent use. The zero value and a nil
// *TokenCache are valid, disabled caches.
//
// Entries are found by the xxhash of the token and confirmed by comparing
// the whole token: xxhash is not collision resistant and the token is chosen
// by the client, so the hash alone must never admit anything. (The
// comparison can only be reached by a token with the same 64-bit hash as a
// cached one, which an attacker who does not know the cached token cannot
// aim at.)
//
// A hit re-checks exp, nbf, aud and iss against the caller's values, so a
// cached token never outlives its exp and never admits to another
// application, and the entry must come from the same *KeySet, so a key
// rotation that drops a key drops its tokens too.
type TokenCache struct {
	shards   []cacheShard
	perShard int
}

type cacheShard struct {
	mu        sync.Mutex
	m         map[uint64]cacheEntry
	hits      uint64
	misses    uint64
	evictions uint64
	_         [16]byte // 64 bytes a shard: neighbouring locks on separate cache lines
}

type cacheEntry struct {
	token  string // a private copy of the whole token
	ks     *KeySet
	claims *Claims
}

// CacheStats are a TokenCache's counters since it was created (or purged,
// for Entries).
type CacheStats struct {
	Hits, Misses, Evictions uint64
	Entries                 int
}

// NewTokenCache returns a cache holding at most capacity tokens (rounded up
// to a multiple of the shard count). capacity <= 0 returns a disabled cache.
func NewTokenCache(capacity int) *TokenCache {
	if capacity <= 0 {
		return &TokenCache{}
	}
	n := 16
	if capacity < 256 {
		n = 1
	}
	c := &TokenCache{shards: make([]cacheShard, n), perShard: (capacity + n - 1) / n}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]cacheEntry)
	}
	return c
}

func (c *TokenCache) shard(h uint64) *cacheShard {
	return &c.shards[h%uint64(len(c.shards))]
}

// get returns the cached claims of token if it was verified by ks and still
// passes the claim checks for aud, iss and now. An expired entry is dropped.
func (c *TokenCache) get(ks *KeySet, token, aud, iss string, now time.Time) (*Claims, bool) {
	if c == nil || len(c.shards) == 0 {
		return nil, false
	}
	h := xxhash.Sum64String(token)
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[h]
	if !ok || e.token != token || e.ks != ks {
		sh.misses++
		return nil, false
	}
	if err := e.claims.check(aud, iss, now); err != nil {
		if now.Unix() >= e.claims.Exp+skewSeconds {
			delete(sh.m, h)
		}
		sh.misses++
		return nil, false
	}
	sh.hits++
	return e.claims, true
}

// put stores the claims of a token that ks verified.
func (c *TokenCache) put(ks *KeySet, token string, claims *Claims, now time.Time) {
	if c == nil || len(c.shards) == 0 {
		return
	}
	h := xxhash.Sum64String(token)
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[h]; !ok && len(sh.m) >= c.perShard {
		sh.evictOne(now)
	}
	// A colliding entry is replaced: the newest verified token wins.
	sh.m[h] = cacheEntry{token: strings.Clone(token), ks: ks, claims: claims}
}

// evictOne removes one entry: an expired one among the first few the map's
// randomised iteration yields, else the first of them. Bounded work per
// insertion, whatever the shard size.
func (sh *cacheShard) evictOne(now time.Time) {
	const probe = 8
	t := now.Unix()
	var victim uint64
	i := 0
	for h, e := range sh.m {
		if i == 0 {
			victim = h
		}
		if t >= e.claims.Exp+skewSeconds {
			victim = h
			break
		}
		i++
		if i == probe {
			break
		}
	}
	delete(sh.m, victim)
	sh.evictions++
}

// Purge drops every entry (the counters are kept).
func (c *TokenCache) Purge() {
	if c == nil {
		return
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.mu.Unlock()
	}
}

// Stats returns the cache's counters.
func (c *TokenCache) Stats() CacheStats {
	var s CacheStats
	if c == nil {
		return s
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		s.Hits += sh.hits
		s.Misses += sh.misses
		s.Evictions += sh.evictions
		s.Entries += len(sh.m)
		sh.mu.Unlock()
	}
	return s
}

// VerifyCached is Verify with a cache in front: a token this KeySet verified
// before is answered from cache (after the exp / nbf / aud / iss checks),
// any other is verified and, if good, remembered. cache may be nil. The
// returned claims may be shared with other callers: do not modify them.
func (ks *KeySet) VerifyCached(cache *TokenCache, token, aud, iss string, now time.Time) (*Claims, error) {
	if len(token) > MaxTokenLen {
		return ks.Verify(token, aud, iss, now)
	}
	if c, ok := cache.get(ks, token, aud, iss, now); ok {
		return c, nil
	}
	c, err := ks.Verify(token, aud, iss, now)
	if err != nil {
		return nil, err
	}
	cache.put(ks, token, c, now)
	return c, nil
}
