package gateway

// Tests of mqtt applications over real sockets: devices speak raw MQTT
// (mochi-mqtt's packets package) over TLS to the gateway; behind it an
// embedded mochi-mqtt broker admits a device only when its password verifies
// as a token against the JWKS the admin listener serves, and a capturing TCP
// origin shows what bytes reach a broker.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/internal/demo"
	"github.com/fleetgate/fleetgate/internal/mqttwire"
	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

const (
	mToken = "token.mqtt.test" // client id and username = CN, password = token; the JWT-checking broker
	mRaw   = "raw.mqtt.test"   // no binding (the CONNECT passes byte for byte); sensor-0001 only; capturing origin
	mTmpl  = "tmpl.mqtt.test"  // client id "fleet-{cn}", max_connect_bytes 256; capturing origin
	mDown  = "down.mqtt.test"  // nobody listens at the origin
)

// jwtAuth is a mochi hook that admits a client only when its password is a
// token that verifies against the gateway's JWKS, for the username as CN.
type jwtAuth struct {
	mqtt.HookBase
	jwksURL string
	mu      sync.Mutex
	seen    []packets.Packet // every CONNECT the broker received
}

func (h *jwtAuth) ID() string { return "fleetgate-jwt" }
func (h *jwtAuth) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *jwtAuth) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.mu.Lock()
	h.seen = append(h.seen, pk)
	h.mu.Unlock()
	tok, err := jwt.ParseSigned(string(pk.Connect.Password), []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, jose.RS256})
	if err != nil {
		return false
	}
	resp, err := http.Get(h.jwksURL)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if json.NewDecoder(resp.Body).Decode(&set) != nil || len(tok.Headers) == 0 {
		return false
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return false
	}
	var std jwt.Claims
	var own struct {
		CommonName string `json:"common_name"`
	}
	if tok.Claims(keys[0].Key, &std, &own) != nil || std.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, time.Minute) != nil {
		return false
	}
	return own.CommonName == string(pk.Connect.Username) && own.CommonName != ""
}

func (h *jwtAuth) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *jwtAuth) connects() []packets.Packet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]packets.Packet(nil), h.seen...)
}

// captured is a TCP origin that hands every connection's bytes to the test.
type captured struct {
	*tcpOrigin
	got chan []byte
}

func startCapture(t *testing.T) *captured {
	c := &captured{got: make(chan []byte, 8)}
	c.tcpOrigin = startTCPOrigin(t, func(conn net.Conn) {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(conn)
		c.got <- b
	})
	return c
}

type mqttFixture struct {
	*tcpFixture
	auth      *jwtAuth
	broker    *mqtt.Server
	brokerURL string
	raw, tmpl *captured
}

func newMQTTFixture(t *testing.T) *mqttFixture {
	t.Helper()
	f := &mqttFixture{auth: &jwtAuth{}, raw: startCapture(t), tmpl: startCapture(t)}
	brokerAddr, down := testkit.FreePort(t), testkit.FreePort(t)
	f.brokerURL = brokerAddr
	b := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := b.AddHook(f.auth, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: brokerAddr})); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	f.broker = b
	t.Cleanup(func() {
		if err := demo.CloseBroker(b, 10*time.Second); err != nil {
			t.Error(err)
		}
	})
	app := func(name, domain, origin string, sel selector, set func(*appSection)) appSection {
		a := httpApp(name, domain, origin, admit("devices", sel))
		a.Protocol = "mqtt"
		if set != nil {
			set(&a)
		}
		return a
	}
	edit := func(c *fileConfig) {
		c.Gateway.HandshakeTimeout = "2s"
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{mToken, mRaw, mTmpl, mDown}})
		c.Applications = append(c.Applications,
			app("mqtt-token", mToken, "tcp://"+brokerAddr, anyFleetDevice, func(a *appSection) {
				a.MQTTClientID, a.MQTTUsername, a.MQTTPassword = "common_name", "common_name", "token"
			}),
			app("mqtt-raw", mRaw, f.raw.url(), commonName("sensor-0001"), func(a *appSection) { a.IdleTimeout = "1s" }),
			app("mqtt-tmpl", mTmpl, f.tmpl.url(), anyFleetDevice, func(a *appSection) {
				a.MQTTClientID, a.MaxConnectBytes, a.ProxyProtocol = "fleet-{cn}", "256B", "v1"
			}),
			app("mqtt-down", mDown, "tcp://"+down, anyFleetDevice, nil))
	}
	f.tcpFixture = &tcpFixture{headers: make(proxyHeaders, 1)}
	f.harness = newHarness(t, func(p *cfgParams) { p.Edit = edit })
	f.auth.jwksURL = "http://" + f.srv.AdminAddr() + "/cdn-cgi/access/certs"
	return f
}

// brokerIdle waits until the broker has no client left. mochi-mqtt cleans
// up a closed clean session by client id (its subscriptions, then its
// client table entry) in the closed connection's goroutine; a session of
// the same id that connects before that cleanup ends can lose its
// subscription or its entry to it, and with them what is published to it.
// The gateway binds the client id to the CN, so a test that connects one
// device twice waits here between the two.
func (f *mqttFixture) brokerIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for atomic.LoadInt64(&f.broker.Info.ClientsConnected) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the broker still had a client 10 s after the last one left")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// session dials app as dev, sends first and returns the reader of the
// answers.
func (f *mqttFixture) session(t *testing.T, sni string, dev *device, first []byte) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := f.dialTCP(t, sni, dev)
	if err != nil {
		t.Fatalf("the handshake of an mqtt application must complete: %v", err)
	}
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// refusedWith expects a CONNACK with code (and under MQTT 5 a reason
// string containing reason), then the end of the connection.
func refusedWith(t *testing.T, r *bufio.Reader, version, code byte, reason string) {
	t.Helper()
	pk, err := testkit.ReadMQTT(r, version)
	if err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != code {
		t.Fatalf("packet type %d code %#x, want CONNACK %#x", pk.FixedHeader.Type, pk.ReasonCode, code)
	}
	if version == mqttwire.V5 && !strings.Contains(pk.Properties.ReasonString, reason) {
		t.Errorf("reason string %q lacks %q", pk.Properties.ReasonString, reason)
	}
	if _, err := r.ReadByte(); err == nil {
		t.Error("the connection stayed open after the refusal")
	}
}

func TestMQTTTokenAdmitsAtTheBroker(t *testing.T) {
	f := newMQTTFixture(t)
	for _, v := range []byte{mqttwire.V311, mqttwire.V5} {
		t.Run(fmt.Sprintf("level %d", v), func(t *testing.T) {
			f.brokerIdle(t)
			before := len(f.auth.connects())
			// An empty client id is replaced by the CN; the device sends no
			// credentials at all.
			c, r := f.session(t, mToken, f.pki.sensor1, testkit.MQTTConnect(t, v, "", 30))
			pk, err := testkit.ReadMQTT(r, v)
			if err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
				t.Fatalf("CONNACK %+v, %v: the broker refused the token", pk, err)
			}
			seen := f.auth.connects()[before]
			if seen.Connect.ClientIdentifier != "sensor-0001" || string(seen.Connect.Username) != "sensor-0001" {
				t.Errorf("the broker saw client id %q username %q", seen.Connect.ClientIdentifier, seen.Connect.Username)
			}
			var prop string
			for _, p := range seen.Properties.User {
				if p.Key == mqttwire.TokenProperty {
					prop = p.Val
				}
			}
			if (v == mqttwire.V5) != (prop == string(seen.Connect.Password)) {
				t.Errorf("user property %q, password %q", prop, seen.Connect.Password)
			}
			// Publish and receive through the gateway.
			var b bytes.Buffer
			sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: v, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "devices/sensor-0001/#"}}}
			_ = sub.SubscribeEncode(&b)
			pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: v,
				TopicName: "devices/sensor-0001/temp", Payload: []byte("21.5")}
			if _, err := c.Write(b.Bytes()); err != nil {
				t.Fatal(err)
			}
			if pk, err := testkit.ReadMQTT(r, v); err != nil || pk.FixedHeader.Type != packets.Suback {
				t.Fatalf("SUBACK: %+v %v", pk.FixedHeader, err)
			}
			b.Reset()
			_ = pub.PublishEncode(&b)
			if _, err := c.Write(b.Bytes()); err != nil {
				t.Fatal(err)
			}
			pk, err = testkit.ReadMQTT(r, v)
			if err != nil || pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "21.5" {
				t.Fatalf("the published message did not come back: %+v %v", pk, err)
			}
		})
	}
	// The broker really checks: the same CONNECT sent straight to it with a
	// forged token is refused.
	direct, err := net.Dial("tcp", f.brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	_ = direct.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = direct.Write(testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 30, func(pk *packets.Packet) {
		pk.Connect.Username, pk.Connect.UsernameFlag = []byte("sensor-0001"), true
		pk.Connect.Password, pk.Connect.PasswordFlag = []byte("eyJhbGciOiJFUzI1NiJ9.eyJjb21tb25fbmFtZSI6InNlbnNvci0wMDAxIn0.c2ln"), true
	}))
	if pk, err := testkit.ReadMQTT(bufio.NewReader(direct), mqttwire.V311); err == nil && pk.ReasonCode == 0 {
		t.Error("the broker admitted a forged token")
	}
}

func TestMQTTRefusals(t *testing.T) {
	f := newMQTTFixture(t)
	const v3, v5 = mqttwire.V311, mqttwire.V5
	for _, tc := range []struct {
		name    string
		sni     string
		dev     *device
		first   []byte
		version byte
		code    byte
		reason  string // in the MQTT 5 reason string
		log     string // the refusal's logged and counted reason
	}{
		{"no certificate 3.1.1", mToken, nil, testkit.MQTTConnect(t, v3, "sensor-0001", 30), v3, 5, "", "no policy matched"},
		{"no certificate 5.0", mToken, nil, testkit.MQTTConnect(t, v5, "sensor-0001", 30), v5, 0x87, "", "no policy matched"},
		{"foreign certificate", mToken, f.pki.foreign, testkit.MQTTConnect(t, v5, "sensor-0001", 30), v5, 0x87, "", ""},
		{"expired certificate", mToken, f.pki.expired, testkit.MQTTConnect(t, v5, "sensor-0001", 30), v5, 0x87, "", ""},
		{"policy refuses sensor-0002", mRaw, f.pki.sensor2, testkit.MQTTConnect(t, v3, "x", 30), v3, 5, "", "no policy matched"},
		{"wrong client id 3.1.1", mToken, f.pki.sensor1, testkit.MQTTConnect(t, v3, "sensor-0002", 30), v3, 2, "", "client identifier not valid"},
		{"wrong client id 5.0", mToken, f.pki.sensor1, testkit.MQTTConnect(t, v5, "sensor-0002", 30), v5, 0x85, `"sensor-0001"`, "client identifier not valid"},
		{"template not followed", mTmpl, f.pki.sensor1, testkit.MQTTConnect(t, v5, "sensor-0001", 30), v5, 0x85, `"fleet-sensor-0001"`, "client identifier not valid"},
		{"oversize 5.0", mTmpl, f.pki.sensor1, testkit.MQTTConnect(t, v5, strings.Repeat("x", 300), 30), v5, 0x95, "larger than 256", "CONNECT too large"},
		{"level 6", mRaw, f.pki.sensor1, func() []byte {
			b := testkit.MQTTConnect(t, v3, "sensor-0001", 30)
			b[8] = 6
			return b
		}(), v5, 0x84, "level 6", "unsupported protocol version"},
		{"MQTT 3.1", mRaw, f.pki.sensor1, testkit.MQTTConnect(t, 3, "sensor-0001", 30, func(pk *packets.Packet) { pk.Connect.ProtocolName = []byte("MQIsdp") }), v3, 1, "", "unsupported protocol version"},
		{"origin down 3.1.1", mDown, f.pki.sensor1, testkit.MQTTConnect(t, v3, "sensor-0001", 30), v3, 3, "", "server unavailable"},
		{"origin down 5.0", mDown, f.pki.sensor1, testkit.MQTTConnect(t, v5, "sensor-0001", 30), v5, 0x88, "broker", "server unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := f.session(t, tc.sni, tc.dev, tc.first)
			refusedWith(t, r, tc.version, tc.code, tc.reason)
		})
	}
	// Closed without a CONNACK, nothing sent to the origin.
	for _, tc := range []struct {
		name, sni, log string
		first          []byte
	}{
		{"PUBLISH first", mRaw, "first packet is not a CONNECT", []byte{0x30, 0x05, 0x00, 0x01, 'a', 'h', 'i'}},
		{"an HTTP request", mRaw, "first packet is not a CONNECT", []byte("GET / HTTP/1.1\r\nHost: raw.mqtt.test\r\n\r\n")},
		{"garbage length", mRaw, "malformed CONNECT", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{"malformed CONNECT", mRaw, "malformed CONNECT", []byte{0x10, 0x04, 0x00, 0x04, 'M', 'Q'}},
		{"oversize 3.1.1", mTmpl, "CONNECT too large", testkit.MQTTConnect(t, v3, strings.Repeat("x", 300), 30)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := f.session(t, tc.sni, f.pki.sensor1, tc.first)
			if b, err := r.ReadByte(); err == nil {
				t.Fatalf("got byte %#x, want the connection closed", b)
			}
		})
	}
	t.Run("no CONNECT within handshake_timeout", func(t *testing.T) {
		start := time.Now()
		_, r := f.session(t, mRaw, f.pki.sensor1, testkit.MQTTConnect(t, v3, "sensor-0001", 30)[:5])
		if _, err := r.ReadByte(); err == nil {
			t.Fatal("got a byte")
		}
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Errorf("closed after %v, before handshake_timeout (2s)", d)
		}
	})
	if f.raw.accepted.Load() != 0 || f.tmpl.accepted.Load() != 0 {
		t.Errorf("refused devices reached an origin: %d, %d", f.raw.accepted.Load(), f.tmpl.accepted.Load())
	}
	m := f.metrics(t)
	for _, want := range []string{
		`fleetgate_mqtt_refused_total{app="mqtt-token",reason="client identifier not valid"} 2`,
		`fleetgate_mqtt_refused_total{app="mqtt-raw",reason="first packet is not a CONNECT"} 2`,
		`fleetgate_mqtt_refused_total{app="mqtt-raw",reason="no CONNECT in time"} 1`,
		`fleetgate_mqtt_refused_total{app="mqtt-tmpl",reason="CONNECT too large"} 2`,
		`fleetgate_mqtt_refused_total{app="mqtt-down",reason="server unavailable"} 2`,
		`fleetgate_mqtt_refused_total{app="mqtt-raw",reason="unsupported protocol version"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var refusal map[string]any
	for _, l := range f.logLines(t) {
		if l["msg"] == "mqtt connection refused" && l["app"] == "mqtt-token" && l["reason"] == "client identifier not valid" && l["mqtt_version"] == float64(5) {
			refusal = l
		}
	}
	if refusal == nil || refusal["cn"] != "sensor-0001" || refusal["client_id"] != "sensor-0002" || refusal["app"] != "mqtt-token" {
		t.Errorf("refusal log line: %v", refusal)
	}
}

// TestMQTTByteForByte: a CONNECT fleetgate does not change reaches the broker
// as the device sent it, with what followed it in the same write, after the
// PROXY header.
func TestMQTTByteForByte(t *testing.T) {
	f := newMQTTFixture(t)
	for _, tc := range []struct {
		name, sni string
		origin    *captured
		first     []byte
		prefix    string
	}{
		{"no binding", mRaw, f.raw, testkit.MQTTConnect(t, mqttwire.V5, "anything", 30, func(pk *packets.Packet) {
			pk.Connect.Username, pk.Connect.UsernameFlag = []byte("u"), true
			pk.Connect.Password, pk.Connect.PasswordFlag = []byte("p"), true
			pk.Properties.User = []packets.UserProperty{{Key: "site", Val: "north"}}
		}), ""},
		{"template matched", mTmpl, f.tmpl, testkit.MQTTConnect(t, mqttwire.V311, "fleet-sensor-0001", 30), "PROXY TCP4 "},
		// Legal, though mochi's own validation refuses them.
		{"empty will payload", mRaw, f.raw, testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 30, func(pk *packets.Packet) {
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "devices/sensor-0001/status", nil
		}), ""},
		{"empty password", mRaw, f.raw, testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 30, func(pk *packets.Packet) {
			pk.Connect.PasswordFlag, pk.Connect.Password = true, nil
		}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := append(append([]byte{}, tc.first...), 0xc0, 0x00) // CONNECT, PINGREQ
			c, _ := f.session(t, tc.sni, f.pki.sensor1, sent)
			_ = c.CloseWrite()
			var got []byte
			select {
			case got = <-tc.origin.got:
			case <-time.After(10 * time.Second):
				t.Fatal("nothing reached the broker")
			}
			if tc.prefix != "" {
				line, rest, ok := bytes.Cut(got, []byte("\r\n"))
				if !ok || !bytes.HasPrefix(line, []byte(tc.prefix)) {
					t.Fatalf("no PROXY v1 line: %q", got)
				}
				got = rest
			}
			if !bytes.Equal(got, sent) {
				t.Errorf("the broker got\n% x\nwant\n% x", got, sent)
			}
		})
	}
}

// TestMQTTKeepAliveIdle: the idle timeout is the larger of idle_timeout
// (1s) and 1.5× the keep-alive.
func TestMQTTKeepAliveIdle(t *testing.T) {
	f := newMQTTFixture(t)
	c, _ := f.session(t, mRaw, f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 2))
	time.Sleep(1500 * time.Millisecond) // past idle_timeout, within 1.5 × 2s
	if _, err := c.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatalf("cut before 1.5 × keep-alive: %v", err)
	}
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read a byte from the capturing origin")
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("idle close after %v, want about 3s", d)
	}
	f.closeLine(t, "mqtt-raw", closeIdle)
}

// TestMQTTServerKeepAlive: an MQTT 5 broker's CONNACK may set a Server Keep
// Alive longer than the device asked for; the device then pings at the
// broker's pace, and the idle timeout follows it (1.5× the broker's 4 s,
// not 1.5× the device's 1 s or idle_timeout's 1 s), yet still ends a
// silent connection.
func TestMQTTServerKeepAlive(t *testing.T) {
	broker := startTCPOrigin(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if pk, err := testkit.ReadMQTT(r, mqttwire.V5); err != nil || pk.FixedHeader.Type != packets.Connect {
			return
		}
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: mqttwire.V5}
		ack.Properties.ServerKeepAlive, ack.Properties.ServerKeepAliveFlag = 4, true
		var b bytes.Buffer
		if err := ack.ConnackEncode(&b); err != nil {
			return
		}
		// In two writes: the gateway reads a CONNACK that arrives in pieces.
		_, _ = c.Write(b.Bytes()[:3])
		time.Sleep(20 * time.Millisecond)
		_, _ = c.Write(b.Bytes()[3:])
		for {
			pk, err := testkit.ReadMQTT(r, mqttwire.V5)
			if err != nil {
				return
			}
			if pk.FixedHeader.Type == packets.Pingreq {
				_, _ = c.Write([]byte{0xd0, 0x00})
			}
		}
	})
	f := &mqttFixture{tcpFixture: newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt-ska", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{"ska.mqtt.test"}})
		a := httpApp("mqtt-ska", "ska.mqtt.test", broker.url(), admit("devices", anyFleetDevice))
		a.Protocol, a.IdleTimeout = "mqtt", "1s"
		c.Applications = append(c.Applications, a)
	})}
	c, r := f.session(t, "ska.mqtt.test", f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 1))
	pk, err := testkit.ReadMQTT(r, mqttwire.V5)
	if err != nil || pk.FixedHeader.Type != packets.Connack || pk.Properties.ServerKeepAlive != 4 {
		t.Fatalf("CONNACK: %v, type %d, server keep alive %d", err, pk.FixedHeader.Type, pk.Properties.ServerKeepAlive)
	}
	time.Sleep(3 * time.Second) // past 1.5 × the device's keep-alive, within the broker's 4 s
	if _, err := c.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatalf("PINGREQ within the broker's keep-alive: %v", err)
	}
	if pk, err := testkit.ReadMQTT(r, mqttwire.V5); err != nil || pk.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("no PINGRESP within the broker's keep-alive (cut at the device's?): %v, type %d", err, pk.FixedHeader.Type)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("read a byte after the PINGRESP")
	}
	if d := time.Since(start); d < 4*time.Second {
		t.Errorf("idle close %v after the last ping; want about 6 s (1.5 × the broker's 4 s)", d)
	}
	f.closeLine(t, "mqtt-ska", closeIdle)
}

// TestMQTTListExclude: an mqtt application's policies see the newest lists:
// a device in a list an exclude names is refused with "not authorized",
// another device of the fleet is admitted.
func TestMQTTListExclude(t *testing.T) {
	broker := startCapture(t)
	f := &mqttFixture{tcpFixture: newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt-list", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{"list.mqtt.test"}})
		c.Lists = append(c.Lists, listSection{Name: "quarantine", Kind: "common_name", Values: []string{"sensor-0001"}})
		a := httpApp("mqtt-list", "list.mqtt.test", broker.url(), policySection{Name: "fleet", Decision: "non_identity",
			Include: []selector{anyFleetDevice}, Exclude: []selector{{"list": "quarantine"}}})
		a.Protocol = "mqtt"
		c.Applications = append(c.Applications, a)
	})}
	_, r := f.session(t, "list.mqtt.test", f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 30))
	refusedWith(t, r, mqttwire.V5, 0x87, "")
	c, r2 := f.session(t, "list.mqtt.test", f.pki.sensor2, testkit.MQTTConnect(t, mqttwire.V311, "sensor-0002", 30))
	if got := reachesBroker(t, c, r2, broker); !bytes.Contains(got, []byte("sensor-0002")) {
		t.Errorf("the broker got %q, want sensor-0002's CONNECT", got)
	}
}

// reachesBroker checks that the gateway leaves an admitted device's CONNECT
// to the broker (it answers nothing itself), closes the device, and returns
// what the capturing broker got.
func reachesBroker(t *testing.T, c *tls.Conn, r *bufio.Reader, broker *captured) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("the gateway answered an admitted device's CONNECT itself")
	}
	_ = c.Close() // the capturing broker reads until the relay closes
	select {
	case got := <-broker.got:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("the admitted device's CONNECT never reached the broker")
		return nil
	}
}

// TestMQTTCertificateWithoutCommonNameRefused: a valid certificate without a
// CN cannot be bound to an MQTT identity: with "fleet-{cn}" every such device
// would share the client id "fleet-", with "common_name" the broker would
// assign one (no binding), and the username would be empty. It is refused
// as not authorized, and nothing reaches the broker.
func TestMQTTCertificateWithoutCommonNameRefused(t *testing.T) {
	f := newMQTTFixture(t)
	c := f.pki.inter.MustIssue(pki.Device(""))
	noCN := &device{name: "", cert: c, tls: c.TLSCertificate(f.pki.inter)}
	for _, tc := range []struct {
		name, sni, clientID string
		version, code       byte
	}{
		{"template 3.1.1", mTmpl, "fleet-", mqttwire.V311, 5},
		{"template 5.0", mTmpl, "fleet-", mqttwire.V5, 0x87},
		{"common name, username and token 5.0", mToken, "", mqttwire.V5, 0x87},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := f.session(t, tc.sni, noCN, testkit.MQTTConnect(t, tc.version, tc.clientID, 30))
			refusedWith(t, r, tc.version, tc.code, "certificate has no common name")
		})
	}
	if n := f.tmpl.accepted.Load(); n != 0 {
		t.Errorf("%d devices without a CN reached the broker", n)
	}
	if n := len(f.auth.connects()); n != 0 {
		t.Errorf("%d devices without a CN reached the token broker", n)
	}
	m := f.metrics(t)
	for _, want := range []string{
		`fleetgate_mqtt_refused_total{app="mqtt-tmpl",reason="certificate has no common name"} 2`,
		`fleetgate_mqtt_refused_total{app="mqtt-token",reason="certificate has no common name"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestMQTTPipelinedThenClosedDelivered: a device that sends CONNECT,
// PUBLISH and DISCONNECT in one write and closes before the broker
// connection opens still has all of it delivered (the dial goes on, and the
// broker's side closes once the bytes are written), and counted.
func TestMQTTPipelinedThenClosedDelivered(t *testing.T) {
	got := make(chan []byte, 4)
	addr, release := slowOrigin(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
	})
	f := &mqttFixture{tcpFixture: newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt-slow", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{"slow.mqtt.test"}})
		a := httpApp("mqtt-slow", "slow.mqtt.test", "tcp://"+addr, admit("devices", anyFleetDevice))
		a.Protocol, a.OriginConnectTimeout = "mqtt", "8s"
		c.Applications = append(c.Applications, a)
	})}
	var b bytes.Buffer
	b.Write(testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 30))
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4,
		TopicName: "devices/sensor-0001/temp", Payload: []byte("21.5")}
	_ = pub.PublishEncode(&b)
	b.Write([]byte{0xe0, 0x00}) // DISCONNECT
	sent := b.Bytes()
	c, _ := f.session(t, "slow.mqtt.test", f.pki.sensor1, sent)
	// The CONNECT is decided and the dial hangs (a device whose socket
	// closes before the gateway's side of the handshake is done is dropped
	// with its bytes by the engine).
	testkit.WaitFor(t, "the relay", 5*time.Second, func() bool { return f.srv.relays.len() == 1 })
	_ = c.Close()
	time.Sleep(300 * time.Millisecond) // the gateway sees the device gone
	release()
	deadline := time.After(10 * time.Second)
	for received := false; !received; {
		select {
		case b := <-got:
			// The connections that filled the accept queue arrive empty.
			if len(b) > 0 && !bytes.Equal(b, sent) {
				t.Fatalf("the broker got\n% x\nwant\n% x", b, sent)
			}
			received = len(b) > 0
		case <-deadline:
			t.Fatal("nothing reached the broker")
		}
	}
	line := f.closeLine(t, "mqtt-slow", closeDeviceClosed)
	if line["bytes_from_device"] != float64(len(sent)) {
		t.Errorf("bytes_from_device %v, want %d", line["bytes_from_device"], len(sent))
	}
	want := fmt.Sprintf(`fleetgate_tcp_bytes_total{app="mqtt-slow",direction="device_to_origin"} %d`, len(sent))
	if m := f.metrics(t); !strings.Contains(m, want) {
		t.Errorf("metrics lack %s", want)
	}
}

// TestMQTTPasswordWithoutUsernameRefusedAtTheGate: MQTT 3.1.1 allows no
// password without a user name. Such a CONNECT is malformed: refused at the
// gate, never an error on the dial worker nor a "server unavailable".
func TestMQTTPasswordWithoutUsernameRefusedAtTheGate(t *testing.T) {
	f := newMQTTFixture(t)
	// The empty client id is replaced, so the CONNECT would be re-encoded.
	_, r := f.session(t, mTmpl, f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V311, "", 30, func(pk *packets.Packet) {
		pk.Connect.Password, pk.Connect.PasswordFlag = []byte("p"), true
	}))
	if b, err := r.ReadByte(); err == nil {
		t.Fatalf("got byte %#x, want the connection closed", b)
	}
	testkit.WaitFor(t, "the refusal's count", 5*time.Second, func() bool {
		return strings.Contains(f.metrics(t), `fleetgate_mqtt_refused_total{app="mqtt-tmpl",reason="malformed CONNECT"} 1`)
	})
	if m := f.metrics(t); strings.Contains(m, `reason="server unavailable"`) {
		t.Error("counted as server unavailable")
	}
	if n := f.tmpl.accepted.Load(); n != 0 {
		t.Errorf("the broker was dialed %d times", n)
	}
	for _, l := range f.logLines(t) {
		if l["level"] == "ERROR" {
			t.Errorf("error logged: %v", l)
		}
	}
}

// TestMQTTRevokedBeforeConnectRefused: a certificate revoked by a reload
// between the handshake and the CONNECT is refused with "not authorized",
// logged and counted, as any refusal.
func TestMQTTRevokedBeforeConnectRefused(t *testing.T) {
	f := newMQTTFixture(t)
	c, err := f.dialTCP(t, mRaw, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	f.denyFingerprint(t, f.pki.sensor1)
	if _, err := c.Write(testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 30)); err != nil {
		t.Fatal(err)
	}
	refusedWith(t, bufio.NewReader(c), mqttwire.V5, 0x87, "revoked")
	if m := f.metrics(t); !strings.Contains(m, `fleetgate_mqtt_refused_total{app="mqtt-raw",reason="certificate revoked"} 1`) {
		t.Error("the refusal is not counted as certificate revoked")
	}
	// Its log line names the verdict it went by, not the handshake's.
	line := f.awaitLine(t, "the refusal's log line", 5*time.Second,
		map[string]string{"msg": "mqtt connection refused", "reason": "certificate revoked"})
	if line["verdict"] != "revoked" {
		t.Errorf("the refusal's log line has verdict %v, want revoked", line["verdict"])
	}
	if n := f.raw.accepted.Load(); n != 0 {
		t.Errorf("the broker was dialed %d times", n)
	}
}

// TestMQTTCutWhileDialingIsNotServerUnavailable: a relay cut while its
// broker is being dialed (here: its certificate revoked) closes as revoked;
// it is not a "server unavailable" refusal.
func TestMQTTCutWhileDialingIsNotServerUnavailable(t *testing.T) {
	addr, _ := slowOrigin(t, func(net.Conn) {})
	f := &mqttFixture{tcpFixture: newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt-slow", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{"slow.mqtt.test"}})
		a := httpApp("mqtt-slow", "slow.mqtt.test", "tcp://"+addr, admit("devices", anyFleetDevice))
		a.Protocol, a.OriginConnectTimeout = "mqtt", "20s"
		c.Applications = append(c.Applications, a)
	})}
	_, r := f.session(t, "slow.mqtt.test", f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 30))
	// The CONNECT is decided and the dial hangs: a revocation before that
	// decision would be an mqtt refusal, not a cut relay.
	testkit.WaitFor(t, "the relay", 5*time.Second, func() bool { return f.srv.relays.len() == 1 })
	f.denyFingerprint(t, f.pki.sensor1)
	if b, err := r.ReadByte(); err == nil {
		t.Errorf("got byte %#x, want the connection cut", b)
	}
	f.closeLine(t, "mqtt-slow", closeRevoked)
	if m := f.metrics(t); strings.Contains(m, `fleetgate_mqtt_refused_total{app="mqtt-slow"`) {
		t.Error("a cut relay was counted as an mqtt refusal")
	}
	for _, l := range f.logLines(t) {
		if l["msg"] == "mqtt connection refused" {
			t.Errorf("a cut relay was logged as refused: %v", l)
		}
	}
}

// TestMQTTConnectTimeoutNeedsRestart: handshake_timeout is a restart-only
// setting, and the CONNECT wait is bounded by the value the server started
// with (2s), not by a reload's.
func TestMQTTConnectTimeoutNeedsRestart(t *testing.T) {
	f := newMQTTFixture(t)
	cfg := f.config()
	cfg.Gateway.HandshakeTimeout = "300ms"
	f.write(cfg)
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, r := f.session(t, mRaw, f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 30)[:5])
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("got a byte")
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("closed after %v: the reloaded handshake_timeout (300ms) applied, not the running one (2s)", d)
	}
}

// TestWatchConnackDropsAuth: the broker's AUTH packets before its CONNACK,
// each in a read of its own, are not gathered and read again with every
// read (a broker could make that quadratic): only the start of a packet not
// yet whole is kept, and the CONNACK's Server Keep Alive still sets the
// idle timeout.
func TestWatchConnackDropsAuth(t *testing.T) {
	auth := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ProtocolVersion: mqttwire.V5, ReasonCode: 0x18}
	var ab, cb bytes.Buffer
	if err := auth.AuthEncode(&ab); err != nil {
		t.Fatal(err)
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: mqttwire.V5}
	ack.Properties.ServerKeepAlive, ack.Properties.ServerKeepAliveFlag = 40, true
	if err := ack.ConnackEncode(&cb); err != nil {
		t.Fatal(err)
	}
	r := &relay{}
	r.stopped.Store(true) // no timer to arm
	m := &mqttRelay{watchAck: true, tcpIdle: time.Second}
	a := ab.Bytes()
	for i := range 1000 {
		// Each AUTH split across two reads, the second with the next one's start.
		m.watchConnack(r, a[:2])
		m.watchConnack(r, a[2:])
		if !m.watchAck || len(m.ack) > len(a) {
			t.Fatalf("after %d AUTH packets: watching %v, %d bytes kept", i+1, m.watchAck, len(m.ack))
		}
	}
	c := cb.Bytes()
	m.watchConnack(r, c[:3])
	m.watchConnack(r, c[3:])
	if m.watchAck || m.ack != nil {
		t.Fatalf("the CONNACK did not end the watch (%d bytes kept)", len(m.ack))
	}
	if got := time.Duration(r.idle.Load()); got != 60*time.Second {
		t.Errorf("idle timeout %v, want 1.5 × the broker's 40 s", got)
	}
}

// TestMQTTConnectNotHeldForTheConnectionsLife: once the broker's socket has
// the CONNECT, the gateway keeps no copy of it. A device's CONNECT may be
// as large as max_connect_bytes (a will payload, user properties); a relay
// that kept the decoded packet (and the gate's buffer it points into) and
// the header it was sent in would pin about twice that for every idle
// connection, for hours. Measured as the live heap of connections with a
// large CONNECT against as many with a small one.
func TestMQTTConnectNotHeldForTheConnectionsLife(t *testing.T) {
	var received atomic.Int64
	broker := startTCPOrigin(t, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	f := newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt-big", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{"big.mqtt.test"}})
		a := httpApp("mqtt-big", "big.mqtt.test", broker.url(), admit("devices", anyFleetDevice))
		a.Protocol, a.MaxConnectBytes = "mqtt", "1MiB"
		c.Applications = append(c.Applications, a)
		// max_body_bytes stays at 64KiB: what a connection may buffer
		// while its handshake ends must still hold the CONNECT that
		// devices send right behind their Finished.
	})
	if got := f.srv.snap.Load().inputLimit(); got < 1<<20 {
		t.Fatalf("a connection buffers at most %d bytes while its handshake ends, less than max_connect_bytes (1MiB)", got)
	}
	small := testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 60)
	large := testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 60, func(pk *packets.Packet) {
		for k := range 12 {
			pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: strconv.Itoa(k), Val: strings.Repeat("v", 60000)})
		}
	})
	const n = 10
	var sent int64
	// Twice: the first collection moves the buffer pools' contents to
	// their victim caches, the second frees them.
	gc := func() { runtime.GC(); runtime.GC() }
	heapPerConn := func(connect []byte) int64 {
		gc()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		for range n {
			c, err := f.dialTCP(t, "big.mqtt.test", f.pki.sensor1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(connect); err != nil {
				t.Fatal(err)
			}
			sent += int64(len(connect))
		}
		testkit.WaitFor(t, "every CONNECT at the broker", 10*time.Second, func() bool { return received.Load() >= sent })
		gc()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		return (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	}
	base := heapPerConn(small)
	got := heapPerConn(large)
	if f.srv.relays.len() != 2*n {
		t.Fatalf("%d relays open, want %d", f.srv.relays.len(), 2*n)
	}
	t.Logf("%d bytes per connection with the small CONNECT, %d with the large", base, got)
	if extra := got - base; extra > int64(len(large))/4 {
		t.Errorf("a connection whose CONNECT was %d bytes holds %d bytes more than one whose CONNECT was %d",
			len(large), extra, len(small))
	}
}

// TestMQTTClosedBeforeConnectCounted: a device that completes its
// handshake and goes away before its CONNECT is decided is counted and
// logged with reason "closed before CONNECT", whether it ends its TLS
// session (close_notify) or only its socket (a reset device, a dropped
// network, a scanner), with or without part of a CONNECT sent.
func TestMQTTClosedBeforeConnectCounted(t *testing.T) {
	f := newMQTTFixture(t)
	const want = `fleetgate_mqtt_refused_total{app="mqtt-raw",reason="closed before CONNECT"} `
	for i, tc := range []struct {
		name        string
		first       []byte
		closeNotify bool
	}{
		{"socket closed, nothing sent", nil, false},
		{"socket closed inside the CONNECT", testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 30)[:5], false},
		{"close_notify inside the CONNECT", testkit.MQTTConnect(t, mqttwire.V311, "sensor-0001", 30)[:5], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := f.tlsConfig(mRaw, f.pki.sensor1)
			conf.InsecureSkipVerify = true
			raw, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c := tls.Client(raw, conf)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			if len(tc.first) > 0 {
				if _, err := c.Write(tc.first); err != nil {
					t.Fatal(err)
				}
			}
			// The gateway's side of the handshake is done (its verdict counted).
			verdicts := fmt.Sprintf(`fleetgate_client_cert_verdicts_total{app="mqtt-raw",verdict="valid"} %d`, i+1)
			testkit.WaitFor(t, "the handshake's verdict", 5*time.Second, func() bool { return strings.Contains(f.metrics(t), verdicts) })
			if tc.closeNotify {
				_ = c.Close()
			} else {
				_ = raw.Close()
			}
			testkit.WaitFor(t, "the close counted", 5*time.Second, func() bool {
				return strings.Contains(f.metrics(t), want+strconv.Itoa(i+1)+"\n")
			})
		})
	}
	n := 0
	for _, l := range f.logLines(t) {
		if l["msg"] == "mqtt connection refused" && l["app"] == "mqtt-raw" && l["reason"] == "closed before CONNECT" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d refusal lines with reason \"closed before CONNECT\", want 3", n)
	}
	if f.raw.accepted.Load() != 0 {
		t.Error("a device that sent no whole CONNECT reached the broker")
	}
}

// TestMQTTRefusalLogClipsClientID: a refused CONNECT's client id, which the
// device chooses (up to max_connect_bytes), reaches the log line cut to a
// few hundred bytes: a peer cannot write kilobytes to the log per
// handshake.
func TestMQTTRefusalLogClipsClientID(t *testing.T) {
	f := newMQTTFixture(t)
	id := strings.Repeat("é", 5000) // 10,000 bytes, cut at a character boundary
	_, r := f.session(t, mToken, f.pki.sensor1, testkit.MQTTConnect(t, mqttwire.V5, id, 30))
	refusedWith(t, r, mqttwire.V5, 0x85, `"sensor-0001"`)
	line := f.awaitLine(t, "the refusal's log line", 5*time.Second,
		map[string]string{"msg": "mqtt connection refused", "reason": "client identifier not valid"})
	got, _ := line["client_id"].(string)
	if len(got) > maxLogValue+len("…") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(id, strings.TrimSuffix(got, "…")) {
		t.Errorf("logged client id of %d bytes (%q…), want the first %d bytes of the device's, marked as cut", len(got), got[:min(len(got), 20)], maxLogValue)
	}
}

// TestMQTTRefusalWithinMaximumPacketSize: an MQTT 5 device that announces a
// Maximum Packet Size gets no larger packet ([MQTT-3.1.2-24]): its refusal's
// CONNACK leaves out the Reason String that would not fit, and keeps the
// code the device needs.
func TestMQTTRefusalWithinMaximumPacketSize(t *testing.T) {
	f := newMQTTFixture(t)
	const maxSize = 16
	first := testkit.MQTTConnect(t, mqttwire.V5, "sensor-0001", 30, func(pk *packets.Packet) {
		pk.Properties.MaximumPacketSize = maxSize
	})
	// The template "fleet-{cn}" is not followed: 0x85, whose reason string
	// (the client id expected) is longer than the device takes.
	_, r := f.session(t, mTmpl, f.pki.sensor1, first)
	all, _ := io.ReadAll(r)
	pk, err := testkit.ReadMQTT(bufio.NewReader(bytes.NewReader(all)), mqttwire.V5)
	if err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0x85 {
		t.Fatalf("not the refusal's CONNACK: %v %+v", err, pk.FixedHeader)
	}
	if len(all) > maxSize {
		t.Errorf("a CONNACK of %d bytes, over the device's Maximum Packet Size %d (reason string %q)", len(all), maxSize, pk.Properties.ReasonString)
	}
}
