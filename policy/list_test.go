package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func mustList(tb testing.TB, name string, kind ListKind, values ...string) *List {
	tb.Helper()
	l, err := ParseList(name, kind, []byte(strings.Join(values, "\n")))
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func TestParseList(t *testing.T) {
	l, err := ParseList("q", ListCommonName, []byte("# quarantined\nsensor-0005\n\n  sensor-0006  \r\nsensor-0005\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 2 || !l.Contains("sensor-0005") || !l.Contains("sensor-0006") || l.Contains("sensor-0007") || l.Contains("") {
		t.Errorf("list of %d: wrong contents", l.Len())
	}
	// A byte-order mark and inline comments are not part of the values.
	l, err = ParseList("q", ListCommonName, []byte("\xef\xbb\xbfsensor-0005\nsensor#0008\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range []string{"sensor-0005", "sensor#0008"} {
		if !l.Contains(cn) {
			t.Errorf("%q not in the list (a byte-order mark kept in the value?)", cn)
		}
	}
	l, err = ParseList("u", ListSANURI, []byte("spiffe://fleet.test/meter/1 # recalled 2026-03\nspiffe://fleet.test/meter/2\t# also\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"spiffe://fleet.test/meter/1", "spiffe://fleet.test/meter/2"} {
		if !l.Contains(u) {
			t.Errorf("%q not in the list (a comment kept in the value?)", u)
		}
	}
	// In a common_name list it is refused: "Meter #7" may be a name.
	var le *ListLineError
	if _, err := ParseList("q", ListCommonName, []byte("sensor-0005\nMeter #7\n")); !errors.As(err, &le) || le.Line != 2 {
		t.Errorf("a common name with \" #\": %v, want a refusal of line 2", err)
	}
	fp := strings.Repeat("AB", 32)
	l = mustList(t, "f", ListFingerprint, "ab:"+strings.Repeat("ab", 31))
	if !l.Contains(strings.ToLower(fp)) {
		t.Error("fingerprint with colons not normalized")
	}
	l = mustList(t, "s", ListSerial, "00:4F:1a:09")
	if !l.Contains("4f1a09") {
		t.Error("serial not normalized")
	}
	l = mustList(t, "ip", ListIP, "10.0.0.1", "::1", "2001:db8::1")
	for _, a := range []string{"10.0.0.1", "::ffff:10.0.0.1", "::1", "2001:db8::1"} {
		if !l.ContainsAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s not in the list", a)
		}
	}
	if l.ContainsAddr(netip.MustParseAddr("10.0.0.2")) || l.ContainsAddr(netip.Addr{}) {
		t.Error("an address not listed matched")
	}

	for _, tt := range []struct {
		kind ListKind
		data string
		line int
	}{
		{ListFingerprint, "# x\n" + fp + "\nnot-hex\n", 3},
		{ListSerial, "1a\nzz\n", 2},
		{ListIP, "10.0.0.1\n10.0.0.0/8\n", 2},
		{ListIP, "fe80::1%eth0\n", 1},
	} {
		_, err := ParseList("bad", tt.kind, []byte(tt.data))
		var le *ListLineError
		if !errors.As(err, &le) || le.Line != tt.line {
			t.Errorf("%s %q: err = %v, want line %d", tt.kind, tt.data, err, tt.line)
		}
	}
	if _, err := ParseListKind("cn"); err == nil {
		t.Error("unknown kind accepted")
	}
}

// TestListCollision: a value whose hash equals a listed value's is still not
// in the list: the stored value is compared on every hit.
func TestListCollision(t *testing.T) {
	l := mustList(t, "q", ListCommonName, "sensor-0005")
	// Forge a probe with the listed value's hash but another value.
	h := xxhash.Sum64String("sensor-0005")
	if has(&l.set, h, "sensor-0006") || has(&l.set, h, []byte("sensor-0006")) {
		t.Error("a hash collision was taken for a hit")
	}
	if !has(&l.set, h, "sensor-0005") || !has(&l.set, h, []byte("sensor-0005")) {
		t.Error("the listed value was not found")
	}
}

// bigList returns a list of n common names "device-%07d" and its file bytes.
func bigList(tb testing.TB, n int) ([]byte, *List) {
	var b bytes.Buffer
	b.WriteString("# a million devices\n")
	for i := range n {
		fmt.Fprintf(&b, "device-%07d\n", i)
	}
	data := b.Bytes()
	l, err := ParseList("fleet", ListCommonName, data)
	if err != nil {
		tb.Fatal(err)
	}
	return data, l
}

func TestMillionEntryList(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a million-entry list")
	}
	var b bytes.Buffer
	for i := range 1_000_000 {
		fmt.Fprintf(&b, "device-%07d\n", i)
	}
	l, err := ParseList("fleet", ListCommonName, b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 1_000_000 {
		t.Fatalf("Len = %d", l.Len())
	}
	// How long it takes is BenchmarkListLoad's to say (under 2 s): a timed
	// assertion would fail on a busy machine, not on slow code.
	for _, v := range []string{"device-0000000", "device-0999999", "device-0500000"} {
		if !l.Contains(v) {
			t.Errorf("%s missing", v)
		}
	}
	if l.Contains("device-1000000") || l.Contains("device-") {
		t.Error("a value not listed matched")
	}
	if n := testing.AllocsPerRun(100, func() { _ = l.Contains("device-0123456") }); n != 0 {
		t.Errorf("Contains allocates %v", n)
	}
	ipl := mustList(t, "ip", ListIP, "10.0.0.1")
	a := netip.MustParseAddr("10.0.0.1")
	if n := testing.AllocsPerRun(100, func() { _ = ipl.ContainsAddr(a) }); n != 0 {
		t.Errorf("ContainsAddr allocates %v", n)
	}
}

func BenchmarkListLoad(b *testing.B) {
	var buf bytes.Buffer
	for i := range 1_000_000 {
		fmt.Fprintf(&buf, "device-%07d\n", i)
	}
	data := buf.Bytes()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseList("fleet", ListCommonName, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListContains(b *testing.B) {
	_, l := bigList(b, 1_000_000)
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !l.Contains("device-0765432") {
				b.Fatal("miss")
			}
		}
	})
	// Keys spread over the whole table, as a fleet's are: each lookup
	// misses the CPU caches.
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("device-%07d", (i*7919*131)%1_000_000)
	}
	b.Run("hit-spread", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if !l.Contains(keys[i&4095]) {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if l.Contains("sensor-0765432") {
				b.Fatal("hit")
			}
		}
	})
}

// tenRuleApp is an application of ten policies whose selectors cover the
// new kinds, with a million-entry quarantine list in an exclude and a deny.
func tenRuleApp(tb testing.TB) (*Application, *ListSet) {
	_, big := bigList(tb, 1_000_000)
	big.Name = "quarantine"
	env := testEnv()
	s := func(k string, v any) Selector {
		sel, err := ParseSelectorIn(env, k, v)
		if err != nil {
			tb.Fatal(err)
		}
		return sel
	}
	a := app(time.Hour,
		pol("health", Bypass, sels(s("ip", []any{"192.0.2.0/24"})), nil, nil),
		pol("svc", NonIdentity, sels(s("service_token", "backend-job")), nil, nil),
		pol("quarantined", Deny, sels(s("list", "quarantine")), nil, nil),
		pol("recalled", Deny, sels(s("serial", "dead:beef"), s("fingerprint", fp2)), nil, nil),
		pol("gauges", Allow, sels(s("organizational_unit", "gauges")), sels(s("client_ca", "fleet-b")), nil),
		pol("ops", Allow, sels(s("san_email", "ops@fleet.test")), sels(s("organization", "Acme Ops")), nil),
		pol("lab", Allow, sels(s("ip", []any{"10.99.0.0/16", "2001:db8::/32"})), sels(s("common_name_pattern", "lab-*")), nil),
		pol("dns", Allow, sels(s("san_dns", "*.lab.test")), nil, nil),
		pol("beta", Allow, sels(s("organizational_unit", "beta")), sels(s("client_ca", "fleet-a")), sels(s("list", "quarantine"))),
		pol("meters", Allow, sels(s("san_uri", "spiffe://fleet.test/meter/*")), sels(s("common_name_pattern", "meter-*")), sels(s("list", "quarantine"))),
	)
	return a, NewListSet(big)
}

func tenRuleInputs(lists *ListSet) map[string]*Input {
	quarantined := meterCert()
	quarantined.Identity.CommonName = "device-0765432"
	return map[string]*Input{
		"beta":        {Cert: meterCert(), Lists: lists, ClientIP: netip.MustParseAddr("10.1.2.3"), Now: t0},
		"quarantined": {Cert: quarantined, Lists: lists, ClientIP: netip.MustParseAddr("10.1.2.3"), Now: t0},
		"no-match":    {Cert: validCert("sensor-0001", fp1), Lists: lists, ClientIP: netip.MustParseAddr("2001:db8::9"), Now: t0},
	}
}

func TestTenRuleEvaluation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a million-entry list")
	}
	a, lists := tenRuleApp(t)
	in := tenRuleInputs(lists)
	if d := a.Evaluate(in["beta"]); !d.Allowed || d.Policy != "beta" {
		t.Errorf("beta: %+v", d)
	}
	if d := a.Evaluate(in["quarantined"]); d.Allowed || d.Policy != "quarantined" {
		t.Errorf("quarantined: %+v", d)
	}
	if d := a.Evaluate(in["no-match"]); d.Allowed || d.Policy != "" {
		t.Errorf("no-match: %+v", d)
	}
	for name, input := range in {
		if n := testing.AllocsPerRun(100, func() { _ = a.Evaluate(input) }); n != 0 {
			t.Errorf("%s: %v allocs per Evaluate", name, n)
		}
	}
	// A list missing from the newest set matches nothing: the exclude
	// no longer excludes, the deny no longer denies.
	q := meterCert()
	q.Identity.CommonName = "device-0765432"
	if d := a.Evaluate(&Input{Cert: q, Now: t0}); !d.Allowed || d.Policy != "beta" {
		t.Errorf("without lists: %+v", d)
	}
}

// BenchmarkEvaluateTenRules: ten policies over every selector kind, a
// million-entry list in a deny and two excludes.
func BenchmarkEvaluateTenRules(b *testing.B) {
	a, lists := tenRuleApp(b)
	in := tenRuleInputs(lists)
	for _, name := range []string{"beta", "quarantined", "no-match"} {
		input := in[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Evaluate(input)
			}
		})
	}
}
