package tlsengine

import (
	"crypto/tls"
	"errors"
	"net"
)

// Sentinel errors. Callers compare with errors.Is.
var (
	// ErrShed is returned by Engine.Open when the handshakes in flight are at
	// Config.Queue: the connection is refused at once (load shedding) rather
	// than queued behind handshakes that would all time out.
	ErrShed = errors.New("tlsengine: handshake queue full, connection shed")

	// ErrRate is returned by Engine.Open when more handshakes would start
	// than Config.HandshakeRate allows: the connection is refused at once,
	// before any handshake work, and the device retries later.
	ErrRate = errors.New("tlsengine: handshake rate exceeded, connection shed")

	// ErrWouldBlock is returned by Conn.Read when no complete TLS record is
	// buffered. It is a net.Error whose Temporary() is true: crypto/tls passes
	// such errors through without marking the connection broken, which is what
	// lets the event loop call Read again after the next Feed.
	ErrWouldBlock error = wouldBlockError{}

	// ErrHandshakeIncomplete is returned by Conn.Write before the handshake has
	// completed; writing then would block the caller on the handshake.
	ErrHandshakeIncomplete = errors.New("tlsengine: handshake not complete")

	// ErrClosed is returned by Conn methods once the connection is closing or
	// its transport is gone.
	ErrClosed = errors.New("tlsengine: connection closed")

	// ErrInboundOverflow is returned by Conn.Feed when more than
	// Config.MaxInbound bytes would be buffered unread; the connection is
	// closed, since a peer that far ahead is either broken or hostile.
	ErrInboundOverflow = errors.New("tlsengine: too many unread bytes buffered")

	// ErrHandshakeTimeout is the handshake error when Config.HandshakeTimeout
	// expires.
	ErrHandshakeTimeout = errors.New("tlsengine: handshake timed out")

	// ErrUnknownServerName is the handshake error when no site serves the
	// ClientHello's server name (or there is no SNI and no default site).
	ErrUnknownServerName = errors.New("tlsengine: no site for server name")

	// ErrCertificateRejected is the handshake error when a site with
	// RejectInvalid refuses the device's chain during the handshake.
	ErrCertificateRejected = errors.New("tlsengine: client certificate rejected")

	// ErrTooManyKeyUpdates is returned by Conn.Read when the peer made
	// crypto/tls answer it (a TLS 1.3 KeyUpdate asking for ours) out of
	// proportion to the application data it sent: each answer is queued for
	// a peer that need never read it, so unbounded they would hold memory
	// without end. The engine closes the connection.
	ErrTooManyKeyUpdates = errors.New("tlsengine: the peer asked for key updates out of proportion to its data")

	// ErrPeerStalled is returned by Conn.WaitOutbound when the outbound
	// buffer has not shrunk for the stall limit: the peer stopped reading.
	ErrPeerStalled = errors.New("tlsengine: the peer stopped reading")

	errForeignConn = errors.New("tlsengine: ClientHello from a connection the engine does not own")

	// errPeerClosed aborts a handshake whose transport went away. Not io.EOF:
	// crypto/tls rewrites EOF, and the engine must recognise its own abort.
	errPeerClosed = errors.New("tlsengine: peer closed the connection during the handshake")
)

// wouldBlockError is ErrWouldBlock's type: "no data yet", retryable.
type wouldBlockError struct{}

func (wouldBlockError) Error() string   { return "tlsengine: no complete record buffered" }
func (wouldBlockError) Timeout() bool   { return false }
func (wouldBlockError) Temporary() bool { return true }

var _ net.Error = wouldBlockError{}

// Reasons a handshake ends, as reported in HandshakeEvent.Reason and counted
// in Stats.Handshakes. The strings are stable: they are metric labels.
const (
	ReasonOK              = "ok"               // handshake completed (the verdict may still be negative)
	ReasonShed            = "shed"             // refused at Open: queue full
	ReasonRate            = "rate"             // refused at Open: over the handshake rate
	ReasonTimeout         = "timeout"          // HandshakeTimeout expired
	ReasonUnknownSNI      = "unknown_sni"      // no site for the server name; alert unrecognized_name sent
	ReasonNotTLS          = "not_tls"          // the bytes were not a TLS record stream
	ReasonRecordOverflow  = "record_overflow"  // a record longer than TLS allows
	ReasonClientAlert     = "client_alert"     // the client sent an alert mid-handshake
	ReasonBadCertificate  = "bad_certificate"  // RejectInvalid site refused the presented chain, or a device that sent none
	ReasonInboundOverflow = "inbound_overflow" // more than MaxInbound bytes unread
	ReasonClosed          = "closed"           // the peer hung up or the gateway closed mid-handshake
	ReasonTLSError        = "tls_error"        // any other handshake failure (crypto/tls sent its alert)
)

// reason indexes the counters; its names are the Reason* strings.
type reason uint8

const (
	rOK reason = iota
	rShed
	rTimeout
	rUnknownSNI
	rNotTLS
	rRecordOverflow
	rClientAlert
	rBadCertificate
	rInboundOverflow
	rClosed
	rTLSError
	rRate
	numReasons
)

var reasonNames = [numReasons]string{
	rOK:              ReasonOK,
	rShed:            ReasonShed,
	rTimeout:         ReasonTimeout,
	rUnknownSNI:      ReasonUnknownSNI,
	rNotTLS:          ReasonNotTLS,
	rRecordOverflow:  ReasonRecordOverflow,
	rClientAlert:     ReasonClientAlert,
	rBadCertificate:  ReasonBadCertificate,
	rInboundOverflow: ReasonInboundOverflow,
	rClosed:          ReasonClosed,
	rTLSError:        ReasonTLSError,
	rRate:            ReasonRate,
}

func (r reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return ReasonTLSError
}

// classify names why a handshake failed. abort is the engine's own abort
// (timeout, close, overflow) when it is what crypto/tls returned; then come
// the facts the engine saw (unknown SNI, oversized header, rejected chain);
// crypto/tls's error is consulted only for what the engine cannot see.
func classify(abort reason, unknownSNI, oversized, rejected bool, err error) reason {
	switch {
	case abort != rOK:
		return abort
	case unknownSNI:
		return rUnknownSNI
	case oversized:
		return rRecordOverflow
	case rejected:
		return rBadCertificate
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return rNotTLS
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "remote error" {
		return rClientAlert
	}
	return rTLSError
}
