package fuzz

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// FuzzVerifyRawChain runs tlsengine.VerifyRawChain on a fuzzed chain
// (see decodeChain for the encoding) at the fixture's epoch plus nowOffset
// seconds, on one of five sites chosen by siteSel (see chainSites).
//
// Invariants:
//   - the verdict is never Valid unless crypto/x509 independently agrees:
//     every certificate parses and leaf.Verify succeeds with the site's
//     roots, its intermediates plus the presented ones, ExtKeyUsage
//     clientAuth and CurrentTime now, and the leaf is not a CA and has no
//     KeyUsage without digitalSignature (fleetgate's own leaf rule);
//     conversely, a chain that passes all that (within the site's
//     intermediate limit) is Valid (no false refusals);
//   - empty is Missing; an unparsable leaf is Malformed; more intermediates
//     than the site allows is TooManyIntermediates (checked before the
//     intermediates are parsed); else an unparsable intermediate is
//     Malformed; the kind is always a defined one;
//   - a parsed leaf's identity is the presented leaf (DER, SHA-256);
//   - a long-lived tlsengine.VerdictCache fed the same chains at the same
//     fuzzed times never answers Valid where x509 does not agree.
func FuzzVerifyRawChain(f *testing.F) {
	fx := getFixture(f)
	// Static seeds: testdata/fuzz/FuzzVerifyRawChain (chainSeeds).
	// Literal DER of this run's PKI, for the mutator to work on byte by byte.
	f.Add(encodeChain(fx.device.DER, fx.inter.DER), int64(0), byte(0))
	f.Add(encodeChain(fx.device.DER), int64(0), byte(1))
	f.Add(encodeChain(fx.otherDevice.DER, fx.otherInter.DER, fx.otherRoot.DER), int64(0), byte(0))
	cs := getChainSites(f)
	f.Fuzz(func(t *testing.T, data []byte, offset int64, siteSel byte) {
		countExec("FuzzVerifyRawChain")
		raw := decodeChain(fx, data)
		now := fx.epoch.Add(clampOffset(offset))
		cs := cs[int(siteSel)%len(cs)]
		v := tlsengine.VerifyRawChain(cs.site, raw, now)
		checkChainVerdict(t, cs, raw, now, v)
	})
}

// chainSite is a site for the chain target and what an independent x509
// verification trusts for it.
type chainSite struct {
	name          string
	site          *tlsengine.Site // nil: VerifyRawChain with no site
	roots         *x509.CertPool  // never nil: an empty pool, not the system's
	intermediates []*x509.Certificate
	limit         int
	cache         *tlsengine.VerdictCache
}

var (
	chainSitesOnce sync.Once
	chainSitesVal  []*chainSite
)

// getChainSites: 0 trusts the fleet root, intermediates from the device
// only; 1 also holds the fleet intermediate (uploaded with the root); 2
// allows one intermediate; 3 has no client CA; 4 is a nil site.
func getChainSites(tb testing.TB) []*chainSite {
	fx := getFixture(tb)
	chainSitesOnce.Do(func() {
		server := []tls.Certificate{fx.server.TLSCertificate(fx.inter)}
		mk := func(name string, roots bool, inters []*pki.Cert, limit int) *chainSite {
			s := &tlsengine.Site{Name: "chain.fleet.test", Certificates: server, Generation: 1, MaxIntermediates: limit}
			cs := &chainSite{name: name, site: s, roots: x509.NewCertPool(), limit: limit, cache: tlsengine.NewVerdictCache(256)}
			if cs.limit <= 0 {
				cs.limit = 4 // tlsengine's documented default
			}
			if roots {
				s.Roots = pki.Pool(fx.root)
				cs.roots.AddCert(fx.root.Cert)
			}
			if len(inters) > 0 {
				s.Intermediates = pki.Pool(inters...)
				for _, c := range inters {
					cs.intermediates = append(cs.intermediates, c.Cert)
				}
			}
			return cs
		}
		chainSitesVal = []*chainSite{
			mk("roots", true, nil, 0),
			mk("roots+intermediate", true, []*pki.Cert{fx.inter}, 0),
			mk("one-intermediate", true, nil, 1),
			mk("no-client-ca", false, nil, 0),
			{name: "nil-site", roots: x509.NewCertPool(), limit: 4},
		}
	})
	return chainSitesVal
}

// checkChainVerdict asserts FuzzVerifyRawChain's invariants.
func checkChainVerdict(t *testing.T, cs *chainSite, raw [][]byte, now time.Time, v verdict.Verdict) {
	t.Helper()
	if v.Kind.String() == "unknown" {
		t.Fatalf("undefined verdict kind %d", v.Kind)
	}
	if len(raw) == 0 {
		if v.Kind != verdict.Missing {
			t.Fatalf("empty chain: verdict %s, want missing", v.Kind)
		}
		return
	}
	certs := make([]*x509.Certificate, len(raw))
	parseErr := -1
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil && parseErr < 0 {
			parseErr = i
		}
		certs[i] = c
	}
	var want verdict.Kind
	decided := true
	switch {
	case parseErr == 0:
		want = verdict.Malformed
	case len(raw)-1 > cs.limit:
		want = verdict.TooManyIntermediates
	case parseErr > 0:
		want = verdict.Malformed
	default:
		decided = false
	}
	if decided && v.Kind != want {
		t.Fatalf("verdict %s (%s), want %s (%d certificates, first unparsable %d, limit %d)", v.Kind, v.Detail, want, len(raw), parseErr, cs.limit)
	}
	if parseErr != 0 {
		sum := sha256.Sum256(raw[0])
		if v.Identity.SHA256 != hex.EncodeToString(sum[:]) || string(v.Identity.DER) != string(raw[0]) {
			t.Fatalf("identity is not the presented leaf's: sha256 %q", v.Identity.SHA256)
		}
	}
	if decided {
		return
	}
	x509OK, x509Err := independentVerify(cs, certs, now)
	switch {
	case v.Kind == verdict.Valid && !x509OK:
		t.Fatalf("verdict valid, but crypto/x509 refuses the chain on site %s at %s: %v", cs.name, now.UTC().Format(time.RFC3339), x509Err)
	case v.Kind != verdict.Valid && x509OK:
		t.Fatalf("verdict %s (%s), but crypto/x509 accepts the chain on site %s at %s", v.Kind, v.Detail, cs.name, now.UTC().Format(time.RFC3339))
	}
	if cs.cache != nil {
		for range 2 { // a miss, then (when cacheable) a hit
			if cv := cs.cache.Verdict(cs.site, certs, now); cv.Kind == verdict.Valid && !x509OK {
				t.Fatalf("VerdictCache answered valid, but crypto/x509 refuses the chain on site %s: %v", cs.name, x509Err)
			}
		}
	}
}

// independentVerify is the x509 verification FuzzVerifyRawChain compares
// against, built from the fixture, not from the site.
func independentVerify(cs *chainSite, certs []*x509.Certificate, now time.Time) (bool, error) {
	inter := x509.NewCertPool()
	for _, c := range cs.intermediates {
		inter.AddCert(c)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         cs.roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if leaf := certs[0]; err == nil && (leaf.IsCA || leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0) {
		// fleetgate's leaf rule, which x509 does not apply to a leaf.
		return false, errors.New("leaf is a CA, or has a key usage without digitalSignature")
	}
	return err == nil, err
}

// clampOffset turns a fuzzed number of seconds into a duration within ±200
// years of the epoch.
func clampOffset(sec int64) time.Duration {
	const bound = 200 * 365 * 24 * 3600
	if sec > bound || sec < -bound {
		sec %= bound
	}
	return time.Duration(sec) * time.Second
}

// Chain encoding: a sequence of entries, each a 2-byte big-endian length
// and that many bytes (a short last entry takes what is left). An entry is
//   - one byte naming a certificate of the run's PKI (chainRefs): its DER;
//   - 0xFE, a name, a 2-byte offset, bytes: that DER with the bytes written
//     at offset (mod its length), extending it if needed;
//   - 0xFD, a name, a 2-byte offset: that DER cut at offset (mod length+1);
//   - anything else: literal DER.
//
// Committed seeds can so describe chains of certificates that are
// generated at run time (no private key is committed, and a committed DER
// would not chain to this run's root), and mutations of them.
const (
	entryPatch    = 0xFE
	entryTruncate = 0xFD
)

// chainRefs names the fixture's certificates by one byte.
func chainRefs(fx *fixture) map[byte]*pki.Cert {
	return map[byte]*pki.Cert{
		'L': fx.device, 'I': fx.inter, 'R': fx.root, 'D': fx.directDevice,
		'O': fx.otherDevice, 'P': fx.otherInter, 'Q': fx.otherRoot,
		'E': fx.expiredDevice, 'F': fx.futureDevice, 'S': fx.serverAsClient,
		'U': fx.noEKUDevice, 'e': fx.ed25519Device, 'r': fx.rsaDevice,
		'N': fx.notCA, 'n': fx.underNotCA, 'X': fx.expiredInter, 'x': fx.underExpiredInter,
		'G': fx.server,
	}
}

var (
	refsOnce sync.Once
	refs     map[byte]*pki.Cert
)

// decodeChain turns the fuzz input into DER certificates, leaf first.
func decodeChain(fx *fixture, data []byte) [][]byte {
	refsOnce.Do(func() { refs = chainRefs(fx) })
	var raw [][]byte
	for len(data) > 0 {
		var e []byte
		if len(data) < 2 {
			e, data = data, nil
		} else {
			n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
			e, data = data[2:2+n], data[2+n:]
		}
		raw = append(raw, decodeEntry(e))
	}
	return raw
}

func decodeEntry(e []byte) []byte {
	if len(e) == 1 {
		if c, ok := refs[e[0]]; ok {
			return c.DER
		}
		return e
	}
	if len(e) >= 4 && (e[0] == entryPatch || e[0] == entryTruncate) {
		c, ok := refs[e[1]]
		if !ok {
			return e
		}
		off := int(binary.BigEndian.Uint16(e[2:4]))
		der := append([]byte(nil), c.DER...)
		if e[0] == entryTruncate {
			return der[:off%(len(der)+1)]
		}
		off %= len(der)
		patch := e[4:]
		if need := off + len(patch); need > len(der) {
			der = append(der, make([]byte, need-len(der))...)
		}
		copy(der[off:], patch)
		return der
	}
	return e
}

// encodeChain is decodeChain's inverse for literal entries (and for
// one-byte names: encodeChain([]byte{'L'}, []byte{'I'})).
func encodeChain(entries ...[]byte) []byte {
	var out []byte
	for _, e := range entries {
		out = binary.BigEndian.AppendUint16(out, uint16(min(len(e), math.MaxUint16)))
		out = append(out, e...)
	}
	return out
}

// chainSeed is a static input for FuzzVerifyRawChain.
type chainSeed struct {
	name   string
	chain  []byte
	offset int64
	site   byte
}

func chainSeeds() []chainSeed {
	ref := func(names string) []byte {
		var es [][]byte
		for i := range len(names) {
			es = append(es, []byte{names[i]})
		}
		return encodeChain(es...)
	}
	patch := func(name byte, off uint16, b ...byte) []byte {
		return encodeChain(append([]byte{entryPatch, name, byte(off >> 8), byte(off)}, b...), []byte{'I'})
	}
	cut := func(name byte, off uint16) []byte {
		return encodeChain([]byte{entryTruncate, name, byte(off >> 8), byte(off)}, []byte{'I'})
	}
	const year = 365 * 24 * 3600
	deep := make([]byte, 0, 2000)
	for range 1000 {
		deep = append(deep, 0x30, 0x80) // indefinite-length SEQUENCEs (BER, not DER)
	}
	return []chainSeed{
		{"valid", ref("LI"), 0, 0},
		{"valid-with-root", ref("LIR"), 0, 0},
		{"leaf-only-site-intermediate", ref("L"), 0, 1},
		{"leaf-only-no-intermediate", ref("L"), 0, 0},
		{"issued-by-root", ref("D"), 0, 0},
		{"other-ca", ref("OPQ"), 0, 0},
		{"wrong-intermediate", ref("LP"), 0, 0},
		{"expired-leaf", ref("EI"), 0, 0},
		{"future-leaf", ref("FI"), 0, 0},
		{"server-cert-as-client", ref("SI"), 0, 0},
		{"gateway-cert-as-client", ref("GI"), 0, 0},
		{"no-eku", ref("UI"), 0, 0},
		{"ed25519", ref("eI"), 0, 0},
		{"rsa", ref("rI"), 0, 0},
		{"not-a-ca-intermediate", ref("nNI"), 0, 0},
		{"expired-intermediate", ref("xX"), 0, 0},
		{"intermediate-as-leaf", ref("IR"), 0, 0},
		{"root-as-leaf", ref("R"), 0, 0},
		{"too-many", ref("LIIIII"), 0, 0},
		{"two-on-limit-one", ref("LII"), 0, 2},
		{"no-client-ca", ref("LI"), 0, 3},
		{"nil-site", ref("LI"), 0, 4},
		{"valid-in-two-years", ref("LI"), 2 * year, 0},
		{"valid-two-years-ago", ref("LI"), -2 * year, 0},
		{"far-future", ref("LI"), math.MaxInt64, 0},
		{"far-past", ref("LI"), math.MinInt64, 0},
		{"patched-signature", patch('L', 0xfff0, 0xff, 0xff), 0, 0},
		{"patched-serial", patch('L', 15, 0x00), 0, 0},
		{"patched-length", patch('L', 2, 0xff, 0xff), 0, 0},
		{"truncated-leaf", cut('L', 200), 0, 0},
		{"truncated-intermediate", encodeChain([]byte{'L'}, []byte{entryTruncate, 'I', 0, 100}), 0, 0},
		{"empty", nil, 0, 0},
		{"empty-entry", encodeChain(nil), 0, 0},
		{"garbage-leaf", encodeChain([]byte("not a certificate"), []byte{'I'}), 0, 0},
		{"huge-der-length", encodeChain([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff}, []byte{'I'}), 0, 0},
		{"garbage-intermediate", encodeChain([]byte{'L'}, []byte{0x30, 0x03, 0x02, 0x01, 0x01}), 0, 0},
		{"indefinite-length", encodeChain(deep), 0, 0},
		{"too-many-garbage", encodeChain([]byte{'L'}, nil, nil, nil, nil, nil, nil), 0, 0},
		{"odd-byte", []byte{0x00}, 0, 0},
	}
}
