// Package oidcop runs a small OpenID Provider for tests and the demo. It is
// built on the certified OP library github.com/zitadel/oidc/v3/pkg/op, which
// owns the protocol (discovery, authorize, token, userinfo, keys,
// end_session, PKCE, client authentication); this package adds only what the
// library leaves to its user: an in-memory storage of clients, users, auth
// requests and tokens, a signing key, a username/password login page and a
// single-sign-on session cookie.
//
// It is never used on the gateway's serving path: the gateway is an OIDC
// client (Relying Party) and talks to this provider over HTTP like it would
// to any other.
//
//	browser / Go client                      oidcop.Provider
//	  GET  /authorize?client_id&redirect_uri&state&nonce&code_challenge (S256)
//	                                      ─▶ op: validate, store auth request
//	  302  /login?authRequestID=…        ◀─  (or straight on with an SSO cookie / AutoLogin)
//	  POST /login  username, password     ─▶ check the user, mark the request done,
//	                                         set the SSO cookie
//	  302  /authorize/callback?id=…       ─▶ op: code for the request
//	  302  redirect_uri?code&state        ◀─
//	  RP:  POST /oauth/token code, code_verifier, client secret
//	                                      ─▶ op: ID token (sub, email, name, groups, nonce)
//	  GET  /end_session?client_id&post_logout_redirect_uri
//	                                      ─▶ clear the SSO session, 302 to the
//	                                         registered post_logout_redirect_uri
//
// Typical use in a test:
//
//	ln, _ := net.Listen("tcp", "127.0.0.1:0")
//	p, err := oidcop.New(oidcop.Options{
//		Issuer:         "https://" + ln.Addr().String(),
//		TLSCertificate: &serverCert, // pki.Server("127.0.0.1") …TLSCertificate()
//		Clients: []oidcop.Client{{ID: "fleetgate", Secret: "s3cret",
//			RedirectURIs: []string{"https://console.fleet.test/cdn-cgi/access/callback"}}},
//		Users: []oidcop.User{{Subject: "u1", Email: "ops@fleet.test",
//			EmailVerified: true, Groups: []string{"ops"}, Password: "pw"}},
//	})
//	p.Start(ln)
//	defer p.Close()
package oidcop
