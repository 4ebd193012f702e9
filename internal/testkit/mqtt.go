package testkit

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// MQTTConnect encodes a CONNECT of version (4: 3.1.1, 5: 5.0) with a clean
// session; mod may change the packet before it is encoded.
func MQTTConnect(tb testing.TB, version byte, clientID string, keepAlive uint16, mod ...func(*packets.Packet)) []byte {
	tb.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Keepalive: keepAlive, Clean: true}}
	for _, m := range mod {
		m(&pk)
	}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// ReadMQTT reads one MQTT packet of version from r; a CONNACK, SUBACK or
// PUBLISH is decoded.
func ReadMQTT(r *bufio.Reader, version byte) (packets.Packet, error) {
	var pk packets.Packet
	hb, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	return pk, err
}

// MQTTSession sends a CONNECT (keep-alive 30 s) on w and returns the code of
// the CONNACK read from r; anything else first fails the test.
func MQTTSession(tb testing.TB, w io.Writer, r *bufio.Reader, version byte, clientID string) byte {
	tb.Helper()
	if _, err := w.Write(MQTTConnect(tb, version, clientID, 30)); err != nil {
		tb.Fatal(err)
	}
	ack := mustReadMQTT(tb, r, version)
	if ack.FixedHeader.Type != packets.Connack {
		tb.Fatalf("packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return ack.ReasonCode
}

// MQTTPubSub subscribes to topic, waits for the SUBACK (a PUBLISH sent
// right behind the SUBSCRIBE may be routed before the subscription is in
// place), publishes payload on it (QoS 0) and returns the payload received.
func MQTTPubSub(tb testing.TB, w io.Writer, r *bufio.Reader, version byte, topic, payload string) string {
	tb.Helper()
	var buf bytes.Buffer
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: version, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
	for pk := mustReadMQTT(tb, r, version); pk.FixedHeader.Type != packets.Suback; pk = mustReadMQTT(tb, r, version) {
	}
	buf.Reset()
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: version, TopicName: topic, Payload: []byte(payload)}
	if err := pub.PublishEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
	for {
		if pk := mustReadMQTT(tb, r, version); pk.FixedHeader.Type == packets.Publish {
			return string(pk.Payload)
		}
	}
}

func mustReadMQTT(tb testing.TB, r *bufio.Reader, version byte) packets.Packet {
	tb.Helper()
	pk, err := ReadMQTT(r, version)
	if err != nil {
		tb.Fatalf("reading a packet: %v", err)
	}
	return pk
}
