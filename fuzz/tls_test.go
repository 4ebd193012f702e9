package fuzz

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/tlsengine"
)

// FuzzTLSPreHandshake feeds arbitrary bytes into a fresh engine connection,
// in chunks: cuts gives the chunk lengths in turn (a 0 byte means 1; empty
// cuts feeds everything at once). It checks what harness.finish checks: no
// panic, no hang, one handshake event, InFlight back to 0, no goroutine or
// heap growth, only whole well-formed records written and at most 64 KiB of
// them, and never the server certificate for an unknown name.
func FuzzTLSPreHandshake(f *testing.F) {
	// Static seeds: testdata/fuzz/FuzzTLSPreHandshake (see corpus_test.go).
	for _, s := range helloSeeds(f) {
		f.Add(s.hello, []byte{})
		f.Add(append(bytes.Clone(s.hello), s.hello...), []byte{byte(len(s.hello) / 2)})
		f.Add(fragmentRecords(s.hello, 1), []byte{})
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		countExec("FuzzTLSPreHandshake")
		h := getHarness(t)
		s := h.open(t)
		s.feedRaw(t, chunk(data, cuts))
		s.finish(t, finishOpts{maxOut: maxPreHandshake})
	})
}

// FuzzClientHello mutates real ClientHellos captured from crypto/tls clients
// (TLS 1.2 and 1.3, with and without SNI, known and unknown names, ALPN,
// several groups), fed in two parts split at cut. Same checks as
// FuzzTLSPreHandshake; a name that no site serves must get
// unrecognized_name and no certificate.
func FuzzClientHello(f *testing.F) {
	for _, s := range helloSeeds(f) {
		f.Add(s.hello, uint16(0))
		f.Add(s.hello, uint16(5))
	}
	f.Fuzz(func(t *testing.T, hello []byte, cut uint16) {
		countExec("FuzzClientHello")
		h := getHarness(t)
		s := h.open(t)
		var chunks [][]byte
		if c := int(cut); c > 0 && c < len(hello) {
			chunks = [][]byte{hello[:c], hello[c:]}
		} else {
			chunks = [][]byte{hello}
		}
		s.feedRaw(t, chunks)
		s.finish(t, finishOpts{maxOut: maxPreHandshake})
	})
}

// FuzzTLSPostHandshake completes a real handshake with a crypto/tls client
// over the fake transport, then runs script, a sequence of operations (see
// postOp) that mostly feeds arbitrary bytes into the connection as if they
// were records, between encrypted writes from the client and writes and
// closes from the gateway's side. mode selects the site, the TLS version,
// the client certificate, echo and a slow-draining socket (see postMode).
//
// Beyond harness.finish's checks: the verdict is the one the presented
// certificate deserves; the plaintext the engine decrypts is always a
// prefix of what the client encrypted (injected bytes never decrypt); what
// the client receives is a prefix of what the gateway wrote.
func FuzzTLSPostHandshake(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzTLSPostHandshake (postHandshakeSeeds).
	f.Fuzz(func(t *testing.T, mode byte, script []byte) {
		countExec("FuzzTLSPostHandshake")
		runPostHandshake(t, postMode(mode), script)
	})
}

// chunk splits data by the lengths in cuts, cycling through them.
func chunk(data, cuts []byte) [][]byte {
	if len(cuts) == 0 {
		return [][]byte{data}
	}
	var out [][]byte
	for i := 0; len(data) > 0; i++ {
		n := max(int(cuts[i%len(cuts)]), 1)
		n = min(n, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// fragmentRecords re-frames the handshake bytes of TLS records into records
// of at most n bytes of payload each (legal, and a classic parser trap).
func fragmentRecords(in []byte, n int) []byte {
	var out []byte
	for len(in) >= 5 {
		typ, ver := in[0], in[1:3]
		l := min(int(in[3])<<8|int(in[4]), len(in)-5)
		body := in[5 : 5+l]
		in = in[5+l:]
		for len(body) > 0 {
			k := min(n, len(body))
			out = append(out, typ, ver[0], ver[1], byte(k>>8), byte(k))
			out = append(out, body[:k]...)
			body = body[k:]
		}
	}
	return append(out, in...)
}

// postMode decodes FuzzTLSPostHandshake's mode byte.
type postMode byte

// postSites are the SNI values mode's low three bits choose from.
var postSites = [...]string{siteDevices, siteOpen, siteStrict, "device-7.wild.test", siteTickets}

func (m postMode) serverName() string { return postSites[int(m&7)%len(postSites)] }
func (m postMode) tls12() bool        { return m&8 != 0 }

// cert is 0: the fleet device, 1: none, 2: a device of another CA, 3: the
// fleet's RSA device.
func (m postMode) cert() int    { return int(m>>4) & 3 }
func (m postMode) echo() bool   { return m&64 != 0 }
func (m postMode) backlog() int { return int(m>>7) * 3 }

// Script operations: [op, len, data...]; a short tail takes what is left.
const (
	opRaw         = iota // feed data as is
	opClientWrite        // the client encrypts data as application data
	opCloseNotify        // the client sends close_notify (CloseWrite)
	opServerWrite        // the gateway writes data (from its own goroutine)
	opServerClose        // the gateway closes the connection
	opRecord             // feed data[1:] framed as one record of type 20+data[0]%5
	opServerBulk         // the gateway writes data[0]%64 KiB
	numOps
)

// runPostHandshake is FuzzTLSPostHandshake's body.
func runPostHandshake(t *testing.T, m postMode, script []byte) {
	h := getHarness(t)
	f := h.f
	s := h.open(t)
	s.t.Echo = m.echo()
	s.t.SetBacklog(m.backlog())

	roots := x509.NewCertPool()
	roots.AddCert(f.root.Cert)
	conf := &tls.Config{RootCAs: roots, ServerName: m.serverName(), MinVersion: tls.VersionTLS12}
	if m.tls12() {
		conf.MaxVersion = tls.VersionTLS12
	}
	var presented []byte
	switch m.cert() {
	case 0:
		c := f.device.TLSCertificate(f.inter)
		conf.Certificates, presented = []tls.Certificate{c}, f.device.DER
	case 2:
		c := f.otherDevice.TLSCertificate(f.otherInter)
		conf.Certificates, presented = []tls.Certificate{c}, f.otherDevice.DER
	case 3:
		c := f.rsaDevice.TLSCertificate(f.inter)
		conf.Certificates, presented = []tls.Certificate{c}, f.rsaDevice.DER
	}
	client := tls.Client(s.t.Client(), conf)
	hsErr := make(chan error, 1)
	go func() { hsErr <- client.Handshake() }()
	select {
	case err := <-hsErr:
		_ = err // a refused handshake (strict site) is a legitimate outcome
	case <-time.After(hangTimeout):
		s.fail(t, "hang: client handshake over the engine did not finish in %s", hangTimeout)
	}
	// The engine finishes after the client (TLS 1.3: it still has to read
	// the client's Finished and judge the chain).
	if !testkit.Spin(hangTimeout, func() bool { _, done := s.ended(); return done }) {
		s.fail(t, "hang: server handshake did not finish in %s", hangTimeout)
	}
	if ev, _ := s.ended(); ev.Reason == tlsengine.ReasonOK {
		checkVerdict(t, s, m, presented)
	}

	// The device reads everything the gateway sends, until it closes.
	var (
		recvMu sync.Mutex
		recv   []byte
	)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 16<<10)
		for {
			n, err := client.Read(buf)
			recvMu.Lock()
			recv = append(recv, buf[:n]...)
			recvMu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	var sent []byte // what the client encrypted
	for len(script) > 0 {
		op := int(script[0]) % numOps
		var data []byte
		if len(script) >= 2 {
			n := min(int(script[1]), len(script)-2)
			data, script = script[2:2+n], script[2+n:]
		} else {
			script = nil
		}
		switch op {
		case opRaw:
			if !s.t.Deliver(data, hangTimeout) {
				s.fail(t, "event loop blocked in OnTraffic for %s", hangTimeout)
			}
		case opRecord:
			var rec []byte
			if len(data) > 0 {
				rec = append([]byte{20 + data[0]%5, 3, 3, byte((len(data) - 1) >> 8), byte(len(data) - 1)}, data[1:]...)
			} else {
				rec = []byte{23, 3, 3, 0, 0}
			}
			if !s.t.Deliver(rec, hangTimeout) {
				s.fail(t, "event loop blocked in OnTraffic for %s", hangTimeout)
			}
		case opClientWrite:
			n, _ := client.Write(data)
			sent = append(sent, data[:n]...)
		case opCloseNotify:
			_ = client.CloseWrite()
		case opServerWrite:
			_, _ = s.t.WriteConn(data)
		case opServerClose:
			_ = s.c.Close()
		case opServerBulk:
			k := 0
			if len(data) > 0 {
				k = int(data[0]) % 64
			}
			_, _ = s.t.WriteConn(bytes.Repeat([]byte("fleetgate-bulk-"), k<<10/15+1))
		}
		if !s.l.Sync(hangTimeout) {
			s.fail(t, "event loop blocked for %s", hangTimeout)
		}
	}

	written := len(s.t.Accepted())
	_, ev := s.finish(t, finishOpts{maxOut: maxPreHandshake + 2*written + 64<<10, mayComplete: true})
	_ = client.Close()
	select {
	case <-readerDone:
	case <-time.After(hangTimeout):
		t.Fatalf("hang: the client's reader did not see the connection close")
	}
	plain, srvWritten, readErr := s.t.Received(), s.t.Accepted(), s.t.ReadErr()
	if !bytes.HasPrefix(sent, plain) {
		t.Fatalf("the engine decrypted %q, which is not a prefix of what the client sent %q (reason %s, read error %v)", plain, sent, ev.Reason, readErr)
	}
	recvMu.Lock()
	defer recvMu.Unlock()
	if !bytes.HasPrefix(srvWritten, recv) {
		t.Fatalf("the client received %d bytes that are not a prefix of the %d the gateway wrote", len(recv), len(srvWritten))
	}
	if errors.Is(readErr, tlsengine.ErrWouldBlock) {
		t.Fatalf("ErrWouldBlock recorded as a read error")
	}
}

// checkVerdict: a completed handshake carries the verdict the presented
// certificate deserves, the SNI and site it asked for.
func checkVerdict(t *testing.T, s *session, m postMode, presented []byte) {
	t.Helper()
	c := s.c
	v := c.Verdict()
	site, _ := s.h.sites.Lookup(m.serverName())
	var want verdict.Kind
	switch {
	case site == nil || site.Roots == nil || presented == nil:
		want = verdict.Missing
	case bytes.Equal(presented, s.h.f.otherDevice.DER):
		want = verdict.UnknownAuthority
	default:
		want = verdict.Valid
	}
	switch {
	case v == nil:
		s.fail(t, "completed handshake without a verdict")
	case v.Kind != want:
		s.fail(t, "verdict %s (%s), want %s for SNI %q", v.Kind, v.Detail, want, m.serverName())
	case c.ServerName() != m.serverName():
		s.fail(t, "ServerName %q, client sent %q", c.ServerName(), m.serverName())
	case c.Site() != site:
		s.fail(t, "Site %s, want %s", siteName(c.Site()), siteName(site))
	case site.RejectInvalid && !v.OK():
		s.fail(t, "RejectInvalid site completed a handshake with verdict %s", v.Kind)
	}
}

// helloSeed is one captured ClientHello.
type helloSeed struct {
	name  string
	hello []byte
}

var (
	helloOnce  sync.Once
	helloCache []helloSeed
)

// helloSeeds captures ClientHellos from crypto/tls clients, once per process.
func helloSeeds(tb testing.TB) []helloSeed {
	tb.Helper()
	helloOnce.Do(func() {
		for _, c := range helloConfigs() {
			hello, err := captureClientHello(c.conf)
			if err != nil {
				tb.Fatalf("capture %s: %v", c.name, err)
			}
			helloCache = append(helloCache, helloSeed{c.name, hello})
		}
	})
	return helloCache
}

type helloConfig struct {
	name string
	conf *tls.Config
}

func helloConfigs() []helloConfig {
	cfg := func(name string, mod func(*tls.Config)) helloConfig {
		c := &tls.Config{ServerName: siteDevices, InsecureSkipVerify: true}
		mod(c)
		return helloConfig{name, c}
	}
	return []helloConfig{
		cfg("tls13-devices", func(*tls.Config) {}),
		cfg("tls12-devices", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }),
		cfg("tls13-no-sni", func(c *tls.Config) { c.ServerName = "" }),
		cfg("tls13-unknown-sni", func(c *tls.Config) { c.ServerName = "unknown.example" }),
		cfg("tls13-wildcard", func(c *tls.Config) { c.ServerName = "a.wild.test" }),
		cfg("tls13-two-labels-under-wildcard", func(c *tls.Config) { c.ServerName = "a.b.wild.test" }),
		cfg("tls13-strict", func(c *tls.Config) { c.ServerName = siteStrict }),
		cfg("tls13-tickets", func(c *tls.Config) { c.ServerName = siteTickets }),
		cfg("tls13-alpn", func(c *tls.Config) { c.NextProtos = []string{"h2", "http/1.1"} }),
		cfg("tls13-p256-only", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP256} }),
		cfg("tls12-rsa-suites-only", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
		}),
		cfg("tls12-cbc-only", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}),
		cfg("tls10-to-13", func(c *tls.Config) { c.MinVersion = tls.VersionTLS10 }),
		cfg("tls13-upper-case-sni", func(c *tls.Config) { c.ServerName = "DEVICES.Fleet.TEST" }),
	}
}

// captureClientHello returns the first flight a tls.Client sends with conf.
func captureClientHello(conf *tls.Config) ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_ = tls.Client(b, conf).Handshake()
		_ = b.Close()
	}()
	_ = a.SetReadDeadline(time.Now().Add(hangTimeout))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(a, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(a, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// rawSeed is a static input for the pre-handshake target.
type rawSeed struct {
	name       string
	data, cuts []byte
}

// preHandshakeSeeds are the nasty cases known without a client.
func preHandshakeSeeds() []rawSeed {
	rec := func(typ byte, ver uint16, body []byte) []byte {
		return append([]byte{typ, byte(ver >> 8), byte(ver), byte(len(body) >> 8), byte(len(body))}, body...)
	}
	sslv2 := []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
		0x07, 0x00, 0xc0, 0x05, 0x00, 0x80, 0x03, 0x00, 0x80, 0x01, 0x00, 0x80, 0x06, 0x00, 0x40, 0x04, 0x00, 0x80, 0x02, 0x00, 0x80,
		0x2c, 0x11, 0x3a, 0x1f, 0x48, 0x71, 0xa0, 0x3e, 0xe4, 0x2d, 0x7b, 0x5f, 0x90, 0x13, 0x6c, 0x88}
	return []rawSeed{
		{"empty", nil, nil},
		{"one-byte", []byte{0x16}, nil},
		{"plain-http", []byte("GET / HTTP/1.1\r\nHost: devices.fleet.test\r\n\r\n"), nil},
		{"sslv2-hello", sslv2, nil},
		{"oversized-record-header", append([]byte{22, 3, 1, 0xff, 0xff}, make([]byte, 64)...), nil},
		{"record-one-over-max", []byte{22, 3, 3, 0x48, 0x01}, nil},
		{"record-at-max-truncated", append([]byte{22, 3, 3, 0x48, 0x00}, make([]byte, 100)...), []byte{3, 7}},
		{"zero-length-handshake", rec(22, 0x0301, nil), nil},
		{"many-zero-length-handshakes", bytes.Repeat(rec(22, 0x0301, nil), 200), nil},
		{"zero-length-appdata", rec(23, 0x0303, nil), nil},
		{"warning-close-notify", rec(21, 0x0301, []byte{1, 0}), nil},
		{"fatal-handshake-failure", rec(21, 0x0303, []byte{2, 40}), nil},
		{"truncated-alert", rec(21, 0x0303, []byte{2}), nil},
		{"many-warning-alerts", bytes.Repeat(rec(21, 0x0303, []byte{1, 90}), 100), nil},
		{"ccs-first", rec(20, 0x0301, []byte{1}), nil},
		{"appdata-first", rec(23, 0x0303, []byte("hello")), nil},
		{"heartbeat", rec(24, 0x0303, []byte{1, 0x40, 0x00}), nil},
		{"record-type-25", rec(25, 0x0303, nil), nil},
		{"record-type-0", make([]byte, 16), nil},
		{"version-2.0", rec(22, 0x0200, []byte{1, 0, 0, 0}), nil},
		{"version-3.9", rec(22, 0x0309, []byte{1, 0, 0, 0}), nil},
		{"truncated-header", []byte{22, 3, 1, 0}, nil},
		{"clienthello-16MB-length", rec(22, 0x0301, []byte{1, 0xff, 0xff, 0xff}), nil},
		{"clienthello-empty-body", rec(22, 0x0301, []byte{1, 0, 0, 0}), nil},
		{"serverhello-from-client", rec(22, 0x0303, []byte{2, 0, 0, 0}), nil},
		{"finished-first", rec(22, 0x0303, []byte{20, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}), nil},
		{"handshake-split-across-types", append(rec(22, 0x0301, []byte{1, 0}), rec(21, 0x0301, []byte{1, 0})...), nil},
		{"one-byte-chunks", append([]byte{22, 3, 1, 0, 4}, 1, 0, 0, 0), []byte{1}},
	}
}

// postSeed is a static input for the post-handshake target.
type postSeed struct {
	name   string
	mode   byte
	script []byte
}

// postHandshakeSeeds are static: the handshake is made at run time, so the
// scripts only say what happens after it.
func postHandshakeSeeds() []postSeed {
	op := func(o int, data []byte) []byte { return append([]byte{byte(o), byte(len(data))}, data...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	req := []byte("GET / HTTP/1.1\r\nHost: devices.fleet.test\r\n\r\n")
	garbage := bytes.Repeat([]byte{0xa5}, 32)
	const (
		tls12   = 8
		noCert  = 1 << 4
		other   = 2 << 4
		rsaCert = 3 << 4
		echo    = 64
		backlog = 128
	)
	return []postSeed{
		{"request-echo", echo, op(opClientWrite, req)},
		{"request-echo-tls12", echo | tls12, op(opClientWrite, req)},
		{"garbage-appdata-record", echo, cat(op(opClientWrite, req), op(opRecord, append([]byte{3}, garbage...)))},
		{"garbage-raw", 0, op(opRaw, garbage)},
		{"plaintext-close-notify", 0, op(opRaw, []byte{21, 3, 3, 0, 2, 1, 0})},
		{"plaintext-fatal-alert-tls12", tls12, op(opRaw, []byte{21, 3, 3, 0, 2, 2, 40})},
		{"ccs-after-handshake", 0, op(opRaw, []byte{20, 3, 3, 0, 1, 1})},
		{"heartbeat-after-handshake", 0, op(opRaw, []byte{24, 3, 3, 0, 3, 1, 0x40, 0})},
		{"oversized-header-after-handshake", 0, op(opRaw, []byte{23, 3, 3, 0xff, 0xff})},
		{"zero-length-appdata", echo, op(opRaw, []byte{23, 3, 3, 0, 0})},
		{"truncated-record-then-data", echo, cat(op(opRaw, []byte{23, 3, 3, 0, 40, 1, 2}), op(opClientWrite, req))},
		{"renegotiation-hello-tls12", tls12, op(opRecord, []byte{2, 1, 0, 0, 0})},
		{"data-after-close-notify", echo, cat(op(opClientWrite, req), op(opCloseNotify, nil), op(opClientWrite, req))},
		{"server-write-then-close", 0, cat(op(opServerWrite, []byte("HTTP/1.1 200 OK\r\n\r\n")), op(opServerClose, nil), op(opClientWrite, req))},
		{"server-bulk-slow-drain", backlog, cat(op(opServerBulk, []byte{40}), op(opServerClose, nil))},
		{"server-bulk-tls12", tls12, op(opServerBulk, []byte{63})},
		{"strict-without-cert", 2 | noCert, op(opClientWrite, req)},
		{"strict-other-ca", 2 | other, op(opClientWrite, req)},
		{"strict-rsa-device", 2 | rsaCert | echo, op(opClientWrite, req)},
		{"open-site", 1 | echo, op(opClientWrite, req)},
		{"wildcard-other-ca", 3 | other, op(opClientWrite, req)},
		{"tickets-site", 4 | echo, cat(op(opClientWrite, req), op(opRaw, garbage))},
		{"interleaved", echo | backlog, cat(op(opClientWrite, req[:10]), op(opRaw, []byte{23, 3}), op(opClientWrite, req[10:]), op(opServerWrite, []byte("x")))},
	}
}
