package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/internal/mqttwire"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// The mqtt applications of FuzzMQTTConnectGate, on names the harness's
// server certificate does not carry (devices skip verifying it).
const (
	fzRaw  = "raw.fuzz.test"  // no binding, sensor-0001 only, max_connect_bytes 512B
	fzBind = "bind.fuzz.test" // client id and username bound to the CN, any fleet device
)

// fzRawMaxConnect is fzRaw's max_connect_bytes.
const fzRawMaxConnect = 512

// fzBrokerReply is what the fuzz origin answers every connection once the
// device's side has ended: an MQTT 5 CONNACK with a Server Keep Alive (which
// the relay reads on its way), then a PINGRESP.
var fzBrokerReply = []byte{0x20, 0x06, 0x00, 0x00, 0x03, 0x13, 0x00, 0x3c, 0xd0, 0x00}

// The control byte that starts each input of FuzzMQTTConnectGate.
const (
	fzCtlBind    = 1 << 0 // the bound application, not the raw one
	fzCtlSensor2 = 1 << 1 // the device is sensor-0002, not sensor-0001
	fzCtlWait    = 1 << 2 // wait a moment before closing the device's side
	// The other five bits are the size of each write (0: one write).
	fzCtlStrideShift = 3
	// fzMaxWrites bounds the writes of one input: the rest goes in one.
	fzMaxWrites = 64
	// fzMaxInput bounds the bytes a device sends: well within relay_buffer,
	// which a relay whose broker has not opened yet holds at most.
	fzMaxInput = 16 << 10
)

// FuzzMQTTConnectGate sends arbitrary bytes as the plaintext that follows a
// device's handshake with an mqtt application, through a real gateway (real
// sockets, real TLS) in front of a capturing TCP broker, and checks what the
// device, the broker and the fleet can observe. The input's first byte is
// a control byte: which application (no binding, or client id and username
// bound to the CN), which device, whether the device waits a moment before
// closing its side, and the size of each write (each a TLS record of its
// own). The rest is what the device sends; then it closes its side.
//
//   - The gateway answers within a bound, never hangs.
//   - An admitted CONNECT is relayed: the broker receives exactly the
//     device's bytes, or, when the gateway changes the CONNECT (identity
//     binding, a device's own token property removed: docs/mqtt.md), the
//     same packet re-encoded with only those changes, followed by every byte
//     the device sent after it; and the device receives exactly what the
//     broker sent.
//   - Anything else reaches no broker, and the device gets the refusal the
//     docs give (one CONNACK with the right code in its version) or is
//     closed without a byte.
//   - The gateway keeps serving: after every input a well-behaved device is
//     relayed.
//
// Run it with
//
//	go test ./gateway -run '^$' -fuzz '^FuzzMQTTConnectGate$' -fuzztime 30s
func FuzzMQTTConnectGate(f *testing.F) {
	for _, s := range fzMQTTSeeds(f) {
		f.Add(s)
	}
	// The broker answers at once, then reads until the relay closes it (a
	// device's close_notify ends both sides: docs/tcp.md).
	got := make(chan []byte, 64)
	broker := startTCPOrigin(f, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write(fzBrokerReply)
		b, _ := io.ReadAll(c)
		got <- b
	})
	edit := func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-fuzz", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{fzRaw, fzBind}})
		raw := httpApp("fz-raw", fzRaw, broker.url(), admit("sensor-0001", commonName("sensor-0001")))
		raw.Protocol, raw.MaxConnectBytes = "mqtt", fmt.Sprintf("%dB", fzRawMaxConnect)
		bind := httpApp("fz-bind", fzBind, broker.url(), admit("devices", anyFleetDevice))
		bind.Protocol, bind.MQTTClientID, bind.MQTTUsername = "mqtt", "common_name", "common_name"
		c.Applications = append(c.Applications, raw, bind)
	}
	h := newHarness(f, func(p *cfgParams) { p.Edit = edit })
	good := testkit.MQTTConnect(f, mqttwire.V311, "sensor-0001", 30)

	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 || len(input) > fzMaxInput {
			return
		}
		ctl, sent := input[0], input[1:]
		sni, dev := fzRaw, h.pki.sensor1
		if ctl&fzCtlBind != 0 {
			sni = fzBind
		}
		if ctl&fzCtlSensor2 != 0 {
			dev = h.pki.sensor2
		}
		want := fzExpect(sni, dev.name, sent)
		before := broker.accepted.Load()

		c := fzDial(t, h, sni, dev)
		defer c.Close()
		// handshake_timeout is 5s, and no answer waits for it: past 8s the
		// gateway hangs.
		_ = c.SetDeadline(time.Now().Add(8 * time.Second))
		// After a refusal the gateway closes: later writes may fail.
		writeErr := fzWrite(c, sent, int(ctl>>fzCtlStrideShift))
		var answer []byte
		var readErr error
		switch {
		case ctl&fzCtlWait == 0 || want.incomplete:
			// The device closes at once (or, waiting, has nothing whole to
			// be answered): a relayed device may get part of the broker's
			// answer, or none, before its close ends the relay.
			if ctl&fzCtlWait != 0 {
				time.Sleep(20 * time.Millisecond)
			}
			_ = c.CloseWrite()
			answer, readErr = io.ReadAll(c)
		case want.relay:
			// The device waits for the broker's answer, then closes.
			answer = make([]byte, len(fzBrokerReply))
			n, err := io.ReadFull(c, answer)
			answer, readErr = answer[:n], err
			if err == nil {
				_ = c.CloseWrite()
				var more []byte
				more, readErr = io.ReadAll(c)
				answer = append(answer, more...)
			}
		default:
			// A refusal closes the connection without the device's help.
			answer, readErr = io.ReadAll(c)
		}
		if isTimeout(readErr) {
			t.Fatalf("%s: the gateway neither answered nor closed within 8s (got % x; %d broker connections)",
				want.why, answer, broker.accepted.Load()-before)
		}

		if want.relay {
			if writeErr != nil {
				t.Fatalf("write to an admitted connection: %v", writeErr)
			}
			if readErr != nil {
				t.Fatalf("a relayed connection ended with %v, not a clean close (after % x)", readErr, answer)
			}
			if !bytes.HasPrefix(fzBrokerReply, answer) || (ctl&fzCtlWait != 0 && len(answer) != len(fzBrokerReply)) {
				t.Fatalf("the device got\n% x\nwhere the broker sent\n% x", answer, fzBrokerReply)
			}
			fzCheckRelayed(t, fzReceive(t, got), sent, want, sni == fzBind, dev.name)
		} else {
			if n := broker.accepted.Load() - before; n != 0 {
				t.Fatalf("%s: a refused device reached the broker (%d connections; device got % x)", want.why, n, answer)
			}
			if readErr != nil && !errors.Is(readErr, syscall.ECONNRESET) {
				t.Fatalf("%s: a refused connection ended with %v (after % x)", want.why, readErr, answer)
			}
			fzCheckRefusal(t, answer, want)
		}

		// The fleet is still served (and no connection reached the broker
		// late).
		k := fzDial(t, h, fzRaw, h.pki.sensor1)
		defer k.Close()
		_ = k.SetDeadline(time.Now().Add(8 * time.Second))
		if _, err := k.Write(good); err != nil {
			t.Fatalf("after the input, a good device's write: %v", err)
		}
		b := make([]byte, len(fzBrokerReply))
		if _, err := io.ReadFull(k, b); err != nil || !bytes.Equal(b, fzBrokerReply) {
			t.Fatalf("after the input, a good device got % x, %v", b, err)
		}
		_ = k.CloseWrite()
		if b, err := io.ReadAll(k); err != nil || len(b) != 0 {
			t.Fatalf("after the input, a good device's close: % x, %v", b, err)
		}
		if b := fzReceive(t, got); !bytes.Equal(b, good) {
			t.Fatalf("after the input, the broker got % x for a good device's CONNECT % x", b, good)
		}
		select {
		case b := <-got:
			t.Fatalf("the broker received an unexpected connection: % x", b)
		default:
		}
	})
}

// fzDial completes a device's handshake with an mqtt application.
func fzDial(t *testing.T, h *harness, sni string, dev *device) *tls.Conn {
	t.Helper()
	conf := h.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = true // the harness's certificate names the http applications only
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, conf)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c
}

// fzWrite sends b in writes of stride bytes (one write when 0), at most
// fzMaxWrites of them, and returns the first error.
func fzWrite(c *tls.Conn, b []byte, stride int) error {
	if stride == 0 {
		stride = len(b)
	}
	for n := 0; len(b) > 0; n++ {
		k := min(stride, len(b))
		if n == fzMaxWrites-1 {
			k = len(b)
		}
		if _, err := c.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

// fzReceive returns the bytes of the broker's next connection.
func fzReceive(t *testing.T, got chan []byte) []byte {
	t.Helper()
	select {
	case b := <-got:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("the broker's connection did not end")
		return nil
	}
}

// fzOutcome is what the docs say the gateway does with a device's bytes.
type fzOutcome struct {
	relay bool
	size  int // of the CONNECT, when relayed
	// A refusal: the CONNACK's code and format (MQTT 5 or 3.1.1), or
	// none; silentOK: closing without a CONNACK is right too.
	connack  bool
	code     byte
	v5       bool
	silentOK bool
	// incomplete: the device closes before its CONNECT is whole.
	incomplete bool
	why        string
}

// fzExpect is docs/mqtt.md's answer to a device (its CN) that sends sent
// to the application sni, then closes its side.
func fzExpect(sni, cn string, sent []byte) fzOutcome {
	refuse := func(v5 bool, code3, code5 byte, why string) fzOutcome {
		if v5 {
			return fzOutcome{connack: true, code: code5, v5: true, why: why}
		}
		return fzOutcome{connack: true, code: code3, why: why}
	}
	max := 64 << 10
	if sni == fzRaw {
		max = fzRawMaxConnect
	}
	size, err := mqttwire.Peek(sent)
	switch {
	case errors.Is(err, mqttwire.ErrIncomplete):
		return fzOutcome{incomplete: true, why: "closed before the fixed header was whole"}
	case err != nil:
		return fzOutcome{why: "no CONNECT: " + err.Error()}
	case size > max:
		// MQTT 5 devices get 0x95 when the level had arrived with the
		// fixed header that gave the size: that depends on the writes.
		if v, ok := mqttwire.PeekVersion(sent); ok && v == mqttwire.V5 {
			return fzOutcome{connack: true, code: 0x95, v5: true, silentOK: true, why: "too large"}
		}
		return fzOutcome{why: "too large"}
	case len(sent) < size:
		return fzOutcome{incomplete: true, why: "closed before the CONNECT was whole"}
	}
	cp, err := mqttwire.ParseConnect(sent[:size])
	var uv *mqttwire.UnsupportedVersionError
	switch {
	case errors.As(err, &uv):
		return refuse(uv.Level >= mqttwire.V5, 1, 0x84, "unsupported level")
	case err != nil:
		return fzOutcome{why: "malformed: " + err.Error()}
	}
	v5 := cp.Version() == mqttwire.V5
	if sni == fzRaw && cn != "sensor-0001" {
		return refuse(v5, 5, 0x87, "policy")
	}
	if id := cp.ClientID(); sni == fzBind && id != "" && id != cn {
		return refuse(v5, 2, 0x85, "client id")
	}
	return fzOutcome{relay: true, size: size, why: "admitted"}
}

// fzCheckRefusal checks what a refused device got: nothing, or exactly the
// CONNACK the docs give.
func fzCheckRefusal(t *testing.T, answer []byte, want fzOutcome) {
	t.Helper()
	if len(answer) == 0 {
		if want.connack && !want.silentOK {
			t.Fatalf("%s: closed without the CONNACK %#x", want.why, want.code)
		}
		return
	}
	if !want.connack {
		t.Fatalf("%s: the device got % x, want a close without a byte", want.why, answer)
	}
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(answer[0]); err != nil || pk.FixedHeader.Type != packets.Connack {
		t.Fatalf("%s: the device got % x, not a CONNACK", want.why, answer)
	}
	n, used, err := packets.DecodeLength(bytes.NewReader(answer[1:]))
	if err != nil || len(answer) != 1+used+n {
		t.Fatalf("%s: the device got % x, not exactly one CONNACK", want.why, answer)
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = mqttwire.V311
	if want.v5 {
		pk.ProtocolVersion = mqttwire.V5
	}
	if err := pk.ConnackDecode(answer[1+used:]); err != nil {
		t.Fatalf("%s: CONNACK % x: %v", want.why, answer, err)
	}
	if pk.ReasonCode != want.code || (!want.v5 && n != 2) {
		t.Fatalf("%s: CONNACK % x, want code %#x (MQTT 5: %v)", want.why, answer, want.code, want.v5)
	}
}

// fzCheckRelayed checks what the broker received for an admitted device
// (its CN; bound: of the application that binds the client id and user
// name to it) that sent sent: the CONNECT as sent, or re-encoded with only
// the documented changes, then the rest as sent.
func fzCheckRelayed(t *testing.T, atBroker, sent []byte, want fzOutcome, bound bool, cn string) {
	t.Helper()
	size, err := mqttwire.Peek(atBroker)
	if err != nil || len(atBroker) < size {
		t.Fatalf("the broker got % x, which does not start with a CONNECT (device sent % x)", atBroker, sent)
	}
	if rest := sent[want.size:]; !bytes.Equal(atBroker[size:], rest) {
		t.Fatalf("after the CONNECT the broker got\n% x\nwhere the device sent\n% x", atBroker[size:], rest)
	}
	dev, err := fzDecodeConnect(sent[:want.size])
	if err != nil {
		t.Fatalf("decode the device's CONNECT: %v", err)
	}
	got, err := fzDecodeConnect(atBroker[:size])
	if err != nil {
		t.Fatalf("the broker got a CONNECT it cannot decode (% x): %v", atBroker[:size], err)
	}
	// The documented changes, applied to what the device sent.
	exp, changed := dev, false
	if exp.ProtocolVersion == mqttwire.V5 {
		exp.Properties.User = nil
		for _, p := range dev.Properties.User {
			if strings.EqualFold(p.Key, mqttwire.TokenProperty) {
				changed = true
				continue
			}
			exp.Properties.User = append(exp.Properties.User, p)
		}
	}
	if bound {
		// The client id (empty, or already the CN) and the user name are
		// the CN.
		c := &exp.Connect
		changed = changed || c.ClientIdentifier != cn || !c.UsernameFlag || string(c.Username) != cn
		c.ClientIdentifier = cn
		c.Username, c.UsernameFlag = []byte(cn), true
	}
	if a, b := fzDescribe(exp), fzDescribe(got); a != b {
		t.Fatalf("the broker got a CONNECT that differs from the device's beyond the documented changes:\ndevice (changed) %s\nbroker           %s\ndevice bytes % x\nbroker bytes % x",
			a, b, sent[:want.size], atBroker[:size])
	}
	if !changed && !bytes.Equal(atBroker[:size], sent[:want.size]) {
		t.Fatalf("a CONNECT the gateway does not change was re-encoded:\ndevice % x\nbroker % x", sent[:want.size], atBroker[:size])
	}
}

// fzDescribe renders the fields of a decoded CONNECT that the broker must
// get as the device sent them (nil and empty slices alike).
func fzDescribe(p packets.Packet) string {
	return fmt.Sprintf("version %d reserved %d connect %+v properties %+v", p.ProtocolVersion, p.ReservedBit, p.Connect, p.Properties)
}

// fzDecodeConnect decodes a whole CONNECT with mochi-mqtt's packets alone.
func fzDecodeConnect(b []byte) (packets.Packet, error) {
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(b[0]); err != nil {
		return pk, err
	}
	n, used, err := packets.DecodeLength(bytes.NewReader(b[1:]))
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	return pk, pk.ConnectDecode(b[1+used:])
}

// fzMQTTSeeds are the seeds of FuzzMQTTConnectGate: control byte, then the
// device's bytes.
func fzMQTTSeeds(tb testing.TB) [][]byte {
	const v3, v5 = mqttwire.V311, mqttwire.V5
	conn := testkit.MQTTConnect
	will := func(pk *packets.Packet) {
		pk.Connect.WillFlag, pk.Connect.WillQos, pk.Connect.WillRetain = true, 1, true
		pk.Connect.WillTopic, pk.Connect.WillPayload = "devices/sensor-0001/status", []byte("offline")
	}
	creds := func(pk *packets.Packet) {
		pk.Connect.Username, pk.Connect.UsernameFlag = []byte("user"), true
		pk.Connect.Password, pk.Connect.PasswordFlag = []byte("secret"), true
	}
	props := func(pk *packets.Packet) {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
		pk.Properties.ReceiveMaximum, pk.Properties.MaximumPacketSize, pk.Properties.TopicAliasMaximum = 10, 1<<20, 5
		pk.Properties.RequestProblemInfo, pk.Properties.RequestProblemInfoFlag = 0, true
		pk.Properties.User = []packets.UserProperty{{Key: "site", Val: "north"}, {Key: "site", Val: "south"}}
	}
	willProps := func(pk *packets.Packet) {
		w := &pk.Connect.WillProperties
		w.WillDelayInterval, w.MessageExpiryInterval = 5, 60
		w.PayloadFormat, w.PayloadFormatFlag = 1, true
		w.ContentType, w.ResponseTopic, w.CorrelationData = "text/plain", "devices/sensor-0001/reply", []byte{1, 2}
		w.User = []packets.UserProperty{{Key: "k", Val: "v"}}
		pk.Mods.AllowResponseInfo = true // else the encoder drops the response topic and correlation data
	}
	auth := func(pk *packets.Packet) {
		pk.Properties.AuthenticationMethod, pk.Properties.AuthenticationData = "SCRAM-SHA-1", []byte("client-first")
	}
	ownToken := func(pk *packets.Packet) {
		pk.Properties.User = []packets.UserProperty{{Key: "CF-Access-Jwt-Assertion", Val: "forged"}, {Key: "a", Val: "b"}}
	}
	var pub bytes.Buffer
	p := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: v3,
		TopicName: "devices/sensor-0001/temp", Payload: []byte("21.5")}
	_ = p.PublishEncode(&pub)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	level6 := conn(tb, v3, "sensor-0001", 30)
	level6[8] = 6

	type seed struct {
		ctl byte
		b   []byte
	}
	stride := func(n byte) byte { return n << fzCtlStrideShift }
	seeds := []seed{
		{0, conn(tb, v3, "sensor-0001", 30)},
		{stride(1), conn(tb, v5, "sensor-0001", 30)},
		{stride(3), conn(tb, v3, "sensor-0001", 30, will, creds)},
		{stride(7), conn(tb, v5, "sensor-0001", 60, will, willProps, creds, props)},
		{fzCtlBind, conn(tb, v3, "", 30)},
		{fzCtlBind | stride(2), conn(tb, v5, "", 30, creds, props, will, willProps)},
		{fzCtlBind | fzCtlSensor2, conn(tb, v5, "sensor-0002", 0, auth)},
		{fzCtlBind, conn(tb, v5, "sensor-0002", 30)}, // wrong client id
		{0, conn(tb, v5, "anything", 30, auth, ownToken)},
		{fzCtlBind | stride(5), conn(tb, v5, "sensor-0001", 30, ownToken)},
		{fzCtlSensor2, conn(tb, v3, "sensor-0002", 30)}, // the policy refuses
		{fzCtlWait, cat(conn(tb, v3, "sensor-0001", 30), pub.Bytes(), []byte{0xe0, 0x00})},
		{fzCtlBind | stride(4), cat(conn(tb, v5, "", 30), []byte{0xc0, 0x00})},
		{stride(1), conn(tb, v5, "sensor-0001", 30)[:7]},         // truncated
		{fzCtlWait, conn(tb, v3, "sensor-0001", 30, creds)[:20]}, // truncated
		{0, conn(tb, v5, strings.Repeat("x", 600), 30)},          // over fz-raw's 512B
		{stride(9), conn(tb, v3, strings.Repeat("x", 600), 30)},
		{fzCtlBind, conn(tb, v5, "", 30, will, willProps, func(pk *packets.Packet) { pk.Connect.WillProperties.ResponseTopic = "a/b" })},
		{0, level6},
		{0, conn(tb, 3, "sensor-0001", 30, func(pk *packets.Packet) { pk.Connect.ProtocolName = []byte("MQIsdp") })},
		{0, conn(tb, v3, "", 30, func(pk *packets.Packet) { pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte("p") })},
		{0, pub.Bytes()},
		{0, []byte("GET / HTTP/1.1\r\nHost: raw.fuzz.test\r\n\r\n")},
		{0, []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{0, nil},
	}
	out := make([][]byte, 0, len(seeds))
	for _, s := range seeds {
		out = append(out, append([]byte{s.ctl}, s.b...))
	}
	return out
}
