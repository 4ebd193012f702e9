package policy

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func TestTokenCache(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	tok := mustMint(t, ks, baseClaims())
	exp := t0.Unix() + 3600

	type step struct {
		now      time.Time
		aud, iss string
		wantErr  error
		wantHit  bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"miss then hit", []step{{now: t0}, {now: t0.Add(time.Minute), wantHit: true}}},
		{"a hit never outlives exp", []step{{now: t0}, {now: time.Unix(exp+29, 0), wantHit: true}, {now: time.Unix(exp+30, 0), wantErr: ErrTokenExpired}}},
		{"a hit is checked against nbf", []step{{now: t0}, {now: t0.Add(-time.Hour), wantErr: ErrTokenNotYetValid}}},
		{"never crosses applications", []step{{now: t0}, {now: t0, aud: DeriveAUD("other"), wantErr: ErrAudience}, {now: t0, wantHit: true}}},
		{"never crosses issuers", []step{{now: t0}, {now: t0, iss: "https://other.test", wantErr: ErrIssuer}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := NewTokenCache(64)
			var first *Claims
			for i, s := range tt.steps {
				aud, iss := s.aud, s.iss
				if aud == "" {
					aud = testAUD
				}
				if iss == "" {
					iss = testIssuer
				}
				before := cache.Stats()
				c, err := ks.VerifyCached(cache, tok, aud, iss, s.now)
				after := cache.Stats()
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) || c != nil {
						t.Fatalf("step %d: %v, %v; want %v", i, c, err, s.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if hit := after.Hits == before.Hits+1; hit != s.wantHit {
					t.Errorf("step %d: hit = %v, want %v (%+v → %+v)", i, hit, s.wantHit, before, after)
				}
				if first == nil {
					first = c
				} else if s.wantHit && c != first {
					t.Errorf("step %d: a hit returned other claims", i)
				}
			}
		})
	}
}

func TestTokenCacheExpiredEntryDropped(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	cache := NewTokenCache(64)
	tok := mustMint(t, ks, baseClaims())
	if _, err := ks.VerifyCached(cache, tok, testAUD, testIssuer, t0); err != nil {
		t.Fatal(err)
	}
	later := time.Unix(t0.Unix()+3600+30, 0)
	if _, err := ks.VerifyCached(cache, tok, testAUD, testIssuer, later); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("err = %v", err)
	}
	if s := cache.Stats(); s.Entries != 0 {
		t.Errorf("expired entry kept: %+v", s)
	}
}

// TestTokenCacheCollision plants an entry under another token's xxhash: the
// hash alone must never admit.
func TestTokenCacheCollision(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	cache := NewTokenCache(64)
	victim := mustMint(t, ks, baseClaims())
	if _, err := ks.VerifyCached(cache, victim, testAUD, testIssuer, t0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		attacker string
		want     error
	}{
		{"garbage with the victim's hash", "garbage.garbage.garbage", ErrMalformedToken},
		{"a forged token with the victim's hash", victim[:len(victim)-4] + "AAAA", ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Pretend the attacker found a collision: move the victim's
			// entry under the attacker token's hash.
			hv, ha := xxhash.Sum64String(victim), xxhash.Sum64String(tt.attacker)
			sv, sa := cache.shard(hv), cache.shard(ha)
			sv.mu.Lock()
			e, ok := sv.m[hv]
			sv.mu.Unlock()
			// Without the victim's entry there is nothing to plant, and
			// the attacker's refusal below would prove nothing.
			if !ok {
				t.Fatalf("victim's token is not cached under its hash %#x", hv)
			}
			if e.token != victim || e.ks != ks || e.claims == nil {
				t.Fatalf("victim's cache entry is not the victim's: token match %v, same key set %v, claims %v",
					e.token == victim, e.ks == ks, e.claims)
			}
			sa.mu.Lock()
			sa.m[ha] = e
			sa.mu.Unlock()
			c, err := ks.VerifyCached(cache, tt.attacker, testAUD, testIssuer, t0)
			if !errors.Is(err, tt.want) || c != nil {
				t.Errorf("VerifyCached = %v, %v; want %v", c, err, tt.want)
			}
		})
	}
}

func TestTokenCacheOtherKeySet(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyES)
	cache := NewTokenCache(64)
	tok := mustMint(t, ks, baseClaims())
	if _, err := ks.VerifyCached(cache, tok, testAUD, testIssuer, t0); err != nil {
		t.Fatal(err)
	}
	// After a rotation that drops the key, the cached entry must not admit.
	rotated := mustKeySet(t, keyEd)
	if _, err := rotated.VerifyCached(cache, tok, testAUD, testIssuer, t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("err = %v, want ErrUnknownKey", err)
	}
}

func TestTokenCacheBounded(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyEd)
	tests := []struct {
		name     string
		capacity int
		tokens   int
		maxLen   int
	}{
		{"one shard", 8, 20, 8},
		{"sharded", 256, 400, 256},
		{"disabled", 0, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := NewTokenCache(tt.capacity)
			for i := range tt.tokens {
				c := baseClaims()
				c.IdentityNonce = fmt.Sprintf("%032x", i)
				tok := mustMint(t, ks, c)
				if _, err := ks.VerifyCached(cache, tok, testAUD, testIssuer, t0); err != nil {
					t.Fatal(err)
				}
			}
			s := cache.Stats()
			if s.Entries > tt.maxLen {
				t.Errorf("%d entries, capacity %d", s.Entries, tt.maxLen)
			}
			if tt.capacity > 0 && s.Evictions == 0 {
				t.Errorf("no evictions: %+v", s)
			}
			if s.Misses != uint64(tt.tokens) && tt.capacity > 0 {
				t.Errorf("misses = %d, want %d", s.Misses, tt.tokens)
			}
			cache.Purge()
			if s := cache.Stats(); s.Entries != 0 {
				t.Errorf("after Purge: %+v", s)
			}
		})
	}
}

func TestTokenCacheNil(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyEd)
	tok := mustMint(t, ks, baseClaims())
	var cache *TokenCache
	if _, err := ks.VerifyCached(cache, tok, testAUD, testIssuer, t0); err != nil {
		t.Fatal(err)
	}
	cache.Purge()
	if s := cache.Stats(); s != (CacheStats{}) {
		t.Errorf("nil cache stats %+v", s)
	}
}

func TestTokenCacheConcurrent(t *testing.T) {
	testKeys(t)
	ks := mustKeySet(t, keyEd)
	cache := NewTokenCache(512)
	toks := make([]string, 8)
	for i := range toks {
		c := baseClaims()
		c.CommonName = fmt.Sprintf("sensor-%04d", i)
		toks[i] = mustMint(t, ks, c)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				tok := toks[(g+i)%len(toks)]
				c, err := ks.VerifyCached(cache, tok, testAUD, testIssuer, t0)
				if err != nil || c.CommonName != fmt.Sprintf("sensor-%04d", (g+i)%len(toks)) {
					t.Errorf("VerifyCached: %v, %v", c, err)
					return
				}
				if i%25 == 0 {
					cache.Purge()
					_ = cache.Stats()
				}
			}
		}()
	}
	wg.Wait()
}

func TestTokenCacheEvictsExpiredFirst(t *testing.T) {
	tests := []struct {
		name    string
		expired int // index of the one expired entry, -1: none
	}{
		{"an expired entry is the victim", 3},
		{"no expired entry: any one goes", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh := &cacheShard{m: map[uint64]cacheEntry{}}
			for i := range 8 {
				exp := t0.Unix() + 3600
				if i == tt.expired {
					exp = t0.Unix() - 3600
				}
				sh.m[uint64(i)] = cacheEntry{token: fmt.Sprint(i), claims: &Claims{Exp: exp}}
			}
			sh.evictOne(t0)
			if len(sh.m) != 7 || sh.evictions != 1 {
				t.Fatalf("%d entries, %d evictions", len(sh.m), sh.evictions)
			}
			if _, ok := sh.m[uint64(tt.expired)]; tt.expired >= 0 && ok {
				t.Error("the expired entry survived")
			}
		})
	}
}
