// Package gateway is the product a fleet operator runs: the gnet event
// handler, each connection's life, HTTP/1.1 handling with fasthttp's request
// and response types, the Access flow, proxying to origins, the admin
// listener (health, readiness, Prometheus metrics), configuration reload and
// the CRL and list file watch.
//
//	event loop (gnet)          request worker (one goroutine per busy connection)
//	─────────────────          ─────────────────────────────────────────────────
//	OnOpen   → admission (max_connections, max_connections_per_ip, shed) → tlsengine.Open
//	           (a load balancer's connection: after its PROXY header, balancer.go)
//	OnTraffic→ Feed, Read ──plaintext──▶ serveOne (exchange.go), its phases in order:
//	                                       header → framing (505/405/400/431/413/408)
//	                                       → certificate re-check → host (421) → token
//	                                       → /cdn-cgi/access/* → policy (403/401)
//	                                       → body → mint → origin (502/504)
//	         ◀──────── TLS records ───── respond: the answer, the origin's body streamed
//	                                     with backpressure; then the access log, and
//	                                     endOf: keep, close, or close lingering
//	OnClose  → release
//
// The event loop never blocks: handshakes run in tlsengine's bounded pool.
// A request whose bytes are all buffered runs its phases on the loop itself,
// with an origin connection the loop keeps (loopserve.go, loopclient.go);
// whatever would block (an uncached signature, a body still arriving, an
// https origin, a large answer, a login) suspends there and resumes on the
// connection's worker, which exists only while a request is in progress. A
// request that came with the handshake's Finished is served on the
// handshake's own goroutine (early.go). Each phase returns a named outcome (proceed, respond,
// hangUp) and records facts on the exchange; whether the connection stays
// open is decided from those facts in one place (exchange.last, conn.endOf).
// Configuration lives in an immutable snapshot swapped
// atomically on reload; a connection keeps the snapshot it started with.
// Revocation, [[lists]] and service tokens are the exceptions: every request
// and tcp decision consults the newest snapshot's (lists.go), and a reload
// re-checks live tcp relays against them.
package gateway
