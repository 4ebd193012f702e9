package proxyv2

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

var (
	src4 = netip.MustParseAddrPort("198.51.100.7:50312")
	dst4 = netip.MustParseAddrPort("192.0.2.1:8443")
	src6 = netip.MustParseAddrPort("[2001:db8::7]:50312")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:8443")
	id   = ID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	leaf = bytes.Repeat([]byte{0x30, 0x82}, 300) // stands in for DER: the header does not parse it
	tlsF = TLS{Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", SigAlg: "ECDSA-SHA256", KeyAlg: "EC256"}
)

// parsed is a header read back with go-proxyproto, as an origin reads it.
type parsed struct {
	h    *proxyproto.Header
	tlvs map[proxyproto.PP2Type][]byte
	ssl  tlvparse.PP2SSL
	sub  map[proxyproto.PP2Type][]byte
}

func readBack(t *testing.T, b []byte) parsed {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(append(b, "device bytes"...)))
	h, err := proxyproto.Read(r)
	if err != nil {
		t.Fatalf("proxyproto.Read: %v", err)
	}
	// The header must end exactly where the relayed bytes start.
	if rest, _ := io.ReadAll(r); string(rest) != "device bytes" {
		t.Fatalf("after the header: %q", rest)
	}
	p := parsed{h: h, tlvs: map[proxyproto.PP2Type][]byte{}, sub: map[proxyproto.PP2Type][]byte{}}
	if h.Version != 2 {
		return p
	}
	tlvs, err := h.TLVs()
	if err != nil {
		t.Fatalf("TLVs: %v", err)
	}
	for _, tlv := range tlvs {
		if _, dup := p.tlvs[tlv.Type]; dup {
			t.Errorf("TLV %#x twice", tlv.Type)
		}
		p.tlvs[tlv.Type] = tlv.Value
	}
	ssl, ok := tlvparse.FindSSL(tlvs)
	if !ok {
		t.Fatal("no well-formed SSL TLV")
	}
	p.ssl = ssl
	for _, s := range ssl.TLV {
		if _, dup := p.sub[s.Type]; dup {
			t.Errorf("SSL sub-TLV %#x twice", s.Type)
		}
		p.sub[s.Type] = s.Value
	}
	return p
}

func TestV2(t *testing.T) {
	for _, tc := range []struct {
		name        string
		src, dst    netip.AddrPort
		proto       proxyproto.AddressFamilyAndProtocol
		verified    bool
		includeCert bool
	}{
		{name: "IPv4 verified", src: src4, dst: dst4, proto: proxyproto.TCPv4, verified: true},
		{name: "IPv4 verified with certificate", src: src4, dst: dst4, proto: proxyproto.TCPv4, verified: true, includeCert: true},
		{name: "IPv4 bypass", src: src4, dst: dst4, proto: proxyproto.TCPv4},
		{name: "IPv6 verified", src: src6, dst: dst6, proto: proxyproto.TCPv6, verified: true},
		{name: "IPv6 verified with certificate", src: src6, dst: dst6, proto: proxyproto.TCPv6, verified: true, includeCert: true},
		{name: "IPv6 bypass", src: src6, dst: dst6, proto: proxyproto.TCPv6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Conn{Source: tc.src, Destination: tc.dst, SNI: "telemetry.fleet.test", ID: id, TLS: tlsF, Verified: tc.verified}
			if tc.verified {
				c.CN, c.Token, c.IncludeCert = "sensor-0001", "eyJhbGciOiJFUzI1NiJ9.e30.sig", tc.includeCert
				c.LeafDER = leaf
			}
			b, err := V2(c)
			if err != nil {
				t.Fatal(err)
			}
			p := readBack(t, b)
			h := p.h
			if h.Version != 2 || h.Command != proxyproto.PROXY || h.TransportProtocol != tc.proto {
				t.Errorf("version %d command %v protocol %v", h.Version, h.Command, h.TransportProtocol)
			}
			s, d, ok := h.TCPAddrs()
			if !ok || s.AddrPort() != tc.src || d.AddrPort() != tc.dst {
				t.Errorf("addresses %v → %v, want %v → %v", s, d, tc.src, tc.dst)
			}
			if got := string(p.tlvs[proxyproto.PP2_TYPE_AUTHORITY]); got != "telemetry.fleet.test" {
				t.Errorf("authority %q", got)
			}
			if got := p.tlvs[proxyproto.PP2_TYPE_UNIQUE_ID]; !bytes.Equal(got, id[:]) {
				t.Errorf("unique id %x", got)
			}
			want := map[proxyproto.PP2Type]string{
				proxyproto.PP2_SUBTYPE_SSL_VERSION: "TLSv1.3",
				proxyproto.PP2_SUBTYPE_SSL_CIPHER:  "TLS_AES_128_GCM_SHA256",
				proxyproto.PP2_SUBTYPE_SSL_SIG_ALG: "ECDSA-SHA256",
				proxyproto.PP2_SUBTYPE_SSL_KEY_ALG: "EC256",
			}
			wantTLVs := 3 // authority, unique id, SSL
			if tc.verified {
				want[proxyproto.PP2_SUBTYPE_SSL_CN] = "sensor-0001"
				if tc.includeCert {
					want[proxyproto.PP2_SUBTYPE_SSL_CLIENT_CERT] = string(leaf)
				}
				wantTLVs++ // token
				if got := string(p.tlvs[TypeToken]); got != c.Token {
					t.Errorf("token TLV %q", got)
				}
				if p.ssl.Client != 0x07 || p.ssl.Verify != 0 || !p.ssl.Verified() || !p.ssl.ClientCertConn() || !p.ssl.ClientCertSess() {
					t.Errorf("SSL client %#x verify %d, want 0x07 and 0", p.ssl.Client, p.ssl.Verify)
				}
			} else {
				if _, ok := p.tlvs[TypeToken]; ok {
					t.Error("token TLV without a verified certificate")
				}
				if p.ssl.Client != 0x01 || p.ssl.Verify == 0 || p.ssl.Verified() {
					t.Errorf("SSL client %#x verify %d, want 0x01 and non-zero", p.ssl.Client, p.ssl.Verify)
				}
			}
			if len(p.tlvs) != wantTLVs {
				t.Errorf("%d TLVs, want %d: %v", len(p.tlvs), wantTLVs, p.tlvs)
			}
			if len(p.sub) != len(want) {
				t.Errorf("SSL sub-TLVs %v, want %v", p.sub, want)
			}
			for typ, v := range want {
				if got, ok := p.sub[typ]; !ok || string(got) != v {
					t.Errorf("SSL sub-TLV %#x = %.40q (present %v), want %.40q", typ, got, ok, v)
				}
			}
			// The library's own accessors agree.
			if v, _ := p.ssl.SSLVersion(); v != "TLSv1.3" {
				t.Errorf("SSLVersion %q", v)
			}
			if cn, ok := p.ssl.ClientCN(); ok != tc.verified || (ok && cn != "sensor-0001") {
				t.Errorf("ClientCN %q %v", cn, ok)
			}
			if _, ok := p.ssl.ClientCert(); ok != tc.includeCert {
				t.Errorf("ClientCert present %v", ok)
			}
		})
	}
}

// TestV2MixedFamilies: an IPv4 device on a dual-stack listener (IPv4-mapped
// addresses) is TCP4; a v4 device to a v6 listener address is TCP6.
func TestV2MixedFamilies(t *testing.T) {
	mapped := netip.AddrPortFrom(netip.AddrFrom16(src4.Addr().As16()), src4.Port())
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		proto    proxyproto.AddressFamilyAndProtocol
		wantSrc  string
	}{
		{"v4-mapped source, v4 destination", mapped, dst4, proxyproto.TCPv4, "198.51.100.7:50312"},
		{"v4 source, v6 destination", src4, dst6, proxyproto.TCPv6, "[::ffff:198.51.100.7]:50312"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := V2(&Conn{Source: tc.src, Destination: tc.dst, ID: id, TLS: tlsF})
			if err != nil {
				t.Fatal(err)
			}
			h := readBack(t, b).h
			s, _, _ := h.TCPAddrs()
			if h.TransportProtocol != tc.proto || s.AddrPort().String() != tc.wantSrc {
				t.Errorf("protocol %v source %v, want %v %s", h.TransportProtocol, s.AddrPort(), tc.proto, tc.wantSrc)
			}
			if _, ok := readBack(t, b).tlvs[proxyproto.PP2_TYPE_AUTHORITY]; ok {
				t.Error("authority TLV without an SNI")
			}
		})
	}
}

func TestV1(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		want     string
	}{
		{"IPv4", src4, dst4, "PROXY TCP4 198.51.100.7 192.0.2.1 50312 8443\r\n"},
		{"IPv6", src6, dst6, "PROXY TCP6 2001:db8::7 2001:db8::1 50312 8443\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := V1(tc.src, tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got %q, want %q", b, tc.want)
			}
			h := readBack(t, b).h
			s, d, ok := h.TCPAddrs()
			if h.Version != 1 || !ok || s.AddrPort() != tc.src || d.AddrPort() != tc.dst {
				t.Errorf("read back version %d %v → %v", h.Version, s, d)
			}
		})
	}
}

// TestLargeClientCertificate: a 4 KiB certificate fits the header; a
// go-proxyproto receiver needs MaxV2HeaderSize raised to read it (its 4096
// default refuses it), which the package documentation says.
func TestLargeClientCertificate(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5}, 4096)
	b, err := V2(&Conn{Source: src4, Destination: dst4, SNI: "telemetry.fleet.test", ID: id, TLS: tlsF,
		Verified: true, CN: "sensor-0001", LeafDER: big, IncludeCert: true, Token: strings.Repeat("t", 1200)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b))); !errors.Is(err, proxyproto.ErrInvalidLength) {
		t.Errorf("with the default MaxV2HeaderSize: %v, want ErrInvalidLength", err)
	}
	old := proxyproto.MaxV2HeaderSize
	proxyproto.MaxV2HeaderSize = 0xffff
	t.Cleanup(func() { proxyproto.MaxV2HeaderSize = old })
	p := readBack(t, b)
	if got := p.sub[proxyproto.PP2_SUBTYPE_SSL_CLIENT_CERT]; !bytes.Equal(got, big) {
		t.Errorf("client certificate: %d bytes, want %d", len(got), len(big))
	}
	if got := string(p.tlvs[TypeToken]); len(got) != 1200 {
		t.Errorf("token: %d bytes", len(got))
	}
}

func TestV2Refuses(t *testing.T) {
	ok := Conn{Source: src4, Destination: dst4, ID: id, TLS: tlsF, Verified: true, CN: "sensor-0001"}
	for _, tc := range []struct {
		name   string
		change func(c *Conn)
		want   error
	}{
		{"no source", func(c *Conn) { c.Source = netip.AddrPort{} }, ErrAddress},
		{"no destination", func(c *Conn) { c.Destination = netip.AddrPort{} }, ErrAddress},
		{"token without a verified certificate", func(c *Conn) { c.Verified, c.CN, c.Token = false, "", "tok" }, ErrIdentity},
		{"CN without a verified certificate", func(c *Conn) { c.Verified = false }, ErrIdentity},
		{"certificate without a verified certificate", func(c *Conn) { c.Verified, c.CN, c.LeafDER, c.IncludeCert = false, "", leaf, true }, ErrIdentity},
		{"IncludeCert without DER", func(c *Conn) { c.IncludeCert = true }, ErrValue},
		{"no TLS version", func(c *Conn) { c.TLS.Version = "" }, ErrValue},
		{"non-ASCII cipher", func(c *Conn) { c.TLS.Cipher = "AES-ü" }, ErrValue},
		{"CN not UTF-8", func(c *Conn) { c.CN = "\xff\xfe" }, ErrValue},
		{"certificate over 64 KiB", func(c *Conn) { c.LeafDER, c.IncludeCert = make([]byte, 70000), true }, ErrTooLarge},
		{"header over 64 KiB", func(c *Conn) {
			c.LeafDER, c.IncludeCert, c.Token = make([]byte, 40000), true, strings.Repeat("t", 30000)
		}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			b, err := V2(&c)
			if !errors.Is(err, tc.want) || b != nil {
				t.Errorf("got %d bytes, %v; want %v", len(b), err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "proxyv2: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	if _, err := V1(netip.AddrPort{}, dst4); !errors.Is(err, ErrAddress) {
		t.Errorf("V1 without a source: %v", err)
	}
}

func TestAddrPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   net.Addr
		want string
		err  bool
	}{
		{"TCP v4", &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 50312}, "198.51.100.7:50312", false},
		{"TCP v6", &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 443}, "[2001:db8::7]:443", false},
		{"other net.Addr", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53}, "192.0.2.1:53", false},
		{"nil", nil, "", true},
		{"nil *TCPAddr", (*net.TCPAddr)(nil), "", true},
		{"TCPAddr without IP", &net.TCPAddr{Port: 1}, "", true},
		{"unix", &net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AddrPort(tc.in)
			if (err != nil) != tc.err || (err == nil && got.String() != tc.want) {
				t.Errorf("got %v, %v; want %q (error %v)", got, err, tc.want, tc.err)
			}
			if err != nil && !errors.Is(err, ErrAddress) {
				t.Errorf("error %v is not ErrAddress", err)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	a, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a == (ID{}) {
		t.Errorf("ids %v and %v", a, b)
	}
	if s := a.String(); len(s) != 32 || strings.Trim(s, "0123456789abcdef") != "" {
		t.Errorf("String %q", s)
	}
	if got := id.String(); got != "00112233445566778899aabbccddeeff" {
		t.Errorf("String %q", got)
	}
}

func TestVersionName(t *testing.T) {
	for v, want := range map[uint16]string{tls.VersionTLS13: "TLSv1.3", tls.VersionTLS12: "TLSv1.2", tls.VersionTLS11: "TLSv1.1", tls.VersionTLS10: "TLSv1", 0x0305: "0x0305"} {
		if got := VersionName(v); got != want {
			t.Errorf("VersionName(%#x) = %q, want %q", v, got, want)
		}
	}
}
