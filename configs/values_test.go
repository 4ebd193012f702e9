package configs

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want int64
		err  string
	}{
		{name: "integer", in: int64(512), want: 512},
		{name: "bare digits", in: "512", want: 512},
		{name: "bytes", in: "512B", want: 512},
		{name: "KiB", in: "16KiB", want: 16 << 10},
		{name: "MiB", in: "8MiB", want: 8 << 20},
		{name: "GB is decimal", in: "1GB", want: 1e9},
		{name: "unit any case, spaces", in: " 2 kib ", want: 2048},
		{name: "zero", in: "0", want: 0},
		{name: "negative integer", in: int64(-1), err: "negative size -1"},
		{name: "negative string", in: "-1KiB", err: `invalid size "-1KiB"`},
		{name: "fraction", in: "1.5MiB", err: `invalid size "1.5MiB"`},
		{name: "unknown unit", in: "3 PiB", err: `invalid size "3 PiB"`},
		{name: "empty", in: "", err: `invalid size ""`},
		{name: "overflow", in: "9999999999GiB", err: `size "9999999999GiB" is too large`},
		{name: "float", in: 1.5, err: "got float"},
		{name: "boolean", in: true, err: "got boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0s", 0, true}, {"24h", 24 * time.Hour, true}, {"1h30m", 90 * time.Minute, true},
		{"-5s", 0, false}, {"1d", 0, false}, {"", 0, false}, {"5", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestCheckDomain(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "devices.fleet.test", want: "devices.fleet.test"},
		{in: "Devices.Fleet.TEST", want: "devices.fleet.test"},
		{in: "*.fleet.test", want: "*.fleet.test"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "", err: "empty domain"},
		{in: "localhost", err: "want at least 2 labels"},
		{in: "*.test", err: "want at least 2 labels"},
		{in: "*", err: "a wildcard must be the whole first label"},
		{in: "a.*.test", err: "a wildcard must be the whole first label"},
		{in: "**.fleet.test", err: "a wildcard must be the whole first label"},
		{in: "devices.fleet.test.", err: "trailing dot"},
		{in: "devices.fleet.test:443", err: "without scheme, port or path"},
		{in: "devices.fleet.test/api", err: "without scheme, port or path"},
		{in: "https://devices.fleet.test", err: "without scheme, port or path"},
		{in: "10.0.0.1", err: "is an IP address"},
		{in: "::1", err: "without scheme, port or path"},
		{in: "-bad.fleet.test", err: "starts or ends with a hyphen"},
		{in: "dev_ices.fleet.test", err: "letters, digits and hyphens only"},
		{in: "a..b", err: "1 to 63 characters"},
		{in: strings.Repeat("a", 64) + ".test", err: "1 to 63 characters"},
		{in: strings.Repeat("a.", 127) + "test", err: "longer than 253"},
		{in: "fleet.123", err: "the last label is numeric"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := checkDomain(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCheckListenURLAndCookie(t *testing.T) {
	for _, s := range []string{"127.0.0.1:8443", ":8443", "[::1]:0", "localhost:9443", "gw.fleet.test:443"} {
		if err := checkListen(s); err != nil {
			t.Errorf("checkListen(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "8443", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:https", "bad host:1", "[::1]"} {
		if checkListen(s) == nil {
			t.Errorf("checkListen(%q) accepted", s)
		}
	}
	for _, tc := range []struct {
		in   string
		bare bool
		ok   bool
	}{
		{"http://127.0.0.1:9000", true, true},
		{"https://origin.internal/", true, true},
		{"https://access.fleet.test/team", false, true},
		{"https://origin.internal/api", true, false},
		{"ftp://origin.internal", true, false},
		{"http://", true, false},
		{"http://user:pw@origin.internal", true, false},
		{"http://origin.internal?x=1", true, false},
		{"http://origin.internal#f", false, false},
		{"http://origin.internal:70000", true, false},
		{"origin.internal:80", true, false},
		{"mailto:a@b", false, false},
	} {
		if _, err := checkURL(tc.in, tc.bare); (err == nil) != tc.ok {
			t.Errorf("checkURL(%q, %v): %v", tc.in, tc.bare, err)
		}
	}
	for _, tc := range []struct {
		in string
		ok bool
	}{{"CF_Authorization", true}, {"a-b.c~!", true}, {"", false}, {"a b", false}, {"a;b", false}, {"é", false}} {
		if err := checkCookieName(tc.in); (err == nil) != tc.ok {
			t.Errorf("checkCookieName(%q): %v", tc.in, err)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"listen", "admin_listen", "issuer"}
	for in, want := range map[string]string{
		"lisen":                   ` (did you mean "listen"?)`,
		"isuer":                   ` (did you mean "issuer"?)`,
		"admin-listen":            ` (did you mean "admin_listen"?)`,
		"something_else":          "",
		strings.Repeat("x", 1000): "",
	} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%.20q) = %q, want %q", in, got, want)
		}
	}
}

func TestPositions(t *testing.T) {
	doc := `top = 1
[a]
b.c = 2
"quoted key" = 3
[[arr]]
x = [
  { y = 1 },
  { z = { w = [[1], [
    2]] } },
]
[[arr]]
[arr.sub]
k = 1
[[arr.list]]
m = 1
[[arr.list]]
n = 1
`
	pos := scanPositions([]byte(doc))
	for path, want := range map[string]int{
		"top": 1, "a": 2, "a.b": 3, "a.b.c": 3, `a."quoted key"`: 4,
		"arr": 5, "arr[0]": 5, "arr[0].x": 6, "arr[0].x[0]": 7, "arr[0].x[0].y": 7,
		"arr[0].x[1].z.w": 8, "arr[0].x[1].z.w[1][0]": 9,
		"arr[0].x[1].z.w[1]": 9, // the parser keeps no position for '[': an array is on its first element's line
		"arr[1]":             11, "arr[1].sub": 12, "arr[1].sub.k": 13,
		"arr[1].list[0]": 14, "arr[1].list[0].m": 15, "arr[1].list[1].n": 17,
		"arr[1].list[1].missing": 16, // falls back to its table
		"nothing":                0,
	} {
		if got := pos.line(path); got != want {
			t.Errorf("line(%s) = %d, want %d", path, got, want)
		}
	}
}

// TestSharesPort: which pairs of listen addresses collide on one port.
func TestSharesPort(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:8443", "127.0.0.1:8443", true},
		{":8443", "127.0.0.1:8443", true},
		{"0.0.0.0:9443", "10.0.0.1:9443", true},
		{"[::]:9443", "127.0.0.1:9443", true},
		{"LOCALHOST:1", "localhost:1", true},
		{"127.0.0.1:8443", "127.0.0.1:9443", false},
		{"127.0.0.1:8443", "127.0.0.2:8443", false},
		{"127.0.0.1:0", "127.0.0.1:0", false}, // each gets a port of its own
		{":0", ":0", false},
	} {
		if got := sharesPort(c.a, c.b); got != c.want {
			t.Errorf("sharesPort(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
