package proxyv2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// Received is what a load balancer's PROXY header says about the connection
// it passes on to the gateway.
type Received struct {
	// Source is the client's address and Destination the address the client
	// connected to (the balancer's own). Both are invalid when Local is set.
	Source, Destination netip.AddrPort
	// Local is set for a header that passes on no client: a v2 LOCAL command
	// (the balancer's own connection, such as a health check) or a v1
	// "PROXY UNKNOWN" line. The specification then has the receiver use the
	// connection's own addresses.
	Local bool
}

// v1MaxLen is the longest version 1 line, CRLF included, that the
// specification allows.
const v1MaxLen = 107

// v2FixedLen is the fixed part of a version 2 header: the signature, the
// version and command, the family and the length of what follows.
const v2FixedLen = 16

// Parse's errors. Every one wraps ErrReceived with what was wrong; bytes
// that do not even start like a header (a sender that sent none) also wrap
// ErrNoHeader.
var (
	ErrReceived = errors.New("proxyv2: no valid PROXY header")
	ErrNoHeader = errors.New("no PROXY protocol signature")
)

// Parse reads the PROXY protocol header (version 1 or 2) at the start of b,
// as a load balancer sends it ahead of its client's bytes, and returns it
// with its length in bytes. A nil error with n == 0 means that b is the
// beginning of a header and more bytes are needed. Anything else at the start
// of b is an error: a sender that must send a header sent none, or a broken
// one. A version 2 header may carry up to proxyproto.MaxV2HeaderSize (4096)
// bytes after its fixed 16, go-proxyproto's own bound; its TLVs are not
// read. Only TCP over IPv4 or IPv6 is accepted from a PROXY command: the
// header is read on a TCP connection, for a TCP client. The encoding is
// go-proxyproto's; this function only finds where the header ends, since the
// library reads from a stream and cannot tell a short header from a bad one.
func Parse(b []byte) (h Received, n int, err error) {
	n, err = headerLen(b)
	if n == 0 || err != nil {
		return Received{}, 0, err
	}
	r := bufio.NewReaderSize(bytes.NewReader(b[:n]), n)
	ph, err := proxyproto.Read(r)
	if err != nil {
		return Received{}, 0, fmt.Errorf("%w: %w", ErrReceived, err)
	}
	if r.Buffered() != 0 {
		return Received{}, 0, fmt.Errorf("%w: %d bytes of the header left unread", ErrReceived, r.Buffered())
	}
	if ph.Command.IsLocal() || ph.TransportProtocol == proxyproto.UNSPEC {
		return Received{Local: true}, n, nil
	}
	if ph.TransportProtocol != proxyproto.TCPv4 && ph.TransportProtocol != proxyproto.TCPv6 {
		return Received{}, 0, fmt.Errorf("%w: a %s connection, not TCP", ErrReceived, familyName(ph.TransportProtocol))
	}
	src, dst, ok := ph.TCPAddrs()
	if !ok {
		return Received{}, 0, fmt.Errorf("%w: no TCP addresses", ErrReceived)
	}
	h.Source, err = AddrPort(src)
	if err == nil {
		h.Destination, err = AddrPort(dst)
	}
	if err != nil {
		return Received{}, 0, fmt.Errorf("%w: %w", ErrReceived, err)
	}
	return h, n, nil
}

// headerLen is the length of the header at the start of b: 0 while b is a
// valid beginning of one, an error when b cannot begin one or the header
// is longer than allowed.
func headerLen(b []byte) (int, error) {
	switch {
	case startsLike(b, proxyproto.SIGV2):
		if len(b) < v2FixedLen {
			return 0, nil
		}
		body := int(binary.BigEndian.Uint16(b[14:16]))
		if body > int(proxyproto.MaxV2HeaderSize) {
			return 0, fmt.Errorf("%w: a version 2 header of %d bytes, over the %d allowed", ErrReceived, v2FixedLen+body, v2FixedLen+int(proxyproto.MaxV2HeaderSize))
		}
		if len(b) < v2FixedLen+body {
			return 0, nil
		}
		return v2FixedLen + body, nil
	case startsLike(b, proxyproto.SIGV1):
		line := b[:min(len(b), v1MaxLen)]
		if end := bytes.IndexByte(line, '\n'); end >= 0 {
			return end + 1, nil
		}
		if len(b) >= v1MaxLen {
			return 0, fmt.Errorf("%w: a version 1 line longer than %d bytes", ErrReceived, v1MaxLen)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("%w: %w", ErrReceived, ErrNoHeader)
}

// startsLike reports whether b and sig agree on their common length: b
// starts with sig, or is a beginning of it.
func startsLike(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return bytes.Equal(b[:n], sig[:n])
}

// familyName names a v2 address family and transport for an error.
func familyName(p proxyproto.AddressFamilyAndProtocol) string {
	switch {
	case p.IsUnix():
		return "unix socket"
	case p.IsDatagram():
		return "UDP"
	}
	return fmt.Sprintf("0x%02x", byte(p))
}
