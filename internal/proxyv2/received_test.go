package proxyv2

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
)

func header(t *testing.T, version byte, src, dst string, tlvs ...proxyproto.TLV) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParse reads the headers balancers send: v1 and v2, IPv4 and IPv6, with
// TLVs (an AWS load balancer adds its endpoint id), LOCAL and UNKNOWN; the
// device's bytes that follow are left alone, and every proper beginning of a
// header asks for more.
func TestParse(t *testing.T) {
	awsTLV := proxyproto.TLV{Type: 0xEA, Value: append([]byte{0x01}, "vpce-08d2bf15fac5001c9"...)}
	local := append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x00, 0x00, 0x00)
	localV4 := append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x11, 0x00, 0x0c)
	localV4 = append(localV4, make([]byte, 12)...)
	cases := []struct {
		name string
		b    []byte
		want Received
	}{
		{"v2 TCP4", header(t, 2, "203.0.113.9:40000", "192.0.2.1:443"),
			Received{Source: netip.MustParseAddrPort("203.0.113.9:40000"), Destination: netip.MustParseAddrPort("192.0.2.1:443")}},
		{"v2 TCP6 with a TLV", header(t, 2, "[2001:db8::7]:1", "[2001:db8::1]:443", awsTLV),
			Received{Source: netip.MustParseAddrPort("[2001:db8::7]:1"), Destination: netip.MustParseAddrPort("[2001:db8::1]:443")}},
		{"v2 IPv4-mapped", header(t, 2, "[::ffff:203.0.113.9]:5", "[2001:db8::1]:443"),
			Received{Source: netip.MustParseAddrPort("203.0.113.9:5"), Destination: netip.MustParseAddrPort("[2001:db8::1]:443")}},
		{"v1 TCP4", []byte("PROXY TCP4 198.51.100.4 192.0.2.1 5555 443\r\n"),
			Received{Source: netip.MustParseAddrPort("198.51.100.4:5555"), Destination: netip.MustParseAddrPort("192.0.2.1:443")}},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::8 2001:db8::1 5555 443\r\n"),
			Received{Source: netip.MustParseAddrPort("[2001:db8::8]:5555"), Destination: netip.MustParseAddrPort("[2001:db8::1]:443")}},
		{"v2 LOCAL", local, Received{Local: true}},
		{"v2 LOCAL with an address block", localV4, Received{Local: true}},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), Received{Local: true}},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n"), Received{Local: true}},
	}
	tail := []byte("\x16\x03\x01\x00\xa5") // a ClientHello's record header
	for _, tc := range cases {
		for i := range len(tc.b) {
			if _, n, err := Parse(tc.b[:i]); n != 0 || err != nil {
				t.Errorf("%s: the first %d bytes: n %d, %v; want more bytes asked for", tc.name, i, n, err)
			}
		}
		got, n, err := Parse(append(append([]byte{}, tc.b...), tail...))
		if err != nil || n != len(tc.b) || got != tc.want {
			t.Errorf("%s: %+v, %d, %v; want %+v, %d", tc.name, got, n, err, tc.want, len(tc.b))
		}
	}
}

// TestParseRefuses: what is not a header, or not one of a TCP client, is an
// error as soon as the bytes show it, without waiting for more.
func TestParseRefuses(t *testing.T) {
	v2 := header(t, 2, "203.0.113.9:40000", "192.0.2.1:443")
	with := func(i int, v byte) []byte {
		b := bytes.Clone(v2)
		b[i] = v
		return b
	}
	cases := []struct {
		name   string
		b      []byte
		noSig  bool
		reason string
	}{
		{"a TLS ClientHello", []byte("\x16\x03\x01\x00\xa5\x01"), true, "signature"},
		{"HTTP", []byte("GET / HTTP/1.1\r\n"), true, "signature"},
		{"one wrong byte", []byte("PROXZ"), true, "signature"},
		{"v1 without CR", []byte("PROXY TCP4 198.51.100.4 192.0.2.1 5555 443\n"), false, "\\r\\n"},
		{"v1 too long", []byte("PROXY TCP4 " + strings.Repeat("9", 100)), false, "longer than 107"},
		{"v1 bad address", []byte("PROXY TCP4 198.51.100.400 192.0.2.1 5555 443\r\n"), false, ""},
		{"v1 bad family", []byte("PROXY UDP4 198.51.100.4 192.0.2.1 5555 443\r\n"), false, ""},
		{"v2 UDP", with(13, byte(proxyproto.UDPv4)), false, "UDP"},
		{"v2 unix", append(append(bytes.Clone(v2[:13]), byte(proxyproto.UnixStream), 0x00, 0xd8), make([]byte, 216)...), false, "unix"},
		{"v2 version 3", with(12, 0x31), false, ""},
		{"v2 PROXY with no family", append(bytes.Clone(v2[:13]), 0x00, 0x00, 0x00), false, ""},
		{"v2 too long", append(bytes.Clone(v2[:14]), 0x10, 0x0d), false, "over the 4112 allowed"},
		{"v2 short address block", append(bytes.Clone(v2[:14]), 0x00, 0x04, 1, 2, 3, 4), false, ""},
	}
	for _, tc := range cases {
		_, n, err := Parse(tc.b)
		if err == nil || n != 0 || !errors.Is(err, ErrReceived) || errors.Is(err, ErrNoHeader) != tc.noSig || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: n %d, err %v; want ErrReceived (no signature: %v) saying %q", tc.name, n, err, tc.noSig, tc.reason)
		}
	}
}

// FuzzParse: any bytes give a header, a request for more, or an error;
// never a panic, and never a length beyond the input.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 198.51.100.4 192.0.2.1 5555 443\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2))
	f.Add(append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x00, 0x00, 0x00))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		switch {
		case err != nil:
			if n != 0 || !errors.Is(err, ErrReceived) {
				t.Fatalf("error %v with n %d", err, n)
			}
		case n == 0:
			if len(b) >= v2FixedLen+int(proxyproto.MaxV2HeaderSize) {
				t.Fatalf("%d bytes and still asking for more", len(b))
			}
		case n > len(b):
			t.Fatalf("n %d beyond the %d bytes", n, len(b))
		case !h.Local && (!h.Source.IsValid() || !h.Destination.IsValid()):
			t.Fatalf("a header without addresses: %+v", h)
		}
	})
}
