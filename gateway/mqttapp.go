package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/mqttwire"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// An mqtt application is a tcp application whose first packet is checked
// before the broker is dialed. Its handshake always completes (no Authorize
// hook: the certificate is requested, not required), and then, on the
// connection's event loop:
//
//	decrypted bytes ─▶ mqttGate: Peek (CONNECT? size ≤ max_connect_bytes?) within handshake_timeout
//	                     │ ParseConnect (level 4 or 5)
//	                     ▼ decide: policies on the verdict + address; identity binding
//	refused ─▶ CONNACK in the device's version (MQTT 5: with a reason string), close
//	admitted ─▶ relay (relay.go): PROXY header, then the CONNECT (re-encoded
//	            only when changed: client id, username, token) and what followed it
//
// Refusals are logged ("mqtt connection refused") and counted
// (fleetgate_mqtt_refused_total{app,reason}); nothing reaches the broker.

// mqttSettings are an mqtt application's settings beside its tcpSettings.
// The CONNECT must arrive within [gateway] handshake_timeout, the value the
// server started with (Server.connectTimeout): like the handshake's own bound, it
// needs a restart to change.
type mqttSettings struct {
	binding *configs.MQTTSettings
}

func newMQTTSettings(ca *configs.Application) *mqttSettings {
	return &mqttSettings{binding: ca.MQTT}
}

// connectTimeout is how long after the handshake's end a device has to send
// its whole CONNECT: the running handshake_timeout (a reload's new value
// waits for a restart, as the TLS engine's does).
func (s *Server) connectTimeout() time.Duration {
	if d := s.running.HandshakeTimeout; d > 0 {
		return d
	}
	return tlsengine.DefaultHandshakeTimeout
}

// needsCertificate reports whether the identity binding needs a verified
// certificate (its CN).
func (m *mqttSettings) needsCertificate() bool {
	b := m.binding
	return b.ClientID != "" || b.Username == configs.MQTTCommonName || b.Password == configs.MQTTToken
}

// The reasons of refusals that are not the policies' own (theirs are the
// texts an HTTP 403 carries).
const (
	mqttReasonTimeout     = "no CONNECT in time"
	mqttReasonNotConnect  = "first packet is not a CONNECT"
	mqttReasonMalformed   = "malformed CONNECT"
	mqttReasonTooLarge    = "CONNECT too large"
	mqttReasonVersion     = "unsupported protocol version"
	mqttReasonClosed      = "closed before CONNECT"
	mqttReasonKeyUpdates  = "too many key update requests" // tlsengine.ErrTooManyKeyUpdates
	mqttReasonNeedsCert   = "identity binding needs a valid certificate"
	mqttReasonNoCN        = "certificate has no common name"
	mqttReasonNoIdentity  = "policy passes no identity for the token"
	mqttReasonClientID    = "client identifier not valid"
	mqttReasonOriginDown  = "server unavailable"
	mqttReasonEncodeError = "CONNECT could not be re-encoded"
)

// mqttGate is a connection of an mqtt application between the end of its
// handshake and the decision on its CONNECT. Its buffer is touched on the
// event loop only; done is set once it has decided (or the device left).
type mqttGate struct {
	c     *conn
	app   *application
	loop  gnet.EventLoop
	buf   []byte
	timer *time.Timer
	done  atomic.Bool
}

// mqttRelay is what a relay of an mqtt application carries beyond a tcp
// relay's: the CONNECT to send first and what the device sent after it.
type mqttRelay struct {
	// connect, first and rest are dropped once the broker's socket has
	// them (delivered).
	connect *mqttwire.Connect
	first   []byte // the CONNECT encoded at the gate (without the token)
	rest    []byte
	token   bool // put the connection's token in the password
	// fromDevice is how many bytes the gate read: the CONNECT as the
	// device sent it, and rest.
	fromDevice int
	// watchAck: an MQTT 5 connection whose broker's CONNACK has not been
	// read yet (watchConnack); ack holds its start when it took several
	// reads. tcpIdle is the application's idle_timeout.
	watchAck bool
	ack      []byte
	watched  int // the broker's bytes looked at so far
	tcpIdle  time.Duration
}

// maxWatchedConnack bounds what watchConnack gathers of a broker's first
// packets: a CONNACK with that much in properties is not looked into.
const maxWatchedConnack = 64 << 10

// mqttIdle is the idle timeout of an mqtt connection: the larger of
// idle_timeout and 1.5 times its keep-alive in seconds (MQTT's own bound
// for a silent client), so that a device that pings on time is never cut
// as idle.
func mqttIdle(tcpIdle time.Duration, keepAlive uint16) time.Duration {
	if ka := time.Duration(keepAlive) * 1500 * time.Millisecond; ka > tcpIdle {
		return ka
	}
	return tcpIdle
}

// watchConnack reads the broker's first packets on an MQTT 5 connection
// (data: its next bytes, on their way to the device) until the CONNACK:
// a Server Keep Alive there replaces the device's keep-alive (MQTT 5.0
// section 3.2.2.3.14), so the idle timeout follows it. Without it, a
// broker allowing more than the device asked would see its devices cut as
// idle between their pings.
func (m *mqttRelay) watchConnack(r *relay, data []byte) {
	buf := data
	if len(m.ack) > 0 {
		m.ack = append(m.ack, data...)
		buf = m.ack
	}
	m.watched += len(data)
	ka, set, done, skipped, err := mqttwire.ServerKeepAlive(buf)
	switch {
	case err != nil, done, m.watched > maxWatchedConnack:
		m.watchAck, m.ack = false, nil
		if set {
			r.setIdle(mqttIdle(m.tcpIdle, ka))
		}
	case len(m.ack) == 0:
		m.ack = append([]byte(nil), data[skipped:]...)
	default:
		// Whole AUTH packets are not read again with the next bytes.
		m.ack = append(m.ack[:0], m.ack[skipped:]...)
	}
}

// mqttTraffic is the device's OnTraffic for an mqtt application until its
// CONNECT has been decided.
func (c *conn) mqttTraffic(app *application) gnet.Action {
	g := c.mqtt
	if g == nil {
		g = &mqttGate{c: c, app: app, loop: c.gc.EventLoop()}
		c.mqtt = g
		g.timer = time.AfterFunc(c.srv.connectTimeout(), g.timeout)
	}
	if g.done.Load() {
		return gnet.None
	}
	max := app.mqtt.binding.MaxConnectBytes
	buf := *c.buf // copied into g.buf: decide may start the relay, which reuses it
	for {
		n, err := c.tc.Read(buf)
		if n > 0 {
			g.buf = append(g.buf, buf[:n]...)
			size, perr := mqttwire.Peek(g.buf)
			switch {
			case errors.Is(perr, mqttwire.ErrIncomplete):
			case errors.Is(perr, mqttwire.ErrNotConnect):
				g.refuse(0, mqttwire.NotAuthorized, mqttReasonNotConnect, "", false)
				return gnet.None
			case perr != nil:
				g.refuse(0, mqttwire.NotAuthorized, mqttReasonMalformed, "", false)
				return gnet.None
			case size > max:
				// MQTT 5 has a code for it; 3.1.1 devices are just closed.
				v, _ := mqttwire.PeekVersion(g.buf)
				g.refuse(v, mqttwire.PacketTooLarge, mqttReasonTooLarge,
					fmt.Sprintf("CONNECT of %d bytes is larger than %d", size, max), v == mqttwire.V5)
				return gnet.None
			case len(g.buf) >= size:
				g.decide(g.buf[:size], g.buf[size:])
				return gnet.None
			}
		}
		if errors.Is(err, tlsengine.ErrWouldBlock) {
			return gnet.None
		}
		if err != nil {
			reason := mqttReasonClosed
			if errors.Is(err, tlsengine.ErrTooManyKeyUpdates) {
				reason = mqttReasonKeyUpdates
			}
			g.refuse(0, mqttwire.NotAuthorized, reason, "", false)
			return gnet.None
		}
	}
}

// timeout fires handshake_timeout after the handshake's end: a device that
// has not sent its whole CONNECT by then is closed.
func (g *mqttGate) timeout() {
	_ = g.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if !g.done.Load() {
			g.refuse(0, mqttwire.NotAuthorized, mqttReasonTimeout, "", false)
		}
		return nil
	}))
}

// closed is called from the device's OnClose: the gate decides nothing more.
// It reports whether the gate had not decided yet.
func (g *mqttGate) closed() bool {
	if g.done.CompareAndSwap(false, true) {
		g.timer.Stop()
		g.buf = nil
		return true
	}
	return false
}

// mqttClosed is called from OnClose. A device of an mqtt application whose
// socket closed after its handshake and before its CONNECT was decided
// (the gate running, or not started yet) is counted and logged as "closed
// before CONNECT", as one that sent close_notify is: most devices that go
// away (a reset, a dropped network, a scanner) send none.
func (c *conn) mqttClosed() {
	undecided := false
	switch {
	case c.mqtt != nil:
		undecided = c.mqtt.closed()
	case c.relay == nil && c.tc.HandshakeComplete():
		undecided = c.app().mqtt != nil
	}
	if undecided {
		app := c.app()
		c.srv.metrics.mqttRefused(app.name, mqttReasonClosed)
		logMQTTRefusal(c, app, c.tc.Verdict(), mqttReasonClosed, "", nil)
	}
}

// decide judges a complete CONNECT (pkt) on the loop; rest is what the
// device sent after it. Each step answers a refusal itself.
func (g *mqttGate) decide(pkt, rest []byte) {
	cn, ok := g.parse(pkt)
	if !ok {
		return
	}
	adm, ok := g.admit(cn)
	if !ok {
		return
	}
	first, ok := g.bind(cn, adm)
	if !ok {
		return
	}
	g.done.Store(true)
	g.timer.Stop()
	g.buf = nil
	app := g.app
	set := app.mqtt
	mr := &mqttRelay{connect: cn, first: first, rest: append([]byte(nil), rest...),
		token: set.binding.Password == configs.MQTTToken, fromDevice: len(pkt) + len(rest),
		watchAck: cn.Version() == mqttwire.V5, tcpIdle: app.tcp.idleTimeout}
	g.c.beginRelay(app, adm, mr, mqttIdle(app.tcp.idleTimeout, cn.KeepAlive()))
}

// parse reads the CONNECT, refusing an unsupported protocol level (with the
// version's own code) or a malformed packet.
func (g *mqttGate) parse(pkt []byte) (*mqttwire.Connect, bool) {
	cn, err := mqttwire.ParseConnect(pkt)
	var uv *mqttwire.UnsupportedVersionError
	switch {
	case errors.As(err, &uv):
		g.refuse(uv.Level, mqttwire.UnsupportedVersion, mqttReasonVersion,
			fmt.Sprintf("protocol level %d: MQTT 3.1.1 (4) and 5.0 (5) are served", uv.Level), true)
		return nil, false
	case err != nil:
		g.refuse(0, mqttwire.NotAuthorized, mqttReasonMalformed, "", false)
		return nil, false
	}
	return cn, true
}

// admit decides on the certificate, against the newest revocation set and
// lists, and the application's policies: not authorized otherwise.
func (g *mqttGate) admit(cn *mqttwire.Connect) (*tcpAdmission, bool) {
	c, app := g.c, g.app
	v := c.tc.Verdict()
	snap := c.srv.snap.Load()
	// The verdict was reached against the revocation set of the handshake;
	// a reload during the CONNECT wait may have revoked the certificate (or
	// found its CRL stale under crl_stale = "reject"). Checked as the relay
	// would at its start, but answered in MQTT.
	if rev := snap.revocation; rev != nil && v.OK() {
		rv := *v // Recheck rewrites the verdict it is given
		if rev.Recheck(&rv, c.srv.now()) {
			g.refuseConnect(cn, &rv, mqttwire.NotAuthorized, rv.Kind.Reason(), rv.Kind.Reason(), "")
			return nil, false
		}
	}
	// The newest lists, as for tcp and http applications (like revocation).
	adm := &tcpAdmission{input: policy.Input{Cert: v, ClientIP: c.remoteAddr, Now: c.srv.now(), Lists: snap.lists}}
	adm.decision = app.policy.Evaluate(&adm.input)
	set := app.mqtt
	deny := func(reason, detail string) (*tcpAdmission, bool) {
		g.refuseConnect(cn, v, mqttwire.NotAuthorized, reason, detail, adm.decision.Policy)
		return nil, false
	}
	switch {
	case !adm.decision.Allowed:
		return deny(adm.decision.Reason, adm.decision.Reason)
	case set.needsCertificate() && !v.OK():
		return deny(mqttReasonNeedsCert, "a valid client certificate is required: "+v.Kind.String())
	case set.needsCertificate() && v.Identity.CommonName == "":
		// Nothing to bind: every such device would share one client id
		// ("fleet-"), or get one from the broker, and an empty username.
		return deny(mqttReasonNoCN, mqttReasonNoCN)
	case set.binding.Password == configs.MQTTToken && !adm.decision.Mint:
		return deny(mqttReasonNoIdentity, "policy "+adm.decision.Policy+" passes no identity")
	}
	return adm, true
}

// bind checks and binds the client id and user name to the certificate's
// CN, then encodes the CONNECT the broker gets (the device's bytes when
// nothing changed).
func (g *mqttGate) bind(cn *mqttwire.Connect, adm *tcpAdmission) ([]byte, bool) {
	set := g.app.mqtt
	v := g.c.tc.Verdict()
	commonName := v.Identity.CommonName
	if want, bound := set.binding.ExpectedClientID(commonName); bound {
		switch id := cn.ClientID(); {
		case id == "":
			cn.SetClientID(want) // as a broker assigns one
		case id != want:
			g.refuseConnect(cn, v, mqttwire.BadClientID, mqttReasonClientID, fmt.Sprintf("client identifier must be %q", want), adm.decision.Policy)
			return nil, false
		}
	}
	if set.binding.Username == configs.MQTTCommonName {
		cn.SetUsername(commonName)
	}
	// Encoded here, so that a CONNECT that cannot be is refused at the gate
	// (not an error on the dial worker, answered as "server unavailable").
	// The token, minted on the dial worker, needs the user name set above,
	// which such a CONNECT always has.
	first, err := cn.Bytes()
	if err != nil {
		g.refuseConnect(cn, v, mqttwire.NotAuthorized, mqttReasonEncodeError, "the CONNECT cannot be passed on: "+err.Error(), adm.decision.Policy)
		return nil, false
	}
	return first, true
}

// connectBytes is what the broker receives after the PROXY header: the
// CONNECT (with the token when asked for) and what the device sent after it.
// It runs on the relay's dial worker.
func (m *mqttRelay) connectBytes(r *relay) ([]byte, error) {
	b := m.first
	if m.token {
		tok, err := r.mint()
		if err != nil {
			return nil, err
		}
		m.connect.SetToken(tok)
		if b, err = m.connect.Bytes(); err != nil {
			return nil, err
		}
	}
	return append(b[:len(b):len(b)], m.rest...), nil
}

// delivered drops the CONNECT and what followed it once they have been
// handed to the broker's socket (on the loop): the decoded packet and the
// gate's buffer it points into are not held for the connection's life.
func (m *mqttRelay) delivered() {
	m.connect, m.first, m.rest = nil, nil, nil
}

// originDown answers the device with "server unavailable" (on the loop,
// before its connection closes).
func (m *mqttRelay) originDown(r *relay) {
	if r.devDone || m.connect == nil {
		return
	}
	v := m.connect.Version()
	if b := mqttwire.Connack(v, mqttwire.ServerUnavailable, "the broker cannot be reached", m.connect.MaximumPacketSize()); b != nil {
		_, _ = r.c.tc.Write(b)
	}
	r.srv.metrics.mqttRefused(r.app.name, mqttReasonOriginDown)
	logMQTTRefusal(r.c, r.app, r.c.tc.Verdict(), mqttReasonOriginDown, r.adm.decision.Policy, m.connect)
}

// refuseConnect refuses a decoded CONNECT, by verdict v (the handshake's, or
// what a revocation check at the CONNECT made of it).
func (g *mqttGate) refuseConnect(cn *mqttwire.Connect, v *verdict.Verdict, r mqttwire.Refusal, reason, detail, pol string) {
	g.finish()
	if b := mqttwire.Connack(cn.Version(), r, detail, cn.MaximumPacketSize()); b != nil {
		_, _ = g.c.tc.Write(b)
	}
	g.c.srv.metrics.mqttRefused(g.app.name, reason)
	logMQTTRefusal(g.c, g.app, v, reason, pol, cn)
	g.c.shutdown()
}

// refuse closes a connection whose CONNECT could not be decoded; with
// connack, the device first gets a CONNACK for version with r and detail.
func (g *mqttGate) refuse(version byte, r mqttwire.Refusal, reason, detail string, connack bool) {
	g.finish()
	if connack {
		if b := mqttwire.Connack(version, r, detail, 0); b != nil { // no CONNECT to take a limit from
			_, _ = g.c.tc.Write(b)
		}
	}
	g.c.srv.metrics.mqttRefused(g.app.name, reason)
	logMQTTRefusal(g.c, g.app, g.c.tc.Verdict(), reason, "", nil)
	g.c.shutdown()
}

func (g *mqttGate) finish() {
	g.done.Store(true)
	g.timer.Stop()
	g.buf = nil
}

// logMQTTRefusal writes the access-log line of a refused device.
// v is the verdict the refusal went by: the handshake's, or the one a
// revocation check at the CONNECT made of it.
func logMQTTRefusal(c *conn, app *application, v *verdict.Verdict, reason, pol string, cn *mqttwire.Connect) {
	attrs := []slog.Attr{
		slog.String("app", app.name),
		slog.String("client", c.remoteIP),
		slog.String("verdict", v.Kind.String()),
		slog.String("reason", reason),
		slog.String("policy", pol),
	}
	if cn != nil {
		attrs = append(attrs, slog.Int("mqtt_version", int(cn.Version())), slog.String("client_id", logClip(cn.ClientID())))
	}
	if v.Presented() {
		attrs = append(attrs, slog.String("cn", logClip(v.Identity.CommonName)), slog.String("sha256", v.Identity.SHA256))
	}
	c.srv.accessLg.LogAttrs(context.Background(), slog.LevelInfo, "mqtt connection refused", attrs...)
}
