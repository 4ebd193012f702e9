package configs

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// tcpBase is base with stream.fleet.test associated with the client CA (same
// lines as base).
var tcpBase = strings.Replace(base, `"app.fleet.test"]`, `"app.fleet.test", "stream.fleet.test"]`, 1)

// tcpApp returns tcpBase followed by a tcp application. Its lines:
//
//	21 [[applications]]        25 origin = "tcp://127.0.0.1:7000"
//	22 name = "stream"         26 tls_cert_file
//	23 domain                  27 tls_key_file
//	24 protocol = "tcp"        28 app (one line, may be empty)
//
// then the policy: 30 [[applications.policies]], 32 decision, 33 include,
// 34 pol (one line, may be empty).
func tcpApp(app, pol string) string {
	return tcpBase + `
[[applications]]
name = "stream"
domain = "stream.fleet.test"
protocol = "tcp"
origin = "tcp://127.0.0.1:7000"
tls_cert_file = "pki/stream.fleet.test.pem"
tls_key_file = "pki/stream.fleet.test-key.pem"
` + app + `

[[applications.policies]]
name = "fleet"
decision = "non_identity"
include = [{ valid_certificate = true }]
` + pol + "\n"
}

// tcpSrc is tcpApp as an errorCase source.
func tcpSrc(app, pol string) func(*testing.T) string {
	return func(*testing.T) string { return tcpApp(app, pol) }
}

// tcpOrigin is tcpApp with another origin (line 25).
func tcpOrigin(origin string) func(*testing.T) string {
	return func(t *testing.T) string {
		return edit(t, tcpApp("", ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "`+origin+`"`)
	}
}

// httpWith is tcpBase with one more line in its http application, after the
// origin: line 13.
func httpWith(line string) func(*testing.T) string {
	return func(t *testing.T) string {
		return edit(t, tcpBase, `origin = "http://127.0.0.1:9000"`, `origin = "http://127.0.0.1:9000"`+"\n"+line)
	}
}

func TestTCPApplicationErrors(t *testing.T) {
	const app, pol = "fleetgate.toml:28: applications[1].", "fleetgate.toml:34: applications[1].policies[0]."
	runErrorCases(t, []errorCase{
		// Keys that do not fit a tcp application, whatever their value.
		{name: "session_duration on a tcp application", src: tcpSrc(`session_duration = "0s"`, ""),
			want: []string{app + `session_duration: not for a tcp application: it has no sessions (each connection gets a token of its own); remove it`}},
		{name: "session_duration on a tcp application's policy", src: tcpSrc("", `session_duration = "1h"`),
			want: []string{pol + `session_duration: not for a policy of a tcp application: it has no sessions (each connection gets a token of its own); remove it`}},
		{name: "service_auth_401 on a tcp application", src: tcpSrc(`service_auth_401 = false`, ""),
			want: []string{app + `service_auth_401: not for a tcp application: a refused device gets a TLS alert, not an HTTP status; remove it`}},
		{name: "session_tickets on a tcp application", src: tcpSrc(`session_tickets = true`, ""),
			want: []string{app + `session_tickets: not for a tcp application: a resumed session skips the device's proof of its key (CertificateVerify), and its certificate would be admitted again on that old proof; remove it`}},
		{name: "session_tickets = false on a tcp application", src: tcpSrc(`session_tickets = false`, ""),
			want: []string{app + `session_tickets: not for a tcp application: a resumed session skips the device's proof of its key (CertificateVerify), and its certificate would be admitted again on that old proof; remove it`}},

		// Keys of tcp applications on an http application.
		{name: "idle_timeout on an http application", src: httpWith(`idle_timeout = "5m"`),
			want: []string{`fleetgate.toml:13: applications[0].idle_timeout: only for protocol = "tcp" or "mqtt": HTTP connections use [gateway] idle_timeout; remove it`}},
		{name: "max_connection_age on an http application", src: httpWith(`max_connection_age = "1h"`),
			want: []string{`fleetgate.toml:13: applications[0].max_connection_age: only for protocol = "tcp" or "mqtt": HTTP connections use [gateway] max_connection_age; remove it`}},
		{name: "relay_buffer on an http application", src: httpWith(`relay_buffer = "256KiB"`),
			want: []string{`fleetgate.toml:13: applications[0].relay_buffer: only for protocol = "tcp" or "mqtt": HTTP bodies are bounded by [gateway] max_body_bytes and max_response_bytes; remove it`}},
		{name: "proxy_protocol on an http application", src: httpWith(`proxy_protocol = ""`),
			want: []string{`fleetgate.toml:13: applications[0].proxy_protocol: only for protocol = "tcp" or "mqtt": an HTTP origin gets the device's identity in headers and the token; remove it`}},

		// protocol.
		{name: "unknown protocol", src: func(t *testing.T) string { return edit(t, tcpApp("", ""), `protocol = "tcp"`, `protocol = "udp"`) },
			want: []string{`fleetgate.toml:24: applications[1].protocol: "udp" is not "http", "tcp" or "mqtt"`}},

		// Origins.
		{name: "tls origin without a port", src: tcpOrigin("tls://broker.internal"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tls://broker.internal": a tcp origin needs a port, as in "tcp://127.0.0.1:7000"`}},
		{name: "http origin on a tcp application", src: tcpOrigin("http://127.0.0.1:9000"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "http://127.0.0.1:9000" is an HTTP origin: a tcp application relays raw TCP to tcp://host:port (protocol = "http" proxies HTTP)`}},
		{name: "https origin on a tcp application", src: tcpOrigin("https://broker.internal"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "https://broker.internal" is an HTTP origin: a tcp application relays raw TCP to tcp://host:port (protocol = "http" proxies HTTP)`}},
		{name: "tcp origin on an http application", src: func(t *testing.T) string {
			return edit(t, tcpBase, `origin = "http://127.0.0.1:9000"`, `origin = "tcp://127.0.0.1:7000"`)
		}, want: []string{`fleetgate.toml:12: applications[0].origin: "tcp://127.0.0.1:7000" is a raw TCP origin: set protocol = "tcp" on this application, or use an http:// or https:// origin`}},
		{name: "tcp origin without a port", src: tcpOrigin("tcp://127.0.0.1"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://127.0.0.1": a tcp origin needs a port, as in "tcp://127.0.0.1:7000"`}},
		{name: "tcp origin with port 0", src: tcpOrigin("tcp://127.0.0.1:0"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://127.0.0.1:0": invalid port "0" (1 to 65535)`}},
		{name: "tcp origin with port 70000", src: tcpOrigin("tcp://127.0.0.1:70000"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://127.0.0.1:70000": invalid port "70000" (1 to 65535)`}},
		{name: "tcp origin with a path", src: tcpOrigin("tcp://127.0.0.1:7000/mqtt"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://127.0.0.1:7000/mqtt": a tcp origin is tcp://host:port, without user info, path, query or fragment`}},
		{name: "tcp origin without a host", src: tcpOrigin("tcp://:7000"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://:7000": a tcp origin needs a host, as in "tcp://127.0.0.1:7000"`}},
		{name: "tcp origin with a bad host", src: tcpOrigin("tcp://broker_1.internal:7000"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://broker_1.internal:7000": invalid host "broker_1.internal": label "broker_1" holds '_' (letters, digits and hyphens only)`}},
		{name: "tcp origin IPv6 without brackets", src: tcpOrigin("tcp://::1:7000"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "tcp://::1:7000": write an IPv6 address in brackets, as in "tcp://[::1]:7000"`}},
		{name: "tcp origin without a scheme", src: tcpOrigin("127.0.0.1:7000"),
			want: []string{`fleetgate.toml:25: applications[1].origin: "127.0.0.1:7000" is not a tcp://host:port address`}},
		{name: "missing tcp origin", src: func(t *testing.T) string {
			return edit(t, tcpApp("", ""), "origin = \"tcp://127.0.0.1:7000\"\n", "")
		}, want: []string{`fleetgate.toml:21: applications[1].origin: required: the upstream address, such as "tcp://127.0.0.1:7000"`}},
		{name: "origin_ca_file on a tcp application", src: tcpSrc(`origin_ca_file = "pki/ca-chain.pem"`, ""),
			want: []string{app + `origin_ca_file: needs a tls:// origin: tcp://127.0.0.1:7000 has no certificate to verify`}},

		// The gateway's certificate for the origin.
		{name: "origin_cert_file without its key", src: tcpSrc(`origin_cert_file = "`+originClientCert+`"`, ""),
			want: []string{app + `origin_cert_file: needs origin_key_file too: the private key of this certificate, as a PEM file`}},
		{name: "origin_key_file without its certificate", src: tcpSrc(`origin_key_file = "`+originClientKey+`"`, ""),
			want: []string{app + `origin_key_file: needs origin_cert_file too: the certificate of this key, which the gateway presents to the origin, as a PEM file`}},
		{name: "origin_cert_file on a tcp:// origin", src: tcpSrc(`origin_cert_file = "`+originClientCert+`"`+"\n"+`origin_key_file = "`+originClientKey+`"`, ""),
			want: []string{app + `origin_cert_file: needs a tls:// origin: the gateway speaks no TLS to tcp://127.0.0.1:7000`}},
		{name: "origin_key_file of another certificate", src: func(t *testing.T) string {
			return edit(t, tcpApp(`origin_cert_file = "`+originClientCert+`"`+"\n"+`origin_key_file = "`+streamKey+`"`, ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://127.0.0.1:7000"`)
		}, want: []string{`fleetgate.toml:29: applications[1].origin_key_file: ` + streamKey + ` does not match the certificate in ` + originClientCert}},

		{name: "origin_server_name on a tcp:// origin", src: tcpSrc(`origin_server_name = "broker.internal"`, ""),
			want: []string{app + `origin_server_name: needs a tls:// origin: tcp://127.0.0.1:7000 has no certificate to verify`}},
		{name: "origin_server_name not a name", src: func(t *testing.T) string {
			return edit(t, tcpApp(`origin_server_name = "broker_1.internal"`, ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://127.0.0.1:7000"`)
		}, want: []string{app + `origin_server_name: "broker_1.internal" is not a DNS name or an IP address: label "broker_1" holds '_' (letters, digits and hyphens only)`}},

		// Values of the tcp keys.
		{name: "unknown proxy_protocol", src: tcpSrc(`proxy_protocol = "v3"`, ""),
			want: []string{app + `proxy_protocol: "v3" is not "" (no header), "v1" or "v2"`}},
		{name: "forward_client_cert without a PROXY header", src: tcpSrc(`forward_client_cert = true`, ""),
			want: []string{app + `forward_client_cert: needs proxy_protocol = "v2": only a v2 header carries the client certificate`}},
		{name: "forward_client_cert with PROXY v1", src: func(t *testing.T) string {
			return tcpApp("proxy_protocol = \"v1\"\nforward_client_cert = true", "")
		}, want: []string{`fleetgate.toml:29: applications[1].forward_client_cert: needs proxy_protocol = "v2": only a v2 header carries the client certificate`}},
		{name: "idle_timeout 0s", src: tcpSrc(`idle_timeout = "0s"`, ""),
			want: []string{app + `idle_timeout: must be longer than 0s: an idle relayed connection must end some time`}},
		{name: "origin_connect_timeout 0s", src: tcpSrc(`origin_connect_timeout = "0s"`, ""),
			want: []string{app + `origin_connect_timeout: must be longer than 0s`}},
		{name: "relay_buffer 0", src: tcpSrc(`relay_buffer = 0`, ""),
			want: []string{app + `relay_buffer: must be at least 16KiB (one TLS record of plaintext), not 0 bytes`}},
		{name: "relay_buffer 8KiB", src: tcpSrc(`relay_buffer = "8KiB"`, ""),
			want: []string{app + `relay_buffer: must be at least 16KiB (one TLS record of plaintext), not 8192 bytes`}},
		{name: "relay_buffer 1GiB", src: tcpSrc(`relay_buffer = "1GiB"`, ""),
			want: []string{app + `relay_buffer: must be at most 64MiB per direction of each connection, not 1073741824 bytes`}},
		{name: "relay_buffer of the wrong type", src: tcpSrc(`relay_buffer = true`, ""),
			want: []string{app + `relay_buffer: expected a size such as "16KiB" or an integer of bytes, got boolean`}},
		{name: "idle_timeout of the wrong type", src: tcpSrc(`idle_timeout = 600`, ""),
			want: []string{app + `idle_timeout: expected a duration string such as "30s", got integer`}},

		// [gateway] handshake admission.
		{name: "negative handshake rate and burst", src: appended("[gateway]\nmax_handshake_rate = -1\nmax_handshake_burst = -5\n"),
			want: []string{
				`fleetgate.toml:21: gateway.max_handshake_rate: must be at least 0, not -1`,
				`fleetgate.toml:22: gateway.max_handshake_burst: must be at least 0, not -5`,
			}},
	})
}

func TestTCPApplicationDefaults(t *testing.T) {
	src := tcpApp("", "") + "\n[gateway]\norigin_connect_timeout = \"3s\"\n"
	cfg, err := parseIn(t, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings:\n%s", warnings(cfg.Warnings))
	}
	http, tcp := cfg.Applications[0], cfg.Applications[1]
	switch {
	case tcp.Protocol != ProtocolTCP || tcp.Origin.String() != "tcp://127.0.0.1:7000" || tcp.Origin.Host != "127.0.0.1:7000":
		t.Errorf("tcp: protocol %q origin %v", tcp.Protocol, tcp.Origin)
	case tcp.ProxyProtocol != ProxyProtocolNone || tcp.ForwardClientCert || tcp.ServiceAuth401:
		t.Errorf("tcp: proxy_protocol %q forward %v 401 %v", tcp.ProxyProtocol, tcp.ForwardClientCert, tcp.ServiceAuth401)
	case tcp.IdleTimeout != 10*time.Minute || tcp.MaxConnectionAge != 0 || tcp.RelayBuffer != 256<<10:
		t.Errorf("tcp: idle %v age %v buffer %d", tcp.IdleTimeout, tcp.MaxConnectionAge, tcp.RelayBuffer)
	case tcp.OriginConnectTimeout != 3*time.Second:
		t.Errorf("tcp: origin_connect_timeout %v, want [gateway]'s 3s", tcp.OriginConnectTimeout)
	case tcp.SessionDuration != 0 || tcp.Policies[0].HasSessionDuration:
		t.Errorf("tcp: session %v, want 0 (no sessions)", tcp.SessionDuration)
	case len(tcp.ClientCAs) != 1 || tcp.Certificate.Leaf == nil || tcp.Certificate.Leaf.Subject.CommonName != streamDomain:
		t.Errorf("tcp: client CAs %d, certificate %+v", len(tcp.ClientCAs), tcp.Certificate.Leaf)
	}
	switch {
	case http.Protocol != ProtocolHTTP || http.SessionDuration != 24*time.Hour:
		t.Errorf("http: protocol %q session %v", http.Protocol, http.SessionDuration)
	case http.OriginConnectTimeout != 3*time.Second:
		t.Errorf("http: origin_connect_timeout %v, want [gateway]'s 3s", http.OriginConnectTimeout)
	case http.ProxyProtocol != "" || http.IdleTimeout != 0 || http.MaxConnectionAge != 0 || http.RelayBuffer != 0:
		t.Errorf("http: tcp-only fields set: %+v", http)
	}
}

func TestTCPApplicationSettings(t *testing.T) {
	src := tcpApp(`proxy_protocol = "v2"
forward_client_cert = true
origin_connect_timeout = "750ms"
idle_timeout = "90s"
max_connection_age = "6h"
relay_buffer = "1MiB"
reject_invalid_cert = true`, "")
	src = edit(t, src, `origin = "http://127.0.0.1:9000"`, "origin = \"http://127.0.0.1:9000\"\norigin_connect_timeout = \"2s\"")
	cfg, err := parseIn(t, src)
	if err != nil {
		t.Fatal(err)
	}
	tcp := cfg.Applications[1]
	if tcp.ProxyProtocol != ProxyProtocolV2 || !tcp.ForwardClientCert || tcp.OriginConnectTimeout != 750*time.Millisecond ||
		tcp.IdleTimeout != 90*time.Second || tcp.MaxConnectionAge != 6*time.Hour || tcp.RelayBuffer != 1<<20 ||
		tcp.SessionTickets || !tcp.RejectInvalidCert {
		t.Errorf("tcp: %+v", tcp)
	}
	if got := cfg.Applications[0].OriginConnectTimeout; got != 2*time.Second {
		t.Errorf("http: origin_connect_timeout %v, want its own 2s", got)
	}

	for _, tc := range []struct{ value, want string }{
		{`"v1"`, ProxyProtocolV1}, {`""`, ProxyProtocolNone},
	} {
		cfg, err := parseIn(t, tcpApp(`proxy_protocol = `+tc.value, ""))
		if err != nil {
			t.Fatalf("proxy_protocol = %s: %v", tc.value, err)
		}
		if got := cfg.Applications[1].ProxyProtocol; got != tc.want {
			t.Errorf("proxy_protocol = %s: %q", tc.value, got)
		}
	}
	for _, origin := range []string{"tcp://[::1]:7000", "tcp://broker.internal:1883", "tcp://localhost:7000", "TCP://127.0.0.1:7000"} {
		cfg, err := parseIn(t, edit(t, tcpApp("", ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "`+origin+`"`))
		if err != nil {
			t.Errorf("origin %s: %v", origin, err)
			continue
		}
		if u := cfg.Applications[1].Origin; u.Scheme != "tcp" || u.Port() == "" {
			t.Errorf("origin %s: %v", origin, u)
		}
	}

	// TLS to the origin, verified against origin_ca_file or the system's roots.
	cfg, err = parseIn(t, edit(t, tcpApp(`origin_ca_file = "pki/ca-chain.pem"`, ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "TLS://broker.internal:8883"`))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Applications[1]; a.Origin.String() != "tls://broker.internal:8883" || a.OriginCAs == nil || a.OriginCAsSum == [32]byte{} {
		t.Errorf("tls origin: %v, roots %v", a.Origin, a.OriginCAs)
	}
	cfg, err = parseIn(t, edit(t, tcpApp("", ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://[::1]:8883"`))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Applications[1]; a.Origin.Host != "[::1]:8883" || a.OriginCAs != nil || a.OriginCertificate != nil {
		t.Errorf("tls origin without origin_ca_file: %v, roots %v, certificate %v", a.Origin, a.OriginCAs, a.OriginCertificate)
	}

	// The gateway's own certificate for the origin.
	withCert := tcpApp(`origin_cert_file = "`+originClientCert+`"`+"\n"+`origin_key_file = "`+originClientKey+`"`, "")
	cfg, err = parseIn(t, edit(t, withCert, `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://127.0.0.1:8883"`))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Applications[1]; a.OriginCertificate == nil || a.OriginCertificate.Leaf.Subject.CommonName != "fleetgate" || a.OriginCertSum == [32]byte{} {
		t.Errorf("origin_cert_file: %+v", a.OriginCertificate)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings:\n%s", warnings(cfg.Warnings))
	}
	// The name the origin's certificate must carry, when dialed by address.
	cfg, err = parseIn(t, edit(t, tcpApp(`origin_server_name = "Broker.Internal"`, ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://10.0.0.5:8883"`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Applications[1].OriginServerName; got != "broker.internal" {
		t.Errorf("origin_server_name %q", got)
	}
	// A server certificate (serverAuth only) would be refused by an origin
	// that verifies it: a warning names the line.
	cfg, err = parseIn(t, edit(t, tcpApp(`origin_cert_file = "`+streamCert+`"`+"\n"+`origin_key_file = "`+streamKey+`"`, ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://127.0.0.1:8883"`))
	if err != nil {
		t.Fatal(err)
	}
	if w := warnings(cfg.Warnings); !strings.Contains(w, `fleetgate.toml:28: applications[1].origin_cert_file: origin client certificate "stream.fleet.test" is not for client authentication`) {
		t.Errorf("warnings:\n%s", w)
	}
}

// TestTCPApplicationDecisions: every decision of the policy package works on
// a tcp application (none needs an HTTP exchange).
func TestTCPApplicationDecisions(t *testing.T) {
	src := tcpApp("", "") + `
[[applications.policies]]
name = "retired"
decision = "deny"
include = [{ common_name = "sensor-9999" }]

[[applications.policies]]
name = "lab"
decision = "bypass"
include = [{ everyone = true }]

[[applications.policies]]
name = "fleet allow"
decision = "allow"
include = [{ valid_certificate = true }]
`
	cfg, err := parseIn(t, src)
	if err != nil {
		t.Fatal(err)
	}
	var got []policy.Action
	for _, p := range cfg.Applications[1].Policies {
		got = append(got, p.Action)
	}
	want := []policy.Action{policy.NonIdentity, policy.Deny, policy.Bypass, policy.Allow}
	if len(got) != len(want) {
		t.Fatalf("actions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("policies[%d]: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestHandshakeRate(t *testing.T) {
	for _, tc := range []struct {
		name              string
		keys              string
		wantRate, wantBur int
		wantWarning       string
	}{
		{name: "absent: unlimited"},
		{name: "burst defaults to the rate", keys: "max_handshake_rate = 500", wantRate: 500, wantBur: 500},
		{name: "burst set", keys: "max_handshake_rate = 500\nmax_handshake_burst = 50", wantRate: 500, wantBur: 50},
		{name: "burst without a rate", keys: "max_handshake_burst = 50",
			wantWarning: "fleetgate.toml:21: gateway.max_handshake_burst: has no effect without max_handshake_rate (0: handshakes are not rate-limited)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseIn(t, base+"[gateway]\n"+tc.keys+"\n")
			if err != nil {
				t.Fatal(err)
			}
			if g := cfg.Gateway; g.MaxHandshakeRate != tc.wantRate || g.MaxHandshakeBurst != tc.wantBur {
				t.Errorf("rate %d burst %d, want %d %d", g.MaxHandshakeRate, g.MaxHandshakeBurst, tc.wantRate, tc.wantBur)
			}
			if got := warnings(cfg.Warnings); got != tc.wantWarning {
				t.Errorf("warnings %q, want %q", got, tc.wantWarning)
			}
		})
	}
}

// TestOriginCertParseErrorLine: an origin_cert_file whose first PEM
// CERTIFICATE block does not parse is the certificate's fault: the error
// names the origin_cert_file line and the file, not origin_key_file's.
func TestOriginCertParseErrorLine(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "broken.pem")
	if err := os.WriteFile(bad, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER at all")}), 0o600); err != nil {
		t.Fatal(err)
	}
	src := edit(t, tcpApp(`origin_cert_file = "`+bad+`"`+"\n"+`origin_key_file = "`+originClientKey+`"`, ""), `origin = "tcp://127.0.0.1:7000"`, `origin = "tls://127.0.0.1:8883"`)
	_, err := parseIn(t, src)
	if err == nil {
		t.Fatal("a broken origin_cert_file loaded")
	}
	got := strings.Join(problems(t, err), "\n")
	if want := "fleetgate.toml:28: applications[1].origin_cert_file: " + bad + ": malformed certificate"; got != want {
		t.Errorf("errors:\n%s\nwant:\n%s", got, want)
	}
}
