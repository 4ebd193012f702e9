package oidcop_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"

	"github.com/fleetgate/fleetgate/internal/oidcop"
)

// An http issuer on a loopback socket, as a unit test would run it; with an
// https issuer, set TLSCertificate too.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	issuer := "http://" + ln.Addr().String()
	p, err := oidcop.New(oidcop.Options{
		Issuer: issuer,
		Clients: []oidcop.Client{{
			ID: "fleetgate", Secret: "s3cret",
			RedirectURIs:           []string{"http://127.0.0.1:9000/cdn-cgi/access/callback"},
			PostLogoutRedirectURIs: []string{"http://127.0.0.1:9000/"},
		}},
		Users: []oidcop.User{{
			Subject: "ops", Email: "ops@fleet.test", EmailVerified: true,
			Groups: []string{"ops"}, Password: "fleet-demo",
		}},
	})
	if err != nil {
		panic(err)
	}
	if err := p.Start(ln); err != nil {
		panic(err)
	}
	defer p.Close()

	resp, err := http.Get(issuer + "/.well-known/openid-configuration")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var d struct {
		Issuer     string `json:"issuer"`
		EndSession string `json:"end_session_endpoint"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		panic(err)
	}
	fmt.Println(d.Issuer == issuer, d.EndSession == issuer+"/end_session")
	// Output: true true
}
