package tlsengine

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/tlsengine/enginetest"
)

// Conn tests over the in-memory event loop and Transport of enginetest (no
// sockets); the benchmarks use them too.

var _ Transport = (*enginetest.Transport)(nil)

// memTransport is an enginetest.Transport with the engine connection opened
// on it. Its traffic handler closes the connection on the peer's
// close_notify (CloseOnEOF), as the gateway does once it owes no answer;
// a test that wants the half-close clears CloseOnEOF before any traffic.
type memTransport struct {
	*enginetest.Transport
	conn *Conn
}

func (t *memTransport) received() string { return string(t.Received()) }

// memOpen opens an engine connection over a fresh transport on loop (Open
// runs on the loop, as OnOpen does) and returns the transport and the
// client side's net.Conn.
func memOpen(tb testing.TB, e *Engine, loop *enginetest.Loop) (*memTransport, net.Conn, error) {
	tb.Helper()
	t := &memTransport{Transport: enginetest.NewTransport(loop, ErrWouldBlock)}
	t.CloseOnEOF = true
	err := t.Open(func() (enginetest.Conn, error) {
		c, err := e.Open(t)
		t.conn = c
		return c, err
	})
	if err != nil {
		return nil, nil, err
	}
	return t, t.Client(), nil
}

// memEngine is an engine over the fixture plus an in-memory loop.
func memEngine(tb testing.TB, mod func(*Config)) (*Engine, *enginetest.Loop, *teFixture) {
	tb.Helper()
	f := fixture(tb)
	cfg := f.config(tb)
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	loop := enginetest.NewLoop()
	tb.Cleanup(loop.Close)
	return e, loop, f
}

// memHandshake opens a connection and completes a handshake on both sides.
func memHandshake(t *testing.T, e *Engine, loop *enginetest.Loop, conf *tls.Config) (*memTransport, *tls.Conn) {
	t.Helper()
	mt, cc, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(cc, conf)
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	testkit.WaitFor(t, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	return mt, client
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// TestCloseWaitsForDrain: Close sends close_notify and closes the transport
// only once its outbound buffer is empty.
func TestCloseWaitsForDrain(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	mt.SetOutboundBuffered(1 << 20) // gnet still holds a megabyte for the socket
	if _, err := mt.conn.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	_ = mt.conn.Close()
	_ = mt.conn.Close() // idempotent
	if closedWithin(mt.Closed(), 200*time.Millisecond) {
		t.Fatal("transport closed with output pending")
	}
	if _, err := mt.conn.Write([]byte("more")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	mt.SetOutboundBuffered(512 << 10) // progress
	time.Sleep(100 * time.Millisecond)
	mt.SetOutboundBuffered(0)
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed after the buffer drained")
	}
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "last words" {
		t.Fatalf("client read %q, %v; want the data then a clean close_notify EOF", got, err)
	}
}

// TestCloseDrainTimeout: a reader that never reads does not hold the
// connection open forever.
func TestCloseDrainTimeout(t *testing.T) {
	e, loop, f := memEngine(t, func(c *Config) { c.DrainTimeout = 150 * time.Millisecond })
	mt, _ := memHandshake(t, e, loop, f.client(teDevices, nil))
	mt.SetOutboundBuffered(4096) // stuck
	start := time.Now()
	_ = mt.conn.Close()
	if !closedWithin(mt.Closed(), 10*time.Second) {
		t.Fatal("transport never closed")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before DrainTimeout", d)
	}
}

// TestBeforeHandshake: the accessors are zero, Write refuses, Read would
// block, until the handshake completes.
func TestBeforeHandshake(t *testing.T) {
	e, loop, _ := memEngine(t, nil)
	mt, _, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	c := mt.conn
	if c.HandshakeComplete() || c.Verdict() != nil || c.Site() != nil || c.ServerName() != "" ||
		c.HandshakeDuration() != 0 || c.ConnectionState().Version != 0 {
		t.Error("accessors not zero before the handshake")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrHandshakeIncomplete) {
		t.Errorf("Write = %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err != ErrWouldBlock {
		t.Errorf("Read = %v", err)
	}
	c.SetValue("gateway state")
	if c.Value() != "gateway state" {
		t.Error("Value lost")
	}
	_ = c.Close()
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("Close during the handshake did not close the transport")
	}
	counted(t, e, ReasonClosed, 1)
	testkit.WaitFor(t, "no handshake in flight", 5*time.Second, func() bool { return e.Stats().InFlight == 0 })
}

// TestReleaseDuringHandshake: OnClose mid-handshake ends the handshake
// goroutine and frees its queue place.
func TestReleaseDuringHandshake(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, _, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	hello := captureClientHello(t, f.client(teDevices, nil))
	loop.Post(func() { mt.Traffic(hello[:10]) })
	loop.Post(mt.CloseNow) // the peer hung up: OnClose → Release
	counted(t, e, ReasonClosed, 1)
	testkit.WaitFor(t, "no handshake in flight", 5*time.Second, func() bool { return e.Stats().InFlight == 0 })
}

// heldClientConn is a client net.Conn whose first write (the ClientHello)
// reaches the server and whose later writes are held back for the test.
type heldClientConn struct {
	net.Conn
	mu     sync.Mutex
	passed bool
	held   []byte
}

func (c *heldClientConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.passed {
		c.passed = true
		return c.Conn.Write(b)
	}
	c.held = append(c.held, b...)
	return len(b), nil
}

func (c *heldClientConn) heldBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.held...)
}

// TestReleaseAtEachHandshakeStep: a Release (OnClose) at each point where
// the handshake waits for the client ends it counted "closed", once, with
// no other reason, and frees its queue place. The test starts the handshake
// goroutine itself (Config.Go), so a hook in the shim's Read can run the
// Release on the loop in the window between Read's look at its state and
// its acting on it. Before the shim set the released flag and the abort
// together under its lock, Read there saw the transport gone without the
// abort, returned a bare io.EOF, and the handshake was counted "tls_error".
func TestReleaseAtEachHandshakeStep(t *testing.T) {
	f := fixture(t)
	hello := captureClientHello(t, f.client(teDevices, nil))
	firstRecord := func(b []byte) []byte {
		if len(b) < recordHeaderLen {
			t.Fatalf("held flight too short: %x", b)
		}
		return b[:recordHeaderLen+(int(b[3])<<8|int(b[4]))]
	}
	steps := []struct {
		name string
		// early is fed before the handshake starts; the hook is armed from
		// the start. Without client, the hook releases at its first call.
		early []byte
		// client runs a real client whose second flight is held back; the
		// hook is armed once it is written, then wake (a part of the held
		// flight) is fed so that Read looks at its state again.
		client bool
		wake   func(held []byte) []byte
		// buffered: wake's first byte is fed first; the rest only once
		// Read has looked at its state with no record buffered (and so has
		// given its CPU slot back and cannot take the record without looking
		// again), and the hook releases only when Read sees it buffered.
		buffered bool
	}{
		{name: "no byte yet"},
		{name: "part of the ClientHello", early: hello[:10]},
		{name: "waiting for the second flight", client: true,
			wake: func(held []byte) []byte { return held[:1] }},
		{name: "a record of the second flight buffered", client: true, buffered: true,
			wake: firstRecord},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			obs := &teObserver{}
			spawned := make(chan func(), 1)
			e, loop, _ := memEngine(t, func(c *Config) {
				c.Observer = obs
				c.Go = func(f func()) { spawned <- f }
				c.HandshakeTimeout = 5 * time.Minute // only the Release ends it
			})
			mt, cc, err := memOpen(t, e, loop)
			if err != nil {
				t.Fatal(err)
			}
			if st.early != nil {
				fed := make(chan struct{})
				loop.Post(func() { mt.Traffic(st.early); close(fed) })
				<-fed
			}
			sh := mt.conn.shim
			var armed, fired atomic.Bool
			armed.Store(!st.client)
			waiting := make(chan struct{})
			var waitingOnce sync.Once
			sh.readHook = func() {
				if !armed.Load() || fired.Load() {
					return
				}
				if st.buffered {
					sh.mu.Lock()
					avail := sh.ready - sh.off
					sh.mu.Unlock()
					if avail == 0 {
						waitingOnce.Do(func() { close(waiting) })
						return
					}
				}
				fired.Store(true)
				loop.Post(mt.CloseNow) // OnClose → Release, on the loop
				<-mt.Closed()
			}
			go (<-spawned)()

			if st.client {
				hc := &heldClientConn{Conn: cc}
				done := make(chan error, 1)
				go func() { done <- tls.Client(hc, f.client(teDevices, &f.deviceTLS)).Handshake() }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("client handshake: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("client never wrote its second flight")
				}
				armed.Store(true)
				wake := st.wake(hc.heldBytes())
				if st.buffered {
					first := wake[:1]
					wake = wake[1:]
					loop.Post(func() { mt.Traffic(first) })
					select {
					case <-waiting:
					case <-time.After(20 * time.Second):
						t.Fatal("the handshake never waited for the second flight")
					}
				}
				loop.Post(func() { mt.Traffic(wake) })
			}

			testkit.WaitFor(t, "the handshake to end", 20*time.Second, func() bool { return e.Stats().InFlight == 0 })
			if !fired.Load() {
				t.Fatal("the hook never released the connection")
			}
			for reason, n := range e.Stats().Handshakes {
				want := uint64(0)
				if reason == ReasonClosed {
					want = 1
				}
				if n != want {
					t.Errorf("%d %q handshakes, want %d", n, reason, want)
				}
			}
			if evs := obs.all(); len(evs) != 1 || evs[0].Reason != ReasonClosed || !errors.Is(evs[0].Err, errPeerClosed) {
				for _, ev := range evs {
					t.Logf("event %q: %v", ev.Reason, ev.Err)
				}
				t.Errorf("%d events, want one %q", len(evs), ReasonClosed)
			}
		})
	}
}

// TestHandshakeEventAndVerdictInSlot: the observer gets one event with the
// site, name, verdict and version; the verifier runs once, inside a CPU slot.
func TestHandshakeEventAndVerdictInSlot(t *testing.T) {
	obs := &teObserver{}
	var calls, outsideSlot atomic.Int32
	var eng atomic.Pointer[Engine]
	e, loop, f := memEngine(t, func(c *Config) {
		c.Observer = obs
		cache := NewVerdictCache(16)
		c.Verifier = teVerifierFunc(func(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict {
			calls.Add(1)
			if eng.Load().Stats().CPUBusy < 1 {
				outsideSlot.Add(1)
			}
			return cache.Verdict(site, chain, now)
		})
	})
	eng.Store(e)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	defer client.Close()
	c := mt.conn
	if c.Verdict().Kind != verdict.Valid || c.Verdict().Identity.CommonName != "sensor-0001" {
		t.Errorf("verdict %+v", c.Verdict())
	}
	if c.Site().Name != teDevices || c.ServerName() != teDevices || c.ConnectionState().Version != tls.VersionTLS13 ||
		c.HandshakeDuration() <= 0 {
		t.Errorf("site %v name %q state %x dur %v", c.Site().Name, c.ServerName(), c.ConnectionState().Version, c.HandshakeDuration())
	}
	if calls.Load() != 1 || outsideSlot.Load() != 0 {
		t.Errorf("verifier called %d times, %d outside a CPU slot", calls.Load(), outsideSlot.Load())
	}
	evs := obs.all()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	ev := evs[0]
	if ev.Reason != ReasonOK || ev.Conn != c || ev.Site != c.Site() || ev.ServerName != teDevices ||
		ev.Verdict != c.Verdict() || ev.Version != tls.VersionTLS13 || ev.Duration <= 0 || ev.Err != nil {
		t.Errorf("event %+v", ev)
	}
	if st := e.Stats(); st.CPUTime <= 0 || st.Handshakes[ReasonOK] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestSetSitesKeepsStartedHandshakes: a reload does not change the table of a
// handshake already started; new connections use the new table.
func TestSetSitesKeepsStartedHandshakes(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, cc, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	onlyOpen, err := NewSites([]*Site{{Name: teOpen, Certificates: []tls.Certificate{f.server}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	e.SetSites(onlyOpen)
	if e.Sites() != onlyOpen {
		t.Fatal("Sites() is not the new table")
	}
	client := tls.Client(cc, f.client(teDevices, &f.deviceTLS))
	if err := client.Handshake(); err != nil {
		t.Fatalf("started before the reload: %v", err)
	}
	testkit.WaitFor(t, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	if mt.conn.Site().Name != teDevices {
		t.Errorf("site %q", mt.conn.Site().Name)
	}
	_, cc2, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	if err := tls.Client(cc2, f.client(teDevices, nil)).Handshake(); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("after the reload: %v, want unrecognized name", err)
	}
}

// TestConcurrentWriters: Write from many goroutines (origin responses)
// while the loop reads; every byte arrives, records intact.
func TestConcurrentWriters(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte('a' + w)}, 100)
			for range each {
				if _, err := mt.conn.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// The loop keeps reading client data meanwhile.
	go func() {
		for range 50 {
			_, _ = client.Write([]byte("ping"))
		}
	}()
	got := make([]byte, writers*each*100)
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	counts := map[byte]int{}
	for _, b := range got {
		counts[b]++
	}
	for w := range writers {
		if counts[byte('a'+w)] != each*100 {
			t.Errorf("writer %d: %d bytes", w, counts[byte('a'+w)])
		}
	}
	testkit.WaitFor(t, "the pings", 10*time.Second, func() bool { return len(mt.received()) == 200 })
}

// TestPeerCloseNotify: the peer's close_notify makes Read return io.EOF;
// the owner's Close answers with the engine's own close_notify and closes.
func TestPeerCloseNotify(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, nil))
	_, _ = client.Write([]byte("bye"))
	_ = client.CloseWrite()
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed after the peer's close_notify")
	}
	if got := mt.received(); got != "bye" {
		t.Errorf("received %q", got)
	}
	if _, err := io.ReadAll(client); err != nil {
		t.Errorf("client saw %v, want the server's close_notify", err)
	}
}

// TestHalfCloseStillWritable: after the peer's close_notify (io.EOF from
// Read) the connection stays open for writing until its owner closes it, so
// a response owed to a device that closed its side right after its request
// still reaches it, before the engine's own close_notify.
func TestHalfCloseStillWritable(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, cc, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	mt.CloseOnEOF = false // a half-close; set before any traffic: loop only afterwards
	client := tls.Client(cc, f.client(teDevices, nil))
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	testkit.WaitFor(t, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	_, _ = client.Write([]byte("request"))
	_ = client.CloseWrite()
	readErr := make(chan error, 1)
	testkit.WaitFor(t, "the request", 5*time.Second, func() bool { return mt.received() == "request" })
	loop.Post(func() {
		_, err := mt.conn.Read(make([]byte, 16))
		readErr <- err
	})
	if err := <-readErr; !errors.Is(err, io.EOF) {
		t.Fatalf("Read after close_notify = %v, want io.EOF", err)
	}
	if closedWithin(mt.Closed(), 100*time.Millisecond) {
		t.Fatal("the engine closed the connection on the peer's close_notify; the response is lost")
	}
	if _, err := mt.conn.Write([]byte("response")); err != nil {
		t.Fatalf("Write after the peer's close_notify: %v", err)
	}
	_ = mt.conn.Close()
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed after Close")
	}
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "response" {
		t.Fatalf("client read %q, %v; want the response then a clean close_notify EOF", got, err)
	}
}

// TestCloseWriteKeepsReading: CloseWrite sends close_notify behind what was
// written (the peer reads it, then the end of the stream) and nothing after
// it, and keeps reading: what the peer still sends is received, and the
// transport stays open until Close, which sends no second close_notify.
func TestCloseWriteKeepsReading(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, cc, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	mt.CloseOnEOF = false // set before any traffic: loop only afterwards
	client := tls.Client(cc, f.client(teDevices, nil))
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	testkit.WaitFor(t, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	if _, err := mt.conn.Write([]byte("refused")); err != nil {
		t.Fatal(err)
	}
	if err := mt.conn.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	read := make(chan string, 1)
	go func() { // enginetest's client has no read deadline
		got, err := io.ReadAll(client)
		read <- fmt.Sprintf("%q, %v", got, err)
	}()
	select {
	case got := <-read:
		if want := fmt.Sprintf("%q, %v", "refused", nil); got != want {
			t.Fatalf("client read %s; want %s (the answer, then close_notify)", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no close_notify after CloseWrite: the client is still reading")
	}
	if _, err := mt.conn.Write([]byte("more")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	if closedWithin(mt.Closed(), 100*time.Millisecond) {
		t.Fatal("CloseWrite closed the transport")
	}
	if _, err := client.Write([]byte("still sending")); err != nil {
		t.Fatalf("the peer writing after the close_notify: %v", err)
	}
	testkit.WaitFor(t, "what the peer still sends", 5*time.Second, func() bool { return mt.received() == "still sending" })
	_ = mt.conn.Close()
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed after Close")
	}
	if rest, _ := io.ReadAll(cc); len(rest) > 0 {
		t.Errorf("%d bytes after the close_notify (a second one?)", len(rest))
	}
}

// TestBadRecordAfterHandshake: a forged record after the handshake fails
// decryption: crypto/tls sends its alert, Read reports the error, the
// connection closes.
func TestBadRecordAfterHandshake(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, _ := memHandshake(t, e, loop, f.client(teDevices, nil))
	errc := make(chan error, 1)
	loop.Post(func() {
		_ = mt.conn.Feed(append([]byte{23, 3, 3, 0, 40}, bytes.Repeat([]byte{1}, 40)...))
		_, err := mt.conn.Read(make([]byte, 100))
		errc <- err
	})
	if err := <-errc; err == nil || err == ErrWouldBlock {
		t.Fatalf("Read = %v, want a decryption error", err)
	}
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed")
	}
}

// TestInboundOverflow: a peer far ahead of the handshake is cut off.
func TestInboundOverflow(t *testing.T) {
	e, loop, f := memEngine(t, func(c *Config) { c.MaxInbound = 32 << 10 })
	mt, _, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	hello := captureClientHello(t, f.client(teDevices, nil))
	flood := bytes.Repeat(append([]byte{23, 3, 3, 0x40, 0}, make([]byte, 0x4000)...), 4)
	loop.Post(func() { mt.Traffic(hello[:len(hello)-1]); mt.Traffic(flood) })
	counted(t, e, ReasonInboundOverflow, 1)
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed")
	}
}

// TestSetMaxInbound: a raised bound applies to connections opened after
// it: the same 64 KiB that overflow a 32 KiB engine (TestInboundOverflow)
// fit in one raised to 128 KiB; the handshake then fails on the bytes
// themselves, not on their amount.
func TestSetMaxInbound(t *testing.T) {
	e, loop, f := memEngine(t, func(c *Config) { c.MaxInbound = 32 << 10; c.HandshakeTimeout = 300 * time.Millisecond })
	e.SetMaxInbound(128 << 10)
	mt, _, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	hello := captureClientHello(t, f.client(teDevices, nil))
	flood := bytes.Repeat(append([]byte{23, 3, 3, 0x40, 0}, make([]byte, 0x4000)...), 4)
	loop.Post(func() { mt.Traffic(hello[:len(hello)-1]); mt.Traffic(flood) })
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed")
	}
	if n := e.Stats().Handshakes[ReasonInboundOverflow]; n != 0 {
		t.Fatalf("%d inbound overflows under the raised bound (the bytes fitted)", n)
	}
}

// TestMutatedClientHellos: random corruptions of a real ClientHello never
// panic, never complete a handshake, and every connection ends.
func TestMutatedClientHellos(t *testing.T) {
	e, loop, f := memEngine(t, func(c *Config) { c.HandshakeTimeout = 2 * time.Second })
	hellos := [][]byte{captureClientHello(t, f.client(teDevices, nil))}
	conf := f.client(teDevices, nil)
	conf.MaxVersion = tls.VersionTLS12
	hellos = append(hellos, captureClientHello(t, conf))
	n := 300
	if testing.Short() {
		n = 60
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var transports []*memTransport
	for i := range n {
		h := append([]byte(nil), hellos[i%2]...)
		for range 1 + rng.IntN(4) {
			switch rng.IntN(3) {
			case 0: // flip a byte past the record header
				h[recordHeaderLen+rng.IntN(len(h)-recordHeaderLen)] ^= byte(1 + rng.IntN(255))
			case 1: // truncate the message but keep the record length honest
				cut := recordHeaderLen + 4 + rng.IntN(len(h)-recordHeaderLen-4)
				h = h[:cut]
				h[3], h[4] = byte((cut-recordHeaderLen)>>8), byte(cut-recordHeaderLen)
			case 2: // absurd lengths inside the message
				i := recordHeaderLen + rng.IntN(len(h)-recordHeaderLen-1)
				h[i], h[i+1] = 0xff, 0xff
			}
		}
		mt, _, err := memOpen(t, e, loop)
		if err != nil {
			t.Fatal(err)
		}
		transports = append(transports, mt)
		loop.Post(func() { mt.Traffic(h) })
	}
	for i, mt := range transports {
		if !closedWithin(mt.Closed(), 30*time.Second) {
			t.Fatalf("connection %d never closed", i)
		}
	}
	// A handshake goroutine leaves the admission count when it returns,
	// just after it closed its transport: wait for the last ones.
	testkit.WaitFor(t, "every handshake to leave", 10*time.Second, func() bool { return e.Stats().InFlight == 0 })
	st := e.Stats()
	if st.Handshakes[ReasonOK] != 0 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("reasons: %v", st.Handshakes)
}

// TestCorkCoalescesLastResponse: after Cork, the response and close_notify
// reach the transport in one write, which carries the drain check (the
// transport closes with no further write), and the client reads the data
// then a clean close_notify.
func TestCorkCoalescesLastResponse(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	before := mt.WriteCount()
	mt.conn.Cork()
	for _, part := range []string{"HTTP/1.1 200 OK\r\n", "\r\n", "last words"} {
		if _, err := mt.conn.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if got := mt.WriteCount() - before; got != 0 {
		t.Fatalf("%d writes reached the transport while corked, want 0", got)
	}
	_ = mt.conn.Close()
	if !closedWithin(mt.Closed(), 5*time.Second) {
		t.Fatal("transport not closed")
	}
	if got := mt.WriteCount() - before; got != 1 {
		t.Errorf("%d writes for three records and close_notify, want 1", got)
	}
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "HTTP/1.1 200 OK\r\n\r\nlast words" {
		t.Fatalf("client read %q, %v; want the response then a clean close_notify EOF", got, err)
	}
}

// TestCorkBounded: a corked connection sends what it holds once corkLimit
// is reached instead of buffering a large response whole, and Flush sends
// the rest without closing.
func TestCorkBounded(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	before := mt.WriteCount()
	mt.conn.Cork()
	big := bytes.Repeat([]byte("x"), 16<<10)
	go func() { _, _ = io.Copy(io.Discard, io.LimitReader(client, int64(5*len(big)))) }()
	for range 5 {
		if _, err := mt.conn.Write(big); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "a write once the cork limit is passed", 5*time.Second, func() bool { return mt.WriteCount()-before == 1 })
	if err := mt.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the rest after Flush", 5*time.Second, func() bool { return mt.WriteCount()-before == 2 })
	if _, err := mt.conn.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "an uncorked write going out alone", 5*time.Second, func() bool { return mt.WriteCount()-before == 3 })
	if closedWithin(mt.Closed(), 50*time.Millisecond) {
		t.Fatal("Flush closed the connection")
	}
}

// TestIdleHoldsNoInboundBuffer: once crypto/tls has read everything
// received, the connection gives its inbound buffer back, so an idle
// connection costs no buffer.
func TestIdleHoldsNoInboundBuffer(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the server to read the record", 5*time.Second, func() bool { return mt.received() == "ping" })
	s := mt.conn.shim
	testkit.WaitFor(t, "the idle connection to give its inbound buffer back", 5*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.in == nil && s.inBox == nil
	})
}

// silentTransport takes writes and says nothing: a peer whose handshake
// never gets the CPU to answer it.
type silentTransport struct{}

func (silentTransport) AsyncWrite(_ []byte, cb gnet.AsyncCallback) error {
	if cb != nil {
		go func() { _ = cb(nil, nil) }()
	}
	return nil
}
func (silentTransport) Wake(gnet.AsyncCallback) error { return nil }
func (silentTransport) Close() error                  { return nil }
func (silentTransport) OutboundBuffered() int         { return 0 }

// TestInboundBeforeTheServerAnswers: until the handshake has written to the
// peer, the peer may have no more than a ClientHello's worth buffered, not
// MaxInbound (which must hold a request sent behind the client's Finished):
// while handshakes wait for a CPU slot, each would otherwise park MaxInbound.
func TestInboundBeforeTheServerAnswers(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	cfg.Workers, cfg.MaxInbound = 1, 8<<20
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.adm.cpu <- struct{}{} // the one CPU slot is busy: no handshake answers
	defer func() { <-e.adm.cpu }()
	c, err := e.Open(silentTransport{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	rec := make([]byte, 5+16384) // handshake records, framed whole
	rec[0], rec[1], rec[2], rec[3], rec[4] = 22, 3, 1, 0x40, 0x00
	fed := 0
	for ; fed < cfg.MaxInbound; fed += len(rec) {
		if err := c.Feed(rec); err != nil {
			if !errors.Is(err, ErrInboundOverflow) {
				t.Fatalf("after %d bytes: %v, want ErrInboundOverflow", fed, err)
			}
			break
		}
	}
	if fed > maxUnanswered {
		t.Errorf("took %d bytes before the handshake answered; want at most %d", fed, maxUnanswered)
	}
}

// TestReadAnswersDrainedItself: once crypto/tls holds nothing, Read says
// "would block" without asking it, so a small message costs crypto/tls one
// read, not two (the second allocates and takes the shim's lock only to
// hear the same). Large messages, records that fill Read's buffer and
// several records in one segment still come through whole and in order.
func TestReadAnswersDrainedItself(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	conf := f.client(teDevices, &f.deviceTLS)
	conf.DynamicRecordSizingDisabled = true // full 16 KiB records from the first byte
	mt, gc, client := gatherHandshake(t, e, loop, conf)
	var empty atomic.Int64 // shim Reads that found no record
	hooked := make(chan struct{})
	loop.Post(func() {
		mt.conn.shim.readHook = func() { empty.Add(1) }
		close(hooked)
	})
	<-hooked

	var sent []byte
	send := func(msgs ...[]byte) {
		t.Helper()
		gc.hold()
		for _, msg := range msgs {
			if _, err := client.Write(msg); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, msg...)
		}
		if err := gc.release(); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, "the message", 10*time.Second, func() bool { return len(mt.received()) == len(sent) })
	}
	send([]byte("first")) // settles whatever the handshake left
	before := empty.Load()
	for i := range 20 {
		send([]byte{'m', byte('a' + i)})
	}
	if got := empty.Load() - before; got != 0 {
		t.Errorf("20 small messages made crypto/tls ask the shim %d times for nothing, want 0", got)
	}
	// A record larger than the reader's 4 KiB buffer leaves plaintext in
	// crypto/tls: Read must ask it again.
	big := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB: two 16 KiB records
	send(big)
	if got := empty.Load() - before; got == 0 {
		t.Errorf("16 KiB records read with a 4 KiB buffer never made crypto/tls ask the shim again")
	}
	// Several records in one segment: one each per crypto/tls read.
	send([]byte("one"), []byte("two"), bytes.Repeat([]byte("3"), 5000), []byte("four"))
	before = empty.Load()
	send([]byte("last"))
	if got := empty.Load() - before; got != 0 {
		t.Errorf("a small message after the others made crypto/tls ask the shim %d times for nothing, want 0", got)
	}
	if got := mt.received(); got != string(sent) {
		t.Fatalf("received %d bytes, not what was sent (%d bytes)", len(got), len(sent))
	}
}

// gatherHandshake is memHandshake with the client over a gatherConn.
func gatherHandshake(tb testing.TB, e *Engine, loop *enginetest.Loop, conf *tls.Config) (*memTransport, *gatherConn, *tls.Conn) {
	tb.Helper()
	mt, cc, err := memOpen(tb, e, loop)
	if err != nil {
		tb.Fatal(err)
	}
	gc := &gatherConn{Conn: cc}
	client := tls.Client(gc, conf)
	if err := client.Handshake(); err != nil {
		tb.Fatalf("client handshake: %v", err)
	}
	testkit.WaitFor(tb, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	return mt, gc, client
}

// gatherConn is a client net.Conn that can hold its writes back and send
// them in one, so that several records reach the engine in one segment.
type gatherConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	held    []byte
}

func (c *gatherConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.held = append(c.held, b...)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *gatherConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// release sends what was held in one write and stops holding.
func (c *gatherConn) release() error {
	c.mu.Lock()
	b := c.held
	c.held, c.holding = nil, false
	c.mu.Unlock()
	_, err := c.Conn.Write(b)
	return err
}
