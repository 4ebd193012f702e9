package demo

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestStartBrokerRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:1883", "localhost:1883", "nonsense"} {
		if b, err := StartBroker(addr, nil); err == nil {
			_ = b.Close()
			t.Errorf("StartBroker(%q) accepted an address that is not loopback", addr)
		} else if !strings.HasPrefix(err.Error(), "demo: broker: ") {
			t.Errorf("StartBroker(%q): %v", addr, err)
		}
	}
}

// TestStartBroker: the broker admits any client, in MQTT 3.1.1 and 5.0, and
// delivers what is published to the subscribers; a busy port is an error.
func TestStartBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b, err := StartBroker(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b2, err := StartBroker(addr, nil); err == nil {
		_ = b2.Close()
		t.Error("a second broker started on the same port")
	}
	for _, v := range []byte{4, 5} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		if code := mqttConnect(t, c, r, v, "anyone"); code != 0 {
			t.Fatalf("v%d: CONNACK %#x, want accepted", v, code)
		}
		if got := mqttPubSub(t, c, r, v, "devices/anyone/t", "21.5"); got != "21.5" {
			t.Errorf("v%d: received %q", v, got)
		}
		c.Close()
	}
}

// mqttConnect sends a CONNECT and returns the CONNACK's code.
func mqttConnect(t *testing.T, w io.Writer, r *bufio.Reader, version byte, clientID string) byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Keepalive: 30, Clean: true}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := readMQTT(t, r, version)
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return ack.ReasonCode
}

// mqttPubSub subscribes to topic, publishes payload on it (QoS 0) and
// returns the payload received.
func mqttPubSub(t *testing.T, w io.Writer, r *bufio.Reader, version byte, topic, payload string) string {
	t.Helper()
	// The subscription is in place once its SUBACK is back: a PUBLISH sent
	// right behind the SUBSCRIBE may be routed before it is.
	var buf bytes.Buffer
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: version, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	for pk := readMQTT(t, r, version); pk.FixedHeader.Type != packets.Suback; pk = readMQTT(t, r, version) {
	}
	buf.Reset()
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: version, TopicName: topic, Payload: []byte(payload)}
	if err := pub.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	for {
		pk := readMQTT(t, r, version)
		if pk.FixedHeader.Type == packets.Publish {
			return string(pk.Payload)
		}
	}
}

// readMQTT reads one packet.
func readMQTT(t *testing.T, r *bufio.Reader, version byte) packets.Packet {
	t.Helper()
	var pk packets.Packet
	hb, err := r.ReadByte()
	if err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	pk.ProtocolVersion = version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	if err != nil {
		t.Fatal(err)
	}
	return pk
}
