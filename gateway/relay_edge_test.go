package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// pausingConn holds back a TLS client's records after its first encrypted
// handshake record (the Certificate), so that the gateway has judged the
// certificate (VerifyConnection) but not finished the handshake.
type pausingConn struct {
	net.Conn
	writes  int
	paused  chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *pausingConn) Write(b []byte) (int, error) {
	s.writes++
	if s.writes != 2 {
		return s.Conn.Write(b)
	}
	// Walk the records: write up to and including the first type-23 record.
	off := 0
	for off+5 <= len(b) {
		typ := b[off]
		n := int(b[off+3])<<8 | int(b[off+4])
		off += 5 + n
		if typ == 23 {
			break
		}
	}
	if _, err := s.Conn.Write(b[:off]); err != nil {
		return 0, err
	}
	s.once.Do(func() { close(s.paused) })
	<-s.release
	if _, err := s.Conn.Write(b[off:]); err != nil {
		return 0, err
	}
	return len(b), nil
}

// denyFingerprint reloads the fixture with dev's certificate deny-listed.
func (f *tcpFixture) denyFingerprint(t *testing.T, dev *device) {
	t.Helper()
	sum := sha256.Sum256(dev.cert.Cert.Raw)
	cfg := f.config()
	cfg.Revocation.DeniedFingerprints = append(cfg.Revocation.DeniedFingerprints, hex.EncodeToString(sum[:]))
	f.write(cfg)
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
}

// A reload that deny-lists a certificate while one of its handshakes is
// past VerifyConnection but not finished: the verdict was computed under the
// old revocation set, so the relay must be checked against the new one when
// it starts, and cut as revoked.
func TestTCPRevokedDuringHandshake(t *testing.T) {
	f := newTCPFixture(t)
	conf := f.tlsConfig(tEcho, f.pki.sensor1)
	conf.InsecureSkipVerify = true
	raw, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pc := &pausingConn{Conn: raw, paused: make(chan struct{}), release: make(chan struct{})}
	c := tls.Client(pc, conf)
	t.Cleanup(func() { _ = c.Close() })
	hsErr := make(chan error, 1)
	go func() { hsErr <- c.Handshake() }()
	select {
	case <-pc.paused:
	case err := <-hsErr:
		t.Fatalf("handshake ended early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("client never sent its certificate")
	}
	time.Sleep(200 * time.Millisecond) // the gateway reads the Certificate, runs VerifyConnection
	f.denyFingerprint(t, f.pki.sensor1)
	close(pc.release)
	if err := <-hsErr; err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(c, "ping")
	if n, err := io.ReadFull(c, make([]byte, 4)); err == nil {
		t.Fatal("a certificate deny-listed by a reload during its handshake is still relayed")
	} else if n > 0 {
		t.Fatalf("%d bytes echoed before the cut (%v)", n, err)
	}
	f.closeLine(t, "tcp-echo", closeRevoked)
}

// echoMsg writes msg on c and reads it back from an echo origin.
func echoMsg(c *tls.Conn, msg string) error {
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// A bypass policy admits a device whose certificate is not valid. A reload
// whose revocation set deny-lists a certificate cuts the relays where that
// certificate is valid, and only those: a bypass connection of the same
// certificate (not valid for its application's CAs) and one of another
// certificate that was never valid stay open.
func TestTCPReloadKeepsBypassConnections(t *testing.T) {
	echo := startTCPOrigin(t, echoHandler)
	f := newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-byp", PEMFile: "ca2-chain.pem",
			AssociatedHostnames: []string{"byp.tcp.test"}})
		c.Applications = append(c.Applications, tcpApp("tcp-byp", "byp.tcp.test", echo.url(), selector{"everyone": true}))
		last := &c.Applications[len(c.Applications)-1]
		last.Policies[0] = policySection{Name: "all", Decision: "bypass", Include: []selector{{"everyone": true}}}
	})
	valid, err := f.dialTCP(t, tEcho, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	sameCert, err := f.dialTCP(t, "byp.tcp.test", f.pki.sensor1) // unknown authority there
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := f.dialTCP(t, "byp.tcp.test", f.pki.foreign)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*tls.Conn{valid, sameCert, foreign} {
		if err := echoMsg(c, "ping"); err != nil {
			t.Fatal(err)
		}
	}
	f.denyFingerprint(t, f.pki.sensor1)
	_ = valid.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := valid.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the deny-listed valid certificate's connection read %v, want close_notify", err)
	}
	f.closeLine(t, "tcp-echo", closeRevoked)
	for name, c := range map[string]*tls.Conn{"same certificate, bypass": sameCert, "foreign, bypass": foreign} {
		if err := echoMsg(c, "pong"); err != nil {
			t.Errorf("%s: cut by the reload: %v", name, err)
		}
	}
	for _, l := range f.logLines(t) {
		if l["msg"] == "tcp connection closed" && l["app"] == "tcp-byp" {
			t.Errorf("a bypass connection closed: %v", l)
		}
	}
}

// slowOrigin is a loopback listener whose accept queue is full, so that a
// connect to it hangs (its SYNs are dropped) until release is called: then
// the queue empties, the dialer's SYN retry gets through, and the origin
// serves each connection with handle. Without release, a dial times out.
func slowOrigin(t *testing.T, handle func(net.Conn)) (addr string, release func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr = "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	file := os.NewFile(uintptr(fd), "slow-origin")
	ln, err := net.FileListener(file)
	_ = file.Close()
	if err != nil {
		t.Fatal(err)
	}
	var fillers []net.Conn
	for range 2 { // backlog 0 holds one
		if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
			fillers = append(fillers, c)
		}
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		ln.Close()
		t.Skip("the accept queue did not fill")
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		for _, c := range fillers {
			c.Close()
		}
		wg.Wait()
	})
	var once sync.Once
	release = func() {
		once.Do(func() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.Close()
						_ = c.SetDeadline(time.Now().Add(10 * time.Second))
						handle(c)
					}()
				}
			}()
			for _, c := range fillers {
				c.Close()
			}
		})
	}
	return addr, release
}

// A device that writes its message and closes (close_notify, then its
// socket) before the origin's connect completes: its bytes, received before
// it closed, still reach the origin once it connects.
func TestTCPDeviceBytesSentBeforeOriginConnects(t *testing.T) {
	got := make(chan string, 4)
	addr, release := slowOrigin(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	f := newTCPFixture(t, lifeApp("tcp-slow", "slow.tcp.test", "tcp://"+addr, func(a *appSection) { a.OriginConnectTimeout = "8s" }))
	c, err := f.dialTCP(t, "slow.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's side of the handshake is done and its relay started
	// (a device whose socket closes before that is gone with its bytes:
	// the engine drops a connection whose handshake it has not finished).
	testkit.WaitFor(t, "the relay", 5*time.Second, func() bool { return f.srv.relays.len() == 1 })
	if _, err := io.WriteString(c, "reading=42\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // close_notify, then the socket closes
	time.Sleep(300 * time.Millisecond)
	release()
	deadline := time.After(10 * time.Second)
	for received := false; !received; {
		select {
		case s := <-got:
			// The connections that filled the accept queue arrive empty.
			if s != "" && s != "reading=42\n" {
				t.Fatalf("the origin received %q, want the device's message", s)
			}
			received = s != ""
		case <-deadline:
			t.Fatal("the device's message, received before it closed, never reached the origin")
		}
	}
	line := f.closeLine(t, "tcp-slow", closeDeviceClosed)
	if line["bytes_from_device"] != float64(len("reading=42\n")) {
		t.Errorf("bytes_from_device %v", line["bytes_from_device"])
	}
}

// Before the origin is connected, what a device sends is held up to
// relay_buffer, as after: more is cut with reason backpressure.
func TestTCPBackpressureBeforeOriginConnects(t *testing.T) {
	addr, _ := slowOrigin(t, echoHandler) // never released: the dial times out
	const relayBuffer = 16 << 10
	f := newTCPFixture(t, lifeApp("tcp-stuck", "stuck.tcp.test", "tcp://"+addr,
		func(a *appSection) { a.RelayBuffer, a.OriginConnectTimeout = "16KiB", "4s" }))
	c, err := f.dialTCP(t, "stuck.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	// Until the gateway's side of the handshake is done, the engine's
	// inbound limit bounds what it holds; from the relay's start on,
	// relay_buffer does.
	testkit.WaitFor(t, "the relay", 5*time.Second, func() bool { return f.srv.relays.len() == 1 })
	_ = c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	chunk := make([]byte, 64<<10)
	for sent := 0; sent < 64<<20; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			break
		}
	}
	line := f.closeLine(t, "tcp-stuck", closeBackpressure)
	// One read buffer (16 KiB) past the bound at most.
	if n, _ := line["bytes_from_device"].(float64); n > relayBuffer+16<<10 {
		t.Errorf("%v bytes held before the cut, relay_buffer is %d", n, relayBuffer)
	}
}

// The tcp log lines say what the certificate proves. A refusal is decided
// in VerifyConnection, before crypto/tls checks the device's
// CertificateVerify: its CN and fingerprint are only what was presented
// (anyone may hold a copy of a device's certificate), and the line says so.
// The close line of a relayed connection carries the certificate's verdict.
func TestTCPLogLinesSayWhatTheCertificateProves(t *testing.T) {
	f := newTCPFixture(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// sensor-0002's certificate, without its key.
	impostor := &device{name: "impostor", tls: tls.Certificate{Certificate: f.pki.sensor2.tls.Certificate, PrivateKey: key}}
	c, err := f.dialTCP(t, tEcho, impostor)
	if err == nil {
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("the impostor was relayed")
	}
	refusal := f.awaitLine(t, "the refusal line", 5*time.Second,
		map[string]string{"msg": "tcp connection refused", "app": "tcp-echo"})
	if _, ok := refusal["cn"]; ok {
		t.Errorf("the refusal line names an unproven certificate as the device's: %v", refusal)
	}
	if _, ok := refusal["sha256"]; ok {
		t.Errorf("the refusal line names an unproven certificate as the device's: %v", refusal)
	}
	if refusal["cert_cn_presented"] != "sensor-0002" || refusal["cert_sha256_presented"] != sha256Hex(f.pki.sensor2) {
		t.Errorf("the refusal line does not name the certificate presented: %v", refusal)
	}

	dev, err := f.dialTCP(t, tEcho, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoMsg(dev, "ping"); err != nil {
		t.Fatal(err)
	}
	_ = dev.Close()
	line := f.closeLine(t, "tcp-echo", closeDeviceClosed)
	if line["cert_verdict"] != verdict.Valid.String() || line["cn"] != "sensor-0001" {
		t.Errorf("close line: cert_verdict %v, cn %v", line["cert_verdict"], line["cn"])
	}
}

// sha256Hex is the fingerprint of dev's certificate, as the logs write it.
func sha256Hex(dev *device) string {
	sum := sha256.Sum256(dev.cert.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// A handshake that completes after Shutdown has cut the relays (its
// drain_timeout passed) does not start a relay that lives on: it is cut at
// once, with reason shutdown, and its origin is not dialed.
func TestTCPRelayStartedAfterShutdownCut(t *testing.T) {
	f := newTCPFixture(t)
	f.reloadDrainTimeout(t, "300ms")
	conf := f.tlsConfig(tEcho, f.pki.sensor1)
	conf.InsecureSkipVerify = true
	raw, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pc := &pausingConn{Conn: raw, paused: make(chan struct{}), release: make(chan struct{})}
	c := tls.Client(pc, conf)
	t.Cleanup(func() { _ = c.Close() })
	hsErr := make(chan error, 1)
	go func() { hsErr <- c.Handshake() }()
	select {
	case <-pc.paused:
	case err := <-hsErr:
		t.Fatalf("handshake ended early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("client never sent its certificate")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); f.stop() }()
	// Past drain_timeout: Shutdown has cut the relays (those to come too).
	testkit.WaitFor(t, "the shutdown's cut", 10*time.Second, func() bool {
		f.srv.relays.mu.Lock()
		defer f.srv.relays.mu.Unlock()
		return f.srv.relays.closed != ""
	})
	close(pc.release)
	if err := <-hsErr; err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(c, "ping")
	if n, err := io.ReadFull(c, make([]byte, 4)); err == nil || n > 0 {
		t.Fatalf("a relay started after the shutdown cut was relayed (%d bytes, %v)", n, err)
	}
	f.closeLine(t, "tcp-echo", closeShutdown)
	if n := f.echo.accepted.Load(); n != 0 {
		t.Errorf("the origin was dialed %d times after the shutdown cut", n)
	}
	<-stopped
}

// A relay whose origin is still being dialed when the gateway shuts down
// still ends: its dial is abandoned, and its close line is written (with
// reason shutdown), so no relay is left counted.
func TestTCPShutdownWithDialInFlight(t *testing.T) {
	addr, _ := slowOrigin(t, echoHandler) // never released: the dial hangs
	f := newTCPFixture(t, lifeApp("tcp-stuck", "stuck.tcp.test", "tcp://"+addr, func(a *appSection) { a.OriginConnectTimeout = "20s" }))
	cfg := f.config()
	cfg.Gateway.DrainTimeout = "200ms"
	f.write(cfg)
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	c, err := f.dialTCP(t, "stuck.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the relay", 5*time.Second, func() bool { return f.srv.relays.len() == 1 })
	start := time.Now()
	f.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v with a dial in flight", d)
	}
	f.closeLine(t, "tcp-stuck", closeShutdown)
	if n := f.srv.relays.len(); n != 0 {
		t.Errorf("%d relays left after Run returned", n)
	}
}

// A device whose PROXY header cannot be built (here: its certificate, to be
// forwarded, is larger than a PROXY header can hold) is closed without
// dialing the origin, and its close line says why, not just origin_down.
func TestTCPProxyHeaderFailureSaysWhy(t *testing.T) {
	f := newTCPFixture(t)
	opts := pki.Device("sensor-big")
	for i := range 1500 { // about 80 KiB of names
		opts.DNSNames = append(opts.DNSNames, fmt.Sprintf("device-%04d.a-rather-long-subdomain-name.fleet.test", i))
	}
	big := f.pki.inter.MustIssue(opts)
	dev := &device{name: "sensor-big", cert: big, tls: big.TLSCertificate(f.pki.inter)}
	c, err := f.dialTCP(t, tProxy, dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the device was relayed")
	}
	line := f.closeLine(t, "tcp-proxy", closeOriginDown)
	if d, _ := line["detail"].(string); !strings.Contains(d, "PROXY header") || !strings.Contains(d, "65535") {
		t.Errorf("close line detail %q, want why the PROXY header could not be built", d)
	}
	if n := f.proxy.accepted.Load(); n != 0 {
		t.Errorf("the origin was dialed %d times", n)
	}
}
