package tlsengine

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// vtStep is one call to VerdictCache.Verdict in a scenario, with what it must
// return and whether it must be served from the cache.
type vtStep struct {
	before func(c *VerdictCache) // optional: runs before the call
	site   *Site
	chain  []*x509.Certificate
	at     time.Time
	want   verdict.Kind
	hit    bool
	counts bool // the call must count as a hit or a miss (false: bypass)
}

func TestVerdictCache(t *testing.T) {
	p := vtNewPKI(t)
	chain := vtChain(p.device, p.inter)
	now := vtNow

	shortOpts := pki.Device("sensor-short")
	shortOpts.NotAfter = now.Add(time.Hour)
	short := vtChain(p.inter.MustIssue(shortOpts), p.inter)
	shortEnd := short[0].NotAfter

	shortRootOpts := pki.Root("Short Root")
	shortRootOpts.NotAfter = now.Add(time.Hour)
	shortRoot := pki.MustRoot(shortRootOpts)
	shortRootInter := shortRoot.MustIssue(pki.Intermediate("Short Root Intermediate"))
	underShortRoot := vtChain(shortRootInter.MustIssue(pki.Device("sensor-sr")), shortRootInter)
	shortRootSite := vtSite(t, "devices.fleet.test", shortRoot)

	futureOpts := pki.Device("sensor-future")
	futureOpts.NotBefore = now.Add(time.Hour)
	future := vtChain(p.inter.MustIssue(futureOpts), p.inter)
	rogue := vtChain(pki.MustRoot(pki.Device("rogue")))
	otherSite := vtSite(t, "other.fleet.test", p.other)

	genSite := vtSite(t, "devices.fleet.test", p.root)
	copied := *p.site

	cases := []struct {
		name  string
		steps []vtStep
	}{
		{name: "hit", steps: []vtStep{
			{site: p.site, chain: chain, at: now, want: verdict.Valid, counts: true},
			{site: p.site, chain: chain, at: now.Add(time.Minute), want: verdict.Valid, hit: true, counts: true},
		}},
		{name: "expires at the leaf's NotAfter", steps: []vtStep{
			{site: p.site, chain: short, at: now, want: verdict.Valid, counts: true},
			{site: p.site, chain: short, at: shortEnd, want: verdict.Valid, hit: true, counts: true},
			{site: p.site, chain: short, at: shortEnd.Add(time.Second), want: verdict.Expired, counts: true},
			{site: p.site, chain: short, at: shortEnd.Add(2 * time.Second), want: verdict.Expired, counts: true},
		}},
		{name: "expires at the root's NotAfter", steps: []vtStep{
			{site: shortRootSite, chain: underShortRoot, at: now, want: verdict.Valid, counts: true},
			{site: shortRootSite, chain: underShortRoot, at: shortRoot.Cert.NotAfter.Add(time.Second), want: verdict.Expired, counts: true},
		}},
		{name: "clock before the chain's NotBefore", steps: []vtStep{
			{site: p.site, chain: chain, at: now, want: verdict.Valid, counts: true},
			{site: p.site, chain: chain, at: p.device.Cert.NotBefore.Add(-time.Second), want: verdict.NotYetValid, counts: true},
		}},
		{name: "generation change invalidates", steps: []vtStep{
			{site: genSite, chain: chain, at: now, want: verdict.Valid, counts: true},
			{before: func(*VerdictCache) { genSite.Generation++ }, site: genSite, chain: chain, at: now, want: verdict.Valid, counts: true},
			{site: genSite, chain: chain, at: now, want: verdict.Valid, hit: true, counts: true},
		}},
		{name: "a rebuilt site starts cold", steps: []vtStep{
			{site: p.site, chain: chain, at: now, want: verdict.Valid, counts: true},
			{site: &copied, chain: chain, at: now, want: verdict.Valid, counts: true},
		}},
		{name: "sites never share entries", steps: []vtStep{
			{site: p.site, chain: chain, at: now, want: verdict.Valid, counts: true},
			{site: otherSite, chain: chain, at: now, want: verdict.UnknownAuthority, counts: true},
			{site: p.site, chain: chain, at: now, want: verdict.Valid, hit: true, counts: true},
			{site: otherSite, chain: chain, at: now, want: verdict.UnknownAuthority, hit: true, counts: true},
		}},
		{name: "purge", steps: []vtStep{
			{site: p.site, chain: chain, at: now, want: verdict.Valid, counts: true},
			{before: (*VerdictCache).Purge, site: p.site, chain: chain, at: now, want: verdict.Valid, counts: true},
			{site: p.site, chain: chain, at: now, want: verdict.Valid, hit: true, counts: true},
		}},
		{name: "refusal remembered for a minute", steps: []vtStep{
			{site: p.site, chain: rogue, at: now, want: verdict.UnknownAuthority, counts: true},
			{site: p.site, chain: rogue, at: now.Add(30 * time.Second), want: verdict.UnknownAuthority, hit: true, counts: true},
			{site: p.site, chain: rogue, at: now.Add(2 * time.Minute), want: verdict.UnknownAuthority, counts: true},
		}},
		{name: "not yet valid is not cached", steps: []vtStep{
			{site: p.site, chain: future, at: now, want: verdict.NotYetValid, counts: true},
			{site: p.site, chain: future, at: now, want: verdict.NotYetValid, counts: true},
		}},
		{name: "missing, too many and no CAs bypass the cache", steps: []vtStep{
			{site: p.site, chain: nil, at: now, want: verdict.Missing},
			{site: p.site, chain: vtChain(p.device, p.inter, p.inter, p.inter, p.inter, p.inter), at: now, want: verdict.TooManyIntermediates},
			{site: vtSite(t, "open.fleet.test"), chain: chain, at: now, want: verdict.UnknownAuthority},
			{site: nil, chain: chain, at: now, want: verdict.UnknownAuthority},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewVerdictCache(64)
			for i, st := range tc.steps {
				if st.before != nil {
					st.before(c)
				}
				hits0, misses0 := c.Stats()
				v := c.Verdict(st.site, st.chain, st.at)
				hits, misses := c.Stats()
				if v.Kind != st.want {
					t.Fatalf("step %d: kind = %v, want %v (detail %q)", i, v.Kind, st.want, v.Detail)
				}
				gotHit, gotMiss := hits-hits0, misses-misses0
				switch {
				case !st.counts && gotHit+gotMiss != 0:
					t.Fatalf("step %d: counted %d hits, %d misses; want a bypass", i, gotHit, gotMiss)
				case st.counts && st.hit && (gotHit != 1 || gotMiss != 0):
					t.Fatalf("step %d: counted %d hits, %d misses; want a hit", i, gotHit, gotMiss)
				case st.counts && !st.hit && (gotHit != 0 || gotMiss != 1):
					t.Fatalf("step %d: counted %d hits, %d misses; want a miss", i, gotHit, gotMiss)
				}
				if len(st.chain) > 0 && v.Identity.CommonName != st.chain[0].Subject.CommonName {
					t.Fatalf("step %d: identity CN %q, want %q", i, v.Identity.CommonName, st.chain[0].Subject.CommonName)
				}
			}
		})
	}
}

func TestVerdictCacheNil(t *testing.T) {
	p := vtNewPKI(t)
	var c *VerdictCache
	for i := 0; i < 2; i++ {
		if v := c.Verdict(p.site, vtChain(p.device, p.inter), vtNow); v.Kind != verdict.Valid {
			t.Fatalf("kind = %v (%s)", v.Kind, v.Detail)
		}
	}
	c.Purge()
	if h, m := c.Stats(); h != 0 || m != 0 {
		t.Fatalf("Stats = %d, %d", h, m)
	}
}

// TestVerdictCacheNeedsSHA256 plants what an xxhash collision would produce:
// an entry under the key of one chain holding the Valid verdict of another.
// The cache must not hand it out.
func TestVerdictCacheNeedsSHA256(t *testing.T) {
	p := vtNewPKI(t)
	good := vtChain(p.device, p.inter)
	rogue := vtChain(pki.MustRoot(pki.Device("sensor-0001")))
	c := NewVerdictCache(64)

	cases := []struct {
		name  string
		chain []*x509.Certificate
		plant func(key uint64) cacheEntry
		want  verdict.Kind
	}{
		{name: "colliding chain gets no stored Valid", chain: rogue, want: verdict.UnknownAuthority, plant: func(key uint64) cacheEntry {
			v := VerifyChain(p.site, good, vtNow)
			return cacheEntry{key: key, site: p.site, gen: p.site.Generation, sum: chainSum(good),
				from: vtNow.Add(-time.Hour), until: vtNow.Add(time.Hour), v: v}
		}},
		{name: "corrupted checksum is re-verified", chain: good, want: verdict.Valid, plant: func(key uint64) cacheEntry {
			sum := chainSum(good)
			sum[0] ^= 1
			return cacheEntry{key: key, site: p.site, gen: p.site.Generation, sum: sum,
				from: vtNow.Add(-time.Hour), until: vtNow.Add(time.Hour),
				v: verdict.Verdict{Kind: verdict.Valid, Identity: verdict.Identity{CommonName: "planted"}}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Purge()
			key := c.key(p.site, tc.chain)
			sh := &c.shards[key%uint64(len(c.shards))]
			sh.store(c.perShard, tc.plant(key), vtNow)
			if _, _, found := sh.lookup(key, p.site, vtNow); !found {
				t.Fatal("planted entry not found by key")
			}
			h0, m0 := c.Stats()
			v := c.Verdict(p.site, tc.chain, vtNow)
			h1, m1 := c.Stats()
			if v.Kind != tc.want || v.Identity.CommonName == "planted" {
				t.Fatalf("kind = %v, CN %q; want %v from a fresh verification", v.Kind, v.Identity.CommonName, tc.want)
			}
			if h1 != h0 || m1 != m0+1 {
				t.Fatalf("counted %d hits, %d misses; want one miss", h1-h0, m1-m0)
			}
			// The fresh verdict replaced the planted entry.
			if v2 := c.Verdict(p.site, tc.chain, vtNow); v2.Kind != tc.want {
				t.Fatalf("second call: kind = %v", v2.Kind)
			}
			if h2, _ := c.Stats(); h2 != h1+1 {
				t.Fatal("second call was not a hit")
			}
		})
	}
}

func TestVerdictCacheKeyBoundaries(t *testing.T) {
	c := NewVerdictCache(1)
	site := &Site{Name: "a.fleet.test", Generation: 7}
	mk := func(parts ...string) []*x509.Certificate {
		out := make([]*x509.Certificate, len(parts))
		for i, s := range parts {
			out[i] = &x509.Certificate{Raw: []byte(s)}
		}
		return out
	}
	cases := []struct {
		name string
		a, b []*x509.Certificate
	}{
		{name: "split differently", a: mk("ab", "c"), b: mk("a", "bc")},
		{name: "empty certificate moved", a: mk("abc", ""), b: mk("", "abc")},
		{name: "reordered", a: mk("x", "y"), b: mk("y", "x")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if c.key(site, tc.a) == c.key(site, tc.b) {
				t.Error("xxhash keys equal")
			}
			if chainSum(tc.a) == chainSum(tc.b) {
				t.Error("SHA-256 sums equal")
			}
		})
	}
	other := *site
	other.Generation++
	if c.key(site, mk("x")) == c.key(&other, mk("x")) {
		t.Error("generation does not change the key")
	}
	other.Generation, other.Name = site.Generation, "b.fleet.test"
	if c.key(site, mk("x")) == c.key(&other, mk("x")) {
		t.Error("site name does not change the key")
	}
}

// vtDevices issues n distinct device chains under p's intermediate.
func vtDevices(p *vtPKI, n int) [][]*x509.Certificate {
	out := make([][]*x509.Certificate, n)
	for i := range out {
		out[i] = vtChain(p.inter.MustIssue(pki.Device(fmt.Sprintf("sensor-%04d", i))), p.inter)
	}
	return out
}

func TestVerdictCacheCapacity(t *testing.T) {
	p := vtNewPKI(t)
	devices := vtDevices(p, 40)
	cases := []struct {
		name       string
		capacity   int
		wantShards int
		wantMax    int
	}{
		{name: "tiny", capacity: 1, wantShards: 1, wantMax: 1},
		{name: "one shard", capacity: 20, wantShards: 1, wantMax: 20},
		{name: "a few shards", capacity: 100, wantShards: 4, wantMax: 100},
		{name: "default", capacity: 0, wantShards: maxCacheShards, wantMax: defaultCacheCapacity},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewVerdictCache(tc.capacity)
			if len(c.shards) != tc.wantShards || len(c.shards)*c.perShard > tc.wantMax {
				t.Fatalf("%d shards of %d, want %d shards and at most %d entries", len(c.shards), c.perShard, tc.wantShards, tc.wantMax)
			}
			for _, ch := range devices {
				if v := c.Verdict(p.site, ch, vtNow); v.Kind != verdict.Valid {
					t.Fatalf("kind = %v", v.Kind)
				}
			}
			if n := c.len(); n > tc.wantMax || n > len(devices) {
				t.Fatalf("%d entries, capacity %d", n, tc.wantMax)
			}
		})
	}

	// CLOCK keeps what was used since the hand last passed.
	c := NewVerdictCache(20)
	for _, ch := range devices[:20] {
		c.Verdict(p.site, ch, vtNow)
	}
	c.Verdict(p.site, devices[0], vtNow) // sets the reference bit
	h0, _ := c.Stats()
	c.Verdict(p.site, devices[20], vtNow) // evicts one entry, not devices[0]
	c.Verdict(p.site, devices[0], vtNow)
	if h, _ := c.Stats(); h != h0+1 {
		t.Fatal("recently used entry was evicted")
	}
	if n := c.len(); n != 20 {
		t.Fatalf("%d entries, want 20", n)
	}
}

func TestVerdictCacheConcurrent(t *testing.T) {
	p := vtNewPKI(t)
	devices := vtDevices(p, 6)
	expOpts := pki.Device("sensor-expired")
	expOpts.NotBefore, expOpts.NotAfter = vtNow.Add(-48*time.Hour), vtNow.Add(-time.Hour)
	type job struct {
		chain []*x509.Certificate
		want  verdict.Kind
	}
	jobs := []job{
		{vtChain(p.inter.MustIssue(expOpts), p.inter), verdict.Expired},
		{vtChain(pki.MustRoot(pki.Device("rogue"))), verdict.UnknownAuthority},
	}
	for _, d := range devices {
		jobs = append(jobs, job{d, verdict.Valid})
	}
	c := NewVerdictCache(4) // smaller than the working set: eviction under contention
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				j := jobs[(g+i)%len(jobs)]
				if v := c.Verdict(p.site, j.chain, vtNow); v.Kind != j.want {
					errs <- fmt.Sprintf("goroutine %d: kind %v, want %v", g, v.Kind, j.want)
					return
				}
				if g == 0 && i%20 == 19 {
					c.Purge()
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if h, m := c.Stats(); h+m == 0 {
		t.Fatal("no lookups counted")
	}
}

// BenchmarkVerdictCacheHit measures a warm lookup: xxhash, one shard lock,
// and the SHA-256 confirmation over a P-256 leaf and intermediate.
func BenchmarkVerdictCacheHit(b *testing.B) {
	p := vtNewPKI(b)
	chain := vtChain(p.device, p.inter)
	c := NewVerdictCache(0)
	c.Verdict(p.site, chain, vtNow)
	b.ReportAllocs()
	for b.Loop() {
		if v := c.Verdict(p.site, chain, vtNow); v.Kind != verdict.Valid {
			b.Fatal(v.Kind)
		}
	}
	if h, _ := c.Stats(); h == 0 {
		b.Fatal("no hits")
	}
}

// TestRolloverVerdictNamesTheLongestPath: a site that trusts an expiring
// intermediate and its renewal (same name and key) verifies a device along
// both. The Valid verdict names the path that lasts longest, the one whose
// window the cache keeps it for: two days on, when the old intermediate has
// expired, the cached verdict still names a path in its window (a path
// that had expired would have the gateway call the device expired, cut its
// relay, and mint its tokens already expired). With and without a
// revocation set (judge takes two ways).
func TestRolloverVerdictNamesTheLongestPath(t *testing.T) {
	now := time.Now()
	root := pki.MustRoot(pki.Root("Rollover Root"))
	key, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	oldOpts, newOpts := pki.Intermediate("Rollover Intermediate"), pki.Intermediate("Rollover Intermediate")
	oldOpts.Key, oldOpts.NotAfter = key, now.Add(24*time.Hour)
	newOpts.Key, newOpts.NotAfter = key, now.Add(2*365*24*time.Hour)
	interOld, interNew := root.MustIssue(oldOpts), root.MustIssue(newOpts)
	device := interOld.MustIssue(pki.Device("sensor-rollover"))
	chain := []*x509.Certificate{device.Cert}
	unrelated, err := NewRevocation(nil, []*big.Int{big.NewInt(424242)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range []*Revocation{nil, unrelated} {
		site := &Site{Name: "devices.fleet.test", Certificates: []tls.Certificate{fixture(t).server}, Revocation: rev}
		// The expiring intermediate first: crypto/x509 tends to return it first.
		site.SetClientCAs([]*x509.Certificate{root.Cert}, []*x509.Certificate{interOld.Cert, interNew.Cert})
		cache := NewVerdictCache(64)
		v := cache.Verdict(site, chain, now)
		if v.Kind != verdict.Valid || !v.PathNotAfter().After(interOld.Cert.NotAfter) {
			t.Fatalf("revocation %v: %s, path until %v; want valid along the renewed intermediate (past %v)", rev != nil, v.Kind, v.PathNotAfter(), interOld.Cert.NotAfter)
		}
		later := now.Add(48 * time.Hour)
		v = cache.Verdict(site, chain, later)
		if hits, _ := cache.Stats(); hits != 1 {
			t.Fatalf("revocation %v: %d cache hits, want 1", rev != nil, hits)
		}
		if v.Kind != verdict.Valid || later.After(v.PathNotAfter()) {
			t.Errorf("revocation %v: cached %s with a path that ended at %v (now %v)", rev != nil, v.Kind, v.PathNotAfter(), later)
		}
	}
}

// vtOversized returns a self-signed device certificate carrying pad bytes
// in an extension no one reads: what an attacker sends to make a refusal's
// verdict as large as crypto/tls allows.
func vtOversized(t testing.TB, key *ecdsa.PrivateKey, serial int64, pad int) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("rogue-%d", serial)},
		NotBefore:    vtNow.Add(-time.Hour),
		NotAfter:     vtNow.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{
			Id:    asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1},
			Value: make([]byte, pad),
		}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestVerdictCacheBoundsOversizedChains: devices that each present another
// self-signed certificate of 128 KiB (refusals are cached) must not make
// the cache hold 128 KiB per entry once their connections are gone. Over
// real sockets, so that the certificates are parsed by crypto/tls from its
// own handshake buffers, as in production.
func TestVerdictCacheBoundsOversizedChains(t *testing.T) {
	const (
		devices = 64
		pad     = 128 << 10
		limit   = devices * 16 << 10 // what a cache of 64 entries may hold
	)
	f := fixture(t)
	cache := NewVerdictCache(devices)
	srv := startServer(t, Config{Sites: f.sites(t, teDevices), Verifier: cache}, false)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dialOnce := func(cert *tls.Certificate, want string) {
		c, err := srv.dial(t, f.client(teDevices, cert))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if got := ask(t, c, "verdict"); got != want {
			t.Fatalf("verdict %q, want %q", got, want)
		}
		_ = c.Close()
	}
	for range 4 { // warm the loops' and the engine's buffers
		dialOnce(&f.deviceTLS, "valid")
	}
	base := liveHeap()
	for i := range devices {
		cert := vtOversized(t, key, int64(i+1), pad)
		dialOnce(&cert, "unknown_authority")
	}
	// The server releases each connection when it sees the close; what is
	// left after that is what the cache holds.
	var grew int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		grew = int64(liveHeap()) - int64(base)
		if grew < limit || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if grew >= limit {
		t.Fatalf("the heap grew by %d KiB after %d refused devices of %d KiB each had gone, want under %d KiB",
			grew>>10, devices, pad>>10, limit>>10)
	}
	runtime.KeepAlive(cache)
}

// TestVerdictCacheKeepsNoHandshakeBuffer: crypto/tls parses a chain from one
// buffer, the whole Certificate message (which may carry much more than the
// certificates: TLS 1.3 extensions per certificate). A cached verdict must
// not keep that buffer alive through the leaf's DER or its path's names.
func TestVerdictCacheKeepsNoHandshakeBuffer(t *testing.T) {
	p := vtNewPKI(t)
	c := NewVerdictCache(64)
	store := func() weak.Pointer[byte] {
		// The device's chain, parsed from one larger buffer as crypto/tls does.
		msg := make([]byte, 1<<20)
		n := copy(msg, p.device.DER)
		m := copy(msg[n:], p.inter.DER)
		leaf, err := x509.ParseCertificate(msg[:n])
		if err != nil {
			t.Fatal(err)
		}
		inter, err := x509.ParseCertificate(msg[n : n+m])
		if err != nil {
			t.Fatal(err)
		}
		if v := c.Verdict(p.site, []*x509.Certificate{leaf, inter}, vtNow); v.Kind != verdict.Valid {
			t.Fatalf("kind = %v (%s)", v.Kind, v.Detail)
		}
		return weak.Make(&msg[0])
	}
	buf := store()
	runtime.GC()
	runtime.GC()
	if buf.Value() != nil {
		t.Fatal("the cached verdict keeps the buffer its chain was parsed from alive")
	}
	if v := c.Verdict(p.site, vtChain(p.device, p.inter), vtNow); v.Kind != verdict.Valid || !bytes.Equal(v.Identity.DER, p.device.DER) {
		t.Fatalf("kind = %v, DER of %d bytes: want the cached Valid verdict of the device", v.Kind, len(v.Identity.DER))
	}
	if h, _ := c.Stats(); h != 1 {
		t.Fatalf("%d hits, want 1: the verdict was not cached", h)
	}
}
