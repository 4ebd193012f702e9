// Package mqttwire checks the first packet an mqtt application's device
// sends (it must be a CONNECT), rewrites the identity fields of that CONNECT,
// and builds the CONNACKs fleetgate refuses devices with. It owns only bytes:
// no sockets, goroutines or clock. Decoding and encoding are
// github.com/mochi-mqtt/server/v2's packets package (MQTT 3.1.1 and 5.0);
// this package decides what to check and what to change.
//
// Its part of the flow:
//
//	gateway (decrypted device bytes, after the handshake)
//	  │ Peek: the first packet's type and size, from its fixed header alone
//	  │   not CONNECT / garbage ─▶ close;  size > max_connect_bytes ─▶ close (MQTT 5: CONNACK 0x95)
//	  ▼ ParseConnect: protocol level 4 (3.1.1) or 5 (5.0), else "unsupported protocol version"
//	Connect ─▶ SetClientID / SetUsername / SetPassword / SetToken
//	  │ Bytes: the device's bytes unchanged, or re-encoded only when something changed
//	  ▼
//	broker;  or a refusal: Connack(version, code, reason, max) then close
//
// and on the way back, under MQTT 5, ServerKeepAlive reads the broker's
// CONNACK for the keep-alive the device will use.
package mqttwire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The protocol levels of a CONNECT that fleetgate relays.
const (
	V311 byte = 4 // MQTT 3.1.1
	V5   byte = 5 // MQTT 5.0
)

// TokenProperty is the MQTT 5 user property that carries the connection's
// signed token to the broker (the HTTP header of the same name carries it to
// an http origin). A device's own property of that name is always removed.
const TokenProperty = "cf-access-jwt-assertion"

// Errors of Peek and ParseConnect.
var (
	// ErrIncomplete: the buffer does not yet hold the fixed header (Peek)
	// or the whole packet (ParseConnect); read more.
	ErrIncomplete = errors.New("mqttwire: incomplete packet")
	// ErrNotConnect: the first packet is another type.
	ErrNotConnect = errors.New("mqttwire: the first packet is not a CONNECT")
	// ErrMalformed: the bytes are not a well-formed packet.
	ErrMalformed = errors.New("mqttwire: malformed CONNECT")
)

// UnsupportedVersionError is ParseConnect's error for a CONNECT whose
// protocol level is neither 4 nor 5.
type UnsupportedVersionError struct{ Level byte }

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("mqttwire: protocol level %d is not 4 (MQTT 3.1.1) or 5 (MQTT 5.0)", e.Level)
}

// Peek reads the fixed header at the start of buf and returns the total
// size of the first packet (fixed header included), so that a limit can be
// enforced before the whole packet has arrived. It returns ErrIncomplete
// when buf does not yet hold the whole fixed header, ErrNotConnect when the
// packet is not a CONNECT, and ErrMalformed for garbage.
func Peek(buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, ErrIncomplete
	}
	var fh packets.FixedHeader
	if err := fh.Decode(buf[0]); err != nil {
		if buf[0]>>4 != packets.Connect {
			return 0, ErrNotConnect
		}
		return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if fh.Type != packets.Connect {
		return 0, ErrNotConnect
	}
	n, used, err := remainingLength(buf)
	switch {
	case errors.Is(err, ErrIncomplete):
		return 0, ErrIncomplete
	case err != nil:
		return 0, fmt.Errorf("%w: remaining length: %v", ErrMalformed, err)
	}
	return 1 + used + n, nil
}

// remainingLength decodes the remaining length that follows the first byte
// of the packet at the start of buf: its value n and the bytes it takes.
// ErrIncomplete: buf ends inside it.
func remainingLength(buf []byte) (n, used int, err error) {
	rest := buf[1:]
	if len(rest) > 4 {
		rest = rest[:4] // a remaining length has at most four bytes
	}
	n, used, err = packets.DecodeLength(bytes.NewReader(rest))
	if errors.Is(err, io.EOF) && len(rest) < 4 {
		return 0, 0, ErrIncomplete
	}
	return n, used, err
}

// PeekVersion returns the protocol level of a CONNECT from as much of it as
// buf holds, and false when buf ends before the level or does not look like
// a CONNECT's start. It lets an oversize CONNECT be refused in the device's
// own version.
func PeekVersion(buf []byte) (byte, bool) {
	size, err := Peek(buf)
	if err != nil || size == 0 {
		return 0, false
	}
	hdr := headerLen(buf)
	if len(buf) < hdr+2 {
		return 0, false
	}
	nameLen := int(buf[hdr])<<8 | int(buf[hdr+1])
	at := hdr + 2 + nameLen
	if nameLen > 6 || len(buf) <= at {
		return 0, false
	}
	return buf[at], true
}

// headerLen is the length of the fixed header at the start of buf, which
// Peek has accepted.
func headerLen(buf []byte) int {
	n := 2
	for i := 1; i < len(buf) && i < 5 && buf[i]&0x80 != 0; i++ {
		n++
	}
	return n
}

// Connect is a decoded CONNECT packet and the bytes it came from. Its
// setters record changes; Bytes returns the original bytes when nothing
// changed.
type Connect struct {
	pk      packets.Packet
	raw     []byte
	changed bool
}

// ParseConnect decodes the CONNECT that is exactly pkt (Peek's size). A
// protocol level other than 4 or 5 is an *UnsupportedVersionError, read
// before the rest of the packet is decoded, so that such a device can be
// told so in a CONNACK.
func ParseConnect(pkt []byte) (*Connect, error) {
	size, err := Peek(pkt)
	if err != nil {
		return nil, err
	}
	if len(pkt) < size {
		return nil, ErrIncomplete
	}
	if len(pkt) > size {
		return nil, fmt.Errorf("%w: %d bytes follow the packet", ErrMalformed, len(pkt)-size)
	}
	hdr := headerLen(pkt)
	c := &Connect{raw: pkt}
	if err := c.pk.FixedHeader.Decode(pkt[0]); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c.pk.FixedHeader.Remaining = size - hdr
	if level, ok := PeekVersion(pkt); ok && level != V311 && level != V5 {
		return nil, &UnsupportedVersionError{Level: level}
	}
	if err := c.pk.ConnectDecode(pkt[hdr:]); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := validate(&c.pk); err != nil {
		return nil, err
	}
	// A device may not hand the broker a token of its own making.
	if c.pk.ProtocolVersion == V5 {
		kept := c.pk.Properties.User[:0]
		for _, p := range c.pk.Properties.User {
			if strings.EqualFold(p.Key, TokenProperty) {
				c.changed = true
				continue
			}
			kept = append(kept, p)
		}
		c.pk.Properties.User = kept
	}
	return c, nil
}

// validate runs mochi's ConnectValidate, except for two refusals the
// specification does not make: a zero-length will payload ([MQTT-3.1.3-10]
// allows any binary data, none included) and a password flag with a
// zero-length password (a password is 0 to 65,535 bytes). ConnectValidate
// stops at its first finding, so it sees a copy in which those two fields
// are one byte long, and every check after them still runs. It adds the
// 3.1.1 rule that a password needs a user name ([MQTT-3.1.2-22]; MQTT 5
// dropped it) and the MQTT 5 rule that a will's response topic has no
// wildcard ([MQTT-3.3.2-14]), which mochi does not check.
func validate(pk *packets.Packet) error {
	probe := *pk
	if probe.Connect.WillFlag && len(probe.Connect.WillPayload) == 0 {
		probe.Connect.WillPayload = []byte{0}
	}
	if probe.Connect.PasswordFlag && len(probe.Connect.Password) == 0 {
		probe.Connect.Password = []byte{0}
	}
	if code := probe.ConnectValidate(); code != packets.CodeSuccess {
		return fmt.Errorf("%w: %s", ErrMalformed, code.Reason)
	}
	if pk.ProtocolVersion == V311 && pk.Connect.PasswordFlag && !pk.Connect.UsernameFlag {
		return fmt.Errorf("%w: an MQTT 3.1.1 password without a user name", ErrMalformed)
	}
	// A will's response topic names no wildcard ([MQTT-3.3.2-14]); mochi's
	// encoder drops such a property, so a re-encoded CONNECT would reach
	// the broker with a will other than the device's.
	if w := pk.Connect.WillProperties.ResponseTopic; pk.Connect.WillFlag && strings.ContainsAny(w, "+#") {
		return fmt.Errorf("%w: a will response topic with a wildcard (%q)", ErrMalformed, w)
	}
	return nil
}

// Version is the CONNECT's protocol level: V311 or V5.
func (c *Connect) Version() byte { return c.pk.ProtocolVersion }

// ClientID is the client identifier the device sent ("" when empty).
func (c *Connect) ClientID() string { return c.pk.Connect.ClientIdentifier }

// Username is the user name the device sent, and whether it sent one.
func (c *Connect) Username() (string, bool) {
	return string(c.pk.Connect.Username), c.pk.Connect.UsernameFlag
}

// Password is the password the device sent, and whether it sent one.
func (c *Connect) Password() ([]byte, bool) {
	return c.pk.Connect.Password, c.pk.Connect.PasswordFlag
}

// MaximumPacketSize is the largest packet the device accepts: its MQTT 5
// Maximum Packet Size property (0: no limit, always under 3.1.1).
func (c *Connect) MaximumPacketSize() uint32 {
	if c.pk.ProtocolVersion != V5 {
		return 0
	}
	return c.pk.Properties.MaximumPacketSize
}

// KeepAlive is the CONNECT's keep-alive in seconds (0: none).
func (c *Connect) KeepAlive() uint16 { return c.pk.Connect.Keepalive }

// UserProperties returns the MQTT 5 user properties (nil under 3.1.1).
func (c *Connect) UserProperties() []packets.UserProperty { return c.pk.Properties.User }

// SetClientID sets the client identifier.
func (c *Connect) SetClientID(id string) {
	if c.pk.Connect.ClientIdentifier != id {
		c.pk.Connect.ClientIdentifier = id
		c.changed = true
	}
}

// SetUsername sets the user name (and its flag).
func (c *Connect) SetUsername(name string) {
	if !c.pk.Connect.UsernameFlag || string(c.pk.Connect.Username) != name {
		c.pk.Connect.Username, c.pk.Connect.UsernameFlag = []byte(name), true
		c.changed = true
	}
}

// SetToken puts token in the password (and its flag) and, under MQTT 5, in
// the user property TokenProperty. MQTT 3.1.1 allows no password without a
// user name: set one first.
func (c *Connect) SetToken(token string) {
	c.pk.Connect.Password, c.pk.Connect.PasswordFlag = []byte(token), true
	if c.pk.ProtocolVersion == V5 {
		c.pk.Properties.User = append(c.pk.Properties.User, packets.UserProperty{Key: TokenProperty, Val: token})
	}
	c.changed = true
}

// Changed reports whether a setter (or the removal of a device's own
// TokenProperty) changed the CONNECT.
func (c *Connect) Changed() bool { return c.changed }

// Bytes returns the CONNECT to send to the broker: the device's bytes when
// nothing changed, else the packet re-encoded.
func (c *Connect) Bytes() ([]byte, error) {
	if !c.changed {
		return c.raw, nil
	}
	if c.pk.Connect.PasswordFlag && !c.pk.Connect.UsernameFlag && c.pk.ProtocolVersion == V311 {
		return nil, errors.New("mqttwire: an MQTT 3.1.1 password needs a user name")
	}
	pk := c.pk
	// Keep a will's response topic and correlation data (the encoder
	// drops them otherwise).
	pk.Mods = packets.Mods{AllowResponseInfo: true}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return nil, fmt.Errorf("mqttwire: encode CONNECT: %w", err)
	}
	return buf.Bytes(), nil
}

// Refusal is why fleetgate refuses a device in a CONNACK.
type Refusal int

// The refusals and their codes: MQTT 3.1.1 return code / MQTT 5 reason code.
const (
	NotAuthorized      Refusal = iota // 5 / 0x87
	BadClientID                       // 2 / 0x85
	ServerUnavailable                 // 3 / 0x88
	UnsupportedVersion                // 1 / 0x84
	PacketTooLarge                    // none / 0x95
)

// Code returns the CONNACK code of r for protocol level version, and false
// when that version has none (a packet too large under MQTT 3.1.1).
func (r Refusal) Code(version byte) (byte, bool) {
	v5 := version == V5
	switch r {
	case NotAuthorized:
		return pick(v5, packets.ErrNotAuthorized.Code, packets.Err3NotAuthorized.Code), true
	case BadClientID:
		return pick(v5, packets.ErrClientIdentifierNotValid.Code, packets.Err3ClientIdentifierNotValid.Code), true
	case ServerUnavailable:
		return pick(v5, packets.ErrServerUnavailable.Code, packets.Err3ServerUnavailable.Code), true
	case UnsupportedVersion:
		return pick(v5, packets.ErrUnsupportedProtocolVersion.Code, packets.Err3UnsupportedProtocolVersion.Code), true
	case PacketTooLarge:
		return pick(v5, packets.ErrPacketTooLarge.Code, 0), v5
	}
	return 0, false
}

func pick(v5 bool, a, b byte) byte {
	if v5 {
		return a
	}
	return b
}

// Connack returns the CONNACK that refuses a device of protocol level
// version with r: an MQTT 5 CONNACK (with reason as its Reason String) for
// level 5 and above, an MQTT 3.1.1 one below. maxSize is the largest
// packet the device accepts (its Maximum Packet Size; 0: no limit): the
// Reason String is left out when the CONNACK would be larger with it
// ([MQTT-3.2.2-19]). It returns nil when the version has no code for r:
// the connection is then closed without one.
func Connack(version byte, r Refusal, reason string, maxSize uint32) []byte {
	if version > V5 {
		// A device newer than 5.0 is told in the newest format fleetgate
		// speaks (the MQTT 5 specification's advice for 0x84).
		version = V5
	}
	if version != V5 {
		version = V311
	}
	code, ok := r.Code(version)
	if !ok {
		return nil
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connack},
		ProtocolVersion: version,
		ReasonCode:      code,
	}
	if version == V5 {
		pk.Properties.ReasonString = reason
	}
	var buf bytes.Buffer
	if err := pk.ConnackEncode(&buf); err != nil {
		return nil
	}
	if maxSize > 0 && uint32(buf.Len()) > maxSize {
		if pk.Properties.ReasonString != "" {
			return Connack(version, r, "", maxSize)
		}
		return nil // [MQTT-3.1.2-24]: not even the bare CONNACK fits; close without one
	}
	return buf.Bytes()
}

// ErrNoConnack: the broker's first packet (after any AUTH) is not a
// CONNACK, or not a well-formed one.
var ErrNoConnack = errors.New("mqttwire: the broker's first packet is not a CONNACK")

// ServerKeepAlive reads what an MQTT 5 broker has sent so far on a
// connection (buf) and reports the keep-alive its CONNACK sets: the Server
// Keep Alive property, in seconds, which the device must use instead of
// the one it asked for (MQTT 5.0 section 3.2.2.3.14). done is false until
// buf holds the whole CONNACK; AUTH packets (enhanced authentication)
// before it are skipped: skipped is the length of those at buf's start,
// which the caller may drop before it calls again with more (rather than
// reading them again each time). set is false when the CONNACK has no such
// property. ErrNoConnack: the broker sent something else first.
func ServerKeepAlive(buf []byte) (ka uint16, set, done bool, skipped int, err error) {
	for len(buf) > 0 {
		var fh packets.FixedHeader
		if err := fh.Decode(buf[0]); err != nil {
			return 0, false, true, skipped, fmt.Errorf("%w: %v", ErrNoConnack, err)
		}
		n, used, err := remainingLength(buf)
		switch {
		case errors.Is(err, ErrIncomplete):
			return 0, false, false, skipped, nil
		case err != nil:
			return 0, false, true, skipped, fmt.Errorf("%w: remaining length: %v", ErrNoConnack, err)
		}
		size := 1 + used + n
		if len(buf) < size {
			return 0, false, false, skipped, nil
		}
		switch fh.Type {
		case packets.Auth:
			buf, skipped = buf[size:], skipped+size
			continue
		case packets.Connack:
			pk := packets.Packet{FixedHeader: fh, ProtocolVersion: V5}
			pk.FixedHeader.Remaining = n
			if err := pk.ConnackDecode(buf[1+used : size]); err != nil {
				return 0, false, true, skipped, fmt.Errorf("%w: %v", ErrNoConnack, err)
			}
			return pk.Properties.ServerKeepAlive, pk.Properties.ServerKeepAliveFlag, true, skipped, nil
		}
		return 0, false, true, skipped, fmt.Errorf("%w: packet type %d", ErrNoConnack, fh.Type)
	}
	return 0, false, false, skipped, nil
}
