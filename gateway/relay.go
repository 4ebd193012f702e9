package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/loopwrite"
	"github.com/fleetgate/fleetgate/internal/proxyv2"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// The relay of a tcp application's connection: after the handshake (whose
// hook already admitted the device), the origin is dialed off the event
// loop, and the connected socket is enrolled on the device's own event
// loop, tagged as an origin (originSide). From then on both sockets' events
// run on that one loop, and the bytes move without a goroutine:
//
//	device OnTraffic: tlsengine Read (plaintext) ─▶ origin socket (loopwrite)
//	origin OnTraffic: gnet Next ─▶ tlsengine Write (records, corked into one write)
//
// Ends: the device's close_notify (or its socket's close) closes the origin
// once what is queued for it is written; the origin's close ends the
// device's side with close_notify. Anything else (idle, age, revocation,
// expiry, backpressure, shutdown) cuts both. One log line per connection,
// when both sides are closed.

// Close reasons: the reason label of fleetgate_tcp_closes_total and the
// close log line.
const (
	closeDeviceClosed = "device_closed"
	closeOriginClosed = "origin_closed"
	closeIdle         = "idle"
	closeMaxAge       = "max_age"
	closeRevoked      = "revoked"
	closeExpired      = "expired"
	closeBackpressure = "backpressure"
	closeOriginDown   = "origin_down"
	closeShutdown     = "shutdown"
	closeKeyUpdates   = "key_updates" // tlsengine.ErrTooManyKeyUpdates
)

var tcpCloseReasons = []string{closeDeviceClosed, closeOriginClosed, closeIdle, closeMaxAge,
	closeRevoked, closeExpired, closeBackpressure, closeOriginDown, closeShutdown, closePolicy, closeKeyUpdates}

// originDrainLimit bounds how long an origin that does not read may hold a
// closing relay's last bytes.
const originDrainLimit = 30 * time.Second

// originSide tags an origin socket's gnet.Conn (its context): OnOpen,
// OnTraffic and OnClose hand it to its relay, and it is never counted as a
// device connection.
type originSide struct{ r *relay }

// relay is one relayed connection of a tcp application.
type relay struct {
	srv    *Server
	c      *conn
	app    *application
	set    *tcpSettings
	loop   gnet.EventLoop
	adm    *tcpAdmission
	v      *verdict.Verdict
	id     proxyv2.ID
	opened time.Time
	meter  relayMeter

	// Facts gathered on the loop at start, for the PROXY header.
	src, dst netip.AddrPort
	sni      string
	tlsFacts proxyv2.TLS
	header   []byte // written by dial before Enroll, read (and dropped) by OnOpen after it
	// otls is the TLS session with a tls:// origin (nil for tcp://):
	// handshaken by dial before Enroll, then used on the loop only.
	otls *tlsengine.OriginConn
	// mq is set for an mqtt application: the CONNECT that follows the
	// header, and the answer when the origin is down (mqttapp.go).
	mq    *mqttRelay
	token string // the connection's token, once minted (dial worker only)
	// dialCtx ends the dial when the relay is cut, or its device is gone
	// with nothing to deliver.
	dialCtx    context.Context
	cancelDial context.CancelFunc

	lastActive atomic.Int64 // coarse clock's reading (ns) at the last byte either way
	stopped    atomic.Bool  // timers do nothing more
	// idle is the idle timeout in nanoseconds (0: none): idle_timeout, or
	// more for an MQTT keep-alive, which an MQTT 5 broker's CONNACK may
	// change (setIdle).
	idle atomic.Int64

	// Event loop only.
	origin     gnet.Conn // the origin socket, once open
	originDone bool      // the origin socket closed, or will never open
	devDone    bool      // the device's socket closed
	devEOF     bool      // the device sent close_notify (or a broken record)
	// pending holds what the device sent before the origin opened (at most
	// relay_buffer): it follows the PROXY header.
	pending  []byte
	draining bool  // the origin closes once its output is written
	up, down int64 // bytes device→origin, origin→device
	finished bool

	mu        sync.Mutex
	idleTimer *time.Timer // read by its own callback, under mu
	reason    string
	detail    string // why, when the reason alone does not say (the close line's detail)
	timers    []*time.Timer
}

// startRelay begins relaying a tcp application's connection whose
// handshake just completed (on the loop): it gathers the connection's facts,
// registers it for revocation, arms its timers and starts dialing the origin
// on a worker.
func (c *conn) startRelay(app *application) {
	adm, _ := c.tc.Authorization().(*tcpAdmission)
	if adm == nil {
		// Every tcp site has the hook: a completed handshake without its
		// decision is a wiring fault, so fail closed.
		c.srv.log.Error("tcp connection without an admission decision; closing", "app", app.name)
		c.shutdown()
		return
	}
	c.beginRelay(app, adm, nil, app.tcp.idleTimeout)
}

// beginRelay starts the relay of an admitted connection (on the loop); mq
// is set for an mqtt application, and idle is the connection's idle timeout.
func (c *conn) beginRelay(app *application, adm *tcpAdmission, mq *mqttRelay, idle time.Duration) {
	s := c.srv
	r := &relay{srv: s, c: c, app: app, set: app.tcp, loop: c.gc.EventLoop(), adm: adm,
		v: c.tc.Verdict(), opened: time.Now(), sni: c.tc.ServerName(), mq: mq}
	r.idle.Store(int64(idle))
	var err error
	if r.id, err = proxyv2.NewID(); err != nil {
		s.log.Error("tcp connection id", "err", err.Error())
		c.shutdown()
		return
	}
	if c.proxied != nil {
		// Passed on by a load balancer: the device's ends, as HAProxy's
		// send-proxy does after an accept-proxy.
		r.src, r.dst = c.proxied.src, c.proxied.dst
	} else {
		r.src, _ = proxyv2.AddrPort(c.gc.RemoteAddr())
		r.dst = dialedAddr(c.gc)
	}
	cs := c.tc.ConnectionState()
	r.tlsFacts = proxyv2.TLS{Version: proxyv2.VersionName(cs.Version), Cipher: tls.CipherSuiteName(cs.CipherSuite),
		SigAlg: app.tcp.sigAlg, KeyAlg: app.tcp.keyAlg}
	r.touch()
	c.relay = r
	r.meter = s.metrics.tcpOpened(app.name)
	if mq != nil {
		// The CONNECT and what came with it were read by the gate.
		r.up += int64(mq.fromDevice)
		r.meter.bytes(mq.fromDevice, 0)
	}
	if hook := s.testBeforeRelayAdd.Load(); hook != nil {
		(*hook)()
	}
	closedWith := s.relays.add(r)
	r.armTimers()
	if reason := r.refusedAtStart(closedWith); reason != "" {
		r.setReason(reason)
		r.originDone = true // never dialed
		c.shutdown()
		return
	}
	r.dialCtx, r.cancelDial = context.WithCancel(context.Background())
	s.workers.Go(r.dial)
	// Bytes that came with the client's Finished are already in TLS.
	r.pumpDevice()
}

// refusedAtStart returns why a relay just added to the index must not be
// dialed ("" when it may be): Shutdown already cut the relays (closedWith),
// or a reload since its decision revoked its certificate or changed a list
// its policies use.
func (r *relay) refusedAtStart(closedWith string) string {
	s := r.srv
	if closedWith != "" {
		// A handshake that completed since Shutdown cut the relays is cut
		// too, and its origin never dialed.
		return closedWith
	}
	// The verdict was reached at VerifyConnection, against the revocation
	// set of that moment; a reload since then rechecked only the relays
	// already in the index. Reload stores its snapshot before it rechecks
	// and both take the index's lock, so a relay added after that recheck
	// sees the new snapshot here: it is checked against it, not let through.
	cur := s.snap.Load()
	if r.revokedBy(cur.revocation, s.now()) {
		return closeRevoked
	}
	// Likewise the lists: a reload that landed between the decision (the
	// handshake, or the mqtt CONNECT) and the index add re-evaluated only
	// the relays already in the index. The decision is made again with the
	// newest lists, as the reload would have.
	if r.adm.input.Lists != cur.lists {
		in := r.adm.input
		in.Lists, in.Now = cur.lists, s.now()
		if d := r.app.policy.Evaluate(&in); !d.Allowed {
			return closePolicy
		}
	}
	return ""
}

// revokedBy reports whether rev now revokes the relay's certificate, or
// finds its CRL stale under crl_stale = "reject". A connection admitted
// without a valid certificate (bypass) has nothing to revoke.
func (r *relay) revokedBy(rev *tlsengine.Revocation, now time.Time) bool {
	if rev == nil || !r.v.OK() {
		return false
	}
	v := *r.v // Recheck rewrites the verdict it is given
	return rev.Recheck(&v, now)
}

// touch records activity now, for the idle timer, twice per relayed round
// trip: the coarse clock, which costs no clock read (the idle timer allows
// for its tick).
func (r *relay) touch() { r.lastActive.Store(int64(r.srv.coarse.load())) }

// identity reports whether the device's identity goes to the origin: a
// verified certificate, admitted by a policy that mints (not bypass).
func (r *relay) identity() bool { return r.v.OK() && r.adm.decision.Mint }

// dial runs on a worker: it builds the PROXY header (minting the token),
// dials the origin within origin_connect_timeout (for a tls:// origin, the
// handshake too) and enrolls the socket on the device's loop. Any failure
// closes the device with origin_down.
func (r *relay) dial() {
	hdr, err := r.buildHeader()
	if err != nil {
		// Not the origin's fault, but the device cannot be relayed: its
		// close line says origin_down, with this as its detail.
		r.setDetail("cannot build the PROXY header, so the origin was not dialed: " + err.Error())
		r.srv.log.Error("tcp relay: cannot build the PROXY header; closing the device's connection without dialing the origin",
			"app", r.app.name, "conn_id", r.id.String(), "err", err.Error())
		r.originFailed()
		return
	}
	var first []byte
	if r.mq != nil {
		if first, err = r.mq.connectBytes(r); err != nil {
			r.srv.log.Error("mqtt relay: CONNECT", "app", r.app.name, "conn_id", r.id.String(), "err", err.Error())
			r.originFailed()
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.dialCtx, r.set.connectTimeout)
	nc, step, err := r.connect(ctx, hdr)
	cancel()
	r.cancelDial()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			r.originFailed() // the relay was cut meanwhile, with its reason
			return
		}
		r.setDetail(step + ": " + err.Error())
		r.srv.log.Warn("tcp origin down", "app", r.app.name, "origin", r.set.originAddr, "conn_id", r.id.String(), "step", step, "err", err.Error())
		r.originFailed()
		return
	}
	if r.otls == nil {
		r.header = append(hdr, first...)
	} else {
		r.header = first // sealed on the loop; the PROXY header went before TLS
	}
	r.enroll(nc)
}

// connect dials the origin and, for a tls:// origin, sends the PROXY header
// hdr in the clear (as HAProxy's send-proxy does before its ssl) and makes
// the TLS handshake, all within ctx. On failure, step names what failed
// (the close line's detail).
func (r *relay) connect(ctx context.Context, hdr []byte) (nc net.Conn, step string, err error) {
	var d net.Dialer
	if nc, err = d.DialContext(ctx, "tcp", r.set.originAddr); err != nil {
		return nil, "dial the origin", err
	}
	if r.set.originTLS == nil {
		return nc, "", nil
	}
	if len(hdr) > 0 {
		if dl, ok := ctx.Deadline(); ok {
			_ = nc.SetWriteDeadline(dl)
		}
		if _, err = nc.Write(hdr); err != nil {
			_ = nc.Close()
			return nil, "send the PROXY header", err
		}
	}
	if r.otls, err = tlsengine.HandshakeOrigin(ctx, nc, r.set.originTLS); err != nil {
		_ = nc.Close()
		if ctx.Err() != nil && r.dialCtx.Err() == nil {
			err = errors.New("no handshake within origin_connect_timeout")
		}
		return nil, "TLS handshake with the origin", err
	}
	return nc, "", nil
}

// enroll hands the connected origin socket to the device's event loop, on
// which its events then run (the origin's OnOpen writes the header).
func (r *relay) enroll(nc net.Conn) {
	// Enroll duplicates the socket onto the loop and closes nc.
	ch, err := r.loop.Enroll(gnet.NewContext(context.Background(), &originSide{r}), nc)
	if err != nil {
		_ = nc.Close()
		r.srv.log.Warn("tcp relay: enroll the origin socket", "app", r.app.name, "conn_id", r.id.String(), "err", err.Error())
		r.originFailed()
		return
	}
	// gnet's enroll waits for its loop to register the socket; a loop that
	// exits first never does (the server then finishes the relay itself).
	var res gnet.RegisteredResult
	select {
	case res = <-ch:
	case <-r.srv.runDone:
		return
	}
	if res.Err != nil {
		r.srv.log.Warn("tcp relay: enroll the origin socket", "app", r.app.name, "conn_id", r.id.String(), "err", res.Err.Error())
		r.originFailed()
		return
	}
	// gnet reports a socket its loop failed to register (so never opened)
	// as enrolled: the origin's OnOpen, run before the result is sent, says.
	r.onLoop(func() {
		if r.origin == nil && !r.originDone {
			r.setDetail("the enrolled origin socket was never opened")
			r.srv.log.Warn("tcp relay: the enrolled origin socket was never opened", "app", r.app.name, "conn_id", r.id.String())
			r.setReason(closeOriginDown)
			r.originDone = true
			if !r.devDone {
				r.c.shutdown()
			}
			r.maybeFinish()
		}
	})
}

// buildHeader returns the PROXY header of proxy_protocol (nil for none).
func (r *relay) buildHeader() ([]byte, error) {
	switch r.set.proxyProtocol {
	case configs.ProxyProtocolNone:
		return nil, nil
	case configs.ProxyProtocolV1:
		return proxyv2.V1(r.src, r.dst)
	}
	pc := &proxyv2.Conn{Source: r.src, Destination: r.dst, SNI: r.sni, ID: r.id, TLS: r.tlsFacts}
	if r.identity() {
		id := &r.v.Identity
		pc.Verified, pc.CN = true, id.CommonName
		if r.set.forwardCert {
			pc.LeafDER, pc.IncludeCert = id.DER, true
		}
		// Before a tls:// origin's handshake the header crosses the network
		// in the clear, to an origin not yet verified: a bearer token has
		// no place there. Such an origin verifies the gateway by its
		// certificate (origin_cert_file) instead.
		if r.set.originTLS == nil {
			tok, err := r.mint()
			if err != nil {
				return nil, err
			}
			pc.Token = tok
		}
	}
	return proxyv2.V2(pc)
}

// mint signs the connection's token: the claims an HTTP request admitted by
// the same decision gets, for the application's aud, expiring tcpTokenLife
// after the connection opened (sooner if the certificate expires first, or
// a CRL covering it goes stale under crl_stale = "reject").
// The newest configuration's key signs, as on the HTTP path.
func (r *relay) mint() (string, error) {
	if r.token != "" {
		return r.token, nil // one token per connection: the PROXY header's and the MQTT password
	}
	cur := r.srv.snap.Load()
	in := r.adm.input
	in.Now = r.srv.now()
	claims, err := r.app.policy.NewClaims(cur.issuer, &in, r.adm.decision)
	if err != nil {
		return "", err
	}
	exp := in.Now.Add(tcpTokenLife).Unix()
	if na := certNotAfter(r.v); !na.IsZero() && na.Unix() < exp {
		exp = na.Unix()
	}
	// Nor past the moment a list covering the path stops vouching for it
	// under crl_stale = "reject" (the connection closes then too).
	if r.v.OK() {
		if u := cur.revocation.VouchedUntil(r.v.Path); !u.IsZero() && u.Unix() < exp {
			exp = u.Unix()
		}
	}
	claims.Exp = exp
	tok, err := cur.keys.Mint(claims)
	if err == nil {
		r.token = tok
		r.srv.metrics.tokenMinted(r.app.name, "tcp")
	}
	return tok, err
}

// certNotAfter is when the connection's certificate path stops being valid
// (zero without a verified certificate).
func certNotAfter(v *verdict.Verdict) time.Time {
	if !v.OK() {
		return time.Time{}
	}
	if t := v.PathNotAfter(); !t.IsZero() {
		return t
	}
	return v.Identity.NotAfter
}

// originFailed is called off the loop when the origin cannot be reached:
// the device's connection closes with origin_down.
func (r *relay) originFailed() {
	r.setReason(closeOriginDown)
	r.onLoop(func() {
		r.originDone = true
		r.mu.Lock()
		down := r.reason == closeOriginDown
		r.mu.Unlock()
		// Not when the dial ended because the relay was cut (revoked,
		// policy, max_age, shutdown): the broker was not found down.
		if r.mq != nil && down {
			r.mq.originDown(r)
		}
		if !r.devDone {
			r.c.shutdown()
		}
		r.maybeFinish()
	})
}

// originOpened is the origin socket's OnOpen, on the loop: the PROXY header
// goes first, then what the device sent meanwhile. A device that has
// already ended its side (close_notify, or its socket closed) still has
// those bytes delivered, then the origin closes once they are written.
func (r *relay) originOpened(gc gnet.Conn) ([]byte, gnet.Action) {
	r.origin = gc
	deliver := r.hasPending()
	pending := r.pending
	r.pending = nil
	if r.cutting() || r.devDone && !deliver {
		return nil, gnet.Close
	}
	out := r.header
	if len(pending) > 0 {
		out = append(out[:len(out):len(out)], pending...)
	}
	// gnet writes out now and copies what the socket does not take: the
	// header and an mqtt device's CONNECT (up to max_connect_bytes, twice)
	// are not kept for the connection's whole life.
	r.header = nil
	if r.otls != nil {
		if len(out) > 0 {
			sealed, err := r.otls.Seal(out)
			if err != nil {
				return nil, gnet.Close
			}
			out = append([]byte(nil), sealed...) // the session reuses its output buffer
		}
		// The origin may have spoken right after its handshake: what
		// crypto/tls read of it then has no event of its own.
		r.onLoop(func() {
			if r.originTLSTraffic(gc, nil) == gnet.Close {
				_ = gc.Close()
			}
		})
	}
	if r.mq != nil {
		r.mq.delivered()
	}
	if r.devDone || r.devEOF {
		// Drain after OnOpen's output is written (or buffered).
		r.onLoop(r.drainOrigin)
	} else {
		_ = r.c.gc.Wake(nil) // bytes still in TLS, if any
	}
	return out, gnet.None
}

// pumpDevice moves the device's plaintext to the origin (on the loop, from
// the device's OnTraffic). Until the origin is open it is held in pending,
// bounded by relay_buffer as the origin's output is, so that TLS holds no
// more than a partial record.
func (r *relay) pumpDevice() gnet.Action {
	if r.originDone || r.draining || r.devEOF {
		return gnet.None
	}
	moved := false
	defer func() {
		if moved {
			r.touch()
		}
	}()
	buf := *r.c.buf
	for {
		n, err := r.c.tc.Read(buf)
		if n > 0 {
			moved = true
			r.up += int64(n)
			r.meter.bytes(n, 0)
			if r.origin == nil {
				r.pending = append(r.pending, buf[:n]...)
				if len(r.pending) > r.set.relayBuffer {
					r.setReason(closeBackpressure)
					r.cutOnLoop()
					return gnet.None
				}
				continue
			}
			if werr := r.toOrigin(buf[:n]); werr != nil {
				r.setReason(closeOriginClosed)
				r.cutOnLoop()
				return gnet.None
			}
			if r.origin.OutboundBuffered() > r.set.relayBuffer {
				r.setReason(closeBackpressure)
				r.cutOnLoop()
				return gnet.None
			}
		}
		if errors.Is(err, tlsengine.ErrWouldBlock) {
			// What the device is owed but does not read is bounded here
			// too, not only when the origin sends: crypto/tls queues its
			// answers to the device's key update requests as it reads.
			if r.c.gc.OutboundBuffered() > r.set.relayBuffer {
				r.setReason(closeBackpressure)
				r.cutOnLoop()
			}
			return gnet.None
		}
		if errors.Is(err, tlsengine.ErrTooManyKeyUpdates) {
			r.setReason(closeKeyUpdates)
			r.cutOnLoop()
			return gnet.None
		}
		if err != nil {
			// close_notify (io.EOF) or a broken record (the engine closes
			// the device): the origin gets what is queued, then closes
			// (once it opens, if it has not yet).
			r.devEOF = true
			r.setReason(closeDeviceClosed)
			r.drainOrigin()
			return gnet.None
		}
	}
}

// toOrigin writes the device's plaintext to the origin's socket (on the
// loop): as it is, or sealed in records for a tls:// origin.
func (r *relay) toOrigin(p []byte) error {
	if r.otls != nil {
		sealed, err := r.otls.Seal(p)
		if err != nil {
			return err
		}
		p = sealed
	}
	_, err := loopwrite.Write(r.origin, p)
	return err
}

// originTraffic moves the origin's bytes to the device, encrypted (the
// origin socket's OnTraffic, on the loop). The records of one read go out
// in one write.
func (r *relay) originTraffic(gc gnet.Conn) gnet.Action {
	data, _ := gc.Next(-1)
	if r.otls != nil {
		return r.originTLSTraffic(gc, data)
	}
	if len(data) == 0 {
		return gnet.None
	}
	if r.devDone {
		return gnet.Close
	}
	r.toDevice(gc, data)
	return gnet.None
}

// originTLSTraffic is originTraffic for a tls:// origin: data is what its
// socket delivered (records), and the plaintext goes to the device a record
// at a time. The origin's close_notify, or a broken record, ends the
// origin's side as its socket's end does.
func (r *relay) originTLSTraffic(gc gnet.Conn, data []byte) gnet.Action {
	if r.devDone || r.originDone {
		if len(data) > 0 {
			return gnet.Close
		}
		return gnet.None
	}
	r.otls.Feed(data)
	buf := *r.c.buf
	for {
		n, err := r.otls.Read(buf)
		if out := r.otls.Output(); len(out) > 0 {
			_, _ = loopwrite.Write(gc, out) // crypto/tls's answer to a key update request
		}
		if n > 0 {
			if !r.toDevice(gc, buf[:n]) {
				return gnet.None
			}
			continue
		}
		if errors.Is(err, tlsengine.ErrWouldBlock) {
			return gnet.None
		}
		if !errors.Is(err, io.EOF) {
			r.setDetail("TLS from the origin: " + err.Error())
			r.srv.log.Warn("tcp relay: broken TLS from the origin", "app", r.app.name, "origin", r.set.originAddr, "conn_id", r.id.String(), "err", err.Error())
		}
		return gnet.Close
	}
}

// toDevice sends the origin's plaintext to the device, encrypted, straight
// to its socket in one write (no AsyncWrite, no wake-up of the loop). It
// reports false when the relay can take no more from the origin: the
// device is closing, or does not read and is cut.
func (r *relay) toDevice(origin gnet.Conn, data []byte) bool {
	if r.mq != nil && r.mq.watchAck {
		r.mq.watchConnack(r, data)
	}
	_, err := r.c.tc.WriteLoop(data)
	if err != nil {
		return false // the device is closing; its OnClose ends the relay
	}
	r.down += int64(len(data))
	r.meter.bytes(0, len(data))
	r.touch()
	if r.c.gc.OutboundBuffered() > r.set.relayBuffer {
		// The device does not read: a close_notify would wait behind what
		// it does not read, so its socket closes now, output dropped.
		r.setReason(closeBackpressure)
		if !r.originDone {
			_ = origin.Close()
		}
		r.c.markClosing()
		_ = r.c.gc.Close()
		return false
	}
	return true
}

// originClosed is the origin socket's OnClose: the device's side ends with
// close_notify, after what the origin sent.
func (r *relay) originClosed() {
	if r.otls != nil && r.origin != nil && !r.originDone {
		// What crypto/tls read with the end of its handshake has no event
		// of its own: when the socket's end is read before originOpened's
		// task runs (a busy loop), it is delivered now, not dropped.
		_ = r.originTLSTraffic(r.origin, nil)
	}
	r.originDone = true
	r.setReason(closeOriginClosed)
	if !r.devDone {
		r.c.shutdown()
	}
	r.maybeFinish()
}

// deviceClosed is called from the device's OnClose.
func (r *relay) deviceClosed() {
	r.devDone = true
	r.setReason(closeDeviceClosed)
	if r.origin == nil && !r.hasPending() && r.cancelDial != nil {
		r.cancelDial() // nothing to deliver
	}
	r.drainOrigin()
	r.maybeFinish()
}

// hasPending reports whether the device sent bytes the origin has not been
// given yet: what pumpDevice held before the origin opened, and for an mqtt
// application always its CONNECT (and what followed it), which the header
// carries.
func (r *relay) hasPending() bool {
	return len(r.pending) > 0 || r.mq != nil
}

// drainOrigin closes the origin socket once what is queued for it is
// written (gnet's close would drop it), or after originDrainLimit.
func (r *relay) drainOrigin() {
	if r.draining || r.origin == nil || r.originDone {
		return
	}
	r.draining = true
	if r.otls != nil {
		// The gateway's side of the origin's TLS ends with close_notify.
		_, _ = loopwrite.Write(r.origin, r.otls.CloseNotify())
	}
	r.checkOriginDrained(time.Now().Add(originDrainLimit), 0)
}

// Origin drain polling: first and longest pause between looks, as the TLS
// engine's own drain backs off.
const (
	originDrainFirstPoll = time.Millisecond
	originDrainMaxPoll   = 50 * time.Millisecond
)

// checkOriginDrained closes the origin once its output is written (or the
// deadline passed), looking again after a pause that doubles up to
// originDrainMaxPoll: an origin that reads slowly costs a few looks a
// second, not two hundred.
func (r *relay) checkOriginDrained(deadline time.Time, delay time.Duration) {
	if r.originDone {
		return
	}
	if r.origin.OutboundBuffered() == 0 || time.Now().After(deadline) {
		_ = r.origin.Close()
		return
	}
	delay = min(max(2*delay, originDrainFirstPoll), originDrainMaxPoll)
	time.AfterFunc(delay, func() { r.onLoop(func() { r.checkOriginDrained(deadline, delay) }) })
}

// cut closes both sides now, with reason (the first reason recorded wins).
// Safe from any goroutine.
func (r *relay) cut(reason string) {
	r.setReason(reason)
	r.onLoop(r.cutOnLoop)
}

func (r *relay) cutOnLoop() {
	r.pending = nil
	if r.cancelDial != nil {
		r.cancelDial()
	}
	if r.finished {
		return
	}
	if r.origin != nil && !r.originDone {
		_ = r.origin.Close()
	}
	if !r.devDone {
		r.c.shutdown()
	}
}

// onLoop runs f on the relay's event loop. When the engine is stopping, its
// loops close every connection themselves.
func (r *relay) onLoop(f func()) {
	_ = r.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		f()
		return nil
	}))
}

func (r *relay) setDetail(detail string) {
	r.mu.Lock()
	if r.detail == "" {
		r.detail = detail
	}
	r.mu.Unlock()
}

func (r *relay) setReason(reason string) {
	r.mu.Lock()
	if r.reason == "" {
		r.reason = reason
	}
	r.mu.Unlock()
}

// cutting reports whether a reason to cut the relay has been recorded: any
// but the device's own close, after which what it sent is still delivered.
func (r *relay) cutting() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reason != "" && r.reason != closeDeviceClosed
}

// maybeFinish ends the relay once both sockets are closed: timers stop, the
// revocation index forgets it, and its one log line is written.
func (r *relay) maybeFinish() {
	if r.finished || !r.devDone || !r.originDone {
		return
	}
	r.finished = true
	r.stopped.Store(true)
	r.mu.Lock()
	for _, t := range r.timers {
		t.Stop()
	}
	reason, detail := r.reason, r.detail
	r.mu.Unlock()
	if reason == "" {
		reason = closeDeviceClosed
	}
	r.srv.relays.remove(r)
	r.meter.closed(reason)
	attrs := []slog.Attr{
		slog.String("app", r.app.name),
		slog.String("client", r.src.Addr().String()),
		slog.String("conn_id", r.id.String()),
		slog.String("policy", r.adm.decision.Policy),
		slog.String("rule", r.adm.decision.Rule),
		slog.Int64("bytes_from_device", r.up),
		slog.Int64("bytes_to_device", r.down),
		slog.Float64("duration_ms", float64(time.Since(r.opened).Microseconds())/1000),
		slog.String("reason", reason),
	}
	// The handshake completed, so the device proved it holds the key of
	// the certificate it sent; cert_verdict says whether the certificate is
	// valid (a bypass policy admits one that is not).
	if detail != "" && (reason == closeOriginDown || reason == closeOriginClosed) {
		attrs = append(attrs, slog.String("detail", detail))
	}
	attrs = append(attrs, slog.String("cert_verdict", r.v.Kind.String()))
	if r.v.Presented() {
		attrs = append(attrs, slog.String("cn", logClip(r.v.Identity.CommonName)), slog.String("sha256", r.v.Identity.SHA256))
	}
	r.srv.accessLg.LogAttrs(context.Background(), slog.LevelInfo, "tcp connection closed", attrs...)
}

// armTimers starts the relay's idle, age and expiry timers.
func (r *relay) armTimers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armIdle()
	if d := r.set.maxAge; d > 0 {
		// ±10%: a fleet admitted together does not reconnect together.
		j := time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
		r.timers = append(r.timers, time.AfterFunc(j, func() { r.cut(closeMaxAge) }))
	}
	if na := certNotAfter(r.v); !na.IsZero() {
		r.timers = append(r.timers, time.AfterFunc(na.Sub(r.srv.now()), func() { r.cut(closeExpired) }))
	}
}

// armIdle starts the idle timer when there is an idle timeout and no timer
// yet; r.mu is held. The timer reads the timeout in force each time it
// fires, so that setIdle needs no new timer.
func (r *relay) armIdle() {
	d := time.Duration(r.idle.Load())
	if d <= 0 || r.idleTimer != nil {
		return
	}
	// The callback finds its timer through r.mu, which the caller holds
	// until the timer is stored: a callback that fires at once waits.
	r.idleTimer = time.AfterFunc(d, func() {
		d := time.Duration(r.idle.Load())
		if r.stopped.Load() || d <= 0 {
			return // stopped, or no idle timeout any more
		}
		// lastActive may be behind the activity it notes (coarseClock):
		// the idle time is counted short, so it never ends early.
		left := d - r.srv.coarse.since(mono(), time.Duration(r.lastActive.Load()))
		if left <= 0 {
			r.cut(closeIdle)
			return
		}
		r.mu.Lock()
		t := r.idleTimer
		r.mu.Unlock()
		t.Reset(left)
	})
	r.timers = append(r.timers, r.idleTimer)
}

// setIdle changes the idle timeout of a running relay (an MQTT 5 broker's
// Server Keep Alive): longer takes effect when the timer next fires,
// shorter at the latest when the old timeout would have ended.
func (r *relay) setIdle(d time.Duration) {
	r.idle.Store(int64(d))
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped.Load() {
		r.armIdle()
	}
}

// relayIndex holds the live relays by the SHA-256 of their certificate
// ("" without one), so that a reload revoking a certificate reaches the
// connections of that certificate without looking at the others.
type relayIndex struct {
	mu    sync.Mutex
	bySHA map[string]map[*relay]struct{}
	n     int
	// closed is the reason of cutAll once it ran: every relay added later
	// is to be cut with it.
	closed string
}

// add indexes r. It returns the reason r is to be cut with at once when
// cutAll has run ("" otherwise); r is indexed either way, so that it is
// forgotten like any other when it finishes.
func (x *relayIndex) add(r *relay) (closed string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.bySHA == nil {
		x.bySHA = make(map[string]map[*relay]struct{})
	}
	k := r.v.Identity.SHA256
	set := x.bySHA[k]
	if set == nil {
		set = make(map[*relay]struct{}, 1)
		x.bySHA[k] = set
	}
	set[r] = struct{}{}
	x.n++
	return x.closed
}

func (x *relayIndex) remove(r *relay) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := r.v.Identity.SHA256
	if set, ok := x.bySHA[k]; ok {
		if _, ok := set[r]; ok {
			delete(set, r)
			x.n--
		}
		if len(set) == 0 {
			delete(x.bySHA, k)
		}
	}
}

func (x *relayIndex) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.n
}

// finishAll ends the relays still indexed once the event loops have
// exited (Run returning): their sockets are gone, so each is finished with
// reason (its close line written, its gauge decremented). A relay whose
// dial was still in flight, or whose loop exited before its cut ran, would
// otherwise never end.
func (x *relayIndex) finishAll(reason string) {
	x.mu.Lock()
	all := x.allLocked()
	x.mu.Unlock()
	for _, r := range all {
		if r.cancelDial != nil {
			r.cancelDial()
		}
		r.setReason(reason)
		r.devDone, r.originDone = true, true
		r.maybeFinish()
	}
}

// cutAll cuts every live relay with reason, and every relay added later.
func (x *relayIndex) cutAll(reason string) {
	x.mu.Lock()
	if x.closed == "" {
		x.closed = reason
	}
	all := x.allLocked()
	x.mu.Unlock()
	for _, r := range all {
		r.cut(reason)
	}
}

// allLocked lists every indexed relay; x.mu must be held.
func (x *relayIndex) allLocked() []*relay {
	var all []*relay
	for _, set := range x.bySHA {
		for r := range set {
			all = append(all, r)
		}
	}
	return all
}

// recheck cuts, with reason revoked, the relays whose certificate rev now
// revokes. Only the certificates in the index are looked at; the relays of
// one certificate share a check when their verified paths are the same
// (applications with different CA pools can verify one leaf along different
// paths). A relay admitted without a valid certificate (bypass) has nothing
// to revoke and stays.
func (x *relayIndex) recheck(rev *tlsengine.Revocation, now time.Time) int {
	if rev == nil {
		return 0
	}
	type checked struct {
		path    []verdict.CertRef
		revoked bool
	}
	// Copied out first, by certificate: checking a large fleet must not
	// hold up the event loops whose relays open and close meanwhile.
	x.mu.Lock()
	groups := make([][]*relay, 0, len(x.bySHA))
	for sha, set := range x.bySHA {
		if sha == "" {
			continue
		}
		g := make([]*relay, 0, len(set))
		for r := range set {
			g = append(g, r)
		}
		groups = append(groups, g)
	}
	x.mu.Unlock()
	var revoked []*relay
	for _, g := range groups {
		var seen []checked
	relays:
		for _, r := range g {
			if !r.v.OK() {
				continue
			}
			for _, c := range seen {
				if samePath(c.path, r.v.Path) {
					if c.revoked {
						revoked = append(revoked, r)
					}
					continue relays
				}
			}
			hit := r.revokedBy(rev, now)
			seen = append(seen, checked{path: r.v.Path, revoked: hit})
			if hit {
				revoked = append(revoked, r)
			}
		}
	}
	for _, r := range revoked {
		r.cut(closeRevoked)
	}
	return len(revoked)
}

// samePath reports whether two verified paths hold the same certificates.
func samePath(a, b []verdict.CertRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].SHA256 != b[i].SHA256 {
			return false
		}
	}
	return true
}

// dialedAddr is the gateway address the device connected to, the PROXY
// header's destination. gnet gives every accepted connection its
// listener's address as LocalAddr: on a wildcard listener ("0.0.0.0:8443",
// ":8443") that names no interface, or no IP at all, so the socket is
// asked (getsockname). LocalAddr remains the answer when that fails.
func dialedAddr(gc gnet.Conn) netip.AddrPort {
	if sa, err := unix.Getsockname(gc.Fd()); err == nil {
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *unix.SockaddrInet6:
			return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
		}
	}
	ap, _ := proxyv2.AddrPort(gc.LocalAddr())
	return ap
}
