package fuzz

// The engine harness shared by the TLS targets: one *tlsengine.Engine per
// process (long-lived, as in the gateway), one enginetest loop and
// transport per connection (no sockets, driven the way the gateway drives
// the engine from gnet), and the checks every connection must pass when it
// ends. The transport also checks the engine's side of the Transport
// contract: an AsyncWrite buffer is never modified after the call (gnet does
// not copy), OutboundBuffered is only called on the loop, and nothing is
// written after the transport closed.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/tlsengine"
	"github.com/fleetgate/fleetgate/tlsengine/enginetest"
)

var _ tlsengine.Transport = (*enginetest.Transport)(nil)

// Bounds of one connection's life in the harness. A wait that runs out is a
// hang and fails the input.
const (
	// hangTimeout stays under the 10 s after which Go's fuzz worker panics
	// "deadlocked!" without a trace, so that a hang fails here, with stacks.
	hangTimeout      = 4 * time.Second // Close → transport closed, handshake goroutine gone
	settleTimeout    = time.Second     // waiting for the engine to consume fed bytes (not a failure)
	goroutineSlack   = 32              // lingering timer goroutines tolerated above the baseline
	heapCheckEvery   = 256             // iterations between heap checks
	maxHeapInUse     = 512 << 20       // a fuzz worker's heap beyond this is unbounded growth
	maxPreHandshake  = 64 << 10        // the most a server may write before a handshake completes
	maxRecordPayload = 16384 + 2048    // TLS 1.2's ciphertext bound (RFC 5246 6.2.3)
)

// knownReasons are the documented HandshakeEvent reasons.
var knownReasons = map[string]bool{
	tlsengine.ReasonOK: true, tlsengine.ReasonShed: true, tlsengine.ReasonTimeout: true,
	tlsengine.ReasonUnknownSNI: true, tlsengine.ReasonNotTLS: true, tlsengine.ReasonRecordOverflow: true,
	tlsengine.ReasonClientAlert: true, tlsengine.ReasonBadCertificate: true,
	tlsengine.ReasonInboundOverflow: true, tlsengine.ReasonClosed: true, tlsengine.ReasonTLSError: true,
}

// observer records handshake events by connection.
type observer struct {
	mu     sync.Mutex
	events map[*tlsengine.Conn]tlsengine.HandshakeEvent
	count  map[*tlsengine.Conn]int
}

func (o *observer) Handshake(ev tlsengine.HandshakeEvent) {
	if ev.Conn == nil {
		return // shed: no connection
	}
	o.mu.Lock()
	o.events[ev.Conn] = ev
	o.count[ev.Conn]++
	o.mu.Unlock()
}

func (o *observer) get(c *tlsengine.Conn) (tlsengine.HandshakeEvent, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.events[c], o.count[c]
}

func (o *observer) forget(c *tlsengine.Conn) {
	o.mu.Lock()
	delete(o.events, c)
	delete(o.count, c)
	o.mu.Unlock()
}

// harness is the process's engine and what the checks compare against.
type harness struct {
	f      *fixture
	sites  *tlsengine.Sites
	eng    *tlsengine.Engine
	obs    *observer
	server tls.Certificate

	// Connections run one at a time (a fuzz worker calls its function
	// sequentially; the targets never call t.Parallel): the checks read
	// engine-wide counters.
	baseline   int // goroutines before the first connection
	iterations int
}

var (
	harnessOnce sync.Once
	theHarness  *harness
	harnessErr  error
)

func getHarness(tb testing.TB) *harness {
	tb.Helper()
	f := getFixture(tb)
	harnessOnce.Do(func() { theHarness, harnessErr = newHarness(f) })
	if harnessErr != nil {
		tb.Fatalf("harness: %v", harnessErr)
	}
	return theHarness
}

func newHarness(f *fixture) (*harness, error) {
	server := f.server.TLSCertificate(f.inter)
	mk := func(name string, roots bool) *tlsengine.Site {
		s := &tlsengine.Site{Name: name, Certificates: []tls.Certificate{server}, Generation: 1}
		if roots {
			s.Roots = x509.NewCertPool()
			s.Roots.AddCert(f.root.Cert)
		}
		return s
	}
	strict := mk(siteStrict, true)
	strict.RejectInvalid = true
	tickets := mk(siteTickets, true)
	tickets.SessionTickets = true
	sites, err := tlsengine.NewSites([]*tlsengine.Site{mk(siteDevices, true), mk(siteOpen, false), strict, mk(siteWild, true), tickets}, siteDevices)
	if err != nil {
		return nil, err
	}
	obs := &observer{events: map[*tlsengine.Conn]tlsengine.HandshakeEvent{}, count: map[*tlsengine.Conn]int{}}
	eng, err := tlsengine.NewEngine(tlsengine.Config{
		Sites:            sites,
		Workers:          2,
		Queue:            16,
		HandshakeTimeout: hangTimeout,
		Verifier:         tlsengine.NewVerdictCache(0),
		Observer:         obs,
	})
	if err != nil {
		return nil, err
	}
	return &harness{f: f, sites: sites, eng: eng, obs: obs, server: server}, nil
}

// session is one engine connection over a fresh loop and transport.
type session struct {
	h      *harness
	l      *enginetest.Loop
	t      *enginetest.Transport
	c      *tlsengine.Conn
	before tlsengine.Stats
}

// open starts a connection (the transport's Client is the device's side,
// for the targets that run a real client). The caller must call finish.
func (h *harness) open(tb testing.TB) *session {
	tb.Helper()
	if h.iterations == 0 {
		h.baseline = runtime.NumGoroutine()
	}
	h.iterations++
	s := &session{h: h, l: enginetest.NewLoop(), before: h.eng.Stats()}
	s.t = enginetest.NewTransport(s.l, tlsengine.ErrWouldBlock)
	if s.before.InFlight != 0 {
		tb.Fatalf("engine has %d handshakes in flight before a new connection", s.before.InFlight)
	}
	err := s.t.Open(func() (enginetest.Conn, error) { // OnOpen runs on the loop
		c, err := h.eng.Open(s.t)
		s.c = c
		return c, err
	})
	if err != nil {
		tb.Fatalf("Open: %v (nothing else is in flight, so nothing may be shed)", err)
	}
	return s
}

// ended returns the connection's handshake event once the handshake
// goroutine reported it.
func (s *session) ended() (tlsengine.HandshakeEvent, bool) {
	ev, n := s.h.obs.get(s.c)
	return ev, n > 0
}

// feedRaw feeds chunks one OnTraffic each, and after a chunk that completes
// records (by the TLS framing rules) waits until the handshake has consumed
// them: it ended, or it gave its CPU slot back to wait for more bytes.
// Without that wait Close would often abort the handshake before crypto/tls
// even saw the input.
func (s *session) feedRaw(tb testing.TB, chunks [][]byte) {
	tb.Helper()
	var all []byte
	for _, ch := range chunks {
		readyBefore := frameReady(all)
		all = append(all, ch...)
		cpuBefore := s.h.eng.Stats().CPUTime
		if !s.t.Deliver(ch, hangTimeout) {
			s.fail(tb, "event loop blocked in OnTraffic (Feed/Read) for %s", hangTimeout)
		}
		if _, done := s.ended(); done || frameReady(all) == readyBefore {
			continue
		}
		if !testkit.Spin(settleTimeout, func() bool {
			_, done := s.ended()
			return done || s.h.eng.Stats().CPUTime != cpuBefore
		}) {
			settleMisses.Add(1) // reported with FLEETGATE_FUZZ_STATS
		}
	}
}

// frameReady is how many leading bytes of in form whole TLS records, or all
// of them once a header is one crypto/tls rejects by itself (the engine
// hands those over at once so the rejection is immediate).
func frameReady(in []byte) int {
	off := 0
	for len(in)-off >= 5 {
		typ, major, n := in[off], in[off+1], int(in[off+3])<<8|int(in[off+4])
		if typ < 20 || typ > 24 || major != 3 || n > maxRecordPayload {
			return len(in)
		}
		if len(in)-off < 5+n {
			break
		}
		off += 5 + n
	}
	return off
}

// fail reports a failure with the engine's state and every goroutine's
// stack (a hang is only debuggable with them).
func (s *session) fail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	ev, n := s.h.obs.get(s.c)
	tb.Fatalf("%s\nstats: %+v\nhandshake events: %d (last %+v)\ngoroutines:\n%s", fmt.Sprintf(format, args...), s.h.eng.Stats(), n, ev, buf)
}

// finishOpts are the per-target expectations checked by finish.
type finishOpts struct {
	maxOut      int  // bound on the bytes the engine may write
	mayComplete bool // a handshake may succeed (false: pre-handshake garbage)
}

// finish closes the connection and checks everything a connection must
// satisfy when it is over: it ends (no hang), exactly one handshake event,
// InFlight back to zero, no goroutine growth, well-formed output of bounded
// size, no certificate for an unknown name, the transport contract kept.
func (s *session) finish(tb testing.TB, o finishOpts) (out []byte, ev tlsengine.HandshakeEvent) {
	tb.Helper()
	h := s.h
	_ = s.c.Close()
	select {
	case <-s.t.Closed():
	case <-time.After(hangTimeout):
		s.fail(tb, "hang: transport not closed %s after Conn.Close", hangTimeout)
	}
	if !testkit.Spin(hangTimeout, func() bool { _, done := s.ended(); return done && h.eng.Stats().InFlight == 0 }) {
		s.fail(tb, "hang: handshake goroutine still running %s after the transport closed", hangTimeout)
	}
	if !s.l.Shutdown(hangTimeout) {
		s.fail(tb, "hang: event loop did not drain")
	}
	ev, n := h.obs.get(s.c)
	h.obs.forget(s.c)
	after := h.eng.Stats()
	out, violations := s.t.Sent(), s.t.Violations()

	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, v := range violations {
		bad("transport contract: %s", v)
	}
	if n != 1 {
		bad("%d handshake events for one connection, want 1", n)
	}
	if !knownReasons[ev.Reason] {
		bad("undocumented handshake reason %q", ev.Reason)
	}
	if ev.Reason == tlsengine.ReasonOK && !o.mayComplete {
		bad("handshake completed from fuzzed bytes alone (reason ok)")
	}
	var total, totalBefore uint64
	for r, c := range after.Handshakes {
		total += c
		totalBefore += s.before.Handshakes[r]
	}
	if total-totalBefore != 1 {
		bad("handshake counters grew by %d for one connection, want 1", total-totalBefore)
	}
	if after.InFlight != 0 || after.CPUBusy != 0 {
		bad("after the connection ended: InFlight %d, CPUBusy %d, want 0", after.InFlight, after.CPUBusy)
	}
	if err := checkRecords(out); err != nil {
		bad("server output: %v", err)
	}
	if o.maxOut > 0 && len(out) > o.maxOut {
		bad("server wrote %d bytes, bound %d", len(out), o.maxOut)
	}
	if ev.Site != nil {
		if want, ok := h.sites.Lookup(ev.ServerName); !ok || want != ev.Site {
			bad("site %q chosen for server name %q; Lookup gives %v", ev.Site.Name, ev.ServerName, siteName(want))
		}
	}
	if bytes.Contains(out, h.server.Certificate[0]) && ev.Site == nil {
		bad("server certificate sent although no site was chosen (reason %s, server name %q)", ev.Reason, ev.ServerName)
	}
	if ev.Reason == tlsengine.ReasonUnknownSNI {
		if bytes.Contains(out, h.server.Certificate[0]) {
			bad("server certificate sent for an unknown name %q", ev.ServerName)
		}
		if !hasAlert(out, 112) {
			bad("unknown name %q not answered with unrecognized_name (output %x)", ev.ServerName, out)
		}
	}
	if len(problems) > 0 {
		tb.Fatalf("connection checks failed (reason %q, server name %q, err %v):\n  %s", ev.Reason, ev.ServerName, ev.Err, joinLines(problems))
	}
	s.checkGrowth(tb)
	return out, ev
}

// checkGrowth fails on goroutines piling up across connections and, every
// heapCheckEvery connections, on a heap beyond maxHeapInUse.
func (s *session) checkGrowth(tb testing.TB) {
	tb.Helper()
	h := s.h
	if !testkit.Spin(settleTimeout, func() bool { return runtime.NumGoroutine() <= h.baseline+goroutineSlack }) {
		s.fail(tb, "goroutines grew to %d (baseline %d, after %d connections)", runtime.NumGoroutine(), h.baseline, h.iterations)
	}
	if h.iterations%heapCheckEvery == 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > maxHeapInUse {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > maxHeapInUse {
				s.fail(tb, "heap in use %d MiB after %d connections (bound %d MiB)", ms.HeapInuse>>20, h.iterations, maxHeapInUse>>20)
			}
		}
	}
}

// checkRecords verifies that out is a sequence of whole, well-formed TLS
// records: content types 20-23, version 3.x, length within bounds.
func checkRecords(out []byte) error {
	off := 0
	for off < len(out) {
		if len(out)-off < 5 {
			return fmt.Errorf("truncated record header at offset %d: %x", off, out[off:])
		}
		typ, major, minor, n := out[off], out[off+1], out[off+2], int(out[off+3])<<8|int(out[off+4])
		switch {
		case typ < 20 || typ > 23:
			return fmt.Errorf("record type %d at offset %d", typ, off)
		case major != 3 || minor < 1 || minor > 4:
			return fmt.Errorf("record version %d.%d at offset %d", major, minor, off)
		case n > maxRecordPayload:
			return fmt.Errorf("record of %d bytes at offset %d", n, off)
		case len(out)-off < 5+n:
			return fmt.Errorf("truncated record at offset %d: %d of %d bytes", off, len(out)-off-5, n)
		}
		off += 5 + n
	}
	return nil
}

// hasAlert reports a plaintext fatal alert with description desc in out.
func hasAlert(out []byte, desc byte) bool {
	for off := 0; len(out)-off >= 5; {
		n := int(out[off+3])<<8 | int(out[off+4])
		if out[off] == 21 && n == 2 && len(out)-off >= 7 && out[off+5] == 2 && out[off+6] == desc {
			return true
		}
		off += 5 + n
	}
	return false
}

func siteName(s *tlsengine.Site) string {
	if s == nil {
		return "<none>"
	}
	return s.Name
}

func joinLines(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(s)
	}
	return b.String()
}
