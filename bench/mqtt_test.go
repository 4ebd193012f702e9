package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/gateway"
	"github.com/fleetgate/fleetgate/internal/demo"
)

// brokerLog is a mochi hook that records the client ids that connected and
// the messages published, by topic.
type brokerLog struct {
	mqtt.HookBase
	mu        sync.Mutex
	clientIDs []string
	published map[string]int
	// slowID's CONNECT is held slowFor before it is accepted.
	slowID  string
	slowFor time.Duration
}

func (h *brokerLog) ID() string { return "bench-log" }
func (h *brokerLog) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnPublish || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// The broker admits every client: the certificate (direct) or fleetgate
// (behind it) is what decides.
func (h *brokerLog) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *brokerLog) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

func (h *brokerLog) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	h.mu.Lock()
	h.clientIDs = append(h.clientIDs, pk.Connect.ClientIdentifier)
	slow := pk.Connect.ClientIdentifier == h.slowID
	h.mu.Unlock()
	if slow {
		time.Sleep(h.slowFor)
	}
	return nil
}

func (h *brokerLog) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.published[pk.TopicName]++
	return pk, nil
}

func (h *brokerLog) snapshot() ([]string, map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := slices.Sorted(slices.Values(h.clientIDs))
	pub := map[string]int{}
	for k, v := range h.published {
		pub[k] = v
	}
	return ids, pub
}

// startBroker runs an embedded mochi broker on a free port; with mTLS set
// its listener is TLS and requires a client certificate of the fixture's
// CA (as mosquitto's require_certificate does).
func startBroker(t *testing.T, f *fixture, mTLS bool) (string, *brokerLog) {
	t.Helper()
	addr, err := gateway.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := listeners.Config{ID: "bench", Address: addr}
	if mTLS {
		cert, err := tls.LoadX509KeyPair(filepath.Join(f.dir, ServerFile), filepath.Join(f.dir, ServerKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		roots, err := LoadRoots(filepath.Join(f.dir, RootFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert}
	}
	log := &brokerLog{published: map[string]int{}}
	b := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := b.AddHook(log, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.AddListener(listeners.NewTCP(cfg)); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := demo.CloseBroker(b, 10*time.Second); err != nil {
			t.Error(err)
		}
	})
	return addr, log
}

// mqttOptions are MQTTOptions for a short run of the fixture's four devices.
func (f *fixture) mqttOptions(t *testing.T, addr string) MQTTOptions {
	t.Helper()
	roots, err := LoadRoots(filepath.Join(f.dir, RootFile))
	if err != nil {
		t.Fatal(err)
	}
	return MQTTOptions{Target: addr, SNI: "mqtt.fleet.test", Devices: f.fleet, RootCAs: roots,
		Messages: 25, MessageSize: 100, Timeout: 10 * time.Second, Concurrency: 2}
}

// wantPublished checks that the broker got n messages from each device, on
// the device's own topic, and that the devices connected with their CNs.
func wantPublished(t *testing.T, log *brokerLog, f *fixture, n int) {
	t.Helper()
	ids, pub := log.snapshot()
	var want []string
	for i := range f.fleet {
		cn, err := commonName(&f.fleet[i])
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, cn)
		if topic := "devices/" + cn + "/telemetry"; pub[topic] != n {
			t.Errorf("broker got %d messages on %s, want %d (all: %v)", pub[topic], topic, n, pub)
		}
	}
	if !slices.Equal(ids, want) {
		t.Errorf("client ids the broker saw: %v, want the CNs %v", ids, want)
	}
}

func TestRunMQTTBrokerDirect(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name    string
		version byte
		qos     byte
	}{{"3.1.1 QoS 1", 4, 1}, {"5 QoS 0", 5, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, log := startBroker(t, f, true)
			o := f.mqttOptions(t, addr)
			o.Version, o.QoS = tc.version, tc.qos
			o.PIDs = []int{os.Getpid()}
			res, err := RunMQTT(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Connected != 4 || res.Messages != 100 || res.ErrorTotal != 0 || res.StillConnected != 4 {
				t.Fatalf("connected %d, messages %d, still connected %d, errors %v; want 4, 100, 4 and none",
					res.Connected, res.Messages, res.StillConnected, res.Errors)
			}
			if (res.PublishLatency != nil) != (tc.qos == 1) {
				t.Errorf("publish latency %v at QoS %d: want one exactly at QoS 1", res.PublishLatency, tc.qos)
			}
			if res.ServerCPUPerConnectUS == nil || res.ServerCPUPerMessageUS == nil || len(res.ServerPeakRSSBytes) != 1 ||
				res.ServerPeakRSSBytes[0] < res.ServerRSSBytes[0] || res.ServerRSSBytes[0] <= 0 {
				t.Errorf("server figures: CPU %v/%v, RSS %v, peak %v", res.ServerCPUPerConnectUS, res.ServerCPUPerMessageUS,
					res.ServerRSSBytes, res.ServerPeakRSSBytes)
			}
			wantPublished(t, log, f, 25)
		})
	}
}

func TestRunMQTTPacedAndHold(t *testing.T) {
	f := newFixture(t)
	addr, log := startBroker(t, f, true)
	o := f.mqttOptions(t, addr)
	// 40 messages/s for the fleet, 10 per device: 2.5 s at least between
	// each device's first and last; then 2.5 s idle at a 2 s keep-alive
	// (mochi closes a client silent for 1.5 keep-alives, rounded down to
	// whole seconds).
	o.Messages, o.Rate = 25, Rate{PerS: 40}
	o.Hold, o.KeepAlive = 2500*time.Millisecond, 2*time.Second
	res, err := RunMQTT(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 100 || res.ErrorTotal != 0 {
		t.Fatalf("messages %d, errors %v", res.Messages, res.Errors)
	}
	if res.PublishS < 2.3 || res.MessagesPerS > 45 {
		t.Errorf("100 messages at 40/s took %.2fs (%.1f/s): the rate was not kept", res.PublishS, res.MessagesPerS)
	}
	if res.Pings < 4 || res.StillConnected != 4 || res.HoldS < 2.4 {
		t.Errorf("hold: %d pings in %.1fs, %d still connected; want ≥ 4 (one per device), 4", res.Pings, res.HoldS, res.StillConnected)
	}
	wantPublished(t, log, f, 25)
}

// A device connected early pings at its keep-alive while the rest of the
// fleet connects: mochi closes a client silent for 1.5 keep-alives (3 s at
// 2 s), and the last device's CONNECT is held 4 s.
func TestRunMQTTPingsWhileFleetConnects(t *testing.T) {
	f := newFixture(t)
	addr, log := startBroker(t, f, true)
	last, err := commonName(&f.fleet[len(f.fleet)-1])
	if err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	log.slowID, log.slowFor = last, 4*time.Second
	log.mu.Unlock()
	o := f.mqttOptions(t, addr)
	o.Concurrency, o.KeepAlive, o.Messages = 1, 2*time.Second, 1
	res, err := RunMQTT(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 4 || res.ErrorTotal != 0 || res.StillConnected != 4 || res.Messages != 4 || res.Pings < 3 {
		t.Errorf("connected %d, errors %v, still connected %d, messages %d, pings %d; want 4, none, 4, 4, ≥ 3",
			res.Connected, res.Errors, res.StillConnected, res.Messages, res.Pings)
	}
}

// mqttGatewayTOML: mqtt.fleet.test is an mqtt application in front of the
// broker, binding the client id to the CN (or a template).
var mqttGatewayTOML = template.Must(template.New("toml").Parse(`
[gateway]
listen = "{{.Listen}}"
admin_listen = ""
event_loops = 1
handshake_workers = 1

[tokens]
signing_key_file = "token.pem"

[[client_cas]]
name = "bench-fleet"
pem_file = "ca-chain.pem"
associated_hostnames = ["mqtt.fleet.test"]

[[applications]]
name = "mqtt"
domain = "mqtt.fleet.test"
protocol = "mqtt"
origin = "tcp://{{.Origin}}"
tls_cert_file = "server.pem"
tls_key_file = "server-key.pem"
mqtt_client_id = "{{.ClientID}}"
mqtt_username = "common_name"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
`))

// startMQTTGateway runs fleetgate in-process with mqttGatewayTOML.
func startMQTTGateway(t *testing.T, f *fixture, origin, clientID string) string {
	t.Helper()
	return runGateway(t, f, "bench-mqtt.toml", mqttGatewayTOML, map[string]string{"Origin": origin, "ClientID": clientID})
}

func TestRunMQTTThroughGateway(t *testing.T) {
	f := newFixture(t)
	broker, log := startBroker(t, f, false)
	addr := startMQTTGateway(t, f, broker, "common_name")
	o := f.mqttOptions(t, addr)
	o.QoS = 1
	res, err := RunMQTT(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 4 || res.Messages != 100 || res.ErrorTotal != 0 {
		t.Fatalf("connected %d, messages %d, errors %v; want 4, 100, none", res.Connected, res.Messages, res.Errors)
	}
	wantPublished(t, log, f, 25)
}

// A gateway that wants another client id refuses every device with a
// CONNACK; the run counts the refusals by return or reason code.
func TestRunMQTTCountsRefusals(t *testing.T) {
	f := newFixture(t)
	broker, log := startBroker(t, f, false)
	addr := startMQTTGateway(t, f, broker, "fleet-{cn}")
	for _, tc := range []struct {
		version byte
		want    string
	}{{4, "refused_v311_2_identifier_rejected"}, {5, "refused_v5_0x85_client_identifier_not_valid"}} {
		o := f.mqttOptions(t, addr)
		o.Version = tc.version
		res, err := RunMQTT(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if res.Connected != 0 || res.Messages != 0 || res.Errors[tc.want] != 4 || res.ErrorTotal != 4 {
			t.Errorf("level %d: connected %d, messages %d, errors %v; want 0, 0 and %s=4",
				tc.version, res.Connected, res.Messages, res.Errors, tc.want)
		}
	}
	if ids, _ := log.snapshot(); len(ids) != 0 {
		t.Errorf("refused devices reached the broker: %v", ids)
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     Rate
		interval time.Duration // for 4 devices
	}{
		{"", Rate{}, 0},
		{"0", Rate{}, 0},
		{"100", Rate{PerS: 100}, 40 * time.Millisecond},
		{"100/s", Rate{PerS: 100}, 40 * time.Millisecond},
		{"2/device", Rate{PerS: 2, PerDevice: true}, 500 * time.Millisecond},
		{"0.5/device", Rate{PerS: 0.5, PerDevice: true}, 2 * time.Second},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want || got.interval(4) != tc.interval {
			t.Errorf("ParseRate(%q) = %+v, %v (interval %s); want %+v (interval %s)", tc.in, got, err, got.interval(4), tc.want, tc.interval)
		}
	}
	for _, bad := range []string{"-1", "fast", "10/min", "1/device/s", "NaN"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q): no error", bad)
		}
	}
}

func TestRunMQTTOptions(t *testing.T) {
	f := newFixture(t)
	for name, set := range map[string]func(*MQTTOptions){
		"qos 2":         func(o *MQTTOptions) { o.QoS = 2 },
		"level 3":       func(o *MQTTOptions) { o.Version = 3 },
		"keep-alive 0s": func(o *MQTTOptions) { o.KeepAlive = time.Millisecond },
		"huge message":  func(o *MQTTOptions) { o.MessageSize = MaxMQTTMessageSize + 1 },
		"no devices":    func(o *MQTTOptions) { o.Devices = nil },
	} {
		o := f.mqttOptions(t, "127.0.0.1:1")
		set(&o)
		if _, err := RunMQTT(context.Background(), o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSummarizeMQTT(t *testing.T) {
	per := func(v float64) *float64 { return &v }
	lines := []MQTTResult{
		{Label: "mosquitto", Scenario: "connect", MQTTVersion: "3.1.1", Devices: 100, Connected: 100, ServerCPUPerConnectUS: per(400)},
		{Label: "mosquitto", Scenario: "connect", MQTTVersion: "3.1.1", Devices: 100, Connected: 100, ServerCPUPerConnectUS: per(600)},
		{Label: "mosquitto", Scenario: "connect", MQTTVersion: "3.1.1", Devices: 100, Connected: 100, ServerCPUPerConnectUS: per(500)},
		{Label: "fleetgate", Scenario: "connect", MQTTVersion: "3.1.1", Devices: 100, Connected: 100, ServerCPUPerConnectUS: per(900)},
		{Label: "mosquitto", Scenario: "qos1", MQTTVersion: "3.1.1", QoS: 1, Devices: 10, MessagesPerDevice: 50,
			ServerCPUPerMessageUS: per(10), PublishLatency: &Latency{P50: 100, P99: 300}},
		{Label: "fleetgate", Scenario: "qos1", MQTTVersion: "3.1.1", QoS: 1, Devices: 10, MessagesPerDevice: 50,
			ServerCPUPerMessageUS: per(25), PublishLatency: &Latency{P50: 200, P99: 600}, Errors: map[string]int64{"refused_v311_5_not_authorized": 2}},
		{Label: "fleetgate", Scenario: "storm", MQTTVersion: "3.1.1", Devices: 9000, Connected: 9000, ConnectS: 4.5, HoldS: 10,
			StillConnected: 9000, ServerPIDs: []int{1, 2}, ServerProcs: []string{"fleetgate", "mosquitto"},
			ServerRSSBytes: []int64{100 << 20, 50 << 20}, ServerPeakRSSBytes: []int64{120 << 20, 60 << 20}},
	}
	var in bytes.Buffer
	for i := range lines {
		if err := lines[i].WriteJSON(&in); err != nil {
			t.Fatal(err)
		}
	}
	in.WriteString(`{"label":"an http run","requests":3}` + "\n")
	path := filepath.Join(t.TempDir(), "runs.jsonl")
	if err := os.WriteFile(path, in.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := SummarizeMQTT(path, &out); err != nil {
		t.Fatal(err)
	}
	md := out.String()
	for _, want := range []string{
		"| connect | mosquitto | 3 | 100 |",
		"| connect | µs per connect (server_cpu_us_per_connect) | 500.0 | 900.0 | +400.0 | 1.80× | fleetgate vs mosquitto |",
		"| qos1 | µs per message (server_cpu_us_per_message) | 10.0 | 25.0 | +15.0 | 2.50× | fleetgate vs mosquitto |",
		"refused_v311_5_not_authorized=2",
		"| storm | fleetgate | 9000 | 9000 | 4.50 s |",
		"fleetgate 100 MiB (peak 120 MiB); mosquitto 50 MiB (peak 60 MiB)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}
