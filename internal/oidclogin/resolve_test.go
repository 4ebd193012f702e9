package oidclogin

import (
	"context"
	"errors"
	"net"
	"testing"
)

// TestResolveDialer: only the issuer's host and port (its scheme's port
// when it names none) is dialed at the Resolve address.
func TestResolveDialer(t *testing.T) {
	errDialed := errors.New("dialed")
	tests := []struct {
		name, issuer, addr, want string
	}{
		{"issuer with a port", "https://idp.fleet.test:9444", "idp.fleet.test:9444", "127.0.0.1:9444"},
		{"issuer without a port", "https://idp.fleet.test", "idp.fleet.test:443", "127.0.0.1:9444"},
		{"http issuer without a port", "http://idp.fleet.test/realms/x", "idp.fleet.test:80", "127.0.0.1:9444"},
		{"another port", "https://idp.fleet.test:9444", "idp.fleet.test:443", "idp.fleet.test:443"},
		{"another host", "https://idp.fleet.test:9444", "login.example.com:9444", "login.example.com:9444"},
		{"bad issuer", "::", "idp.fleet.test:443", "idp.fleet.test:443"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			dial := resolveDialer(tc.issuer, "127.0.0.1:9444", func(_ context.Context, network, addr string) (net.Conn, error) {
				got = network + " " + addr
				return nil, errDialed
			})
			if _, err := dial(context.Background(), "tcp", tc.addr); !errors.Is(err, errDialed) {
				t.Fatalf("err %v", err)
			}
			if got != "tcp "+tc.want {
				t.Errorf("dialed %q, want %q", got, "tcp "+tc.want)
			}
		})
	}
}
