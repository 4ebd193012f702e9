package gateway

import "github.com/fleetgate/fleetgate/tlsengine"

// metrics is the gateway's counting sink. It is injected (a no-op for now
// and in tests), never a package global.
type metrics interface {
	handshakeDone(tc *tlsengine.Conn)
	connRefused(reason string)
	tokenMinted(app, kind string)
	request(x *exchange)
	reload(ok bool)
}

// noMetrics counts nothing.
type noMetrics struct{}

func (noMetrics) handshakeDone(*tlsengine.Conn) {}
func (noMetrics) connRefused(string)            {}
func (noMetrics) tokenMinted(string, string)    {}
func (noMetrics) request(*exchange)             {}
func (noMetrics) reload(bool)                   {}
