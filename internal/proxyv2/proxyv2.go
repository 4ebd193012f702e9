package proxyv2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unicode/utf8"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// TypeToken is the TLV type that carries the session token: the first of the
// types the specification reserves for applications (0xE0..0xEF).
const TypeToken = proxyproto.PP2_TYPE_MIN_CUSTOM

// verifyNone is the SSL TLV's verify field when no verified certificate is
// passed on. The specification only asks for non-zero.
const verifyNone = 1

// TLS holds the facts of the device's TLS connection that every v2 header
// carries, with or without a client certificate.
type TLS struct {
	// Version is the protocol version as OpenSSL names it, "TLSv1.3" (see
	// VersionName). Required: receivers refuse an SSL TLV without it.
	Version string
	// Cipher is the cipher suite's name, such as "TLS_AES_128_GCM_SHA256".
	// Optional.
	Cipher string
	// SigAlg and KeyAlg name the signature and key algorithms of the
	// gateway's certificate for the SNI (the "certificate presented by the
	// frontend" of the specification), such as "ECDSA-SHA256" and "EC256".
	// Optional.
	SigAlg, KeyAlg string
}

// Conn is everything a v2 header says about one relayed connection.
type Conn struct {
	// Source is the device's address and Destination the gateway's listener
	// address the device connected to. Both must be valid; an IPv4 pair gives
	// a TCP4 header, anything else TCP6 (an IPv4 side as ::ffff:a.b.c.d).
	Source, Destination netip.AddrPort
	// SNI is the server name the device asked for (PP2_TYPE_AUTHORITY);
	// omitted when empty.
	SNI string
	// ID identifies the connection (PP2_TYPE_UNIQUE_ID); the gateway logs
	// the same id, so an origin's log lines can be joined with the gateway's.
	ID  ID
	TLS TLS
	// Verified is true when the device presented a certificate and its chain
	// verified. Only then are CN, the certificate and the token sent.
	Verified bool
	// CN is the verified leaf certificate's subject common name; omitted
	// when empty.
	CN string
	// LeafDER is the verified leaf certificate, sent as SSL_CLIENT_CERT when
	// IncludeCert is set.
	LeafDER     []byte
	IncludeCert bool
	// Token is the session token minted for the connection (TLV 0xE0);
	// omitted when empty. It needs Verified: a bypass decision mints none.
	Token string
}

// Errors V2 and V1 return for input that cannot make a valid header. They
// are wrapped with details; test with errors.Is.
var (
	ErrAddress  = errors.New("proxyv2: invalid address")
	ErrIdentity = errors.New("proxyv2: identity without a verified certificate")
	ErrTooLarge = errors.New("proxyv2: header larger than 65535 bytes")
	ErrValue    = errors.New("proxyv2: invalid value")
)

// V2 returns the PROXY protocol v2 header for c (command PROXY, TCP over
// IPv4 or IPv6) with the TLVs the package documentation lists.
func V2(c *Conn) ([]byte, error) {
	src, dst, err := tcpAddrs(c.Source, c.Destination)
	if err != nil {
		return nil, err
	}
	if !c.Verified && (c.CN != "" || c.IncludeCert || c.Token != "") {
		return nil, fmt.Errorf("%w: CN, client certificate and token are only sent for a verified certificate", ErrIdentity)
	}
	if err := checkASCII("TLS version", c.TLS.Version, true); err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{{"cipher", c.TLS.Cipher}, {"signature algorithm", c.TLS.SigAlg}, {"key algorithm", c.TLS.KeyAlg}} {
		if err := checkASCII(f.name, f.v, false); err != nil {
			return nil, err
		}
	}
	if !utf8.ValidString(c.CN) {
		return nil, fmt.Errorf("%w: the common name is not valid UTF-8", ErrValue)
	}
	if c.IncludeCert && len(c.LeafDER) == 0 {
		return nil, fmt.Errorf("%w: IncludeCert without LeafDER", ErrValue)
	}

	ssl := tlvparse.PP2SSL{Client: tlvparse.PP2_BITFIELD_CLIENT_SSL, Verify: verifyNone}
	sub := func(t proxyproto.PP2Type, v []byte) {
		if len(v) > 0 {
			ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: t, Value: v})
		}
	}
	sub(proxyproto.PP2_SUBTYPE_SSL_VERSION, []byte(c.TLS.Version))
	if c.Verified {
		ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN | tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
		ssl.Verify = 0
		sub(proxyproto.PP2_SUBTYPE_SSL_CN, []byte(c.CN))
	}
	sub(proxyproto.PP2_SUBTYPE_SSL_CIPHER, []byte(c.TLS.Cipher))
	sub(proxyproto.PP2_SUBTYPE_SSL_SIG_ALG, []byte(c.TLS.SigAlg))
	sub(proxyproto.PP2_SUBTYPE_SSL_KEY_ALG, []byte(c.TLS.KeyAlg))
	if c.Verified && c.IncludeCert {
		sub(proxyproto.PP2_SUBTYPE_SSL_CLIENT_CERT, c.LeafDER)
	}
	sslTLV, err := ssl.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}

	var tlvs []proxyproto.TLV
	if c.SNI != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(c.SNI)})
	}
	id := c.ID
	tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: id[:]}, sslTLV)
	if c.Verified && c.Token != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: TypeToken, Value: []byte(c.Token)})
	}

	h := proxyproto.HeaderProxyFromAddrs(2, src, dst)
	if err := h.SetTLVs(tlvs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	b, err := h.Format()
	if err != nil {
		if errors.Is(err, proxyproto.ErrInvalidAddress) {
			return nil, fmt.Errorf("%w: %w", ErrAddress, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return b, nil
}

// V1 returns the PROXY protocol v1 line for a connection from source to
// destination: "PROXY TCP4 198.51.100.7 192.0.2.1 50312 8443\r\n". Version 1
// carries addresses only: no SNI, certificate or token.
func V1(source, destination netip.AddrPort) ([]byte, error) {
	src, dst, err := tcpAddrs(source, destination)
	if err != nil {
		return nil, err
	}
	b, err := proxyproto.HeaderProxyFromAddrs(1, src, dst).Format()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAddress, err)
	}
	return b, nil
}

// AddrPort converts a connection's address as the net package or an event
// loop reports it (*net.TCPAddr, or any net.Addr whose String is
// "host:port" with an IP host) into a netip.AddrPort. IPv4-mapped IPv6
// addresses come back as IPv4.
func AddrPort(a net.Addr) (netip.AddrPort, error) {
	switch a := a.(type) {
	case nil:
		return netip.AddrPort{}, fmt.Errorf("%w: nil address", ErrAddress)
	case *net.TCPAddr:
		if a == nil {
			return netip.AddrPort{}, fmt.Errorf("%w: nil address", ErrAddress)
		}
		ap := a.AddrPort()
		if !ap.Addr().IsValid() {
			return netip.AddrPort{}, fmt.Errorf("%w: %v has no IP", ErrAddress, a)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: %w", ErrAddress, a.String(), err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// tcpAddrs checks both ends and converts them for go-proxyproto, which picks
// TCP4 when both are IPv4 (an IPv4-mapped IPv6 address counts as IPv4) and
// TCP6 otherwise.
func tcpAddrs(source, destination netip.AddrPort) (*net.TCPAddr, *net.TCPAddr, error) {
	if !source.Addr().IsValid() || !destination.Addr().IsValid() {
		return nil, nil, fmt.Errorf("%w: source %v, destination %v", ErrAddress, source, destination)
	}
	conv := func(ap netip.AddrPort) *net.TCPAddr {
		return &net.TCPAddr{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())}
	}
	return conv(source), conv(destination), nil
}

// checkASCII refuses what a receiver refuses in the SSL TLV: non-ASCII text
// (and, when required, an empty one).
func checkASCII(name, s string, required bool) error {
	if required && s == "" {
		return fmt.Errorf("%w: the %s is required", ErrValue, name)
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return fmt.Errorf("%w: the %s %q is not ASCII", ErrValue, name, s)
		}
	}
	return nil
}
