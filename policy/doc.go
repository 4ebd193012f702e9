// Package policy decides, for one request, whether a device may reach an
// Access application, and mints and verifies the session tokens that carry
// that decision to the origin and back.
//
// It is pure logic: no I/O, no goroutines, and it never reads the clock
// (every function that needs the time takes a now argument; the only
// outside input is crypto/rand for token nonces).
//
// Its part of the request flow:
//
//	configs: ParseAction, ParseSelector, DeriveAUD ─▶ Application ─▶ Compile (once)
//
//	certificate verdict ─┐
//	verified token ──────┤
//	service token ───────┼─▶ (*Application).Evaluate ─▶ Decision (policy, rule)
//	newest lists ────────┤        │
//	client IP, host, now ┘        │
//	                              ├─ bypass / non_identity policies, in file order
//	                              ├─ allow / deny policies, in file order
//	                              └─ first match decides; no match denies
//
//	Decision.Mint ─▶ (*Application).NewClaims or NewClaims ─▶ (*KeySet).Mint ─▶ JWT (Cf-Access-Jwt-Assertion, cookie)
//	cookie / cf-access-token ─▶ (*KeySet).VerifyCached ─▶ *Claims ─▶ Input.Token
//	(*KeySet).JWKS ─▶ /cdn-cgi/access/certs ─▶ ParseJWKS ─▶ (*PublicKeys).VerifyAny (origins, CLI)
//
// Files: model.go (the contract types), action.go (actions), selector.go
// (the selector registry, Env) and selectors_builtin.go (valid_certificate,
// common_name, everyone), selectors_cert.go (common_name_pattern, SANs, O,
// OU, serial, fingerprint, client_ca), selectors_net.go (ip, list), list.go
// (List, ListSet: xxhash sets of a million values), servicetoken.go
// (ServiceTokens, service_token selectors), subject.go (the identity selectors see: the
// certificate's, or a session token's), identity.go (a logged-in person's
// Identity, the cnf binding, email, email_domain, group and login_method), evaluate.go (Compile, Evaluate,
// Decision), aud.go (audience tags), claims.go and mint.go (token claims and
// signing), keyset.go (signing keys, kid, JWKS), verify.go (token
// verification), jwks_parse.go (ParseJWKS, VerifyAny: the origin's view),
// cache.go (the verified-token cache), errors.go (sentinel errors).
package policy
