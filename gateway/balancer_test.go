package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/fleetgate/fleetgate/internal/mqttwire"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// The load balancer of these tests is 127.0.0.2: its connections carry a
// PROXY header naming the device. Every other loopback address is a device
// of its own.
const balancerIP = "127.0.0.2"

// behindBalancer starts a variant of h that reads PROXY headers from
// balancerIP, with edit applied after.
func behindBalancer(t *testing.T, h *harness, edit func(*fileConfig)) *harness {
	t.Helper()
	return h.variantWith(t, func(c *fileConfig) {
		c.Gateway.ProxyProtocolFrom = []string{balancerIP}
		if edit != nil {
			edit(c)
		}
	})
}

// proxyV2 is the v2 header of a TCP connection from src to dst.
func proxyV2(t testing.TB, src, dst string) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst))).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// localV2 is a v2 header with the LOCAL command: the balancer's own
// connection, such as a health check.
var localV2 = append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x00, 0x00, 0x00)

// together, as dialVia's chunk, sends the header in one write with the
// device's ClientHello, as balancers usually do.
const together = -1

// prefixed is a connection whose first write carries prefix ahead of it.
type prefixed struct {
	net.Conn
	prefix []byte
}

func (p *prefixed) Write(b []byte) (int, error) {
	if p.prefix == nil {
		return p.Conn.Write(b)
	}
	_, err := p.Conn.Write(append(p.prefix, b...))
	p.prefix = nil
	return len(b), err
}

// connectFrom opens a TCP connection to h from the address from, closed at
// the test's end.
func connectFrom(t testing.TB, h *harness, from string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	nc, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return nc
}

// tlsVia is dev's TLS client for sni on a connection from the balancer whose
// first write carries header ahead of the ClientHello; it does not check the
// gateway's certificate (the tcp and mqtt names are not on it), and has not
// begun its handshake.
func tlsVia(t testing.TB, h *harness, sni string, dev *device, header []byte) *tls.Conn {
	t.Helper()
	conf := h.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = true
	return tls.Client(&prefixed{Conn: connectFrom(t, h, balancerIP), prefix: header}, conf)
}

// dialVia opens a connection to h from the address from, writes header
// (in pieces of at most chunk bytes, with a pause between, when chunk > 0;
// in one write with the ClientHello when chunk is together) and then runs a
// device's TLS handshake for hApp.
func dialVia(t testing.TB, h *harness, from string, header []byte, chunk int) (*rawConn, error) {
	t.Helper()
	nc := connectFrom(t, h, from)
	if chunk == together {
		nc, header = &prefixed{Conn: nc, prefix: header}, nil
	}
	for len(header) > 0 {
		n := len(header)
		if chunk > 0 && chunk < n {
			n = chunk
		}
		if _, err := nc.Write(header[:n]); err != nil {
			return nil, err
		}
		header = header[n:]
		if chunk > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	c := tls.Client(nc, h.tlsConfig(hApp, h.pki.sensor1))
	if err := c.Handshake(); err != nil {
		return nil, err
	}
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}, nil
}

// forwardedFor makes one request on c and returns the X-Forwarded-For the
// origin received.
func forwardedFor(t testing.TB, c *rawConn) string {
	t.Helper()
	c.send(request("GET", hApp, "/who"))
	r := c.read("GET")
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	return r.echo(t).Headers.Get("X-Forwarded-For")
}

// servedVia connects through the balancer as the device at src (a v2
// header, in one write with the ClientHello) and checks that the origin
// sees src's address as X-Forwarded-For.
func servedVia(t testing.TB, h *harness, src string) *rawConn {
	t.Helper()
	c, err := dialVia(t, h, balancerIP, proxyV2(t, src, "192.0.2.1:443"), together)
	if err != nil {
		t.Fatalf("device %s behind the balancer: %v", src, err)
	}
	want := netip.MustParseAddrPort(src).Addr().String()
	if got := forwardedFor(t, c); got != want {
		t.Errorf("device %s: X-Forwarded-For %q, want %q", src, got, want)
	}
	return c
}

// TestBalancerHeader: a connection from a listed balancer starts with a
// PROXY header (v1 or v2, whole or in pieces), and the device it names is
// the client the origin and the access log see. A LOCAL header keeps the
// balancer's own address. A balancer's connection without a valid header
// is closed and counted; a device that sends a header of its own (not from
// a listed address) fails its handshake; the gateway serves everyone else.
func TestBalancerHeader(t *testing.T) {
	v := behindBalancer(t, newHarness(t), nil)
	cases := []struct {
		name   string
		header []byte
		chunk  int
		want   string
	}{
		{"v2", proxyV2(t, "203.0.113.9:40000", "192.0.2.1:443"), 0, "203.0.113.9"},
		{"v2 with the ClientHello", proxyV2(t, "203.0.113.11:40000", "192.0.2.1:443"), together, "203.0.113.11"},
		{"v1 with the ClientHello", []byte("PROXY TCP4 198.51.100.5 192.0.2.1 5555 443\r\n"), together, "198.51.100.5"},
		{"v2 in pieces", proxyV2(t, "203.0.113.10:40000", "192.0.2.1:443"), 5, "203.0.113.10"},
		{"v2 IPv6", proxyV2(t, "[2001:db8::7]:40000", "[2001:db8::1]:443"), 0, "2001:db8::7"},
		{"v1", []byte("PROXY TCP4 198.51.100.4 192.0.2.1 5555 443\r\n"), 0, "198.51.100.4"},
		{"v1 in pieces", []byte("PROXY TCP6 2001:db8::8 2001:db8::1 5555 443\r\n"), 7, "2001:db8::8"},
		{"LOCAL", localV2, 0, balancerIP},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), 0, balancerIP},
	}
	for _, tc := range cases {
		c, err := dialVia(t, v, balancerIP, tc.header, tc.chunk)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := forwardedFor(t, c); got != tc.want {
			t.Errorf("%s: X-Forwarded-For %q, want %q", tc.name, got, tc.want)
		}
		_ = c.c.Close()
	}
	var logged []string
	for _, l := range v.accessLines(t) {
		logged = append(logged, l["client_ip"].(string))
	}
	if got := strings.Join(logged, " "); !strings.Contains(got, "203.0.113.9") || !strings.Contains(got, "2001:db8::8") {
		t.Errorf("access log client_ip values %q lack the devices the headers named", got)
	}

	// A balancer's connection must begin with a header.
	for _, bad := range []struct {
		name   string
		header []byte
	}{
		{"none (TLS at once)", nil},
		{"v1 without CR", []byte("PROXY TCP4 198.51.100.4 192.0.2.1 5555 443\n")},
		{"v1 too long", []byte("PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n")},
		{"v2 over UDP", func() []byte {
			b := proxyV2(t, "203.0.113.9:40000", "192.0.2.1:443")
			b[13] = byte(proxyproto.UDPv4)
			return b
		}()},
		{"v2 too long", append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0xff, 0xff)},
		{"HTTP", []byte("GET / HTTP/1.1\r\n\r\n")},
	} {
		if c, err := dialVia(t, v, balancerIP, bad.header, 0); err == nil {
			_ = c.c.Close()
			t.Errorf("%s: the handshake succeeded", bad.name)
		}
	}
	expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 6, "reason", "proxy_header")})
	if !strings.Contains(v.logs.String(), `"reason":"no PROXY header"`) || !strings.Contains(v.logs.String(), `"reason":"invalid PROXY header"`) {
		t.Errorf("no log line for the refused balancer connections:\n%s", v.logs.String())
	}

	// Anyone else speaks TLS at once: a header is not TLS.
	if c, err := dialVia(t, v, "127.0.0.3", proxyV2(t, "203.0.113.9:40000", "192.0.2.1:443"), 0); err == nil {
		_ = c.c.Close()
		t.Error("a header from an address not in proxy_protocol_from was believed")
	}
	c, err := dialVia(t, v, "127.0.0.3", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := forwardedFor(t, c); got != "127.0.0.3" {
		t.Errorf("a direct device: X-Forwarded-For %q, want 127.0.0.3", got)
	}
}

// TestBalancerHeaderTimeout: a balancer's connection that never finishes
// its header, or sends no TLS byte after it, is closed at the handshake
// timeout, and counted as refused.
func TestBalancerHeaderTimeout(t *testing.T) {
	v := behindBalancer(t, newHarness(t), func(c *fileConfig) { c.Gateway.HandshakeTimeout = "1s" })
	header := proxyV2(t, "203.0.113.9:40000", "192.0.2.1:443")
	for i, tc := range []struct {
		sent, logged string
	}{
		{string(header[:20]), "PROXY header too late"},
		{string(header), "no TLS after the PROXY header"},
	} {
		nc := connectFrom(t, v, balancerIP)
		if _, err := io.WriteString(nc, tc.sent); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := nc.Read(make([]byte, 1)); n > 0 || isTimeout(err) {
			t.Fatalf("%s: not closed (read %d, %v)", tc.logged, n, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: closed after %v, want about the 1s handshake timeout", tc.logged, d)
		}
		expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", float64(i+1), "reason", "proxy_header")})
		testkit.WaitFor(t, "the log line", 5*time.Second, func() bool {
			return strings.Contains(v.logs.String(), `"reason":"`+tc.logged+`"`)
		})
	}
	testkit.WaitFor(t, "the connections to close", 5*time.Second, func() bool { return v.srv.conns.Load() == 0 })
}

// TestBalancerDeviceAddress: the address a header names is the one
// policies and max_connections_per_ip judge, not the balancer's.
func TestBalancerDeviceAddress(t *testing.T) {
	v := behindBalancer(t, newHarness(t), func(c *fileConfig) {
		c.Gateway.MaxConnectionsPerIP = 1
		for i := range c.Applications {
			if c.Applications[i].Domain == hApp {
				c.Applications[i].Policies = []policySection{{Name: "the lab's network", Decision: "non_identity",
					Include: []selector{anyFleetDevice}, Require: []selector{{"ip": []string{"203.0.113.0/24"}}}}}
			}
		}
	})
	in := servedVia(t, v, "203.0.113.9:40000")
	out, err := dialVia(t, v, balancerIP, proxyV2(t, "198.51.100.1:40000", "192.0.2.1:443"), 0)
	if err != nil {
		t.Fatal(err)
	}
	out.send(request("GET", hApp, "/"))
	if r := out.read("GET"); r.StatusCode != 403 {
		t.Errorf("a device outside the policy's network: status %d, want 403", r.StatusCode)
	}
	// One connection per device address: a second for 203.0.113.9 is
	// refused, while the balancer's other devices are not.
	if c, err := dialVia(t, v, balancerIP, proxyV2(t, "203.0.113.9:40001", "192.0.2.1:443"), 0); err == nil {
		c.send(request("GET", hApp, "/"))
		if _, err := c.readErr("GET"); err == nil {
			t.Error("a second connection of 203.0.113.9 was served")
		}
	}
	expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 1, "reason", "max_connections_per_ip")})
	servedVia(t, v, "203.0.113.10:40000")
	_ = in.c.Close()
	testkit.WaitFor(t, "203.0.113.9's connection to close", 5*time.Second, func() bool { return v.srv.conns.Load() == 2 })
	servedVia(t, v, "203.0.113.9:40002") // after a close
}

// TestBalancerTCPRelay: a tcp application's origin receives, in the PROXY
// header the gateway writes, the device and destination the balancer's
// header named.
func TestBalancerTCPRelay(t *testing.T) {
	const lab = "lab.tcp.test" // admits devices of the lab's network only
	f := newTCPFixture(t, func(c *fileConfig) {
		for i := range c.ClientCAs {
			if c.ClientCAs[i].Name == "fleet-tcp" {
				c.ClientCAs[i].AssociatedHostnames = append(c.ClientCAs[i].AssociatedHostnames, lab)
			}
		}
		a := tcpApp("tcp-lab", lab, "tcp://"+testkit.FreePort(t), anyFleetDevice)
		a.Policies[0].Require = []selector{{"ip": []string{"198.51.100.0/24"}}}
		c.Applications = append(c.Applications, a)
	})
	v := behindBalancer(t, f.harness, nil)
	c := tlsVia(t, v, tProxy, v.pki.sensor2, proxyV2(t, "198.51.100.20:5555", "192.0.2.1:8883"))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	h := f.headers.next(t)
	if src, dst, ok := h.TCPAddrs(); !ok || src.String() != "198.51.100.20:5555" || dst.String() != "192.0.2.1:8883" {
		t.Errorf("origin's header: %v → %v, want 198.51.100.20:5555 → 192.0.2.1:8883", src, dst)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	_ = c.Close()
	vf := &tcpFixture{harness: v, headers: f.headers}
	line := vf.awaitLine(t, "the close line", 10*time.Second, map[string]string{"msg": "tcp connection closed", "app": "tcp-proxy"})
	if line["client"] != "198.51.100.20" {
		t.Errorf("close line client %v, want 198.51.100.20", line["client"])
	}

	// The tcp application's policy judges, in the handshake, the address
	// the balancer's header named.
	labConn := func(src string) error {
		c := tlsVia(t, v, lab, v.pki.sensor2, proxyV2(t, src, "192.0.2.1:8883"))
		defer c.Close()
		if err := c.Handshake(); err != nil {
			return err
		}
		// TLS 1.3: a refusal of the client's certificate arrives after the
		// client's handshake is done, with the first read.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if isTimeout(err) {
			return nil // admitted: the origin (nobody) is still being dialed, or the gateway waits
		}
		return err
	}
	if err := labConn("203.0.113.9:4000"); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("a device outside the lab's network: %v, want a bad_certificate alert", err)
	}
	if err := labConn("198.51.100.20:4000"); err != nil && strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("a device of the lab's network was refused: %v", err)
	}
}

// TestBalancerHAProxy: HAProxy, a real load balancer in mode tcp, passes
// curl's connections on with send-proxy-v2 and send-proxy (v1) from
// 127.0.0.2, and the origin sees curl's own address (127.0.0.5). HAProxy's
// health checks (check-send-proxy: a v2 LOCAL header, then a close) are
// neither refused nor counted as devices.
func TestBalancerHAProxy(t *testing.T) {
	curl := curlPath(t)
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		// Debian installs it in /usr/sbin, often not in PATH.
		if haproxy, err = exec.LookPath("/usr/sbin/haproxy"); err != nil {
			t.Skip("haproxy is not installed")
		}
	}
	v := behindBalancer(t, newHarness(t), nil)
	s2c, s2k := v.writeDevice(t, v.pki.sensor2, "fleet")
	v2, v1 := testkit.FreePort(t), testkit.FreePort(t)
	cfg := fmt.Sprintf(`global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend v2
  bind %s
  default_backend v2
backend v2
  server gateway %s send-proxy-v2 source %s check check-send-proxy inter 100ms
frontend v1
  bind %s
  default_backend v1
backend v1
  server gateway %s send-proxy source %s
`, v2, v.addr, balancerIP, v1, v.addr, balancerIP)
	v.writeFile("haproxy.cfg", []byte(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, haproxy, "-db", "-f", filepath.Join(v.dir, "haproxy.cfg"))
	var out testkit.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", out.String())
		}
	})
	for _, addr := range []string{v2, v1} {
		testkit.WaitFor(t, "haproxy to listen on "+addr, 10*time.Second, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				_ = c.Close()
			}
			return err == nil
		})
	}
	for _, lb := range []string{v2, v1} {
		_, port, _ := net.SplitHostPort(lb)
		cmd := exec.Command(curl, "-sS", "--max-time", "20", "--interface", "127.0.0.5",
			"--resolve", hApp+":"+port+":127.0.0.1", "--cacert", filepath.Join(v.dir, "root.pem"),
			"--cert", s2c, "--key", s2k, "https://"+hApp+":"+port+"/via-haproxy")
		body, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl through haproxy %s: %v\n%s", lb, err, body)
		}
		r := &response{Response: &http.Response{StatusCode: 200}, body: string(body)}
		if got := r.echo(t).Headers.Get("X-Forwarded-For"); got != "127.0.0.5" {
			t.Errorf("through haproxy %s: X-Forwarded-For %q, want curl's 127.0.0.5", lb, got)
		}
	}
	// A few health checks have run (every 100ms since the start).
	time.Sleep(500 * time.Millisecond)
	s := scrapeMetrics(t, v)
	if n, _ := s.value("fleetgate_connections_refused_total", "reason", "proxy_header"); n != 0 {
		t.Errorf("%v balancer connections refused for their header", n)
	}
	if strings.Contains(out.String(), "DOWN") {
		t.Errorf("haproxy's health checks failed:\n%s", out.String())
	}
}

// TestBalancerHealthCheck: a balancer's health check (a LOCAL header, or no
// byte at all, then a close) starts no handshake and counts as nothing.
func TestBalancerHealthCheck(t *testing.T) {
	v := behindBalancer(t, newHarness(t), nil)
	before := scrapeMetrics(t, v)
	for _, header := range [][]byte{localV2, nil, []byte("PROXY UNKNOWN\r\n")} {
		nc := connectFrom(t, v, balancerIP)
		if _, err := nc.Write(header); err != nil {
			t.Fatal(err)
		}
		_ = nc.Close()
	}
	testkit.WaitFor(t, "the checks to close", 5*time.Second, func() bool { return v.srv.conns.Load() == 0 })
	after := scrapeMetrics(t, v)
	for _, m := range []struct{ name, labels []string }{
		{[]string{"fleetgate_connections_accepted_total"}, nil},
		{[]string{"fleetgate_handshakes_total"}, []string{"result", "error", "reason", "closed"}},
		{[]string{"fleetgate_connections_refused_total"}, []string{"reason", "proxy_header"}},
	} {
		b, _ := before.value(m.name[0], m.labels...)
		a, _ := after.value(m.name[0], m.labels...)
		if a != b {
			t.Errorf("%s%v moved from %v to %v", m.name[0], m.labels, b, a)
		}
	}
}

// TestBalancerCapBeforeRate: a device behind the balancer that holds its
// max_connections_per_ip and keeps connecting is refused before it takes a
// handshake token, as a device connecting directly is, so it cannot use up
// max_handshake_rate for the balancer's other devices.
func TestBalancerCapBeforeRate(t *testing.T) {
	v := behindBalancer(t, newHarness(t), func(c *fileConfig) {
		c.Gateway.MaxConnectionsPerIP = 1
		c.Gateway.MaxHandshakeRate, c.Gateway.MaxHandshakeBurst = 1, 2
	})
	servedVia(t, v, "203.0.113.9:40000")
	for i := range 5 {
		if c, err := dialVia(t, v, balancerIP, proxyV2(t, "203.0.113.9:40001", "192.0.2.1:443"), together); err == nil {
			c.send(request("GET", hApp, "/"))
			if _, err := c.readErr("GET"); err == nil {
				t.Fatalf("connection %d over the cap was served", i)
			}
		}
	}
	expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 5, "reason", "max_connections_per_ip")})
	servedVia(t, v, "203.0.113.10:40000")
	if n, _ := scrapeMetrics(t, v).value("fleetgate_connections_refused_total", "reason", "rate"); n != 0 {
		t.Errorf("%v connections refused over the handshake rate", n)
	}
}

// TestBalancerReload: a reload that lists a balancer applies to the
// connections accepted after it.
func TestBalancerReload(t *testing.T) {
	h := newHarness(t)
	header := proxyV2(t, "203.0.113.9:40000", "192.0.2.1:443")
	if c, err := dialVia(t, h, balancerIP, header, together); err == nil {
		_ = c.c.Close()
		t.Fatal("a header was believed before proxy_protocol_from listed its sender")
	}
	cfg := h.config()
	cfg.Gateway.ProxyProtocolFrom = []string{balancerIP}
	h.write(cfg)
	if err := h.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	servedVia(t, h, "203.0.113.9:40000")
}

// TestBalancerMQTT: an mqtt application behind the balancer decides the
// CONNECT on the address the header named, and the broker's PROXY line
// carries that address.
func TestBalancerMQTT(t *testing.T) {
	const lab = "lab.mqtt.test" // admits devices of the lab's network only
	broker := startCapture(t)
	f := newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt-lab", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{lab}})
		a := httpApp("mqtt-lab", lab, broker.url(), policySection{Name: "lab", Decision: "non_identity",
			Include: []selector{anyFleetDevice}, Require: []selector{{"ip": []string{"203.0.113.0/24"}}}})
		a.Protocol, a.ProxyProtocol = "mqtt", "v1"
		c.Applications = append(c.Applications, a)
	})
	v := behindBalancer(t, f.harness, nil)
	session := func(src string) (*tls.Conn, *bufio.Reader) {
		c := tlsVia(t, v, lab, v.pki.sensor2, proxyV2(t, src, "192.0.2.1:8883"))
		if _, err := c.Write(testkit.MQTTConnect(t, mqttwire.V5, "sensor-0002", 30)); err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	_, r := session("198.51.100.1:4000")
	refusedWith(t, r, mqttwire.V5, 0x87, "")
	c, r2 := session("203.0.113.9:4000")
	got := reachesBroker(t, c, r2, broker)
	if !bytes.HasPrefix(got, []byte("PROXY TCP4 203.0.113.9 192.0.2.1 4000 8883\r\n")) || !bytes.Contains(got, []byte("sensor-0002")) {
		t.Errorf("the broker got %q, want the PROXY line of 203.0.113.9 and sensor-0002's CONNECT", got)
	}
}

// TestBalancerDrain: balancer connections that have not begun TLS when the
// gateway drains (one silent, one whose header and first TLS byte come
// during the drain) are closed within handshake_timeout, and do not keep
// Shutdown waiting for drain_timeout.
func TestBalancerDrain(t *testing.T) {
	v := behindBalancer(t, newHarness(t), func(c *fileConfig) {
		c.Gateway.HandshakeTimeout, c.Gateway.DrainTimeout = "1s", "30s"
	})
	silent, late := connectFrom(t, v, balancerIP), connectFrom(t, v, balancerIP)
	header := proxyV2(t, "203.0.113.9:40000", "192.0.2.1:443")
	if _, err := late.Write(header[:10]); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "both connections counted", 5*time.Second, func() bool { return v.srv.conns.Load() == 2 })
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- v.srv.Shutdown(ctx)
	}()
	testkit.WaitFor(t, "the drain to begin", 5*time.Second, v.srv.draining.Load)
	// The rest of the header, and a TLS byte: no handshake starts now.
	if _, err := late.Write(append(header[10:], 0x16)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown waited on for a connection that never began TLS")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v; the waiting connection has a 1s handshake timeout", d)
	}
	for _, c := range []net.Conn{silent, late} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n > 0 || isTimeout(err) {
			t.Errorf("a balancer's connection is still open after the shutdown (read %d, %v)", n, err)
		}
	}
	select {
	case <-v.runErr:
	case <-time.After(10 * time.Second):
		t.Error("Run did not return after Shutdown")
	}
	v.stopped = true // shut down already: the cleanup has nothing to do
}
