package tlsengine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Conn states, guarded by Conn.mu.
const (
	stateHandshake = iota // handshake goroutine running
	stateOpen             // handshake done, application data flows
	stateClosing          // close_notify or alert sent, draining, then transport Close
)

// answerAllowance and answerShare bound what a peer can make crypto/tls
// write without the owner asking: TLS 1.3 answers a KeyUpdate that requests
// one with a KeyUpdate of its own (27 bytes), and allows 16 such requests
// between two application records, so a peer sending one byte of data for
// every 15 requests, and never reading, would have the gateway queue about
// 400 bytes per byte it sent. A peer may have answerAllowance bytes of
// answers, and then one byte per answerShare bytes of application data it
// sent: far above what any stack that updates its keys does (after
// gigabytes), far below what that flood needs.
const (
	answerAllowance = 16 << 10
	answerShare     = 64
)

// Drain polling: first and longest interval between OutboundBuffered checks.
const (
	drainFirstPoll = time.Millisecond
	drainMaxPoll   = 50 * time.Millisecond
)

// Conn is one TLS connection driven by an event loop.
//
// Threading: Feed, Read and Release are for the connection's event loop
// (OnTraffic, OnClose). Write and Close may be called from any goroutine.
// The handshake accessors return zero values until HandshakeComplete.
//
// Errors from Feed and Read other than ErrWouldBlock mean the engine is
// already closing the connection, after flushing what is queued (an alert or
// close_notify): the event handler should return gnet.None, not gnet.Close,
// which would drop pending output.
type Conn struct {
	eng    *Engine
	t      Transport
	remote netip.Addr // the device's address, when the transport has one
	shim   *shim
	tls    *tls.Conn
	opened time.Time

	// Written by the handshake goroutine before complete is set.
	site       *Site
	serverName string
	verdict    *verdict.Verdict
	rejected   bool
	// authorization is what Site.Authorize returned.
	authorization any
	hsDur         time.Duration

	complete atomic.Bool
	closing  atomic.Bool
	value    atomic.Pointer[valueBox]

	mu             sync.Mutex
	phase          int
	closeRequested bool

	readErr error // event loop only

	// drained is set when crypto/tls holds nothing it was handed: no record
	// it has not processed, no plaintext it has not returned. Then, with no
	// whole record in the shim, a Read would only hear ErrWouldBlock from
	// the shim through crypto/tls (an allocation and a lock each time), so
	// read answers it without asking. The event loop's (the handshake's
	// goroutine's before the connection is published, as readErr).
	drained bool

	// What the peer made crypto/tls write on its own after the handshake
	// (its answers to KeyUpdate requests, an alert), against the
	// application data it sent: see answerAllowance.
	writing  atomic.Int32 // the owner's writes in crypto/tls now (Write, WriteLoop, Close)
	answered atomic.Int64 // bytes crypto/tls wrote with no owner's write in progress
	dataIn   int64        // application bytes read; event loop only

	// drainWatch follows the outbound buffer while closing; touched only in
	// AsyncWrite callbacks (the event loop).
	drainWatch outboundWatch
}

type valueBox struct{ v any }

// run is the handshake's goroutine: the handshake, then, when the owner took
// the application data that came with it (Config.Early), the owner's Serve,
// once the handshake's queue place and CPU slot are given back.
func (c *Conn) run() {
	if early := c.handshake(); early != nil {
		early.Serve()
	}
}

// handshake runs the server handshake on its own goroutine, computes the
// verdict inside the CPU slot, then either opens the connection (waking the
// loop for bytes that came with the client's Finished, or handing them to
// Config.Early's EarlyData, which it returns) or closes it.
func (c *Conn) handshake() EarlyData {
	e := c.eng
	defer e.adm.leave()
	timer := time.AfterFunc(e.timeout, func() { c.shim.stopHandshake(rTimeout, ErrHandshakeTimeout) })
	err := c.tls.Handshake()
	timer.Stop()
	cs := c.tls.ConnectionState()
	if err == nil && c.verdict == nil {
		// Still on the handshake goroutine, inside a CPU slot: the verdict is
		// part of the handshake's cost. It is computed from the completed
		// state, so resumed sessions are judged too.
		c.shim.cpu.acquireNow()
		c.verdict = c.judge(cs.PeerCertificates)
	}
	c.shim.cpu.release()
	if err != nil && !c.rejected && c.site != nil && (c.site.RejectInvalid || c.site.RequireCertificate) && isNoCertificate(err) {
		// RequireAnyClientCert refused a device that sent no certificate:
		// as much a refusal by reject_invalid_cert as a bad chain.
		c.rejected, c.verdict = true, &verdict.Verdict{Kind: verdict.Missing}
	}
	abortWhy, abortErr := c.shim.endHandshake()
	c.hsDur = time.Since(c.opened)
	why := rOK
	if err != nil {
		if abortErr == nil || !errors.Is(err, abortErr) {
			abortWhy = rOK // an abort that came after the failure did not cause it
		}
		why = classify(abortWhy, c.shim.unknownSNI.Load(), c.shim.isOversized(), c.rejected, err)
	}
	ev := HandshakeEvent{
		Reason:     why.String(),
		Conn:       c,
		Site:       c.site,
		ServerName: c.serverName,
		Duration:   c.hsDur,
		Version:    cs.Version,
		Resumed:    cs.DidResume,
		Err:        err,
	}
	if err == nil || c.rejected {
		ev.Verdict = c.verdict
	}
	e.adm.counts[why].Add(1)

	var early EarlyData
	if err == nil && e.early != nil && !c.shim.released.Load() {
		early = e.early(c, c.site)
	}

	c.mu.Lock()
	if err != nil {
		c.phase = stateClosing
	} else {
		c.phase = stateOpen
		if early == nil || c.closeRequested {
			c.complete.Store(true)
		}
	}
	closeRequested := c.closeRequested
	c.mu.Unlock()

	e.obs.Handshake(ev)
	if err != nil {
		if e.log.Enabled(context.Background(), slog.LevelDebug) {
			e.log.LogAttrs(context.Background(), slog.LevelDebug, "tls handshake failed",
				slog.String("reason", ev.Reason), slog.String("server_name", ev.ServerName),
				slog.Duration("duration", ev.Duration), slog.String("error", err.Error()))
		}
		c.closing.Store(true)
		c.drain()
		return nil
	}
	if closeRequested {
		c.beginClose(true) // Close was called while the handshake finished
		return nil
	}
	if early != nil {
		return c.takeEarly(early)
	}
	if !c.shim.released.Load() {
		_ = c.t.Wake(nil)
	}
	return nil
}

// errNoCertificate is crypto/tls's error when a client sends no certificate
// where one is required (TestRejectInvalidSite pins it: crypto/tls exports no
// sentinel for it).
const errNoCertificate = "tls: client didn't provide a certificate"

func isNoCertificate(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == errNoCertificate {
			return true
		}
	}
	return false
}

// judge returns the verdict for a presented chain.
func (c *Conn) judge(chain []*x509.Certificate) *verdict.Verdict {
	if len(chain) == 0 {
		return &verdict.Verdict{Kind: verdict.Missing}
	}
	v := c.eng.verifier.Verdict(c.site, chain, c.eng.now())
	return &v
}

// verifyDuringHandshake is VerifyConnection for RejectInvalid sites and
// sites with Authorize: the chain is judged inside the handshake, and a bad
// one (RejectInvalid) or a refused device (Authorize) fails it with
// bad_certificate.
func (c *Conn) verifyDuringHandshake(cs tls.ConnectionState) error {
	c.verdict = c.judge(cs.PeerCertificates)
	if c.site.RejectInvalid && c.site.Roots != nil && !c.verdict.OK() {
		c.rejected = true
		return fmt.Errorf("%w: %s", ErrCertificateRejected, c.verdict.Kind)
	}
	if c.site.Authorize != nil {
		auth, err := c.site.Authorize(c.verdict, c.remote)
		if err != nil {
			c.rejected = true
			return fmt.Errorf("%w: %w", ErrCertificateRejected, err)
		}
		c.authorization = auth
	}
	return nil
}

// Authorization is what the site's Authorize hook returned for this
// connection (nil without one, or before the handshake completes).
func (c *Conn) Authorization() any {
	if !c.complete.Load() {
		return nil
	}
	return c.authorization
}

// RemoteAddr is the device's address: as the transport reported it at Open
// (invalid when the transport has none), or as SetRemoteAddr replaced it.
func (c *Conn) RemoteAddr() netip.Addr { return c.remote }

// SetRemoteAddr replaces the device's address that Site.Authorize decides
// with, for a connection that a load balancer passes on with the device's
// address in a PROXY header. It must be called on the event loop before
// the first Feed: the handshake reads the address only after bytes were fed.
func (c *Conn) SetRemoteAddr(a netip.Addr) { c.remote = a }

// Feed hands the connection bytes received by the event loop (OnTraffic,
// with c.Next(-1)); it copies them. During the handshake the bytes go to the
// handshake goroutine; after it, call Read until ErrWouldBlock.
func (c *Conn) Feed(data []byte) error {
	if c.closing.Load() {
		return ErrClosed
	}
	if c.complete.Load() && errors.Is(c.readErr, io.EOF) {
		return nil // after the peer's close_notify, data "MUST be ignored" (RFC 8446 §6.1)
	}
	err := c.shim.feed(data)
	if err != nil && c.complete.Load() {
		c.beginClose(false)
	}
	return err
}

// Read decrypts buffered records into p. It never blocks: with no complete
// record buffered (or before the handshake completes) it returns
// ErrWouldBlock. Records without application data (KeyUpdate, which
// crypto/tls answers itself, NewSessionTicket, warning alerts, empty records)
// are consumed silently. n > 0 always comes with a nil error.
//
// io.EOF means the peer sent close_notify: it will send nothing more, but
// the connection stays open for writing (the half-close RFC 8446 §6.1
// allows, and what a device does when it closes its side right after its
// request), so the owner finishes the responses it owes, then calls Close.
// This holds for a TLS-level half-close only: a device that also shuts its
// TCP side down is gone for gnet, which closes a connection whose read
// returns 0.
// Any other error is a broken record: crypto/tls has sent its alert and the
// engine closes the connection itself.
func (c *Conn) Read(p []byte) (int, error) {
	// complete first: until it is set, readErr belongs to the handshake's
	// goroutine (takeEarly).
	if !c.complete.Load() {
		if c.closing.Load() {
			return 0, ErrClosed
		}
		return 0, ErrWouldBlock
	}
	return c.read(p)
}

// read is Read once the handshake is complete, or on the handshake's
// goroutine before the connection is published (takeEarly).
func (c *Conn) read(p []byte) (int, error) {
	if c.readErr != nil {
		return 0, c.readErr
	}
	if c.drained && !c.shim.holdsReady() {
		return 0, ErrWouldBlock
	}
	n, err := c.tls.Read(p)
	// The shim hands crypto/tls one record at a time, so it holds nothing
	// after a Read that found none, or after one that returned a record's
	// plaintext whole (n < len(p)) having held nothing before it.
	c.drained = errors.Is(err, ErrWouldBlock) || err == nil && n < len(p) && c.drained
	c.dataIn += int64(n)
	if a := c.answered.Load(); a > answerAllowance && a-answerAllowance > c.dataIn/answerShare {
		err = ErrTooManyKeyUpdates
	}
	if err == nil || errors.Is(err, ErrWouldBlock) {
		return n, err
	}
	c.readErr = err
	if !errors.Is(err, io.EOF) {
		c.beginClose(false)
	}
	if n > 0 {
		return n, nil
	}
	return 0, err
}

// Write encrypts p and queues the records on the event loop. It is safe to
// call from any goroutine (the gateway writes responses from origin
// goroutines) and never blocks on the network.
func (c *Conn) Write(p []byte) (int, error) {
	if !c.complete.Load() {
		return 0, ErrHandshakeIncomplete
	}
	if c.closing.Load() {
		return 0, ErrClosed
	}
	return c.ownWrite(p)
}

// ownWrite is crypto/tls's Write, marked as the owner's: what crypto/tls
// writes meanwhile is not counted as an answer to the peer (answered).
func (c *Conn) ownWrite(p []byte) (int, error) {
	c.writing.Add(1)
	defer c.writing.Add(-1)
	return c.tls.Write(p)
}

// WriteLoop is Write for the connection's event loop (an OnTraffic of its
// own or of a socket on the same loop, such as a relay's origin): the
// records of p go straight to the transport in one write (one raw write
// system call; gnet.Conn.Write queues what the socket does not take at
// once), with no AsyncWrite, so no wake-up of the loop and no copy per
// record. When that cannot keep the records in order (an AsyncWrite of
// this connection is still queued, or the connection is corked), or the
// transport has no Write, the records go out as with Cork, Write and
// Flush. Never call it off the loop: gnet's Write is not safe there.
func (c *Conn) WriteLoop(p []byte) (int, error) {
	if !c.complete.Load() {
		return 0, ErrHandshakeIncomplete
	}
	if c.closing.Load() {
		return 0, ErrClosed
	}
	w, ok := c.t.(writer)
	if !ok || !c.shim.startDirect() {
		c.Cork()
		n, err := c.ownWrite(p)
		if ferr := c.Flush(); err == nil {
			err = ferr
		}
		return n, err
	}
	n, err := c.ownWrite(p)
	out := c.shim.endDirect()
	if len(*out) > 0 {
		if _, werr := writeOnLoop(w, *out); werr != nil && err == nil {
			err = werr
		}
	}
	putDirect(out)
	return n, err
}

// Cork holds back the records written from now on (once 64 KiB is held, it
// goes out) until Flush or Close, which sends them with the close_notify in
// one write: the gateway corks before a response after which the connection
// closes, saving a loop wake-up and a system call per no-duration request.
// On a connection already closing it does nothing; a Cork that races with a
// Close is harmless too, since writes after Close are refused and every
// drain poll sends what is held.
func (c *Conn) Cork() {
	if !c.complete.Load() || c.closing.Load() {
		return
	}
	c.shim.cork()
}

// Flush sends the records held back by Cork and stops holding them back.
func (c *Conn) Flush() error {
	return c.shim.uncork(nil)
}

// CloseWrite half-closes the session: it sends close_notify behind every
// record written so far, and nothing is written after it; reading goes on.
// It is for a lingering close, which tells the peer at once that no more is
// coming (a peer that reads until the end of the stream is done) while it
// still reads what the peer sends, so that closing with input unread does
// not reset the connection. Close, later, sends no second close_notify.
func (c *Conn) CloseWrite() error {
	if !c.complete.Load() {
		return ErrHandshakeIncomplete
	}
	if c.closing.Load() {
		return ErrClosed
	}
	c.writing.Add(1)
	err := c.tls.CloseWrite()
	c.writing.Add(-1)
	if ferr := c.Flush(); err == nil {
		err = ferr
	}
	return err
}

// Close ends the connection gracefully: it sends close_notify, waits until
// the transport's outbound buffer has drained (so a large response to a slow
// reader is not truncated; DrainTimeout bounds a reader that stops reading),
// then closes the transport. It returns at once and may be called from any
// goroutine, any number of times. During the handshake it aborts it.
func (c *Conn) Close() error {
	c.mu.Lock()
	switch c.phase {
	case stateHandshake:
		c.closeRequested = true
		c.mu.Unlock()
		c.shim.stopHandshake(rClosed, ErrClosed)
		return nil
	case stateOpen:
		c.mu.Unlock()
		c.beginClose(true)
		return nil
	}
	c.mu.Unlock()
	return nil
}

// beginClose moves an open connection to closing: optional close_notify,
// then drain and close.
func (c *Conn) beginClose(notify bool) {
	c.mu.Lock()
	if c.phase != stateOpen {
		c.mu.Unlock()
		return
	}
	c.phase = stateClosing
	c.mu.Unlock()
	if notify && c.complete.Load() {
		c.writing.Add(1)
		_ = c.tls.CloseWrite() // close_notify, queued behind every record written so far
		c.writing.Add(-1)
	}
	c.closing.Store(true)
	c.drain()
}

// Release tells the engine the transport is gone; call it from OnClose. A
// handshake in progress is aborted and nothing more is written.
func (c *Conn) Release() {
	c.shim.release()
}

// drain closes the transport once its outbound buffer is empty. AsyncWrite's
// callback only means the bytes reached gnet's outbound buffer, and gnet's
// close writes what the socket takes without blocking, then drops the rest;
// so the engine polls OutboundBuffered from an empty AsyncWrite's callback,
// which runs on the loop after every record queued before it (AsyncWrite
// tasks run in order), backing off from 1ms to 50ms between polls.
func (c *Conn) drain() {
	if c.shim.released.Load() {
		return
	}
	// The first check rides on the records held back by Cork, if any: the
	// last response, close_notify and the check go out in one write.
	if err := c.shim.uncork(c.drainCheck); err != nil {
		_ = c.t.Close()
	}
}

func (c *Conn) drainCheck(_ gnet.Conn, err error) error {
	if err != nil || c.shim.released.Load() {
		return nil // the transport is already closed
	}
	n := c.t.OutboundBuffered()
	if n == 0 {
		return c.t.Close()
	}
	stalled, next := c.drainWatch.observe(n, time.Now(), c.eng.drainTimeout)
	if stalled {
		return c.t.Close() // the reader stopped reading
	}
	time.AfterFunc(next, c.drain)
	return nil
}

// WaitOutbound blocks until the transport's outbound buffer, looked at on
// the event loop after every record queued so far, holds at most lowWater
// bytes. It is for writers on other goroutines, such as a response streamed
// to a device: Write never blocks, so without it a device reading slower
// than its origin sends would make the gateway buffer the whole body. It
// returns ErrPeerStalled when the buffer has not shrunk for stall, and
// ErrClosed once the transport is gone.
func (c *Conn) WaitOutbound(lowWater int, stall time.Duration) error {
	var w outboundWatch
	for {
		got := make(chan int, 1)
		err := c.t.AsyncWrite(nil, func(_ gnet.Conn, err error) error {
			if err != nil || c.shim.released.Load() {
				got <- -1
				return nil
			}
			got <- c.t.OutboundBuffered()
			return nil
		})
		if err != nil {
			return ErrClosed
		}
		t := time.NewTimer(stall)
		var n int
		select {
		case n = <-got:
			t.Stop()
		case <-t.C:
			return ErrPeerStalled // not even the look came back
		}
		switch {
		case n < 0:
			return ErrClosed
		case n <= lowWater:
			return nil
		}
		stalled, next := w.observe(n, time.Now(), stall)
		if stalled {
			return ErrPeerStalled
		}
		time.Sleep(next)
	}
}

// outboundWatch follows a transport's outbound buffer across looks: the
// pause before the next look, backing off from drainFirstPoll to
// drainMaxPoll, and when the buffer last shrank.
type outboundWatch struct {
	delay    time.Duration
	last     int
	progress time.Time
}

// observe records a look that found n bytes buffered at now. It reports
// whether the peer stalled (the buffer has not shrunk for longer than
// stall) and, if not, how long to wait before the next look.
func (w *outboundWatch) observe(n int, now time.Time, stall time.Duration) (stalled bool, next time.Duration) {
	switch {
	case w.delay == 0 || n < w.last:
		w.progress = now
	case now.Sub(w.progress) > stall:
		return true, 0
	}
	w.last = n
	w.delay = min(max(2*w.delay, drainFirstPoll), drainMaxPoll)
	return false, w.delay
}

// HandshakeComplete reports whether the handshake succeeded; the accessors
// below are meaningful only once it has.
func (c *Conn) HandshakeComplete() bool { return c.complete.Load() }

// Verdict is the client chain's verdict (Missing when none was presented).
// The engine never refuses a connection for its verdict unless the site has
// RejectInvalid: the gateway answers 403 with the reason (DESIGN decision 2).
func (c *Conn) Verdict() *verdict.Verdict {
	if !c.complete.Load() {
		return nil
	}
	return c.verdict
}

// Site is the site the ClientHello selected.
func (c *Conn) Site() *Site {
	if !c.complete.Load() {
		return nil
	}
	return c.site
}

// ServerName is the SNI the client sent ("" if none); the gateway checks the
// HTTP Host against it.
func (c *Conn) ServerName() string {
	if !c.complete.Load() {
		return ""
	}
	return c.serverName
}

// ConnectionState is crypto/tls's state of the connection (computed on
// each call: an idle connection does not keep a copy).
func (c *Conn) ConnectionState() tls.ConnectionState {
	if !c.complete.Load() {
		return tls.ConnectionState{}
	}
	return c.tls.ConnectionState()
}

// HandshakeDuration runs from Open to the end of the handshake and verdict.
func (c *Conn) HandshakeDuration() time.Duration {
	if !c.complete.Load() {
		return 0
	}
	return c.hsDur
}

// SetValue attaches the gateway's own per-connection value.
func (c *Conn) SetValue(v any) { c.value.Store(&valueBox{v}) }

// Value returns what SetValue stored, or nil.
func (c *Conn) Value() any {
	if b := c.value.Load(); b != nil {
		return b.v
	}
	return nil
}
