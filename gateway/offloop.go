package gateway

// Connections that leave the event loop (tlsengine.Site.OffLoop): an
// application whose every request gets a fresh handshake ("no duration")
// has devices that connect, send one request and go. On the loop, such a
// connection crosses between the loop's thread and its handshake's
// goroutine for every step (its flight, the response, the close), and on a
// small machine each crossing is a context switch. Once its ClientHello has
// picked the site, the loop hands the socket over (detach, on its next turn
// for the connection) and forgets it; the handshake goroutine reads and
// writes the socket through Go's netpoller, serves the request that came
// with the handshake, and a pump on that same goroutine plays the loop's
// part for whatever follows (a request that came later, the device's
// close_notify), until the connection closes.

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/policy"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// offLoopApp reports whether an application's connections leave the loop:
// an http application whose every policy answers with no session, so that
// each connection carries one request.
func offLoopApp(app *application) bool {
	return app.tcp == nil && app.mqtt == nil && app.oneRequestPerConn
}

// noSessions reports whether no policy of a can answer with a session: the
// application's session duration is "no duration", no policy sets another,
// and nobody logs in.
func noSessions(a *policy.Application) bool {
	if a.SessionDuration != 0 || a.Login {
		return false
	}
	for i := range a.Policies {
		if p := &a.Policies[i]; p.HasSessionDuration && p.SessionDuration != 0 {
			return false
		}
	}
	return true
}

// detach hands the connection's socket to its handshake, on the loop, in
// OnTraffic, once every byte the loop read has been fed. It reports whether
// it did; the caller then closes the loop's side (gnet.Close) with the
// connection's context cleared, so that OnClose leaves it alone.
func (c *conn) detach(gc gnet.Conn) bool {
	if gc.OutboundBuffered() > 0 {
		c.tc.DeclineDetach() // output still on the loop's side
		return false
	}
	fd, err := gc.Dup()
	if err != nil {
		c.tc.DeclineDetach()
		return false
	}
	f := os.NewFile(uintptr(fd), "device")
	// A device that reads nothing for idle_timeout is let go, as on the
	// loop (where its answers wait in the outbound buffer meanwhile).
	stall := c.snap.idleTimeout
	if stall <= 0 {
		stall = tlsengine.DefaultDrainTimeout
	}
	t := &sockTransport{c: c, f: f, stall: stall}
	if !c.tc.Detach(f, t, stall) {
		_ = f.Close()
		return false
	}
	c.off.Store(t)
	c.srv.metrics.connOffLoop()
	return true
}

// sockTransport is the engine's transport for a connection off the loop:
// writes go to the socket at once, from the writer's goroutine (so nothing
// is ever buffered: OutboundBuffered is 0), and Close ends the connection
// as the loop's OnClose would.
type sockTransport struct {
	c       *conn
	f       *os.File
	stall   time.Duration // a write not done within this long fails: the device stopped reading
	once    sync.Once
	woken   atomic.Bool // Wake asked the pump to look at the connection again
	pumping atomic.Bool
}

var _ tlsengine.Transport = (*sockTransport)(nil)

// AsyncWrite writes buf now; cb, if any, runs on its own goroutine after
// it (the engine calls AsyncWrite with its write lock held, and a drain's
// callback closes the connection). On an error the connection closes and cb
// is not called, as with gnet.
func (t *sockTransport) AsyncWrite(buf []byte, cb gnet.AsyncCallback) error {
	if len(buf) > 0 {
		_ = t.f.SetWriteDeadline(time.Now().Add(t.stall))
		if _, err := t.f.Write(buf); err != nil {
			go t.Close()
			return err
		}
	}
	if cb != nil {
		go func() { _ = cb(nil, nil) }()
	}
	return nil
}

// Wake makes the pump look at the connection again (what gnet's Wake
// does with OnTraffic), starting it if it is not running yet.
func (t *sockTransport) Wake(cb gnet.AsyncCallback) error {
	t.woken.Store(true)
	if t.pumping.CompareAndSwap(false, true) {
		go t.pumpLoop()
	} else {
		_ = t.f.SetReadDeadline(time.Now()) // a pump waiting in a read returns and looks
	}
	if cb != nil {
		go func() { _ = cb(nil, nil) }()
	}
	return nil
}

// Close closes the socket and ends the connection, once.
func (t *sockTransport) Close() error {
	t.once.Do(func() {
		_ = t.f.Close()
		t.c.srv.connGone(t.c)
	})
	return nil
}

// OutboundBuffered is always 0: every write went to the socket.
func (t *sockTransport) OutboundBuffered() int { return 0 }

// pump runs the pump on this goroutine, unless one already runs.
func (t *sockTransport) pump() {
	if t.pumping.CompareAndSwap(false, true) {
		t.pumpLoop()
	}
}

// pumpLoop plays the event loop's part for the connection: what the device
// sends goes to conn.traffic, as OnTraffic would pass it, until the
// connection closes (ours or the device's: as on the loop, a device that
// closes its TCP side ends the connection).
func (t *sockTransport) pumpLoop() {
	for {
		if t.woken.Swap(false) {
			if t.c.traffic(nil) == gnet.Close {
				t.Close()
				return
			}
		}
		act := gnet.None
		err := tlsengine.ReadSocket(t.f, func(b []byte) { act = t.c.traffic(b) })
		switch {
		case act == gnet.Close:
			t.Close()
			return
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			_ = t.f.SetReadDeadline(time.Time{}) // Wake's: look at woken
		default:
			t.Close()
			return
		}
	}
}
