package tlsengine

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

func TestNewEngineValidates(t *testing.T) {
	f := fixture(t)
	good := f.config(t)
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no sites", func(c *Config) { c.Sites = nil }, false},
		{"no verifier", func(c *Config) { c.Verifier = nil }, false},
		{"negative workers", func(c *Config) { c.Workers = -1 }, false},
		{"negative timeout", func(c *Config) { c.HandshakeTimeout = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			e, err := NewEngine(cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("NewEngine err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "tlsengine: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if e != nil {
				st := e.Stats()
				if st.Workers != runtime.GOMAXPROCS(0) || st.Queue != DefaultQueue || len(st.Handshakes) != int(numReasons) {
					t.Errorf("defaults: %+v", st)
				}
			}
		})
	}
}

// TestHandshakeVersionsAndGroups: TLS 1.2 and 1.3 with X25519, P-256 and
// Go's default groups (X25519MLKEM768 on TLS 1.3), a valid device each time.
func TestHandshakeVersionsAndGroups(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	tests := []struct {
		name      string
		version   uint16
		curves    []tls.CurveID
		wantCurve tls.CurveID
	}{
		{"tls12 x25519", tls.VersionTLS12, []tls.CurveID{tls.X25519}, tls.X25519},
		{"tls12 p256", tls.VersionTLS12, []tls.CurveID{tls.CurveP256}, tls.CurveP256},
		{"tls13 x25519", tls.VersionTLS13, []tls.CurveID{tls.X25519}, tls.X25519},
		{"tls13 p256", tls.VersionTLS13, []tls.CurveID{tls.CurveP256}, tls.CurveP256},
		{"tls13 default groups", tls.VersionTLS13, nil, tls.X25519MLKEM768},
		{"tls12 default groups", tls.VersionTLS12, nil, tls.X25519},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := f.client(teDevices, &f.deviceTLS)
			conf.MinVersion, conf.MaxVersion, conf.CurvePreferences = tt.version, tt.version, tt.curves
			c, err := s.dial(t, conf)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			st := c.ConnectionState()
			if st.Version != tt.version || st.CurveID != tt.wantCurve {
				t.Errorf("negotiated version %x curve %v, want %x %v", st.Version, st.CurveID, tt.version, tt.wantCurve)
			}
			if got := ask(t, c, "verdict"); got != "valid" {
				t.Errorf("verdict = %q, want valid", got)
			}
			if got := ask(t, c, "echo hello "+tt.name); got != "hello "+tt.name {
				t.Errorf("echo = %q", got)
			}
		})
	}
}

// TestTLS12SuitesAreECDHEAEAD: a TLS 1.2 client offering only a non-ECDHE or
// non-AEAD suite is refused.
func TestTLS12SuitesAreECDHEAEAD(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	for _, suite := range []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA} {
		conf := f.client(teDevices, nil)
		conf.MaxVersion, conf.CipherSuites = tls.VersionTLS12, []uint16{suite}
		if c, err := s.dial(t, conf); err == nil {
			c.Close()
			t.Errorf("suite %s accepted", tls.CipherSuiteName(suite))
		}
	}
	conf := f.client(teDevices, nil)
	conf.MaxVersion = tls.VersionTLS11
	conf.MinVersion = tls.VersionTLS10
	if c, err := s.dial(t, conf); err == nil {
		c.Close()
		t.Error("TLS 1.1 accepted")
	}
}

// TestLargeResponseSlowReader: 16 MiB written from an origin goroutine and
// closed at once arrives intact at a client that reads slowly: Close waits
// for gnet's outbound buffer to drain before closing.
func TestLargeResponseSlowReader(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	const size = 16 << 20
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.(*net.TCPConn).SetReadBuffer(32 << 10)
	c := tls.Client(raw, f.client(teDevices, &f.deviceTLS))
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c, "big 16777216\n"); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 16<<10)
	var total int
	for i := 0; ; i++ {
		n, err := c.Read(buf)
		h.Write(buf[:n])
		total += n
		if err == io.EOF {
			break // close_notify: a clean end
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
		if i%64 == 0 {
			time.Sleep(2 * time.Millisecond) // a slow reader
		}
	}
	want := sha256.New()
	_, _ = io.CopyN(want, teStream(), size)
	if total != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatalf("got %d bytes (sha256 match %v), want %d", total, bytes.Equal(h.Sum(nil), want.Sum(nil)), size)
	}
}

// TestVerdictsEndToEnd: the verdict travels with the connection; the
// handshake completes whatever the certificate.
func TestVerdictsEndToEnd(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	tests := []struct {
		name string
		sni  string
		cert *tls.Certificate
		want string
	}{
		{"no certificate", teDevices, nil, "missing"},
		{"valid device", teDevices, &f.deviceTLS, "valid"},
		{"other CA", teDevices, &f.otherDeviceTLS, "unknown_authority"},
		{"site without CA requests none", teOpen, &f.deviceTLS, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.dial(t, f.client(tt.sni, tt.cert))
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			if got := ask(t, c, "verdict"); got != tt.want {
				t.Errorf("verdict = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRejectInvalidSite: a RejectInvalid site fails the handshake with an
// alert instead of passing a bad verdict on.
func TestRejectInvalidSite(t *testing.T) {
	f := fixture(t)
	obs := &teObserver{}
	cfg := f.config(t)
	cfg.Observer = obs
	s := startServer(t, cfg, false)
	tests := []struct {
		name    string
		version uint16
		cert    *tls.Certificate
		wantErr string // "" = success
	}{
		{"valid device", tls.VersionTLS13, &f.deviceTLS, ""},
		{"valid device tls12", tls.VersionTLS12, &f.deviceTLS, ""},
		{"other CA", tls.VersionTLS13, &f.otherDeviceTLS, "bad certificate"},
		{"other CA tls12", tls.VersionTLS12, &f.otherDeviceTLS, "bad certificate"},
		{"no certificate", tls.VersionTLS13, nil, "certificate required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := f.client(teStrict, tt.cert)
			conf.MaxVersion = tt.version
			c, err := s.dial(t, conf)
			if err == nil {
				// A TLS 1.3 client learns of a refusal on its first read.
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.WriteString(c, "verdict\n")
				var line string
				line, err = bufio.NewReader(c).ReadString('\n')
				c.Close()
				if tt.wantErr == "" {
					if err != nil || line != "valid\n" {
						t.Errorf("verdict %q, %v; want valid", line, err)
					}
					return
				}
			}
			if tt.wantErr == "" {
				t.Fatalf("handshake: %v", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	// A device with no certificate is refused by reject_invalid_cert too:
	// counted bad_certificate with the verdict missing (if crypto/tls ever
	// words its error otherwise, this count is where it shows).
	counted(t, s.eng, ReasonBadCertificate, 3)
	// The verdict of a valid device on the strict site is computed once, in
	// VerifyConnection, and is the connection's verdict.
	c, err := s.dial(t, f.client(teStrict, &f.deviceTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := ask(t, c, "verdict"); got != "valid" {
		t.Errorf("strict site verdict = %q", got)
	}
	for _, ev := range obs.all() {
		if ev.Reason == ReasonBadCertificate && (ev.Verdict == nil ||
			ev.Verdict.Kind != verdict.UnknownAuthority && ev.Verdict.Kind != verdict.Missing) {
			t.Errorf("bad_certificate event verdict = %v, want unknown_authority or missing", ev.Verdict)
		}
	}
}

// TestSNI: exact and wildcard names, no SNI with and without a default site,
// and unknown names, which get the alert unrecognized_name (never another
// site's certificate).
func TestSNI(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	tests := []struct {
		name     string
		sni      string
		verify   string // the name the client checks the certificate against
		sites    *Sites
		wantSite string // "" = refused with unrecognized_name
	}{
		{"exact", teDevices, "", f.sites(t, teDevices), teDevices},
		{"exact upper case", "DEVICES.fleet.test", "", f.sites(t, teDevices), teDevices},
		{"wildcard", "gw1.wild.test", "", f.sites(t, teDevices), teWild},
		{"wildcard covers one label only", "a.b.wild.test", "", f.sites(t, teDevices), ""},
		{"unknown name", "nope.fleet.test", "", f.sites(t, teDevices), ""},
		{"no SNI with default", "", teDevices, f.sites(t, teDevices), teDevices},
		{"no SNI without default", "", teDevices, f.sites(t, ""), ""},
		{"unknown name without default", "nope.fleet.test", "", f.sites(t, ""), ""},
	}
	refused := uint64(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.eng.SetSites(tt.sites)
			conf := f.client(tt.sni, nil)
			if tt.sni == "" || tt.wantSite == "" {
				// Go's client sends no SNI for "" (and for IP addresses);
				// verify the certificate against the expected name instead.
				conf.InsecureSkipVerify = true
				conf.VerifyConnection = func(cs tls.ConnectionState) error {
					inter := x509.NewCertPool()
					for _, c := range cs.PeerCertificates[1:] {
						inter.AddCert(c)
					}
					_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
						Roots: f.clientRoots, Intermediates: inter, DNSName: tt.verify,
					})
					return err
				}
			}
			c, err := s.dial(t, conf)
			if tt.wantSite == "" {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded, want unrecognized_name")
				}
				if !strings.Contains(err.Error(), "unrecognized name") {
					t.Fatalf("err = %v, want alert unrecognized_name", err)
				}
				refused++
				counted(t, s.eng, ReasonUnknownSNI, refused)
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			if got, want := ask(t, c, "site"), tt.wantSite+" "+tt.sni; got != want {
				t.Errorf("site = %q, want %q", got, want)
			}
		})
	}
}

// TestHandshakeTimeout: half a ClientHello, then silence: the engine's own
// timer closes the connection; the stalled handshake held no CPU slot.
func TestHandshakeTimeout(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	cfg.HandshakeTimeout = 300 * time.Millisecond
	s := startServer(t, cfg, false)
	hello := captureClientHello(t, f.client(teDevices, nil))
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write(hello[:len(hello)/2]); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the handshake in flight", 5*time.Second, func() bool { return s.eng.Stats().InFlight == 1 })
	if st := s.eng.Stats(); st.CPUBusy != 0 {
		t.Errorf("a stalled handshake holds %d CPU slots", st.CPUBusy)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	elapsed := time.Since(start)
	if err != nil || len(got) != 0 {
		t.Fatalf("read %x, %v; want a plain close", got, err)
	}
	if elapsed < 250*time.Millisecond || elapsed > 10*time.Second {
		t.Errorf("closed after %v, want about 300ms", elapsed)
	}
	counted(t, s.eng, ReasonTimeout, 1)
	testkit.WaitFor(t, "no handshake in flight", 5*time.Second, func() bool { return s.eng.Stats().InFlight == 0 })
}

// TestQueueFullSheds: with the queue full, a new connection is refused at
// once (counted "shed") instead of waiting.
func TestQueueFullSheds(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	cfg.Queue = 3
	cfg.HandshakeTimeout = time.Minute
	s := startServer(t, cfg, false)
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	testkit.WaitFor(t, "3 handshakes in flight", 10*time.Second, func() bool { return s.eng.Stats().InFlight == 3 })
	got, elapsed := rawExchange(t, s.addr, captureClientHello(t, f.client(teDevices, nil)))
	if len(got) != 0 || elapsed > 5*time.Second {
		t.Errorf("shed connection got %x after %v, want an immediate close", got, elapsed)
	}
	counted(t, s.eng, ReasonShed, 1)
	for _, c := range held {
		c.Close()
	}
	testkit.WaitFor(t, "no handshake in flight", 10*time.Second, func() bool { return s.eng.Stats().InFlight == 0 })
	counted(t, s.eng, ReasonClosed, 3)
	// Room again: a device gets through.
	c, err := s.dial(t, f.client(teDevices, &f.deviceTLS))
	if err != nil {
		t.Fatalf("handshake after the queue drained: %v", err)
	}
	c.Close()
}

// TestStalledClientsDoNotStarve: 200 clients stalled halfway through their
// ClientHellos hold queue places but no CPU slot, so with a single CPU slot
// a ready device still completes its handshake promptly.
func TestStalledClientsDoNotStarve(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	cfg.Workers = 1
	cfg.HandshakeTimeout = time.Minute
	s := startServer(t, cfg, false)
	hello := captureClientHello(t, f.client(teDevices, nil))
	const stalled = 200
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range stalled {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(hello[:len(hello)/2]); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "200 stalled handshakes in flight", 20*time.Second, func() bool { return s.eng.Stats().InFlight == stalled })
	// In flight counts them from their accept; each then takes the one CPU
	// slot to read its half ClientHello, and must give it back once it
	// waits for the rest (a stalled handshake holding it would hold it
	// for the minute of its timeout).
	testkit.WaitFor(t, "the stalled handshakes to hold no CPU slot", 20*time.Second, func() bool { return s.eng.Stats().CPUBusy == 0 })
	start := time.Now()
	c, err := s.dial(t, f.client(teDevices, &f.deviceTLS))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	elapsed := time.Since(start)
	defer c.Close()
	if got := ask(t, c, "verdict"); got != "valid" {
		t.Errorf("verdict = %q", got)
	}
	// Generous for -race on busy shared cores; a starved handshake would
	// wait the full minute of the stalled ones' timeout.
	if elapsed > 5*time.Second {
		t.Errorf("handshake took %v behind stalled clients", elapsed)
	}
	t.Logf("handshake behind %d stalled clients: %v", stalled, elapsed)
}

// TestManyConcurrentHandshakes: 1,000 devices at once (200 with -short) all
// complete, and no goroutine is left behind afterwards.
func TestManyConcurrentHandshakes(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	f := fixture(t)
	cfg := f.config(t)
	cfg.HandshakeTimeout = 2 * time.Minute
	s := startServer(t, cfg, false)
	// Warm up lazily started runtime and gnet goroutines before counting.
	// (A full exchange: a TLS 1.3 client that hangs up right after its
	// Finished may be counted "closed" rather than "ok".)
	if c, err := s.dial(t, f.client(teDevices, &f.deviceTLS)); err == nil {
		ask(t, c, "verdict")
		c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conf := f.client(teDevices, &f.deviceTLS)
			if i%2 == 1 {
				conf.MaxVersion = tls.VersionTLS12
			}
			// The whole batch is one burst of CPU work: whatever the order in
			// which the CPU slots serve it, the last handshake ends only
			// when the burst does, so its client waits about as long as the
			// whole test (over 30s with -race on two busy cores). The bound
			// is the server's HandshakeTimeout, not dial's 30s.
			c, err := s.dialWithin(t, conf, cfg.HandshakeTimeout)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			if _, err := io.WriteString(c, "verdict\n"); err != nil {
				errs <- err
				return
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "valid\n" {
				errs <- errors.Join(err, errors.New("verdict "+line))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d concurrent handshakes in %v", n, time.Since(start))
	counted(t, s.eng, ReasonOK, uint64(n+1))
	testkit.WaitFor(t, "no handshake in flight", 20*time.Second, func() bool { return s.eng.Stats().InFlight == 0 })
	settleGoroutines(t, base)
}

// TestSessionTicketsOptIn: tickets (and resumption) only on a site that
// enables them; a resumed session still gets a verdict.
func TestSessionTicketsOptIn(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	for _, site := range []string{teDevices, teTickets} {
		conf := f.client(site, &f.deviceTLS)
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		for i := range 2 {
			c, err := s.dial(t, conf)
			if err != nil {
				t.Fatal(err)
			}
			if got := ask(t, c, "verdict"); got != "valid" { // reading also takes in the ticket
				t.Errorf("%s #%d: verdict = %q", site, i, got)
			}
			resumed := c.ConnectionState().DidResume
			c.Close()
			if want := site == teTickets && i == 1; resumed != want {
				t.Errorf("%s #%d: resumed = %v, want %v", site, i, resumed, want)
			}
		}
	}
}

// exampleHandler is the whole of what a gnet event handler does with the
// engine.
type exampleHandler struct {
	gnet.BuiltinEventEngine
	eng *Engine
	buf [16 << 10]byte
}

func (h *exampleHandler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	tc, err := h.eng.Open(c)
	if err != nil {
		return nil, gnet.Close // ErrShed: refused at once
	}
	c.SetContext(tc)
	return nil, gnet.None
}

func (h *exampleHandler) OnTraffic(c gnet.Conn) gnet.Action {
	tc := c.Context().(*Conn)
	data, _ := c.Next(-1)
	if tc.Feed(data) != nil {
		return gnet.None // the engine is closing it, after flushing
	}
	for {
		n, err := tc.Read(h.buf[:]) // ErrWouldBlock: nothing more for now
		_ = h.buf[:n]               // plaintext: parse the request, answer with tc.Write
		if errors.Is(err, io.EOF) {
			_ = tc.Close() // the device is done sending: once answered, close
		}
		if err != nil {
			return gnet.None
		}
	}
}

func (h *exampleHandler) OnClose(c gnet.Conn, _ error) gnet.Action {
	if tc, ok := c.Context().(*Conn); ok {
		tc.Release()
	}
	return gnet.None
}

// Example wires an Engine into a gnet server.
func Example() {
	root := pki.MustRoot(pki.Root("Fleet Root"))
	inter := root.MustIssue(pki.Intermediate("Fleet Intermediate"))
	server := inter.MustIssue(pki.Server("devices.fleet.test"))
	sites, err := NewSites([]*Site{{
		Name:         "devices.fleet.test",
		Certificates: []tls.Certificate{server.TLSCertificate(inter)},
		Roots:        pki.Pool(root),
	}}, "")
	if err != nil {
		panic(err)
	}
	eng, err := NewEngine(Config{Sites: sites, Verifier: NewVerdictCache(0)})
	if err != nil {
		panic(err)
	}
	_ = gnet.Run(&exampleHandler{eng: eng}, "tcp://:8443", gnet.WithMulticore(true))
}
