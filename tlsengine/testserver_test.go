package tlsengine

// Test infrastructure shared by the engine's tests and benchmarks: a PKI
// fixture, a minimal gnet server that drives the engine exactly as the
// gateway will, and client and raw-TCP helpers. (The in-memory event loop
// and Transport come from enginetest; conn_test.go opens connections on
// them.) Names are prefixed "te" or "mem" to stay clear of other test files.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Site names served by the fixture.
const (
	teDevices = "devices.fleet.test" // client CA: root; the default site
	teOpen    = "open.fleet.test"    // no client CA: no certificate requested
	teStrict  = "strict.fleet.test"  // RejectInvalid
	teWild    = "*.wild.test"        // wildcard
	teTickets = "tickets.fleet.test" // SessionTickets
)

// teFixture is the one test PKI of the engine's tests (built once): the
// handshake tests use it through fixture, the verify, cache, revocation and
// SNI tests through vtNewPKI.
type teFixture struct {
	root, inter *pki.Cert // the fleet CA; also issues the server cert
	// otherRoot is another fleet's CA; otherInter, its intermediate, has
	// the same name as inter: only the key tells them apart.
	otherRoot, otherInter *pki.Cert
	device                *pki.Cert // valid device of root/inter, with every identity field set
	otherDevice           *pki.Cert // device of otherRoot/otherInter
	deviceTLS             tls.Certificate
	otherDeviceTLS        tls.Certificate
	server                tls.Certificate
	clientRoots           *x509.CertPool
	rootPEM               []byte // for openssl
	devKeyPEM             []byte
}

var (
	teFixtureOnce sync.Once
	teFix         *teFixture
)

func fixture(tb testing.TB) *teFixture {
	tb.Helper()
	teFixtureOnce.Do(func() {
		f := &teFixture{}
		f.root = pki.MustRoot(pki.Root("Fleet Root"))
		f.inter = f.root.MustIssue(pki.Intermediate("Fleet Intermediate"))
		f.otherRoot = pki.MustRoot(pki.Root("Other Root"))
		f.otherInter = f.otherRoot.MustIssue(pki.Intermediate("Fleet Intermediate")) // same name as ours
		dev := pki.Device("sensor-0001")
		dev.Organization = []string{"Acme Fleet"}
		dev.OrgUnit = []string{"sensors", "line-3"}
		dev.DNSNames = []string{"sensor-0001.devices.fleet.test"}
		dev.URIs = []string{"spiffe://fleet.test/device/sensor-0001"}
		f.device = f.inter.MustIssue(dev)
		f.otherDevice = f.otherInter.MustIssue(pki.Device("intruder-0001"))
		f.deviceTLS = f.device.TLSCertificate(f.inter)
		f.otherDeviceTLS = f.otherDevice.TLSCertificate(f.otherInter)
		srv := f.inter.MustIssue(pki.Server(teDevices, teOpen, teStrict, teWild, teTickets, "127.0.0.1"))
		f.server = srv.TLSCertificate(f.inter)
		f.clientRoots = pki.Pool(f.root)
		f.rootPEM = f.root.CertPEM()
		f.devKeyPEM = f.device.KeyPEM()
		teFix = f
	})
	return teFix
}

// sites builds a fresh Sites table; def names the default site ("" for none).
func (f *teFixture) sites(tb testing.TB, def string) *Sites {
	tb.Helper()
	mk := func(name string, roots bool) *Site {
		s := &Site{Name: name, Certificates: []tls.Certificate{f.server}, Generation: 1}
		if roots {
			s.Roots = pki.Pool(f.root)
		}
		return s
	}
	strict := mk(teStrict, true)
	strict.RejectInvalid = true
	tickets := mk(teTickets, true)
	tickets.SessionTickets = true
	sites, err := NewSites([]*Site{mk(teDevices, true), mk(teOpen, false), strict, mk(teWild, true), tickets}, def)
	if err != nil {
		tb.Fatalf("NewSites: %v", err)
	}
	return sites
}

// config is an engine Config over the fixture's sites.
func (f *teFixture) config(tb testing.TB) Config {
	return Config{Sites: f.sites(tb, teDevices), Verifier: NewVerdictCache(1024)}
}

// client is a tls.Config for dialing serverName, presenting cert if given.
func (f *teFixture) client(serverName string, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: f.clientRoots, ServerName: serverName}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// teServer is a minimal gnet server driving an Engine as the gateway does.
//
// Protocol, one command per line: "verdict" → the verdict kind; "site" →
// site name and SNI; "echo X" → X; "big N" → N bytes of teStream from an
// origin goroutine, then Close; "close" → Close.
type teServer struct {
	gnet.BuiltinEventEngine
	eng     *Engine
	addr    string // host:port
	oneByte bool   // Feed one byte at a time
	booted  chan struct{}
	gn      gnet.Engine
	errc    chan error
}

type teConnState struct {
	tc   *Conn
	line []byte
	buf  [8192]byte
}

func (s *teServer) OnBoot(e gnet.Engine) gnet.Action {
	s.gn = e
	close(s.booted)
	return gnet.None
}

func (s *teServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	tc, err := s.eng.Open(c)
	if err != nil {
		return nil, gnet.Close // ErrShed: refuse at once
	}
	c.SetContext(&teConnState{tc: tc})
	return nil, gnet.None
}

func (s *teServer) OnTraffic(c gnet.Conn) gnet.Action {
	st, _ := c.Context().(*teConnState)
	if st == nil {
		return gnet.Close
	}
	data, _ := c.Next(-1)
	if s.oneByte {
		for i := range data {
			if st.tc.Feed(data[i:i+1]) != nil {
				return gnet.None
			}
			st.readAll()
		}
	} else if st.tc.Feed(data) != nil {
		return gnet.None // the engine closes after flushing
	}
	st.readAll()
	return gnet.None
}

// readAll decrypts everything buffered and runs complete command lines.
func (st *teConnState) readAll() {
	for {
		n, err := st.tc.Read(st.buf[:])
		st.line = append(st.line, st.buf[:n]...)
		if err != nil {
			break
		}
	}
	for {
		i := strings.IndexByte(string(st.line), '\n')
		if i < 0 {
			return
		}
		cmd := string(st.line[:i])
		st.line = st.line[i+1:]
		st.run(cmd)
	}
}

func (st *teConnState) run(cmd string) {
	tc := st.tc
	verb, arg, _ := strings.Cut(cmd, " ")
	switch verb {
	case "verdict":
		_, _ = tc.Write([]byte(tc.Verdict().Kind.String() + "\n"))
	case "site":
		_, _ = tc.Write([]byte(tc.Site().Name + " " + tc.ServerName() + "\n"))
	case "echo":
		_, _ = tc.Write([]byte(arg + "\n"))
	case "big":
		n, _ := strconv.Atoi(arg)
		go func() { // an origin goroutine
			r := teStream()
			buf := make([]byte, 64<<10)
			for n > 0 {
				k := min(n, len(buf))
				_, _ = r.Read(buf[:k])
				if _, err := tc.Write(buf[:k]); err != nil {
					return
				}
				n -= k
			}
			_ = tc.Close()
		}()
	case "close":
		_ = tc.Close()
	}
}

func (s *teServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	if st, _ := c.Context().(*teConnState); st != nil {
		st.tc.Release()
	}
	return gnet.None
}

// teStream is the deterministic byte stream of "big".
func teStream() *rand.ChaCha8 {
	return rand.NewChaCha8([32]byte{'f', 'l', 'e', 'e', 't'})
}

// teGnetLogger keeps gnet quiet except for errors.
type teGnetLogger struct{}

func (teGnetLogger) Debugf(string, ...any) {}
func (teGnetLogger) Infof(string, ...any)  {}
func (teGnetLogger) Warnf(string, ...any)  {}
func (teGnetLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gnet: "+format+"\n", args...)
}
func (teGnetLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gnet: "+format+"\n", args...)
}

// startServer runs a gnet server on a free loopback port with an engine
// built from cfg; it stops at the end of the test.
func startServer(tb testing.TB, cfg Config, oneByte bool) *teServer {
	tb.Helper()
	eng, err := NewEngine(cfg)
	if err != nil {
		tb.Fatalf("NewEngine: %v", err)
	}
	return startServerEngine(tb, eng, oneByte)
}

// startServerEngine is startServer with an engine the test built (and may
// have adjusted before any connection uses it).
func startServerEngine(tb testing.TB, eng *Engine, oneByte bool) *teServer {
	tb.Helper()
	addr := testkit.FreePort(tb)
	s := &teServer{eng: eng, addr: addr, oneByte: oneByte, booted: make(chan struct{}), errc: make(chan error, 1)}
	go func() {
		s.errc <- gnet.Run(s, "tcp://"+addr,
			gnet.WithMulticore(true), gnet.WithReusePort(true), gnet.WithLogger(teGnetLogger{}))
	}()
	select {
	case <-s.booted:
	case err := <-s.errc:
		tb.Fatalf("gnet.Run: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatal("gnet server did not boot")
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.gn.Stop(ctx); err != nil {
			tb.Errorf("gnet stop: %v", err)
		}
		<-s.errc
	})
	return s
}

// dial opens a TLS connection and completes the handshake within 30s.
func (s *teServer) dial(tb testing.TB, conf *tls.Config) (*tls.Conn, error) {
	tb.Helper()
	return s.dialWithin(tb, conf, 30*time.Second)
}

// dialWithin is dial with the connect and the handshake each bounded by d
// instead (a burst of connects overflows the listen backlog, and the SYN
// retries back off for seconds).
func (s *teServer) dialWithin(tb testing.TB, conf *tls.Config, d time.Duration) (*tls.Conn, error) {
	tb.Helper()
	raw, err := net.DialTimeout("tcp", s.addr, d)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, conf)
	_ = c.SetDeadline(time.Now().Add(d))
	if err := c.Handshake(); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// ask sends one command line and returns the one-line answer.
func ask(tb testing.TB, c net.Conn, cmd string) string {
	tb.Helper()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		tb.Fatalf("write %q: %v", cmd, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		tb.Fatalf("read answer to %q: %v", cmd, err)
	}
	return strings.TrimSuffix(line, "\n")
}

// counted waits until the engine has counted at least n handshakes for reason.
func counted(tb testing.TB, e *Engine, reason string, n uint64) {
	tb.Helper()
	testkit.WaitFor(tb, fmt.Sprintf("%d %q handshakes", n, reason), 20*time.Second, func() bool {
		return e.Stats().Handshakes[reason] >= n
	})
}

// settleGoroutines waits until the goroutine count is back to at most base.
func settleGoroutines(tb testing.TB, base int) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			tb.Fatalf("goroutines: %d > %d at start\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// captureClientHello returns the first record a tls client with conf sends.
func captureClientHello(tb testing.TB, conf *tls.Config) []byte {
	tb.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_ = tls.Client(b, conf).Handshake()
		_ = b.Close()
	}()
	hdr := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(a, hdr); err != nil {
		tb.Fatalf("capture ClientHello: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(a, body); err != nil {
		tb.Fatalf("capture ClientHello: %v", err)
	}
	return append(hdr, body...)
}

// rawExchange writes each chunk to a plain TCP connection to addr and returns
// everything the server sent until it closed, and how long that took.
func rawExchange(tb testing.TB, addr string, chunks ...[]byte) ([]byte, time.Duration) {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	defer c.Close()
	start := time.Now()
	for _, ch := range chunks {
		if _, err := c.Write(ch); err != nil {
			break // the server may already have closed
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("server did not close the connection (got %x)", got)
	}
	return got, time.Since(start)
}

// teVerifierFunc adapts a function to ChainVerifier.
type teVerifierFunc func(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict

func (f teVerifierFunc) Verdict(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict {
	return f(site, chain, now)
}

// teObserver records handshake events.
type teObserver struct {
	mu     sync.Mutex
	events []HandshakeEvent
}

func (o *teObserver) Handshake(ev HandshakeEvent) {
	o.mu.Lock()
	o.events = append(o.events, ev)
	o.mu.Unlock()
}

func (o *teObserver) all() []HandshakeEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]HandshakeEvent(nil), o.events...)
}
