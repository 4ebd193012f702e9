package configs_test

import (
	"errors"
	"fmt"

	"github.com/fleetgate/fleetgate/configs"
)

// Parse reports every problem of a file at once, each with its line and key
// path, so an operator fixes them in one pass. (No file is read here: the
// application names no certificate yet.)
func ExampleParse() {
	const file = `[gateway]
listen = "8443"
max_body_bytes = "8 MB"

[tokens]
signing_key_file = "keys/token.pem"
cookie_same_site = "relaxed"

[[applications]]
name = "telemetry"
domain = "devices.fleet.test/api"
origin = "http://127.0.0.1:9000"
session_duration = "1 day"
`
	_, err := configs.Parse("fleetgate.toml", []byte(file), "/nonexistent")
	var e *configs.Errors
	if errors.As(err, &e) {
		for _, p := range e.Problems {
			fmt.Println(p)
		}
	}
	// Output:
	// fleetgate.toml:2: gateway.listen: "8443" is not host:port (e.g. "127.0.0.1:8443" or ":8443")
	// fleetgate.toml:6: tokens.signing_key_file: open /nonexistent/keys/token.pem: no such file or directory
	// fleetgate.toml:7: tokens.cookie_same_site: "relaxed" is not lax, strict or none
	// fleetgate.toml:9: applications[0].tls_cert_file: required: the gateway's certificate for this domain, as a PEM file
	// fleetgate.toml:9: applications[0].tls_key_file: required: the private key of tls_cert_file, as a PEM file
	// fleetgate.toml:11: applications[0].domain: "devices.fleet.test/api" is not a domain name: write the bare hostname, without scheme, port or path
	// fleetgate.toml:13: applications[0].session_duration: invalid duration "1 day" (use Go units such as "90s", "15m" or "24h")
}
