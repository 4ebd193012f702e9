// Package enginetest provides an in-memory event loop and tlsengine.Transport
// for tests, in the manner of net/http/httptest: the engine's tests, its
// benchmarks and the fuzz targets drive a tlsengine.Engine through them,
// without sockets, the way the gateway drives it from gnet:
//
//	test bytes ─▶ Loop task "OnTraffic": Conn.Feed, then Conn.Read until would-block
//	engine ────▶ AsyncWrite (urgent, as gnet queues it) ─▶ Sent (+ the client's pipe)
//	engine ────▶ Wake / Close (in order) ─▶ OnTraffic(nil) / OnClose: Conn.Release
//
// A Loop runs its tasks one at a time on one goroutine, as a gnet event loop
// does. A Transport is bound to a Loop; it records what the engine writes,
// counts wakes and closes, reports a chosen OutboundBuffered, and checks the
// engine's side of the Transport contract (an AsyncWrite buffer is not
// modified after the call, OutboundBuffered runs on the loop only), noting
// every breach in Violations. Client returns the device's side as a
// net.Conn, for a real tls.Client.
//
// The package does not import tlsengine, so that tlsengine's own in-package
// tests can use it: a *tlsengine.Conn satisfies Conn, and a *Transport
// satisfies tlsengine.Transport.
//
// It is for tests only; nothing on the serving path may import it.
package enginetest
