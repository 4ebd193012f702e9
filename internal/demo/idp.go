package demo

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/oidcop"
)

// StartIdP serves the demo OpenID Provider (oidcop.NewDemo: client
// "fleetgate", user ops@fleet.test, password oidcop.DemoPassword, group
// ops) with issuer configs.DemoIdPIssuer, over TLS on addr, until the
// returned provider is closed. Its certificate and the client secret are
// those Prepare wrote in dir; redirectURI is the client's one redirect URI
// (CallbackURL). addr must be a loopback address, as for the broker: the
// demo user's password is public. A nil logger discards the provider's
// own log.
func StartIdP(dir, addr, redirectURI string, logger *slog.Logger) (*oidcop.Provider, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("demo: identity provider: %q is not a loopback address: the demo user's password is public", addr)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, IdPCert), filepath.Join(dir, IdPKey))
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	secret, err := os.ReadFile(filepath.Join(dir, configs.DemoIdPSecret))
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	// The gateway reads the file the same way (configs: the secret alone,
	// a trailing newline dropped).
	secret = bytes.TrimRight(secret, "\r\n")
	if len(secret) == 0 {
		return nil, fmt.Errorf("demo: identity provider: %s is empty", configs.DemoIdPSecret)
	}
	opts, err := oidcop.DemoOptions(configs.DemoIdPIssuer, string(secret), redirectURI, &cert)
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	opts.Logger = logger
	p, err := oidcop.New(opts)
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	if err := p.Start(ln); err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo: identity provider: %w", err)
	}
	return p, nil
}

// ConsoleURL is the address of the console a browser opens, for a gateway
// listening on listen: https://console.fleet.test:<port>/ (no port for
// 443).
func ConsoleURL(listen string) string {
	_, port := target(listen)
	if port == "443" {
		return "https://" + configs.DemoConsoleDomain + "/"
	}
	return "https://" + net.JoinHostPort(configs.DemoConsoleDomain, port) + "/"
}

// CallbackURL is the console's redirect URI, the one the demo identity
// provider registers: the gateway builds it from the host and port the
// browser used.
func CallbackURL(listen string) string {
	return ConsoleURL(listen) + "cdn-cgi/access/callback"
}
