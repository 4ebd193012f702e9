package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/proxyv2"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// originPKI is the origins' own CA, as an operator's brokers would have
// one apart from the fleet's: its PEM file is the applications'
// origin_ca_file.
type originPKI struct {
	root   *pki.Cert
	caFile string
}

func newOriginPKI(t testing.TB) *originPKI {
	t.Helper()
	p := &originPKI{root: pki.MustRoot(pki.Root("Origin Root"))}
	p.caFile = filepath.Join(t.TempDir(), "origin-ca.pem")
	if err := os.WriteFile(p.caFile, p.root.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsOriginSession is what a TLS origin saw of one connection.
type tlsOriginSession struct {
	header *proxyproto.Header // the PROXY header read before TLS (nil without)
	state  tls.ConnectionState
	err    error // the first error of the handshake or of the handler's reads
}

// startTLSRelayOrigin is a TLS origin on loopback with a certificate for hosts
// issued by root: it reads a PROXY header first when proxy is set, makes
// the handshake, reports each connection on the returned channel, then
// hands the TLS connection to handle. edits change its TLS configuration.
func startTLSRelayOrigin(t testing.TB, root *pki.Cert, hosts []string, proxy bool, handle func(*tls.Conn), edits ...func(*tls.Config)) (*tcpOrigin, chan tlsOriginSession) {
	t.Helper()
	cert := root.MustIssue(pki.Server(hosts...))
	conf := &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}}
	for _, e := range edits {
		e(conf)
	}
	sessions := make(chan tlsOriginSession, 16)
	o := startTCPOrigin(t, func(c net.Conn) {
		var s tlsOriginSession
		br := bufio.NewReader(c)
		if proxy {
			if s.header, s.err = proxyproto.Read(br); s.err != nil {
				sessions <- s
				return
			}
		}
		tc := tls.Server(&bufferedConn{Conn: c, r: br}, conf)
		s.err = tc.Handshake()
		s.state = tc.ConnectionState()
		sessions <- s
		if s.err == nil {
			handle(tc)
		}
	})
	return o, sessions
}

// bufferedConn reads through r (which may hold bytes already read from
// Conn), and notes the socket's end.
type bufferedConn struct {
	net.Conn
	r   *bufio.Reader
	eof bool
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

// errNoCloseNotify is how a TLS origin's read ends when the socket ended
// without a close_notify (crypto/tls reports both as io.EOF).
var errNoCloseNotify = errors.New("the socket ended without close_notify")

func tlsURL(o *tcpOrigin) string { return "tls://" + o.ln.Addr().String() }

// nextSession waits for the origin's next connection.
func nextSession(t testing.TB, sessions chan tlsOriginSession) tlsOriginSession {
	t.Helper()
	select {
	case s := <-sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the origin got no connection")
		return tlsOriginSession{}
	}
}

// tlsEchoHandler echoes until the gateway's side ends, and reports how its
// reading ended: io.EOF for a close_notify.
func tlsEchoHandler(ended chan<- error) func(*tls.Conn) {
	return func(c *tls.Conn) {
		_, err := io.Copy(c, c)
		if err == nil {
			err = io.EOF // io.Copy reports crypto/tls's io.EOF as no error
			if c.NetConn().(*bufferedConn).eof {
				// crypto/tls read the socket's end before any alert
				err = errNoCloseNotify
			}
		}
		ended <- err
		_ = c.Close()
	}
}

func TestTCPTLSOriginEcho(t *testing.T) {
	op := newOriginPKI(t)
	ended := make(chan error, 1)
	origin, sessions := startTLSRelayOrigin(t, op.root, []string{"127.0.0.1"}, true, tlsEchoHandler(ended))
	f := newTCPFixture(t, lifeApp("tcp-tls", "tls.tcp.test", tlsURL(origin), func(a *appSection) {
		a.OriginCAFile, a.ProxyProtocol, a.RelayBuffer = op.caFile, "v2", "64KiB"
	}))
	c, err := f.dialTCP(t, "tls.tcp.test", f.pki.sensor2)
	if err != nil {
		t.Fatal(err)
	}
	// Written at once: it must reach the origin inside TLS, after the
	// PROXY header (which goes before the handshake, in the clear).
	payload := make([]byte, 300<<10)
	_, _ = rand.Read(payload)
	echoEach(t, c, []byte("hello\n"), payload)
	s := nextSession(t, sessions)
	if s.err != nil {
		t.Fatalf("origin: %v", s.err)
	}
	if s.header == nil || s.header.Version != 2 {
		t.Fatalf("PROXY header %+v", s.header)
	}
	if src, _, ok := s.header.TCPAddrs(); !ok || src.String() != c.LocalAddr().String() {
		t.Errorf("PROXY source %v, want the device's %v", src, c.LocalAddr())
	}
	// The header precedes TLS, in the clear: the device's identity, but
	// no token.
	tlvs, err := s.header.TLVs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tlv := range tlvs {
		if tlv.Type == proxyv2.TypeToken {
			t.Error("a token in the PROXY header sent before TLS")
		}
	}
	if ssl, ok := tlvparse.FindSSL(tlvs); !ok {
		t.Error("no SSL TLV")
	} else if cn, _ := ssl.ClientCN(); cn != "sensor-0002" {
		t.Errorf("CN %q", cn)
	}
	if s.state.Version != tls.VersionTLS13 || s.state.ServerName != "" {
		t.Errorf("origin TLS: version %#x, SNI %q (none for an IP address)", s.state.Version, s.state.ServerName)
	}
	// The device's close_notify reaches the origin as the gateway's.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, io.EOF) {
			t.Errorf("the origin's read ended with %v, want the gateway's close_notify", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the origin's read did not end")
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("device read %v, want close_notify", err)
	}
	line := f.closeLine(t, "tcp-tls", closeDeviceClosed)
	if want := float64(len(payload) + 6); line["bytes_from_device"] != want || line["bytes_to_device"] != want {
		t.Errorf("bytes %v / %v, want %v (plaintext) each way", line["bytes_from_device"], line["bytes_to_device"], want)
	}
}

// TestTCPTLSOriginRefused: an origin whose certificate does not chain to
// origin_ca_file, or does not name the host dialed, or that never
// finishes its handshake, is down for the device: close_notify, the close
// line's reason origin_down with what failed, and no byte of the device's
// reaches it.
func TestTCPTLSOriginRefused(t *testing.T) {
	op := newOriginPKI(t)
	other := pki.MustRoot(pki.Root("Some Other Root"))
	reached := make(chan []byte, 4)
	keep := func(c *tls.Conn) {
		b, _ := io.ReadAll(c)
		reached <- b
	}
	untrusted, _ := startTLSRelayOrigin(t, other, []string{"127.0.0.1"}, false, keep)
	misnamed, _ := startTLSRelayOrigin(t, op.root, []string{"broker.internal"}, false, keep)
	silent := startTCPOrigin(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	app := func(name, origin string) func(*fileConfig) {
		return lifeApp(name, name+".tcp.test", origin, func(a *appSection) {
			a.OriginCAFile, a.OriginConnectTimeout = op.caFile, "500ms"
		})
	}
	f := newTCPFixture(t, app("tls-untrusted", tlsURL(untrusted)), app("tls-misnamed", tlsURL(misnamed)),
		app("tls-silent", tlsURL(silent)))
	for _, tc := range []struct{ app, detail string }{
		{"tls-untrusted", "certificate signed by unknown authority"},
		{"tls-misnamed", "127.0.0.1"},
		{"tls-silent", "no handshake within origin_connect_timeout"},
	} {
		c, err := f.dialTCP(t, tc.app+".tcp.test", f.pki.sensor1)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "secret reading")
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s: device read %v, want close_notify", tc.app, err)
		}
		line := f.closeLine(t, tc.app, closeOriginDown)
		detail, _ := line["detail"].(string)
		if !strings.HasPrefix(detail, "TLS handshake with the origin: ") || !strings.Contains(detail, tc.detail) {
			t.Errorf("%s: detail %q, want the handshake's failure (%s)", tc.app, detail, tc.detail)
		}
	}
	select {
	case b := <-reached:
		t.Errorf("an origin the gateway refused got %q", b)
	case <-time.After(100 * time.Millisecond):
	}
	if m := f.metrics(t); !strings.Contains(m, `fleetgate_tcp_closes_total{app="tls-silent",reason="origin_down"} 1`) {
		t.Error("origin_down not counted")
	}
}

// TestTCPTLSOriginSpeaksFirst: an origin that writes as soon as its
// handshake ends (a banner), then ends with close_notify. Under TLS 1.2 the
// banner follows the origin's Finished at once, so crypto/tls often reads
// it with the handshake: it then has no event of its own on the loop, and
// must still reach the device.
func TestTCPTLSOriginSpeaksFirst(t *testing.T) {
	op := newOriginPKI(t)
	banner := func(c *tls.Conn) {
		_, _ = io.WriteString(c, "220 ready\r\n")
		_ = c.Close()
	}
	origin12, _ := startTLSRelayOrigin(t, op.root, []string{"localhost"}, false, banner,
		func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
	origin13, _ := startTLSRelayOrigin(t, op.root, []string{"localhost"}, false, banner)
	app := func(name string, o *tcpOrigin) func(*fileConfig) {
		_, port, _ := net.SplitHostPort(o.ln.Addr().String())
		return lifeApp(name, name+".tcp.test", "tls://localhost:"+port, func(a *appSection) { a.OriginCAFile = op.caFile })
	}
	f := newTCPFixture(t, app("banner12", origin12), app("banner13", origin13))
	for _, name := range []string{"banner12", "banner13"} {
		for range 5 {
			c, err := f.dialTCP(t, name+".tcp.test", f.pki.sensor1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "220 ready\r\n" {
				t.Fatalf("%s: device read %q, %v; want the banner, then close_notify", name, got, err)
			}
		}
		f.closeLine(t, name, closeOriginClosed)
	}
}

// TestTCPTLSOriginResumes: the second connection to an origin resumes the
// TLS session of the first (its ticket came after the handshake, read on
// the event loop), as HAProxy reuses its sessions to a server, and so does
// a third after a reload.
func TestTCPTLSOriginResumes(t *testing.T) {
	op := newOriginPKI(t)
	ended := make(chan error, 4)
	origin, sessions := startTLSRelayOrigin(t, op.root, []string{"127.0.0.1"}, false, tlsEchoHandler(ended))
	f := newTCPFixture(t, lifeApp("tls-resume", "resume.tcp.test", tlsURL(origin), func(a *appSection) {
		a.OriginCAFile = op.caFile
	}))
	for i := range 3 {
		if i == 2 {
			// A reload that changes nothing of the origin keeps its sessions.
			if err := f.srv.Reload(); err != nil {
				t.Fatal(err)
			}
		}
		c := f.echoedOnceOn(t, "resume.tcp.test")
		s := nextSession(t, sessions)
		if s.err != nil {
			t.Fatal(s.err)
		}
		if s.state.DidResume != (i > 0) {
			t.Errorf("connection %d: resumed %v", i+1, s.state.DidResume)
		}
		_ = c.Close()
		<-ended
	}
	testkit.WaitFor(t, "both close lines", 10*time.Second, func() bool {
		return strings.Contains(f.metrics(t), `fleetgate_tcp_closes_total{app="tls-resume",reason="device_closed"} 3`)
	})
}

// TestMQTTMosquittoOverTLS: mosquitto (Debian) with a TLS listener that
// requires a client certificate, as the origin of an mqtt application: the
// gateway verifies the broker's certificate against origin_ca_file,
// presents origin_cert_file's, and relays mosquitto_pub's message to
// mosquitto_sub, both devices of the gateway. Skipped without mosquitto and
// mosquitto-clients.
func TestMQTTMosquittoOverTLS(t *testing.T) {
	broker, pub, sub := mosquittoTools(t)
	op := newOriginPKI(t)
	dir := t.TempDir()
	brokerCert := op.root.MustIssue(pki.Server("127.0.0.1"))
	certFile, keyFile := filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker-key.pem")
	if err := brokerCert.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	gwRoot := pki.MustRoot(pki.Root("Gateway Client Root"))
	gwCAFile := filepath.Join(dir, "gateway-ca.pem")
	if err := os.WriteFile(gwCAFile, gwRoot.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := writeGatewayClientCert(t, gwRoot, "fleetgate-gateway")
	// mosquitto runs as the current user, who can read the test's files.
	for _, p := range []string{certFile, keyFile} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	brokerAddr, brokerLog := startMosquitto(t, broker, fmt.Sprintf("user %s\ncertfile %s\nkeyfile %s\ncafile %s\nrequire_certificate true\n",
		me.Username, certFile, keyFile, gwCAFile))

	f := newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mosquitto", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{mosquittoDomain}})
		a := httpApp("mosquitto-tls", mosquittoDomain, "tls://"+brokerAddr, admit("fleet", anyFleetDevice))
		a.Protocol, a.MQTTClientID, a.OriginCAFile = "mqtt", "common_name", op.caFile
		a.OriginCertFile, a.OriginKeyFile = gw.cert, gw.key
		c.Applications = append(c.Applications, a)
	})
	run := mosquittoClients(t, f)
	// Retained, so that the subscriber started afterwards gets it.
	if out, err := run(pub, f.pki.sensor1, "-V", "mqttv5", "-i", "sensor-0001", "-q", "1", "-r", "-t", "devices/sensor-0001/t", "-m", "21.5"); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	out, _ := run(sub, f.pki.sensor2, "-V", "mqttv5", "-i", "sensor-0002", "-t", "devices/#", "-v", "-C", "1", "-W", "5")
	if !strings.Contains(out, "devices/sensor-0001/t 21.5") {
		t.Errorf("mosquitto_sub did not receive the message:\n%s", out)
	}
	if log := brokerLog.String(); !strings.Contains(log, "as sensor-0001") || !strings.Contains(log, "as sensor-0002") {
		t.Errorf("the broker did not log both devices' connections:\n%s", log)
	}
}

// TestTCPTLSOriginClientCertificate: an origin that requires a client
// certificate gets origin_cert_file's. Without one, its refusal comes after
// the gateway's side of a TLS 1.3 handshake ended, as an alert on the
// relayed connection: the device's side then ends, and the close line says
// why.
func TestTCPTLSOriginClientCertificate(t *testing.T) {
	op := newOriginPKI(t)
	gwRoot := pki.MustRoot(pki.Root("Gateway Client Root"))
	gw := writeGatewayClientCert(t, gwRoot, "fleetgate-gateway")
	ended := make(chan error, 4)
	origin, sessions := startTLSRelayOrigin(t, op.root, []string{"127.0.0.1"}, false, tlsEchoHandler(ended), func(c *tls.Config) {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pki.Pool(gwRoot)
	})
	f := newTCPFixture(t,
		lifeApp("tls-client", "client.tcp.test", tlsURL(origin), func(a *appSection) {
			a.OriginCAFile, a.OriginCertFile, a.OriginKeyFile = op.caFile, gw.cert, gw.key
		}),
		lifeApp("tls-anon", "anon.tcp.test", tlsURL(origin), func(a *appSection) { a.OriginCAFile = op.caFile }))

	f.echoedOnceOn(t, "client.tcp.test")
	s := nextSession(t, sessions)
	if s.err != nil || len(s.state.PeerCertificates) == 0 || s.state.PeerCertificates[0].Subject.CommonName != "fleetgate-gateway" {
		t.Fatalf("the origin saw %v, error %v; want the gateway's certificate", s.state.PeerCertificates, s.err)
	}

	c, err := f.dialTCP(t, "anon.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("device read %v, want close_notify", err)
	}
	if s := nextSession(t, sessions); s.err == nil {
		t.Error("the origin accepted a gateway without a certificate")
	}
	line := f.closeLine(t, "tls-anon", closeOriginClosed)
	if d, _ := line["detail"].(string); !strings.Contains(d, "certificate required") {
		t.Errorf("close line detail %q, want the origin's alert", d)
	}
}

// TestTCPTLSOriginServerName: an origin dialed by address whose
// certificate names it by DNS name only is reached with origin_server_name
// (sent as SNI, and verified), and refused without it.
func TestTCPTLSOriginServerName(t *testing.T) {
	op := newOriginPKI(t)
	ended := make(chan error, 4)
	origin, sessions := startTLSRelayOrigin(t, op.root, []string{"broker.internal"}, false, tlsEchoHandler(ended))
	f := newTCPFixture(t,
		lifeApp("tls-named", "named.tcp.test", tlsURL(origin), func(a *appSection) {
			a.OriginCAFile, a.OriginServerName = op.caFile, "broker.internal"
		}),
		lifeApp("tls-wrongname", "wrongname.tcp.test", tlsURL(origin), func(a *appSection) {
			a.OriginCAFile, a.OriginServerName = op.caFile, "other.internal"
		}))
	f.echoedOnceOn(t, "named.tcp.test")
	if s := nextSession(t, sessions); s.state.ServerName != "broker.internal" {
		t.Errorf("SNI %q, want origin_server_name", s.state.ServerName)
	}
	c, err := f.dialTCP(t, "wrongname.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("device read %v, want close_notify", err)
	}
	line := f.closeLine(t, "tls-wrongname", closeOriginDown)
	if d, _ := line["detail"].(string); !strings.Contains(d, "other.internal") {
		t.Errorf("detail %q, want the name the certificate lacks", d)
	}
}

// flushConn holds what crypto/tls writes until the next Read (or flush):
// the origin's last handshake flight, its first bytes and its close_notify
// then leave in one segment, which the gateway's crypto/tls reads whole
// with the end of its handshake.
type flushConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (f *flushConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, p...)
	return len(p), nil
}

func (f *flushConn) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.Conn.Write(f.out)
	f.out = nil
	return err
}

func (f *flushConn) Read(p []byte) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.Conn.Read(p)
}

// TestTCPTLSOriginBannerBeforeCloseOnBusyLoop: an origin that answers
// its handshake with a line and closes (close_notify, then the socket), as
// a server refusing with "554 busy" does. crypto/tls reads the line with
// the end of the handshake, so it has no event of its own: originOpened
// schedules a task to deliver it. On a loop with more tasks queued than
// gnet runs in a round, that task comes after the next epoll round, in
// which the origin socket's end is read: the line must still reach the
// device before its close_notify.
func TestTCPTLSOriginBannerBeforeCloseOnBusyLoop(t *testing.T) {
	op := newOriginPKI(t)
	cert := op.root.MustIssue(pki.Server("127.0.0.1"))
	conf := &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}, MaxVersion: tls.VersionTLS12}
	flushed := make(chan struct{}, 1)
	origin := startTCPOrigin(t, func(c net.Conn) {
		fc := &flushConn{Conn: c}
		tc := tls.Server(fc, conf)
		if err := tc.Handshake(); err != nil {
			t.Logf("origin handshake: %v", err)
			return
		}
		_, _ = io.WriteString(tc, "554 busy\r\n")
		_ = tc.CloseWrite()
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second)) // CloseWrite left it in the past
		if err := fc.flush(); err != nil {
			t.Logf("origin flush: %v", err)
		}
		_ = c.Close()
		flushed <- struct{}{}
	})
	f := newTCPFixture(t, lifeApp("tls-busy", "busy.tcp.test", tlsURL(origin), func(a *appSection) {
		a.OriginCAFile = op.caFile
	}), func(c *fileConfig) { c.Gateway.EventLoops = 1 })

	// One loop: the relay's. Its task queue is made as long as a busy
	// loop's (gnet drains 1024 queued tasks at once; more wait in its
	// second queue, 256 a round): the origin's registration queues behind
	// them.
	var loop gnet.EventLoop
	release := make(chan struct{})
	blocked := make(chan struct{})
	noop := gnet.RunnableFunc(func(context.Context) error { return nil })
	hook := func() {
		f.srv.testBeforeRelayAdd.Store(nil) // once
		f.srv.loopBufs.Range(func(k, _ any) bool { loop = k.(gnet.EventLoop); return false })
		_ = loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			for range 1100 { // other connections' tasks
				_ = loop.Execute(context.Background(), noop)
			}
			close(blocked)
			<-release
			return nil
		}))
	}
	f.srv.testBeforeRelayAdd.Store(&hook)
	c, err := f.dialTCP(t, "busy.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop was not held")
	}
	select {
	case <-flushed:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the origin did not finish its handshake")
	}
	time.Sleep(300 * time.Millisecond) // the dial worker enrolls: its registration is queued
	close(release)
	got, err := io.ReadAll(c)
	if string(got) != "554 busy\r\n" {
		t.Errorf("device read %q, %v; want the origin's line, then close_notify", got, err)
	}
}
