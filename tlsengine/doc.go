// Package tlsengine terminates TLS for connections whose bytes arrive from a
// gnet event loop, using Go's standard crypto/tls (DESIGN decision 1: no
// fork; this package adapts crypto/tls, it never does cryptography itself).
//
// It owns: the per-connection in-memory net.Conn that crypto/tls runs over
// (shim.go); handshakes off the event loop under two bounds, handshakes in
// flight and CPU slots (admission.go); SNI routing to a site and one
// tls.Config per site and Sites table (tlsconfig.go, site.go); the client
// chain's verdict, attached to the connection (verify.go, verdictcache.go),
// including revocation by CRLs and deny-lists in O(1) per certificate
// (revocation.go, revocation_table.go); decrypting, encrypting and closing after the handshake (conn.go), and
// handing what came with the handshake to its owner (early.go); and the
// client side of a relay's TLS to its origin, handshaken on the dialed
// socket and then fed by the loop the same way (origin.go). It knows
// nothing about HTTP or policies.
//
//	gnet loop                       tlsengine                          handshake goroutine
//	─────────                       ─────────                          ───────────────────
//	OnOpen ─────── Engine.Open ───▶ queue full? ──▶ ErrShed ("shed")
//	                                  │ else start ─────────────────▶ tls.Conn.Handshake
//	OnTraffic ──── Conn.Feed ─────▶ shim: frame whole records ──────▶ shim.Read: bytes?
//	  (copy of c.Next(-1))            │                                 no → give CPU slot
//	                                  │                                      back, wait
//	                                  │                                 yes → take a slot
//	                                  │                                 GetConfigForClient:
//	                                  │                                   SNI → Site, or
//	                                  │                                   unrecognized_name
//	                   socket ◀────── shim.Write ◀───────────────────── server flight, written
//	                                  (the rest by AsyncWrite(copy)   directly by this goroutine
//	                                  if the socket takes part)       (no loop wake-up)
//	                                                                    Finished → verdict
//	                                                                    (ChainVerifier, in
//	                                                                    the slot) → Wake, or
//	                                                                    with Config.Early:
//	                                                                    decrypt what is there,
//	                                                                    EarlyData.Push, open,
//	                                                                    EarlyData.Serve (no
//	                                                                    Wake unless more came)
//	OnTraffic ──── Conn.Read ─────▶ tls.Conn.Read over shim: no whole record →
//	                                  ErrWouldBlock (Temporary; never blocks the loop);
//	                                  the peer's close_notify → io.EOF, still writable
//	any goroutine ─ Conn.Write ───▶ tls.Conn.Write → shim.Write → AsyncWrite(copy),
//	                                  or held back while corked (Conn.Cork)
//	any goroutine ─ Conn.Close ───▶ close_notify → one AsyncWrite of what is held,
//	                                  whose callback polls OutboundBuffered until 0 → Close
//	OnClose ────── Conn.Release
//
// A handshake ends "ok" with a verdict (valid or why not, DESIGN decision 2:
// the certificate is requested, not required, and a bad one becomes a 403 in
// the gateway), or fails with a reason counted in Stats and reported to the
// Observer: shed, timeout, unknown_sni, not_tls, record_overflow,
// client_alert, bad_certificate, inbound_overflow, closed, tls_error.
package tlsengine
