package gateway

import (
	"time"

	"github.com/fleetgate/fleetgate/tlsengine"
)

// metrics is the gateway's counting sink. It is injected (promMetrics when
// the admin listener is on, noMetrics otherwise), never a package global.
// Its methods are called on the hot paths (event loops, handshake
// goroutines, request workers): they must be quick and safe for concurrent
// use. What is read rather than counted (connections open, handshake queue,
// caches, expiry dates) is not here: collectors read it at scrape time.
type metrics interface {
	// Handshake counts one finished handshake (or shed connection); the
	// engine calls it as its tlsengine.Observer.
	tlsengine.Observer
	// connAccepted counts a connection admitted by OnOpen (a load
	// balancer's: once its PROXY header admitted the device it names).
	connAccepted()
	// connRefused counts a connection refused by OnOpen: "max_connections",
	// "max_connections_per_ip", "shed", "rate" or "draining"; or a load
	// balancer's refused at its PROXY header: "proxy_header", or
	// "max_connections_per_ip" for the address the header named.
	connRefused(reason string)
	// tokenMinted counts a token minted for app: "session" or "no_duration".
	tokenMinted(app, kind string)
	// request counts one answered request that took total, from its first
	// header byte read to its response written.
	request(x *exchange, total time.Duration)
	// configLoaded records a snapshot that is now serving: at start (old is
	// nil) and after each successful reload.
	configLoaded(old, cur *snapshot)
	// reloadFailed counts a reload that was refused.
	reloadFailed()
	// tcpRefused counts a tcp application's device refused inside the
	// handshake, with the reason an HTTP 403 would carry.
	tcpRefused(app, reason string)
	// mqttRefused counts an mqtt application's device refused (or closed)
	// before its CONNECT reached the broker, with the reason.
	mqttRefused(app, reason string)
	// tcpOpened counts a relayed connection of a tcp application that
	// starts; the meter counts its bytes and its close.
	tcpOpened(app string) relayMeter
}

// relayMeter counts one relayed connection; its methods are called on the
// connection's event loop.
type relayMeter interface {
	// bytes adds bytes moved from the device to the origin (up) and from
	// the origin to the device (down).
	bytes(up, down int)
	// closed records the connection's end with its close reason; called
	// once.
	closed(reason string)
}

// noMetrics counts nothing: the sink when no admin listener can serve
// /metrics.
type noMetrics struct{}

func (noMetrics) Handshake(tlsengine.HandshakeEvent) {}
func (noMetrics) connAccepted()                      {}
func (noMetrics) connRefused(string)                 {}
func (noMetrics) tokenMinted(string, string)         {}
func (noMetrics) request(*exchange, time.Duration)   {}
func (noMetrics) configLoaded(*snapshot, *snapshot)  {}
func (noMetrics) reloadFailed()                      {}
func (noMetrics) tcpRefused(string, string)          {}
func (noMetrics) mqttRefused(string, string)         {}
func (noMetrics) tcpOpened(string) relayMeter        { return noMetrics{} }
func (noMetrics) bytes(int, int)                     {}
func (noMetrics) closed(string)                      {}
