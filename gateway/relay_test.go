package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/proxyv2"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/policy"
)

// The tcp applications of these tests, on names the harness's server
// certificate does not carry (devices skip verifying it).
const (
	tEcho   = "echo.tcp.test"   // plain relay to an echo origin, sensor-0001 only
	tProxy  = "proxy.tcp.test"  // PROXY v2 with the client certificate, any fleet device
	tV1     = "v1.tcp.test"     // PROXY v1
	tDown   = "down.tcp.test"   // nobody listens at the origin
	tClosed = "closed.tcp.test" // the origin closes after its greeting
)

// tcpOrigin is a TCP origin on loopback: it counts the connections it
// accepts and serves each with handle.
type tcpOrigin struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startTCPOrigin(t testing.TB, handle func(net.Conn)) *tcpOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &tcpOrigin{ln: ln}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.accepted.Add(1)
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		o.wg.Wait()
	})
	return o
}

func (o *tcpOrigin) url() string { return "tcp://" + o.ln.Addr().String() }

func echoHandler(c net.Conn) { _, _ = io.Copy(c, c) }

// proxyHeaders receives the PROXY headers the PROXY-reading origins parse.
type proxyHeaders chan *proxyproto.Header

// proxyEcho reads a PROXY header with go-proxyproto, hands it to the test,
// then echoes the rest.
func (ch proxyHeaders) handle(c net.Conn) {
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		ch <- nil
		return
	}
	ch <- h
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		_, _ = c.Write(b)
		_, _ = br.Discard(n)
	}
	_, _ = io.Copy(c, c)
}

// next waits for the header of the origin's next connection.
func (ch proxyHeaders) next(t testing.TB) *proxyproto.Header {
	t.Helper()
	select {
	case h := <-ch:
		if h == nil {
			t.Fatal("the origin could not read a PROXY header")
		}
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the origin got no connection")
		return nil
	}
}

// tcpFixture is a harness with the tcp applications above.
type tcpFixture struct {
	*harness
	echo, proxy, v1, closed *tcpOrigin
	headers                 proxyHeaders
}

// tcpApp is a tcp application on domain with the harness's server
// certificate, relaying to origin, admitting (non_identity) the devices sel
// matches.
func tcpApp(name, domain, origin string, sel selector) appSection {
	a := httpApp(name, domain, origin, admit("devices", sel))
	a.Protocol = "tcp"
	return a
}

// newTCPFixture starts the fixture's origins and a harness with the tcp
// applications above, then edits (more applications) applied in order.
func newTCPFixture(t testing.TB, edits ...func(*fileConfig)) *tcpFixture {
	t.Helper()
	f := &tcpFixture{headers: make(proxyHeaders, 8)}
	f.echo = startTCPOrigin(t, echoHandler)
	f.proxy = startTCPOrigin(t, f.headers.handle)
	f.v1 = startTCPOrigin(t, f.headers.handle)
	f.closed = startTCPOrigin(t, func(c net.Conn) { _, _ = io.WriteString(c, "bye\n") })
	down := testkit.FreePort(t)
	app := func(name, domain, origin, pp string, sel selector) appSection {
		a := tcpApp(name, domain, origin, sel)
		a.ProxyProtocol = pp
		a.ForwardClientCert = pp == "v2"
		a.IdleTimeout, a.RelayBuffer = "30s", "64KiB"
		return a
	}
	edit := func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-tcp", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{tEcho, tProxy, tV1, tDown, tClosed}})
		c.Applications = append(c.Applications,
			app("tcp-echo", tEcho, f.echo.url(), "", commonName("sensor-0001")),
			app("tcp-proxy", tProxy, f.proxy.url(), "v2", anyFleetDevice),
			app("tcp-v1", tV1, f.v1.url(), "v1", anyFleetDevice),
			app("tcp-down", tDown, "tcp://"+down, "", anyFleetDevice),
			app("tcp-closed", tClosed, f.closed.url(), "", anyFleetDevice))
		for _, e := range edits {
			e(c)
		}
	}
	f.harness = newHarness(t, func(p *cfgParams) { p.Edit = edit })
	return f
}

// dialTCP opens a device's TLS connection to a tcp application.
func (f *tcpFixture) dialTCP(t testing.TB, sni string, dev *device) (*tls.Conn, error) {
	conf := f.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = true // the harness's certificate names the http applications only
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", f.addr, conf)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return c, nil
}

// closeLine waits for the close log line of the connection of app with
// the given reason and returns it.
func (f *tcpFixture) closeLine(t testing.TB, app, reason string) map[string]any {
	t.Helper()
	return f.awaitLine(t, "the close line of "+app+" ("+reason+")", 10*time.Second,
		map[string]string{"msg": "tcp connection closed", "app": app, "reason": reason})
}

// awaitLine waits, up to within, for the first log line whose fields
// include want, and returns it.
func (f *tcpFixture) awaitLine(t testing.TB, what string, within time.Duration, want map[string]string) map[string]any {
	t.Helper()
	var line map[string]any
	testkit.WaitFor(t, what, within, func() bool {
	lines:
		for _, l := range f.logLines(t) {
			for k, v := range want {
				if s, _ := l[k].(string); s != v {
					continue lines
				}
			}
			line = l
			return true
		}
		return false
	})
	return line
}

// logLines returns every log line so far, decoded.
func (f *tcpFixture) logLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(f.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (f *tcpFixture) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get("http://" + f.srv.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestTCPRelayEcho(t *testing.T) {
	f := newTCPFixture(t)
	c, err := f.dialTCP(t, tEcho, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	// A small message, then more than relay_buffer in total, read as it
	// comes back: the relay holds little at a time.
	payload := make([]byte, 300<<10)
	_, _ = rand.Read(payload)
	msgs := [][]byte{[]byte("hello\n"), payload}
	echoEach(t, c, msgs...)
	total := int64(len(msgs[0]) + len(msgs[1]))
	// close_notify from the device: the origin side closes, then the device's.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after close_notify the device should get close_notify back, got %v", err)
	}
	line := f.closeLine(t, "tcp-echo", closeDeviceClosed)
	sum := sha256.Sum256(f.pki.sensor1.cert.Cert.Raw)
	if line["cn"] != "sensor-0001" || line["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("close line identity: %v", line)
	}
	if id, _ := line["conn_id"].(string); len(id) != 32 {
		t.Errorf("conn_id %q is not 16 bytes of hex", id)
	}
	if line["bytes_from_device"] != float64(total) || line["bytes_to_device"] != float64(total) {
		t.Errorf("bytes: %v / %v, want %d each way", line["bytes_from_device"], line["bytes_to_device"], total)
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("no duration in %v", line)
	}
	m := f.metrics(t)
	for _, want := range []string{
		`fleetgate_tcp_connections{app="tcp-echo"} 0`,
		fmt.Sprintf(`fleetgate_tcp_bytes_total{app="tcp-echo",direction="device_to_origin"} %d`, total),
		fmt.Sprintf(`fleetgate_tcp_bytes_total{app="tcp-echo",direction="origin_to_device"} %d`, total),
		`fleetgate_tcp_closes_total{app="tcp-echo",reason="device_closed"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// echoEach sends each message on c and reads its echo back as it comes
// (a message larger than relay_buffer is written while it is read).
func echoEach(t *testing.T, c net.Conn, msgs ...[]byte) {
	t.Helper()
	for _, m := range msgs {
		errc := make(chan error, 1)
		go func() { _, err := c.Write(m); errc <- err }()
		got := make([]byte, len(m))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("read the echo of %d bytes: %v", len(m), err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("echo of %d bytes differs", len(m))
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// TestTCPRelaysShareALoop runs relays and keep-alive HTTP devices on a
// one-loop gateway at once: every reader on the loop decrypts into the
// loop's one buffer, so each device's bytes must come back as it sent them,
// however the records of the others interleave.
func TestTCPRelaysShareALoop(t *testing.T) {
	f := newTCPFixture(t, func(c *fileConfig) { c.Gateway.EventLoops = 1 })
	const devices, httpDevices, rounds = 6, 4, 20
	var wg sync.WaitGroup
	errs := make(chan error, devices+httpDevices)
	for i := range httpDevices {
		client := f.client(f.pki.sensor2) // a connection of its own, kept alive
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				// 20–50 KiB of letters (the origin echoes the body in JSON).
				body := make([]byte, 20<<10+(i*11+r*17)%30<<10)
				for k := range body {
					body[k] = 'a' + byte((k*31+i*7+r)%26)
				}
				resp, err := client.Post(href(hApp, "/upload"), "text/plain", bytes.NewReader(body))
				if err != nil {
					errs <- fmt.Errorf("http device %d round %d: %v", i, r, err)
					return
				}
				var e echo
				err = json.NewDecoder(resp.Body).Decode(&e)
				_ = resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("http device %d round %d: status %d, %v", i, r, resp.StatusCode, err)
					return
				}
				if e.Body != string(body) {
					errs <- fmt.Errorf("http device %d round %d: the origin got another body than the %d bytes sent", i, r, len(body))
					return
				}
			}
		}()
	}
	for i := range devices {
		c, err := f.dialTCP(t, tEcho, f.pki.sensor1)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for r := range rounds {
				// 20–60 KiB: a few full records and a short one, unlike any other device's.
				m := make([]byte, 20<<10+(i*7+r*13)%40<<10)
				_, _ = rand.Read(m)
				go func() { _, _ = c.Write(m) }()
				got := make([]byte, len(m))
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- fmt.Errorf("device %d round %d: %v", i, r, err)
					return
				}
				if !bytes.Equal(got, m) {
					errs <- fmt.Errorf("device %d round %d: the echo of %d bytes differs", i, r, len(m))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTCPRelayGaugeWhileOpen(t *testing.T) {
	f := newTCPFixture(t)
	c := f.echoedOnce(t)
	if m := f.metrics(t); !strings.Contains(m, `fleetgate_tcp_connections{app="tcp-echo"} 1`) {
		t.Errorf("the gauge does not count the open connection")
	}
	if f.srv.conns.Load() != 1 {
		t.Errorf("connections counted: %d, want 1 (the origin socket is not a device)", f.srv.conns.Load())
	}
	_ = c.Close()
	f.closeLine(t, "tcp-echo", closeDeviceClosed)
}

func TestTCPRefusedInHandshake(t *testing.T) {
	f := newTCPFixture(t)
	cases := []struct {
		name    string
		dev     *device
		wantErr string // in the device's error
		reason  string // of the refusal log line; "" when TLS refuses before the policies
	}{
		{name: "policy refuses the CN", dev: f.pki.sensor2, wantErr: "bad certificate", reason: `no policy matched`},
		{name: "unknown CA", dev: f.pki.foreign, wantErr: "bad certificate", reason: "certificate"},
		{name: "expired", dev: f.pki.expired, wantErr: "bad certificate", reason: "expired"},
		{name: "no certificate", dev: nil, wantErr: "certificate required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.dialTCP(t, tEcho, tc.dev)
			if err == nil {
				// TLS 1.3: the client's handshake ends before the gateway
				// reads its certificate; the alert comes with the next read.
				_, err = c.Read(make([]byte, 1))
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an alert %q", err, tc.wantErr)
			}
			if tc.reason == "" {
				return
			}
			testkit.WaitFor(t, "the refusal line", 5*time.Second, func() bool {
				for _, l := range f.logLines(t) {
					if r, _ := l["reason"].(string); l["msg"] == "tcp connection refused" && l["app"] == "tcp-echo" && strings.Contains(r, tc.reason) {
						return true
					}
				}
				return false
			})
		})
	}
	// TLS 1.2 devices get the alert in the handshake itself.
	conf := f.tlsConfig(tEcho, f.pki.sensor2)
	conf.InsecureSkipVerify, conf.MaxVersion = true, tls.VersionTLS12
	if c, err := tls.Dial("tcp", f.addr, conf); err == nil {
		_, err = c.Read(make([]byte, 1))
		_ = c.Close()
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Errorf("TLS 1.2: got %v, want bad certificate", err)
		}
	} else if !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("TLS 1.2: got %v, want bad certificate", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := f.echo.accepted.Load(); n != 0 {
		t.Errorf("the origin saw %d connections from refused devices", n)
	}
	if m := f.metrics(t); !strings.Contains(m, `fleetgate_tcp_refused_total{app="tcp-echo",reason="no policy matched"}`) {
		t.Errorf("refusals are not counted")
	}
}

func TestTCPProxyV2(t *testing.T) {
	f := newTCPFixture(t)
	c, err := f.dialTCP(t, tProxy, f.pki.sensor2)
	if err != nil {
		t.Fatal(err)
	}
	// The device writes at once: its bytes must come after the header.
	if _, err := io.WriteString(c, "first bytes"); err != nil {
		t.Fatal(err)
	}
	h := f.headers.next(t)
	got := make([]byte, len("first bytes"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "first bytes" {
		t.Fatalf("echo after the header: %q, %v", got, err)
	}
	if h.Version != 2 || h.Command != proxyproto.PROXY || h.TransportProtocol != proxyproto.TCPv4 {
		t.Errorf("header: version %d command %v transport %v", h.Version, h.Command, h.TransportProtocol)
	}
	src, dst, ok := h.TCPAddrs()
	if !ok || src.String() != c.LocalAddr().String() || dst.String() != f.addr {
		t.Errorf("addresses: %v → %v, want %v → %v", src, dst, c.LocalAddr(), f.addr)
	}
	tlvs, err := h.TLVs()
	if err != nil {
		t.Fatal(err)
	}
	var authority, uniqueID, token []byte
	for _, tlv := range tlvs {
		switch tlv.Type {
		case proxyproto.PP2_TYPE_AUTHORITY:
			authority = tlv.Value
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			uniqueID = tlv.Value
		case proxyv2.TypeToken:
			token = tlv.Value
		}
	}
	if string(authority) != tProxy {
		t.Errorf("AUTHORITY %q, want %q", authority, tProxy)
	}
	if len(uniqueID) != 16 {
		t.Errorf("UNIQUE_ID of %d bytes", len(uniqueID))
	}
	ssl, ok := tlvparse.FindSSL(tlvs)
	if !ok {
		t.Fatal("no SSL TLV")
	}
	if !ssl.ClientSSL() || !ssl.ClientCertConn() || !ssl.ClientCertSess() || ssl.Verify != 0 {
		t.Errorf("SSL client bits %#x verify %d, want SSL|CERT_CONN|CERT_SESS and 0", ssl.Client, ssl.Verify)
	}
	if v, _ := ssl.SSLVersion(); v != "TLSv1.3" {
		t.Errorf("SSL version %q", v)
	}
	if cn, _ := ssl.ClientCN(); cn != "sensor-0002" {
		t.Errorf("CN %q", cn)
	}
	if ciph, _ := ssl.SSLCipher(); !strings.HasPrefix(ciph, "TLS_") {
		t.Errorf("cipher %q", ciph)
	}
	if sa, _ := ssl.SSLSigAlg(); sa == "" {
		t.Error("no SIG_ALG")
	}
	if ka, _ := ssl.SSLKeyAlg(); ka == "" {
		t.Error("no KEY_ALG")
	}
	if der, _ := ssl.ClientCert(); !bytes.Equal(der, f.pki.sensor2.cert.Cert.Raw) {
		t.Error("CLIENT_CERT is not the device's leaf")
	}
	// The token verifies against the JWKS served on admin_listen, for
	// the application's aud, and expires 5 minutes after the connection.
	resp, err := http.Get("http://" + f.srv.AdminAddr() + "/cdn-cgi/access/certs")
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	keys, err := policy.ParseJWKS(jwks)
	if err != nil {
		t.Fatalf("JWKS on admin_listen: %v", err)
	}
	var aud string
	for _, a := range f.srv.snap.Load().apps {
		if a.name == "tcp-proxy" {
			aud = a.aud
		}
	}
	claims, err := keys.VerifyAny(string(token), aud, "https://access.fleet.test", time.Now())
	if err != nil {
		t.Fatalf("token in TLV 0xE0: %v", err)
	}
	if claims.CommonName != "sensor-0002" {
		t.Errorf("token CN %q", claims.CommonName)
	}
	if life := claims.Exp - claims.Iat; life < 299 || life > 300 {
		t.Errorf("token lives %ds, want 300", life)
	}
	_ = c.Close()
	line := f.closeLine(t, "tcp-proxy", closeDeviceClosed)
	if line["conn_id"] != hex.EncodeToString(uniqueID) {
		t.Errorf("log conn_id %v, header UNIQUE_ID %x", line["conn_id"], uniqueID)
	}
}

func TestTCPProxyV1(t *testing.T) {
	f := newTCPFixture(t)
	c, err := f.dialTCP(t, tV1, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	h := f.headers.next(t)
	if h.Version != 1 {
		t.Fatalf("header %+v, want version 1", h)
	}
	if src, _, ok := h.TCPAddrs(); !ok || src.String() != c.LocalAddr().String() {
		t.Errorf("source %v, want %v", src, c.LocalAddr())
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestTCPOriginDown(t *testing.T) {
	f := newTCPFixture(t)
	c, err := f.dialTCP(t, tDown, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("device read %v, want close_notify (EOF)", err)
	}
	f.closeLine(t, "tcp-down", closeOriginDown)
	if m := f.metrics(t); !strings.Contains(m, `fleetgate_tcp_closes_total{app="tcp-down",reason="origin_down"} 1`) {
		t.Error("origin_down not counted")
	}
}

func TestTCPOriginCloses(t *testing.T) {
	f := newTCPFixture(t)
	c, err := f.dialTCP(t, tClosed, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye\n" {
		t.Errorf("device read %q, %v; want the origin's bytes, then close_notify", got, err)
	}
	line := f.closeLine(t, "tcp-closed", closeOriginClosed)
	if line["bytes_to_device"] != float64(4) {
		t.Errorf("bytes_to_device %v", line["bytes_to_device"])
	}
}

func TestTCPRevokedByReload(t *testing.T) {
	f := newTCPFixture(t)
	c, err := f.dialTCP(t, tEcho, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.dialTCP(t, tProxy, f.pki.sensor2)
	if err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*tls.Conn{c, other} {
		if _, err := io.WriteString(conn, "ping"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	<-f.headers
	if _, err := io.ReadFull(other, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(f.pki.sensor1.cert.Cert.Raw)
	cfg := f.config()
	cfg.Revocation.DeniedFingerprints = []string{hex.EncodeToString(sum[:])}
	f.write(cfg)
	start := time.Now()
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the revoked device read %v, want close_notify within 2s", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed %v after the reload", d)
	}
	f.closeLine(t, "tcp-echo", closeRevoked)
	// The other device's connection lives on, on its old snapshot.
	if _, err := io.WriteString(other, "pong"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(other, make([]byte, 4)); err != nil {
		t.Fatalf("an unrevoked connection was closed by the reload: %v", err)
	}
}

func TestTCPShutdownClosesRelays(t *testing.T) {
	f := newTCPFixture(t)
	c := f.echoedOnce(t)
	start := time.Now()
	f.stop() // drain_timeout is 5s
	if d := time.Since(start); d < 4*time.Second {
		t.Errorf("Shutdown returned after %v, before drain_timeout", d)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the relayed connection outlived the shutdown")
	}
	f.closeLine(t, "tcp-echo", closeShutdown)
}

// A drain whose only live connections are relays, cut at drain_timeout as
// documented, ends as planned: it does not warn that it closed with
// requests in flight. fleetgate serve gives Shutdown a context that ends at
// drain_timeout, the moment the relays are cut.
func TestTCPShutdownCutsRelaysWithoutDrainWarning(t *testing.T) {
	f := newTCPFixture(t)
	f.reloadDrainTimeout(t, "300ms")
	f.echoedOnce(t) // a relay that only the drain ends
	f.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), f.srv.DrainTimeout())
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case <-f.runErr:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Shutdown")
	}
	f.closeLine(t, "tcp-echo", closeShutdown)
	for _, l := range f.logLines(t) {
		if msg, _ := l["msg"].(string); strings.Contains(msg, "in flight") {
			t.Errorf("a drain that only cut relays logged %q (inflight %v, connections %v)", msg, l["inflight"], l["connections"])
		}
	}
}

// lifeApp adds a tcp application name on domain, with a client CA of its
// own, whose origin is origin, with set applied to it (timeouts) and any
// fleet device admitted.
func lifeApp(name, domain, origin string, set func(*appSection)) func(*fileConfig) {
	return func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-" + name, PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{domain}})
		a := tcpApp(name, domain, origin, anyFleetDevice)
		set(&a)
		c.Applications = append(c.Applications, a)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	echo := startTCPOrigin(t, echoHandler)
	f := newTCPFixture(t, lifeApp("tcp-idle", "idle.tcp.test", echo.url(), func(a *appSection) { a.IdleTimeout = "1s" }))
	c, err := f.dialTCP(t, "idle.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	// Traffic keeps it open past the timeout...
	for range 4 {
		time.Sleep(400 * time.Millisecond)
		if _, err := io.WriteString(c, "k"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("closed while active: %v", err)
		}
	}
	// ...silence closes it.
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle device read %v, want close_notify", err)
	}
	if d := time.Since(start); d < 800*time.Millisecond || d > 3*time.Second {
		t.Errorf("closed after %v of silence, want about 1s", d)
	}
	f.closeLine(t, "tcp-idle", closeIdle)
}

func TestTCPBackpressure(t *testing.T) {
	// The origin sends far more than the device reads.
	flood := startTCPOrigin(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for range 1024 { // 64 MiB at most
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	f := newTCPFixture(t, lifeApp("tcp-flood", "flood.tcp.test", flood.url(), func(a *appSection) { a.RelayBuffer = "64KiB" }))
	c, err := f.dialTCP(t, "flood.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	_ = c // the device does not read
	line := f.closeLine(t, "tcp-flood", closeBackpressure)
	if n, _ := line["bytes_to_device"].(float64); n >= 64<<20 {
		t.Errorf("the whole flood went through (%v bytes)", n)
	}
}

// TestTCPOpenSSLDevice relays for openssl s_client as the device: what it
// sends comes back from the echo origin.
func TestTCPOpenSSLDevice(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	f := newTCPFixture(t)
	f.writeFile("device.pem", pki.ChainPEM(f.pki.sensor1.cert, f.pki.inter))
	f.writeFile("device-key.pem", f.pki.sensor1.cert.KeyPEM())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", f.addr, "-servername", tEcho, "-quiet", "-no_ign_eof",
		"-cert", filepath.Join(f.dir, "device.pem"), "-key", filepath.Join(f.dir, "device-key.pem"))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, "hello from openssl\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "hello from openssl\n" {
		t.Errorf("openssl read %q, %v", line, err)
	}
	_ = in.Close() // s_client sends close_notify at end of input
	_ = cmd.Wait()
	f.closeLine(t, "tcp-echo", closeDeviceClosed)
}

// echoedOnce dials the echo application as sensor-0001 and has "ping"
// echoed back: a relayed connection, open on both sides.
func (f *tcpFixture) echoedOnce(t *testing.T) net.Conn {
	t.Helper()
	return f.echoedOnceOn(t, tEcho)
}

// echoedOnceOn is echoedOnce on the application of domain, whose origin
// echoes.
func (f *tcpFixture) echoedOnceOn(t *testing.T, domain string) net.Conn {
	t.Helper()
	c, err := f.dialTCP(t, domain, f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	return c
}

// reloadDrainTimeout reloads f's gateway with drain_timeout d.
func (f *tcpFixture) reloadDrainTimeout(t *testing.T, d string) {
	t.Helper()
	cfg := f.config()
	cfg.Gateway.DrainTimeout = d
	f.write(cfg)
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
}

// TestTCPDevicePausesThenReadsAll: the origin sends more than the sockets
// between it and the device hold while the device stops reading; within
// relay_buffer nothing is cut, and when the device reads again every byte
// arrives in order. The gateway's writes to the device then fail with "would
// block" and resume only when the kernel reports the socket writable again
// (with edge-triggered polling, once per change): a missed report would
// leave the rest in the gateway until the device's deadline.
func TestTCPDevicePausesThenReadsAll(t *testing.T) {
	const size = 12 << 20
	origin := startTCPOrigin(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for off := 0; off < size; off += len(buf) {
			for i := range buf {
				buf[i] = byte((off + i) % 251)
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	f := newTCPFixture(t, lifeApp("tcp-pause", "pause.tcp.test", origin.url(),
		func(a *appSection) { a.RelayBuffer = "16MiB" }))
	c, err := f.dialTCP(t, "pause.tcp.test", f.pki.sensor1)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(c, first); err != nil {
		t.Fatal(err)
	}
	// Pause: the origin's 12 MiB outgrow the kernel's buffers on the way
	// (the gateway's send buffer is at most 4 MiB here, the device's
	// receive window a few hundred KiB while it does not read), so the
	// gateway holds the rest.
	time.Sleep(time.Second)
	got := make([]byte, size)
	copy(got, first)
	if _, err := io.ReadFull(c, got[len(first):]); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
	for i, b := range got {
		if b != byte(i%251) {
			t.Fatalf("byte %d differs", i)
		}
	}
}
