// Package gateway is the product a fleet operator runs: the gnet event
// handler, each connection's life, HTTP/1.1 handling with fasthttp's request
// and response types, the Access flow, proxying to origins, the admin
// listener (health, readiness, Prometheus metrics), configuration reload and
// the CRL file watch.
//
//	event loop (gnet)          request worker (one goroutine per busy connection)
//	─────────────────          ─────────────────────────────────────────────────
//	OnOpen   → admission (max_connections, max_connections_per_ip, shed) → tlsengine.Open
//	OnTraffic→ Feed, Read ──plaintext──▶ fasthttp parse (limits → 408/413/431; framing → 400)
//	                                     pipeline: host (421) → token → /cdn-cgi/access/*
//	                                               → policy (403/401) → mint → origin (502/504)
//	         ◀──────── TLS records ───── response, the origin's body streamed with backpressure
//	                                     (close after it in "no duration" mode)
//	OnClose  → release
//
// The event loop never blocks: handshakes run in tlsengine's bounded pool and
// requests on their connection's worker, which exists only while a request
// is in progress. Configuration lives in an immutable snapshot swapped
// atomically on reload; a connection keeps the snapshot it started with.
package gateway
