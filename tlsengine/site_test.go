package tlsengine

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// vtSNISites builds the SNI table used by the lookup tests and benchmarks:
// names are given in mixed case and with a trailing dot on purpose.
func vtSNISites(t testing.TB, defaultName string) (*Sites, map[string]*Site) {
	t.Helper()
	byName := map[string]*Site{}
	var list []*Site
	for _, n := range []string{"devices.fleet.test", "*.fleet.test", "Admin.Fleet.Test.", "*.zone.fleet.test", "localhost"} {
		s := &Site{Name: n, Certificates: []tls.Certificate{fixture(t).server}}
		byName[n] = s
		list = append(list, s)
	}
	sites, err := NewSites(list, defaultName)
	if err != nil {
		t.Fatalf("NewSites: %v", err)
	}
	return sites, byName
}

func TestSitesLookup(t *testing.T) {
	withDefault, byName := vtSNISites(t, "DEVICES.fleet.test")
	withoutDefault, byName2 := vtSNISites(t, "")
	cases := []struct {
		name       string
		serverName string
		want       string // key in byName; "" means not found
		noDefault  string // expectation on the table without a default, when different
	}{
		{name: "exact", serverName: "devices.fleet.test", want: "devices.fleet.test"},
		{name: "exact beats wildcard", serverName: "admin.fleet.test", want: "Admin.Fleet.Test."},
		{name: "exact, upper case", serverName: "DEVICES.Fleet.TEST", want: "devices.fleet.test"},
		{name: "exact, trailing dot", serverName: "devices.fleet.test.", want: "devices.fleet.test"},
		{name: "exact, two trailing dots", serverName: "devices.fleet.test..", want: ""},
		{name: "single label", serverName: "LOCALHOST", want: "localhost"},
		{name: "wildcard, one label", serverName: "sensor-7.fleet.test", want: "*.fleet.test"},
		{name: "wildcard, upper case and trailing dot", serverName: "Sensor_7.FLEET.test.", want: "*.fleet.test"},
		{name: "wildcard, two labels", serverName: "b.a.fleet.test", want: ""},
		{name: "wildcard does not cover its base", serverName: "fleet.test", want: ""},
		{name: "deeper wildcard", serverName: "x.zone.fleet.test", want: "*.zone.fleet.test"},
		{name: "deeper wildcard base falls to the outer wildcard", serverName: "zone.fleet.test", want: "*.fleet.test"},
		{name: "literal star does not match a wildcard", serverName: "*.fleet.test", want: ""},
		{name: "empty first label", serverName: ".fleet.test", want: ""},
		{name: "empty middle label", serverName: "a..fleet.test", want: ""},
		{name: "only a dot", serverName: ".", want: ""},
		{name: "NUL byte", serverName: "a\x00.fleet.test", want: ""},
		{name: "non-ASCII", serverName: "bücher.fleet.test", want: ""},
		{name: "label of 64 bytes", serverName: strings.Repeat("x", 64) + ".fleet.test", want: ""},
		{name: "unknown name never gets the default", serverName: "nope.example", want: ""},
		{name: "no SNI gets the default", serverName: "", want: "devices.fleet.test", noDefault: "-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(table *Sites, byName map[string]*Site, want string) {
				t.Helper()
				got, ok := table.Lookup(tc.serverName)
				if want == "" || want == "-" {
					if ok || got != nil {
						t.Fatalf("Lookup(%q) = %q, true; want not found", tc.serverName, got.Name)
					}
					return
				}
				if !ok || got != byName[want] {
					name := "<nil>"
					if got != nil {
						name = got.Name
					}
					t.Fatalf("Lookup(%q) = %s, %v; want %q", tc.serverName, name, ok, want)
				}
			}
			check(withDefault, byName, tc.want)
			want := tc.want
			if tc.noDefault != "" {
				want = tc.noDefault
			}
			check(withoutDefault, byName2, want)
		})
	}

	// The length limit: 253 bytes (plus the tolerated dot) is a name, 254 is not.
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 56) + ".test"
	longSite := &Site{Name: long, Certificates: []tls.Certificate{fixture(t).server}}
	longTable, err := NewSites([]*Site{longSite}, "")
	if err != nil || len(long) != 253 {
		t.Fatalf("NewSites(%d-byte name): %v", len(long), err)
	}
	for _, lc := range []struct {
		serverName string
		found      bool
	}{{long, true}, {strings.ToUpper(long) + ".", true}, {"a" + long, false}, {long + "..", false}} {
		if got, ok := longTable.Lookup(lc.serverName); ok != lc.found || (ok && got != longSite) {
			t.Errorf("Lookup(%d-byte name) = %v, want %v", len(lc.serverName), ok, lc.found)
		}
	}

	if s, ok := (*Sites)(nil).Lookup("devices.fleet.test"); ok || s != nil {
		t.Fatal("nil table found a site")
	}
	if got := len(withDefault.All()); got != 5 {
		t.Fatalf("All() has %d sites, want 5", got)
	}
}

func TestNewSitesErrors(t *testing.T) {
	cert := []tls.Certificate{fixture(t).server}
	site := func(name string) *Site { return &Site{Name: name, Certificates: cert} }
	cases := []struct {
		name        string
		sites       []*Site
		defaultName string
		wantErr     string // substring; "" means success
	}{
		{name: "valid", sites: []*Site{site("a.fleet.test"), site("*.fleet.test")}, defaultName: "a.fleet.test"},
		{name: "wildcard as default", sites: []*Site{site("*.fleet.test")}, defaultName: "*.FLEET.test."},
		{name: "no sites", sites: nil},
		{name: "duplicate", sites: []*Site{site("a.fleet.test"), site("b.fleet.test"), site("a.fleet.test")}, wantErr: `sites[2]: duplicate site name "a.fleet.test" (also sites[0])`},
		{name: "duplicate by case and dot", sites: []*Site{site("A.Fleet.Test"), site("a.fleet.test.")}, wantErr: "duplicate site name"},
		{name: "duplicate wildcard", sites: []*Site{site("*.fleet.test"), site("*.FLEET.test")}, wantErr: "duplicate site name"},
		{name: "empty name", sites: []*Site{site("")}, wantErr: "is empty"},
		{name: "only a dot", sites: []*Site{site(".")}, wantErr: "is empty"},
		{name: "empty label", sites: []*Site{site("a..fleet.test")}, wantErr: "empty label"},
		{name: "leading dot", sites: []*Site{site(".fleet.test")}, wantErr: "empty label"},
		{name: "two trailing dots", sites: []*Site{site("fleet.test..")}, wantErr: "empty label"},
		{name: "space", sites: []*Site{site("a fleet.test")}, wantErr: "invalid byte"},
		{name: "too long", sites: []*Site{site(strings.Repeat("a.", 127) + "a")}, wantErr: "longer than 253"},
		{name: "label too long", sites: []*Site{site(strings.Repeat("a", 64) + ".test")}, wantErr: "label longer than 63"},
		{name: "wildcard over one label", sites: []*Site{site("*.test")}, wantErr: "at least two labels"},
		{name: "bare star", sites: []*Site{site("*")}, wantErr: "at least two labels"},
		{name: "star dot", sites: []*Site{site("*.")}, wantErr: "at least two labels"},
		{name: "partial wildcard", sites: []*Site{site("s*.fleet.test")}, wantErr: "at least two labels"},
		{name: "star without dot", sites: []*Site{site("*fleet.test")}, wantErr: "at least two labels"},
		{name: "inner wildcard", sites: []*Site{site("a.*.fleet.test")}, wantErr: "at least two labels"},
		{name: "double wildcard", sites: []*Site{site("*.*.fleet.test")}, wantErr: "at least two labels"},
		{name: "nil site", sites: []*Site{site("a.fleet.test"), nil}, wantErr: "sites[1]: nil site"},
		{name: "no certificates", sites: []*Site{{Name: "a.fleet.test"}}, wantErr: "no server certificate"},
		{name: "empty certificate", sites: []*Site{{Name: "a.fleet.test", Certificates: []tls.Certificate{{}}}}, wantErr: "certificates[0] is empty"},
		{name: "unknown default", sites: []*Site{site("a.fleet.test")}, defaultName: "b.fleet.test", wantErr: "default site \"b.fleet.test\" is not one of the sites"},
		{name: "invalid default", sites: []*Site{site("a.fleet.test")}, defaultName: "a..b", wantErr: "default site"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSites(tc.sites, tc.defaultName)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("NewSites: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("NewSites succeeded, want error containing %q", tc.wantErr)
			case err != nil && (!strings.HasPrefix(err.Error(), "tlsengine: ") || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %q, want prefix \"tlsengine: \" and %q", err, tc.wantErr)
			}
		})
	}
}

func TestSitesLookupDoesNotAllocate(t *testing.T) {
	sites, _ := vtSNISites(t, "devices.fleet.test")
	for _, name := range []string{"devices.fleet.test", "Devices.Fleet.Test.", "sensor-1.fleet.test", "b.a.fleet.test", "nope.example", ""} {
		if n := testing.AllocsPerRun(200, func() { sites.Lookup(name) }); n != 0 {
			t.Errorf("Lookup(%q) allocates %.1f times", name, n)
		}
	}
}

func BenchmarkSitesLookup(b *testing.B) {
	sites, _ := vtSNISites(b, "devices.fleet.test")
	for _, bc := range []struct{ name, serverName string }{
		{"exact", "devices.fleet.test"},
		{"wildcard", "sensor-0001.fleet.test"},
		{"unknown", "sensor-0001.nope.example"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := sites.Lookup(bc.serverName); ok != (bc.name != "unknown") {
					b.Fatal("wrong lookup result")
				}
			}
		})
	}
}

// TestSetClientCAs: the pools hold the CAs given; the generation is the same
// for the same certificates (cached verdicts survive a reload that changes
// nothing), differs when any changes, and is zero only without CAs.
func TestSetClientCAs(t *testing.T) {
	rootA := pki.MustRoot(pki.Root("Site Root A"))
	rootB := pki.MustRoot(pki.Root("Site Root B"))
	inter := rootA.MustIssue(pki.Intermediate("Site Intermediate"))
	gen := func(roots []*pki.Cert, inters ...*pki.Cert) *Site {
		s := &Site{}
		var r, i []*x509.Certificate
		for _, c := range roots {
			r = append(r, c.Cert)
		}
		for _, c := range inters {
			i = append(i, c.Cert)
		}
		s.SetClientCAs(r, i)
		return s
	}
	a := gen([]*pki.Cert{rootA}, inter)
	if a.Roots == nil || a.Intermediates == nil || a.Generation == 0 {
		t.Fatalf("pools %v %v generation %d", a.Roots, a.Intermediates, a.Generation)
	}
	if !a.Roots.Equal(pki.Pool(rootA)) || !a.Intermediates.Equal(pki.Pool(inter)) {
		t.Error("the pools do not hold the CAs given")
	}
	if again := gen([]*pki.Cert{rootA}, inter); again.Generation != a.Generation {
		t.Errorf("same CAs, generation %d then %d", a.Generation, again.Generation)
	}
	for name, other := range map[string]*Site{
		"another root":         gen([]*pki.Cert{rootB}, inter),
		"a root added":         gen([]*pki.Cert{rootA, rootB}, inter),
		"no intermediate":      gen([]*pki.Cert{rootA}),
		"root as intermediate": gen(nil, rootA, inter),
	} {
		if other.Generation == a.Generation || other.Generation == 0 {
			t.Errorf("%s: generation %d (first %d)", name, other.Generation, a.Generation)
		}
	}
	none := gen(nil)
	if none.Roots != nil || none.Intermediates != nil || none.Generation != 0 {
		t.Errorf("no CAs: pools %v %v generation %d", none.Roots, none.Intermediates, none.Generation)
	}
}
