package configs

import (
	"strings"
	"testing"
)

// mqttApp is tcpApp with protocol = "mqtt" (same lines: app on 28, pol on 34).
func mqttApp(t *testing.T, app, pol string) string {
	return edit(t, tcpApp(app, pol), `protocol = "tcp"`, `protocol = "mqtt"`)
}

func mqttSrc(app string) func(*testing.T) string {
	return func(t *testing.T) string { return mqttApp(t, app, "") }
}

func TestMQTTApplicationErrors(t *testing.T) {
	const app = "fleetgate.toml:28: applications[1]."
	runErrorCases(t, []errorCase{
		{name: "client id template without {cn}", src: mqttSrc(`mqtt_client_id = "fleet-device"`),
			want: []string{app + `mqtt_client_id: "fleet-device" is not "any", "common_name" or a template with one "{cn}", such as "fleet-{cn}"`}},
		{name: "client id template with {cn} twice", src: mqttSrc(`mqtt_client_id = "{cn}-{cn}"`),
			want: []string{app + `mqtt_client_id: "{cn}-{cn}" is not "any", "common_name" or a template with one "{cn}", such as "fleet-{cn}"`}},
		{name: "client id template with other braces", src: mqttSrc(`mqtt_client_id = "{site}-{cn}"`),
			want: []string{app + `mqtt_client_id: "{site}-{cn}": a template may hold no braces other than "{cn}"`}},
		{name: "client id template with a stray brace", src: mqttSrc(`mqtt_client_id = "{cn}}"`),
			want: []string{app + `mqtt_client_id: "{cn}}": a template may hold no braces other than "{cn}"`}},
		{name: "client id CN in capitals", src: mqttSrc(`mqtt_client_id = "{CN}"`),
			want: []string{app + `mqtt_client_id: "{CN}" is not "any", "common_name" or a template with one "{cn}", such as "fleet-{cn}"`}},
		{name: "session_tickets on an mqtt application", src: mqttSrc(`session_tickets = true`),
			want: []string{app + `session_tickets: not for an mqtt application: a resumed session skips the device's proof of its key (CertificateVerify), and its certificate would be admitted again on that old proof; remove it`}},
		{name: "unknown username", src: mqttSrc(`mqtt_username = "cn"`),
			want: []string{app + `mqtt_username: "cn" is not "keep" or "common_name"`}},
		{name: "unknown password", src: mqttSrc(`mqtt_password = "jwt"`),
			want: []string{app + `mqtt_password: "jwt" is not "keep" or "token"`}},
		{name: "token password with the device's username", src: mqttSrc(`mqtt_password = "token"`),
			want: []string{app + `mqtt_password: "token" needs mqtt_username = "common_name": MQTT 3.1.1 allows no password without a username, and the token's subject is the CN`}},
		{name: "max_connect_bytes too small", src: mqttSrc(`max_connect_bytes = 100`),
			want: []string{app + `max_connect_bytes: must be at least 256 bytes, not 100`}},
		{name: "max_connect_bytes too large", src: mqttSrc(`max_connect_bytes = "2MiB"`),
			want: []string{app + `max_connect_bytes: must be at most 1MiB: a device not yet admitted may make the gateway hold this much, not 2097152 bytes`}},
		{name: "max_connect_bytes of the wrong type", src: mqttSrc(`max_connect_bytes = true`),
			want: []string{app + `max_connect_bytes: expected a size such as "16KiB" or an integer of bytes, got boolean`}},
		{name: "reject_invalid_cert on an mqtt application", src: mqttSrc(`reject_invalid_cert = true`),
			want: []string{app + `reject_invalid_cert: not for an mqtt application: it always completes the handshake and refuses a device with a CONNACK (not authorized) that its firmware understands; remove it`}},
		{name: "session_duration on an mqtt application", src: mqttSrc(`session_duration = "1h"`),
			want: []string{app + `session_duration: not for an mqtt application: it has no sessions (each connection gets a token of its own); remove it`}},
		{name: "service_auth_401 on an mqtt application", src: mqttSrc(`service_auth_401 = true`),
			want: []string{app + `service_auth_401: not for an mqtt application: a refused device gets a CONNACK with a reason code, not an HTTP status; remove it`}},
		{name: "mqtt key on a tcp application", src: tcpSrc(`mqtt_client_id = "common_name"`, ""),
			want: []string{app + `mqtt_client_id: only for protocol = "mqtt": a tcp application reads no MQTT CONNECT; remove it`}},
		{name: "max_connect_bytes on an http application", src: httpWith(`max_connect_bytes = "1KiB"`),
			want: []string{`fleetgate.toml:13: applications[0].max_connect_bytes: only for protocol = "mqtt": an http application reads no MQTT CONNECT; remove it`}},
		{name: "http origin on an mqtt application", src: func(t *testing.T) string {
			return edit(t, mqttApp(t, "", ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "http://127.0.0.1:1883"`)
		}, want: []string{`fleetgate.toml:25: applications[1].origin: "http://127.0.0.1:1883" is an HTTP origin: a tcp application relays raw TCP to tcp://host:port (protocol = "http" proxies HTTP)`}},
	})
}

func TestMQTTApplicationDefaults(t *testing.T) {
	cfg, err := parseIn(t, mqttApp(t, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Applications[1]
	if a.Protocol != ProtocolMQTT || !a.Protocol.Relayed() || a.MQTT == nil {
		t.Fatalf("protocol %q mqtt %+v", a.Protocol, a.MQTT)
	}
	want := MQTTSettings{Username: MQTTKeep, Password: MQTTKeep, MaxConnectBytes: 64 << 10}
	if *a.MQTT != want {
		t.Errorf("defaults %+v, want %+v", *a.MQTT, want)
	}
	if _, bound := a.MQTT.ExpectedClientID("sensor-0001"); bound {
		t.Error("any client id: bound")
	}
	// Every tcp key works, with the tcp defaults.
	if a.IdleTimeout == 0 || a.RelayBuffer != 256<<10 || a.SessionDuration != 0 {
		t.Errorf("tcp defaults: idle %v buffer %d session %v", a.IdleTimeout, a.RelayBuffer, a.SessionDuration)
	}
	if cfg.Applications[0].MQTT != nil {
		t.Error("http application has MQTT settings")
	}
}

func TestMQTTApplicationSettings(t *testing.T) {
	for _, tc := range []struct {
		name, keys   string
		want         MQTTSettings
		cn, clientID string
	}{
		{name: "common name bound", keys: "mqtt_client_id = \"common_name\"\nmqtt_username = \"common_name\"\nmqtt_password = \"token\"\nmax_connect_bytes = \"4KiB\"",
			want: MQTTSettings{ClientID: "{cn}", Username: MQTTCommonName, Password: MQTTToken, MaxConnectBytes: 4096}, cn: "sensor-0001", clientID: "sensor-0001"},
		{name: "template", keys: `mqtt_client_id = "fleet-{cn}/a"`,
			want: MQTTSettings{ClientID: "fleet-{cn}/a", Username: MQTTKeep, Password: MQTTKeep, MaxConnectBytes: 64 << 10}, cn: "s1", clientID: "fleet-s1/a"},
		{name: "any, spelled out", keys: "mqtt_client_id = \"any\"\nmqtt_username = \"keep\"\nmqtt_password = \"keep\"\nproxy_protocol = \"v2\"\nrelay_buffer = \"1MiB\"",
			want: MQTTSettings{Username: MQTTKeep, Password: MQTTKeep, MaxConnectBytes: 64 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseIn(t, mqttApp(t, tc.keys, ""))
			if err != nil {
				t.Fatal(err)
			}
			m := cfg.Applications[1].MQTT
			if *m != tc.want {
				t.Errorf("%+v, want %+v", *m, tc.want)
			}
			got, bound := m.ExpectedClientID(tc.cn)
			if bound != (tc.clientID != "") || got != tc.clientID {
				t.Errorf("ExpectedClientID(%q) = %q, %v; want %q", tc.cn, got, bound, tc.clientID)
			}
			if strings.Contains(tc.keys, "proxy_protocol") && (cfg.Applications[1].ProxyProtocol != ProxyProtocolV2 || cfg.Applications[1].RelayBuffer != 1<<20) {
				t.Errorf("tcp keys not applied: %+v", cfg.Applications[1])
			}
		})
	}
}
