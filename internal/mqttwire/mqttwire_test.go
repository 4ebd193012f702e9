package mqttwire

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// connect encodes a CONNECT with mochi's encoder, as a device library would.
func connect(t testing.TB, version byte, mod func(*packets.Packet)) []byte {
	t.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: "sensor-0001",
			Keepalive:        30,
			Clean:            true,
		},
	}
	if mod != nil {
		mod(&pk)
	}
	pk.Mods.AllowResponseInfo = true
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func withUser(user, pass string) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Connect.Username, pk.Connect.UsernameFlag = []byte(user), true
		if pass != "" {
			pk.Connect.Password, pk.Connect.PasswordFlag = []byte(pass), true
		}
	}
}

func TestPeek(t *testing.T) {
	v5 := connect(t, V5, nil)
	big := connect(t, V311, func(pk *packets.Packet) { pk.Connect.ClientIdentifier = strings.Repeat("x", 300) })
	for _, tc := range []struct {
		name string
		in   []byte
		size int
		err  error
	}{
		{name: "empty", in: nil, err: ErrIncomplete},
		{name: "first byte only", in: []byte{0x10}, err: ErrIncomplete},
		{name: "length continues", in: []byte{0x10, 0x80}, err: ErrIncomplete},
		{name: "length of five bytes", in: []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}, err: ErrMalformed},
		{name: "CONNECT with flags set", in: []byte{0x12, 0x00}, err: ErrMalformed},
		{name: "PUBLISH first", in: []byte{0x30, 0x02, 0x00, 0x00}, err: ErrNotConnect},
		{name: "SUBSCRIBE first", in: []byte{0x82, 0x05}, err: ErrNotConnect},
		{name: "PINGREQ first", in: []byte{0xc0, 0x00}, err: ErrNotConnect},
		{name: "an HTTP request", in: []byte("GET / HTTP/1.1\r\n"), err: ErrNotConnect},
		{name: "a TLS ClientHello (type 1 with flags)", in: []byte{0x16, 0x03, 0x01, 0x02, 0x00}, err: ErrMalformed},
		{name: "whole MQTT 5 CONNECT", in: v5, size: len(v5)},
		{name: "header of a CONNECT with a two-byte length", in: big[:3], size: len(big)},
		{name: "largest length", in: []byte{0x10, 0xff, 0xff, 0xff, 0x7f}, size: 1 + 4 + 268435455},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size, err := Peek(tc.in)
			if !errors.Is(err, tc.err) || size != tc.size {
				t.Errorf("Peek = %d, %v; want %d, %v", size, err, tc.size, tc.err)
			}
		})
	}
}

func TestPeekVersion(t *testing.T) {
	v5 := connect(t, V5, nil)
	for n := 0; n <= len(v5); n++ {
		level, ok := PeekVersion(v5[:n])
		if want := n >= 9; ok != want || (ok && level != V5) {
			t.Errorf("%d bytes: %d, %v", n, level, ok)
		}
	}
	if _, ok := PeekVersion([]byte{0x30, 0x02, 0, 0}); ok {
		t.Error("a PUBLISH has no version")
	}
}

func TestParseConnect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       []byte
		version  byte
		clientID string
		user     string
		keep     uint16
	}{
		{name: "3.1.1", in: connect(t, V311, nil), version: V311, clientID: "sensor-0001", keep: 30},
		{name: "5.0", in: connect(t, V5, nil), version: V5, clientID: "sensor-0001", keep: 30},
		{name: "5.0 with properties, will and credentials", in: connect(t, V5, func(pk *packets.Packet) {
			withUser("alice", "secret")(pk)
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 120, true
			pk.Properties.User = []packets.UserProperty{{Key: "site", Val: "north"}}
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "devices/lost", []byte("gone")
			pk.Connect.WillProperties.ResponseTopic = "replies"
		}), version: V5, clientID: "sensor-0001", user: "alice", keep: 30},
		{name: "empty client id", in: connect(t, V311, func(pk *packets.Packet) { pk.Connect.ClientIdentifier = "" }), version: V311, keep: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConnect(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			user, _ := c.Username()
			if c.Version() != tc.version || c.ClientID() != tc.clientID || user != tc.user || c.KeepAlive() != tc.keep {
				t.Errorf("version %d client id %q user %q keep-alive %d", c.Version(), c.ClientID(), user, c.KeepAlive())
			}
			// Nothing changed: the device's own bytes, not a re-encoding.
			b, err := c.Bytes()
			if err != nil || c.Changed() || &b[0] != &tc.in[0] || len(b) != len(tc.in) {
				t.Errorf("unchanged CONNECT: changed %v, same bytes %v, err %v", c.Changed(), bytes.Equal(b, tc.in), err)
			}
			// Setting what is already there changes nothing.
			c.SetClientID(tc.clientID)
			if tc.user != "" {
				c.SetUsername(tc.user)
			}
			if c.Changed() {
				t.Error("setting the same values changed the CONNECT")
			}
		})
	}
}

func TestParseConnectRefuses(t *testing.T) {
	good := connect(t, V311, nil)
	mqisdp := connect(t, 3, func(pk *packets.Packet) { pk.Connect.ProtocolName = []byte("MQIsdp") })
	level6 := connect(t, V311, nil)
	level6[8] = 6
	reserved := connect(t, V311, nil)
	reserved[9] |= 1
	badName := connect(t, V311, func(pk *packets.Packet) { pk.Connect.ProtocolName = []byte("MQTX") })
	userFlagNoUser := connect(t, V311, nil)
	userFlagNoUser[9] |= 0x80
	// [MQTT-3.1.2-22]: under 3.1.1 a password needs a user name.
	passNoUser := connect(t, V311, func(pk *packets.Packet) {
		pk.Connect.Password, pk.Connect.PasswordFlag = []byte("p"), true
	})
	willNoTopic := connect(t, V311, func(pk *packets.Packet) {
		pk.Connect.WillFlag, pk.Connect.WillPayload = true, []byte("gone")
	})
	// A will QoS of 3 behind an empty will payload: the checks after the
	// tolerated ones still run.
	willQoS3 := connect(t, V311, func(pk *packets.Packet) {
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillQos = true, "status", 3
	})
	// [MQTT-3.3.2-14]: no wildcard in a will's response topic (mochi's
	// encoder leaves such a topic out, so the bytes are patched).
	willReply := func(topic string) []byte {
		b := connect(t, V5, func(pk *packets.Packet) {
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "status", []byte("gone")
			pk.Connect.WillProperties.ResponseTopic = "a/b"
		})
		return bytes.Replace(b, []byte("a/b"), []byte(topic), 1)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		err     error
		version byte
	}{
		{name: "MQTT 3.1 (MQIsdp, level 3)", in: mqisdp, version: 3},
		{name: "will response topic with +", in: willReply("a/+"), err: ErrMalformed},
		{name: "will response topic with #", in: willReply("a/#"), err: ErrMalformed},
		{name: "level 6", in: level6, version: 6},
		{name: "reserved flag", in: reserved, err: ErrMalformed},
		{name: "unknown protocol name", in: badName, err: ErrMalformed},
		{name: "username flag without a username", in: userFlagNoUser, err: ErrMalformed},
		{name: "3.1.1 password without a user name", in: passNoUser, err: ErrMalformed},
		{name: "will without a topic", in: willNoTopic, err: ErrMalformed},
		{name: "will QoS 3 with an empty will payload", in: willQoS3, err: ErrMalformed},
		{name: "truncated", in: good[:len(good)-1], err: ErrIncomplete},
		{name: "bytes after the packet", in: append(append([]byte{}, good...), 0xc0, 0x00), err: ErrMalformed},
		{name: "body cut short inside", in: []byte{0x10, 0x03, 0x00, 0x04, 'M'}, err: ErrMalformed},
		{name: "PUBLISH", in: []byte{0x30, 0x02, 0x00, 0x00}, err: ErrNotConnect},
		{name: "garbage", in: []byte{0x10, 0x04, 0xff, 0xff, 0xff, 0xff}, err: ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConnect(tc.in)
			var uv *UnsupportedVersionError
			switch {
			case tc.version != 0:
				if !errors.As(err, &uv) || uv.Level != tc.version {
					t.Errorf("err %v, want unsupported level %d", err, tc.version)
				}
			case !errors.Is(err, tc.err):
				t.Errorf("err %v, want %v", err, tc.err)
			}
		})
	}
}

// The specification allows a zero-length will payload and a password flag
// with a zero-length password (and, under MQTT 5, a password without a user
// name): such CONNECTs are parsed, passed on unchanged, and re-encoded intact
// when the identity binding changes them.
func TestParseConnectAcceptsLegalEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		mod     func(*packets.Packet)
	}{
		{"3.1.1 empty will payload", V311, func(pk *packets.Packet) {
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "status", nil
		}},
		{"5.0 empty will payload", V5, func(pk *packets.Packet) {
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "status", nil
		}},
		{"3.1.1 empty password", V311, func(pk *packets.Packet) {
			pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte("u")
			pk.Connect.PasswordFlag, pk.Connect.Password = true, nil
		}},
		{"5.0 empty password without a user name", V5, func(pk *packets.Packet) {
			pk.Connect.PasswordFlag, pk.Connect.Password = true, nil
		}},
		{"5.0 password without a user name", V5, func(pk *packets.Packet) {
			pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte("p")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := connect(t, tc.version, tc.mod)
			c, err := ParseConnect(in)
			if err != nil {
				t.Fatalf("a legal CONNECT refused: %v", err)
			}
			if b, err := c.Bytes(); err != nil || !bytes.Equal(b, in) {
				t.Fatalf("unchanged: % x, %v", b, err)
			}
			c.SetClientID("fleet-sensor-0001")
			b, err := c.Bytes()
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			again, err := ParseConnect(b)
			if err != nil {
				t.Fatalf("the re-encoded CONNECT does not parse: %v", err)
			}
			if again.ClientID() != "fleet-sensor-0001" || again.pk.Connect.WillFlag != c.pk.Connect.WillFlag ||
				again.pk.Connect.PasswordFlag != c.pk.Connect.PasswordFlag {
				t.Errorf("re-encoded: %+v", again.pk.Connect)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	const token = "eyJhbGciOiJFUzI1NiJ9.e30.sig"
	for _, tc := range []struct {
		name    string
		in      []byte
		apply   func(*Connect)
		check   func(t *testing.T, c *Connect)
		version byte
	}{
		{name: "3.1.1 empty client id filled, CN username, token password",
			in: connect(t, V311, func(pk *packets.Packet) { pk.Connect.ClientIdentifier = "" }),
			apply: func(c *Connect) {
				c.SetClientID("sensor-0001")
				c.SetUsername("sensor-0001")
				c.SetToken(token)
			},
			check: func(t *testing.T, c *Connect) {
				u, uok := c.Username()
				p, pok := c.Password()
				if c.ClientID() != "sensor-0001" || u != "sensor-0001" || !uok || string(p) != token || !pok || len(c.UserProperties()) != 0 {
					t.Errorf("client id %q user %q password %q props %v", c.ClientID(), u, p, c.UserProperties())
				}
			}},
		{name: "5.0 token in the password and a user property; the device's own token property removed, others kept",
			in: connect(t, V5, func(pk *packets.Packet) {
				withUser("device", "hunter2")(pk)
				pk.Properties.User = []packets.UserProperty{{Key: "Cf-Access-Jwt-Assertion", Val: "forged"}, {Key: "site", Val: "north"}}
				pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "devices/lost", []byte("gone")
				pk.Connect.WillProperties.ResponseTopic = "replies"
				pk.Connect.WillProperties.CorrelationData = []byte{1, 2}
			}),
			apply: func(c *Connect) {
				c.SetUsername("sensor-0001")
				c.SetToken(token)
			},
			check: func(t *testing.T, c *Connect) {
				u, _ := c.Username()
				p, _ := c.Password()
				want := []packets.UserProperty{{Key: "site", Val: "north"}, {Key: TokenProperty, Val: token}}
				got := c.UserProperties()
				if u != "sensor-0001" || string(p) != token || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
					t.Errorf("user %q password %q props %v", u, p, got)
				}
				if w := c.pk.Connect; !w.WillFlag || w.WillTopic != "devices/lost" || string(w.WillPayload) != "gone" ||
					w.WillProperties.ResponseTopic != "replies" || !bytes.Equal(w.WillProperties.CorrelationData, []byte{1, 2}) {
					t.Errorf("will lost in the re-encoding: %+v", w)
				}
			}},
		{name: "5.0 a forged token property alone forces a re-encoding",
			in: connect(t, V5, func(pk *packets.Packet) {
				pk.Properties.User = []packets.UserProperty{{Key: TokenProperty, Val: "forged"}}
			}),
			apply: func(*Connect) {},
			check: func(t *testing.T, c *Connect) {
				// what mochi decodes from the re-encoded bytes
				if len(c.UserProperties()) != 0 {
					t.Errorf("props %v", c.UserProperties())
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConnect(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			tc.apply(c)
			if !c.Changed() {
				t.Fatal("not changed")
			}
			out, err := c.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			// What the broker reads (mochi's decoder, which keeps every
			// user property).
			var raw packets.Packet
			_ = raw.FixedHeader.Decode(out[0])
			if err := raw.ConnectDecode(out[headerLen(out):]); err != nil {
				t.Fatalf("mochi does not decode the re-encoded CONNECT: %v", err)
			}
			c.pk.Properties.User, c.pk.Connect.Username, c.pk.Connect.Password = raw.Properties.User, raw.Connect.Username, raw.Connect.Password
			c.pk.Connect.ClientIdentifier, c.pk.Connect.WillProperties = raw.Connect.ClientIdentifier, raw.Connect.WillProperties
			tc.check(t, c)
			again, err := ParseConnect(out)
			if err != nil {
				t.Fatalf("the re-encoded CONNECT does not parse: %v", err)
			}
			if again.Version() != c.Version() || again.KeepAlive() != c.KeepAlive() {
				t.Errorf("version %d keep-alive %d", again.Version(), again.KeepAlive())
			}
		})
	}
	// MQTT 3.1.1 allows no password without a user name.
	c, err := ParseConnect(connect(t, V311, nil))
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	if _, err := c.Bytes(); err == nil {
		t.Error("a 3.1.1 password without a user name was encoded")
	}
}

func TestConnack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		r       Refusal
		want    []byte // nil: no CONNACK
		reason  string
	}{
		{name: "3.1.1 not authorized", version: V311, r: NotAuthorized, want: []byte{0x20, 0x02, 0x00, 0x05}},
		{name: "3.1.1 identifier rejected", version: V311, r: BadClientID, want: []byte{0x20, 0x02, 0x00, 0x02}},
		{name: "3.1.1 server unavailable", version: V311, r: ServerUnavailable, want: []byte{0x20, 0x02, 0x00, 0x03}},
		{name: "3.1.1 unacceptable version", version: V311, r: UnsupportedVersion, want: []byte{0x20, 0x02, 0x00, 0x01}},
		{name: "level 3 answered as 3.1.1", version: 3, r: UnsupportedVersion, want: []byte{0x20, 0x02, 0x00, 0x01}},
		{name: "3.1.1 has no packet too large", version: V311, r: PacketTooLarge},
		{name: "5.0 not authorized", version: V5, r: NotAuthorized, reason: "certificate expired"},
		{name: "5.0 client id", version: V5, r: BadClientID, reason: "client id must be sensor-0001"},
		{name: "5.0 server unavailable", version: V5, r: ServerUnavailable, reason: "broker down"},
		{name: "5.0 packet too large", version: V5, r: PacketTooLarge, reason: "CONNECT larger than 64KiB"},
		{name: "level 6 answered as 5.0", version: 6, r: UnsupportedVersion, reason: "level 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Connack(tc.version, tc.r, tc.reason, 0)
			if tc.version != V5 && tc.version <= V5 {
				if !bytes.Equal(got, tc.want) {
					t.Errorf("% x, want % x", got, tc.want)
				}
				return
			}
			var pk packets.Packet
			pk.ProtocolVersion = V5
			if err := pk.FixedHeader.Decode(got[0]); err != nil || pk.FixedHeader.Type != packets.Connack {
				t.Fatalf("not a CONNACK: % x", got)
			}
			if err := pk.ConnackDecode(got[2:]); err != nil {
				t.Fatal(err)
			}
			code, _ := tc.r.Code(V5)
			if pk.ReasonCode != code || pk.Properties.ReasonString != tc.reason || pk.SessionPresent {
				t.Errorf("code %#x reason %q", pk.ReasonCode, pk.Properties.ReasonString)
			}
		})
	}
	// A device's Maximum Packet Size: the Reason String goes when the
	// CONNACK would not fit with it; the refusal's code stays.
	reason := "client identifier must be \"fleet-sensor-0001\""
	full := Connack(V5, BadClientID, reason, 0)
	for _, max := range []uint32{uint32(len(full)), uint32(len(full)) - 1, 16, 6} {
		got := Connack(V5, BadClientID, reason, max)
		var pk packets.Packet
		pk.ProtocolVersion = V5
		if err := pk.FixedHeader.Decode(got[0]); err != nil || pk.ConnackDecode(got[2:]) != nil || pk.ReasonCode != 0x85 {
			t.Fatalf("max %d: not the refusal's CONNACK: % x", max, got)
		}
		if uint32(len(got)) > max {
			t.Errorf("max %d: a CONNACK of %d bytes", max, len(got))
		}
		if keep := max >= uint32(len(full)); (pk.Properties.ReasonString == reason) != keep {
			t.Errorf("max %d: reason string %q, want it only when it fits", max, pk.Properties.ReasonString)
		}
	}
	// Not even the bare CONNACK (5 bytes) fits: none, the connection closes
	// without one ([MQTT-3.1.2-24]).
	for max := uint32(1); max < 5; max++ {
		if b := Connack(V5, NotAuthorized, "certificate expired", max); b != nil {
			t.Errorf("max %d: a CONNACK of %d bytes", max, len(b))
		}
	}
	if b := Connack(V5, NotAuthorized, "certificate expired", 5); len(b) != 5 {
		t.Errorf("max 5: % x, want the bare CONNACK", b)
	}

	for _, tc := range []struct {
		r      Refusal
		v3, v5 byte
	}{
		{NotAuthorized, 5, 0x87}, {BadClientID, 2, 0x85}, {ServerUnavailable, 3, 0x88}, {UnsupportedVersion, 1, 0x84}, {PacketTooLarge, 0, 0x95},
	} {
		c3, _ := tc.r.Code(V311)
		c5, _ := tc.r.Code(V5)
		if c3 != tc.v3 || c5 != tc.v5 {
			t.Errorf("refusal %d: %d / %#x", tc.r, c3, c5)
		}
	}
}

// FuzzParseConnect: no input panics, and whatever parses re-encodes to a
// CONNECT that parses again.
func FuzzParseConnect(f *testing.F) {
	f.Add(connect(f, V311, nil))
	f.Add(connect(f, V5, withUser("u", "p")))
	f.Add([]byte{0x10, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		_, _ = Peek(in)
		_, _ = PeekVersion(in)
		c, err := ParseConnect(in)
		if err != nil {
			return
		}
		c.SetClientID("x")
		c.SetUsername("y")
		c.SetToken("z")
		out, err := c.Bytes()
		if err != nil {
			return
		}
		if _, err := ParseConnect(out); err != nil {
			t.Fatalf("re-encoded CONNECT does not parse: %v\n% x", err, out)
		}
	})
}

// connack5 encodes an MQTT 5 CONNACK with mochi's encoder, as a broker
// would; ska < 0: no Server Keep Alive property.
func connack5(t testing.TB, ska int) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: V5}
	pk.Properties.ReasonString = "welcome"
	if ska >= 0 {
		pk.Properties.ServerKeepAlive, pk.Properties.ServerKeepAliveFlag = uint16(ska), true
	}
	var b bytes.Buffer
	if err := pk.ConnackEncode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestServerKeepAlive(t *testing.T) {
	with, without := connack5(t, 120), connack5(t, -1)
	authPk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ProtocolVersion: V5, ReasonCode: 0x18}
	authPk.Properties.AuthenticationMethod = "SCRAM-SHA-1"
	var auth bytes.Buffer
	if err := authPk.AuthEncode(&auth); err != nil {
		t.Fatal(err)
	}
	publish := []byte{0x30, 0x03, 0x00, 0x01, 'a'}
	for _, tc := range []struct {
		name      string
		buf       []byte
		ka        uint16
		set, done bool
		err       bool
		skipped   int
	}{
		{name: "nothing yet", buf: nil},
		{name: "one byte", buf: with[:1]},
		{name: "CONNACK cut short", buf: with[:len(with)-1]},
		{name: "Server Keep Alive", buf: with, ka: 120, set: true, done: true},
		{name: "Server Keep Alive, then a PUBLISH", buf: append(append([]byte{}, with...), publish...), ka: 120, set: true, done: true},
		{name: "no Server Keep Alive", buf: without, done: true},
		{name: "zero: no keep-alive", buf: connack5(t, 0), set: true, done: true},
		{name: "after an AUTH", buf: append(append([]byte{}, auth.Bytes()...), with...), ka: 120, set: true, done: true, skipped: auth.Len()},
		{name: "an AUTH, the CONNACK not yet", buf: auth.Bytes(), skipped: auth.Len()},
		{name: "two AUTHs, the CONNACK cut short", buf: append(append(append([]byte{}, auth.Bytes()...), auth.Bytes()...), with[:3]...), skipped: 2 * auth.Len()},
		{name: "a PUBLISH first", buf: publish, done: true, err: true},
		{name: "garbage", buf: []byte{0x00, 0x00}, done: true, err: true},
		{name: "remaining length too long", buf: []byte{0x20, 0xff, 0xff, 0xff, 0xff, 0x01}, done: true, err: true},
	} {
		ka, set, done, skipped, err := ServerKeepAlive(tc.buf)
		if ka != tc.ka || set != tc.set || done != tc.done || (err != nil) != tc.err || skipped != tc.skipped {
			t.Errorf("%s: (%d, %v, %v, skipped %d, %v); want (%d, %v, %v, skipped %d, error %v)", tc.name, ka, set, done, skipped, err, tc.ka, tc.set, tc.done, tc.skipped, tc.err)
		}
		if err != nil && !errors.Is(err, ErrNoConnack) {
			t.Errorf("%s: %v is not ErrNoConnack", tc.name, err)
		}
	}
}

// FuzzServerKeepAlive: a broker's bytes never panic the reader, an answer
// once done does not change with what follows the CONNACK, until then
// every prefix of the bytes is not done, and dropping the AUTH packets it
// skipped changes nothing.
func FuzzServerKeepAlive(f *testing.F) {
	f.Add(connack5(f, 120))
	f.Add(connack5(f, -1))
	f.Add([]byte{0xf0, 0x02, 0x18, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		ka, set, done, skipped, err := ServerKeepAlive(in)
		if skipped < 0 || skipped > len(in) {
			t.Fatalf("skipped %d of %d bytes", skipped, len(in))
		}
		kaS, setS, doneS, skippedS, errS := ServerKeepAlive(in[skipped:])
		if kaS != ka || setS != set || doneS != done || (errS == nil) != (err == nil) || skippedS != 0 {
			t.Fatalf("without the %d bytes skipped: (%d, %v, %v, %d, %v); with them (%d, %v, %v, %v)", skipped, kaS, setS, doneS, skippedS, errS, ka, set, done, err)
		}
		if !done {
			if err != nil || set || ka != 0 {
				t.Fatalf("not done, yet (%d, %v, %v)", ka, set, err)
			}
			return
		}
		more := append(append([]byte{}, in...), 0xc0, 0x00)
		ka2, set2, done2, _, err2 := ServerKeepAlive(more)
		if ka2 != ka || set2 != set || !done2 || (err2 == nil) != (err == nil) {
			t.Fatalf("bytes after the answer changed it: (%d, %v, %v) then (%d, %v, %v, %v)", ka, set, err, ka2, set2, done2, err2)
		}
	})
}
