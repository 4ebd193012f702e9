package gateway

import (
	"github.com/fleetgate/fleetgate/tlsengine"
)

// earlyData is the engine's Early hook (tlsengine.Config.Early): an http
// connection opens on the goroutine that just completed its handshake. A
// request that arrived with the handshake is served right there, and
// otherwise the idle timer is armed there (what conn.traffic does on the
// first turn of the loop after the handshake), so the engine need not wake
// the event loop: a device that makes a fresh connection per request saves
// a loop wake-up (an eventfd write and a loop turn) per request, and a
// goroutine hand-off when its request was already there. tcp and mqtt
// connections keep the loop's path: their relay and gate start there.
func earlyData(tc *tlsengine.Conn, site *tlsengine.Site) tlsengine.EarlyData {
	c, ok := tc.Value().(*conn)
	if !ok || site == nil {
		return nil
	}
	if app, ok := site.App.(*application); !ok || app.tcp != nil || app.mqtt != nil {
		return nil
	}
	return &earlyRequest{c: c}
}

// earlyRequest moves the early plaintext into the connection's pipe, as
// conn.traffic does on the loop, then runs the request worker in place.
type earlyRequest struct {
	c     *conn
	start bool  // a push found no worker running: Serve runs it
	err   error // the pipe refused the input (over its limit)
}

// Push is conn.traffic's push, before the loop reads the connection.
func (e *earlyRequest) Push(p []byte) {
	if e.err != nil {
		return // the pipe takes no more input
	}
	start, err := e.c.pipe.push(p)
	e.start = e.start || start
	e.err = err
}

// Serve runs the request worker on this goroutine, or does what
// conn.traffic does when it starts none.
func (e *earlyRequest) Serve() {
	c := e.c
	if e.err != nil {
		// As on the loop: take no more input; a worker answers what it has
		// (such as the 413 of a request that can never fit) and closes.
		c.srv.log.Info("closing connection", "client", c.remoteIP, "reason", e.err.Error())
		c.pipe.close()
		if !e.start {
			if c.pipe.stopIfIdle() {
				c.shutdown()
			}
			return
		}
	}
	if !e.start {
		// Nothing came with the handshake (or the connection went away
		// meanwhile, and armIdle does nothing): wait for the request.
		c.armIdle(c.idleLimit(), mono())
		return
	}
	c.work()
}
