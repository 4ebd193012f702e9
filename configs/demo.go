package configs

import _ "embed"

//go:embed demo.toml
var demoTOML []byte

// Demo returns a copy of the embedded demo configuration that `fleetgate
// serve` uses when no file is given. Load it with Parse(DemoName, Demo(),
// demoDir) after creating, inside demoDir, the files named by the Demo*
// constants: a client CA chain and its root, a server certificate and key
// per demo domain, a token signing key and the identity provider's client
// secret.
func Demo() []byte {
	return append([]byte(nil), demoTOML...)
}

// The demo's names: the file name its problems are reported under, its
// domains and origin, and the files (relative to the demo folder) it refers
// to, which the gateway generates on first start.
const (
	// DemoName is the name to pass to Parse for the demo configuration.
	DemoName = "demo.toml"
	// DemoDevicesDomain is the IoT application: non_identity, include
	// common_name "sensor-0001", no session (a handshake per request).
	DemoDevicesDomain = "devices.fleet.test"
	// DemoAppDomain is the session application: non_identity, include
	// valid_certificate, 24h session cookie.
	DemoAppDomain = "app.fleet.test"
	// DemoMQTTDomain is the mqtt application: valid_certificate, the
	// client id must be the CN, the broker sees the CN as the username.
	DemoMQTTDomain = "mqtt.fleet.test"
	// DemoConsoleDomain is the people's application: they log in at the
	// demo identity provider (DemoIdP) and present an enrolled laptop's
	// certificate; allow email_domain fleet.test or group ops, require
	// valid_certificate, 8h session cookie bound to the certificate.
	DemoConsoleDomain = "console.fleet.test"
	// DemoOrigin is the origin of the http demo applications: the
	// gateway's built-in echo origin.
	DemoOrigin = "http://127.0.0.1:9000"
	// DemoMQTTOrigin is the origin of the mqtt demo application: the
	// gateway's built-in MQTT broker. Not 1883, so that a local broker on
	// the standard port does not keep the demo from starting.
	DemoMQTTOrigin = "tcp://127.0.0.1:9883"
	// DemoIdP is the name of the demo's [[identity_providers]] entry: an
	// OpenID Provider the gateway runs beside itself for the demo only.
	DemoIdP = "demo"
	// DemoIdPDomain is the demo identity provider's host name.
	DemoIdPDomain = "idp.fleet.test"
	// DemoIdPListen is the loopback address the demo identity provider
	// listens on (over TLS); the port is the one of DemoIdPIssuer.
	DemoIdPListen = "127.0.0.1:9444"
	// DemoIdPIssuer is the demo identity provider's issuer URL.
	DemoIdPIssuer = "https://idp.fleet.test:9444"
	// DemoIdPSecret is the file holding the gateway's client secret at the
	// demo identity provider: random, written 0600, never printed.
	DemoIdPSecret = "secrets/oidc-secret"
	// DemoRootCA is the demo root alone: the gateway trusts the demo
	// identity provider's certificate with it (origin_ca_file), and curl
	// --cacert takes it.
	DemoRootCA = "pki/ca.pem"
	// DemoCAChain is the client CA upload: the intermediate, then the root,
	// as PEM certificates. Device certificates are issued by the
	// intermediate.
	DemoCAChain = "pki/ca-chain.pem"
	// DemoDevicesCert and DemoDevicesKey are the server certificate (PEM,
	// leaf first, with its chain) and PKCS#8 key for DemoDevicesDomain.
	DemoDevicesCert = "pki/devices.fleet.test.pem"
	DemoDevicesKey  = "pki/devices.fleet.test-key.pem"
	// DemoAppCert and DemoAppKey are the same for DemoAppDomain.
	DemoAppCert = "pki/app.fleet.test.pem"
	DemoAppKey  = "pki/app.fleet.test-key.pem"
	// DemoMQTTCert and DemoMQTTKey are the same for DemoMQTTDomain.
	DemoMQTTCert = "pki/mqtt.fleet.test.pem"
	DemoMQTTKey  = "pki/mqtt.fleet.test-key.pem"
	// DemoConsoleCert and DemoConsoleKey are the same for DemoConsoleDomain.
	DemoConsoleCert = "pki/console.fleet.test.pem"
	DemoConsoleKey  = "pki/console.fleet.test-key.pem"
	// DemoTokenKey is the token signing key: PKCS#8 PEM, P-256.
	DemoTokenKey = "keys/token.pem"
)
