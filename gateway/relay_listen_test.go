package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// acceptedConn is the part of a gnet.Conn dialedAddr reads: an accepted
// socket whose LocalAddr is, as gnet reports it, the listener's address.
type acceptedConn struct {
	gnet.Conn
	fd    int
	local net.Addr
}

func (c acceptedConn) Fd() int             { return c.fd }
func (c acceptedConn) LocalAddr() net.Addr { return c.local }

func TestDialedAddrAsksTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	for _, local := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4zero, Port: port}, // listen = "0.0.0.0:port"
		&net.TCPAddr{Port: port},                   // listen = ":port": no IP at all
	} {
		if got := dialedAddr(acceptedConn{fd: int(f.Fd()), local: local}); got != want {
			t.Errorf("listener %v: destination %v, want %v (the address the device dialed)", local, got, want)
		}
	}
	// No socket to ask: the listener's address is all there is.
	if got := dialedAddr(acceptedConn{fd: -1, local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port}}); got.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("without a socket: %v, want the listener's address", got)
	}
}

// TestTCPProxyHeaderOnWildcardListener runs the gateway on a wildcard
// listener, as operators configure it ("0.0.0.0:8443" or ":8443"), and
// checks the PROXY v2 header's destination: the address the device dialed.
// A wildcard listener binds every interface, so the test runs itself again
// in a network namespace of its own, whose only interface is loopback
// (unshare -rn); where the machine allows none, it is skipped.
func TestTCPProxyHeaderOnWildcardListener(t *testing.T) {
	host, inNS := os.LookupEnv("FLEETGATE_TEST_WILDCARD")
	if !inNS {
		for _, host := range []string{"0.0.0.0", ""} {
			cmd := exec.Command("unshare", "-rn", "sh", "-c", `PATH=$PATH:/usr/sbin:/sbin ip link set lo up && exec "$0" -test.run '^TestTCPProxyHeaderOnWildcardListener$' -test.v`, os.Args[0])
			cmd.Env = append(os.Environ(), "FLEETGATE_TEST_WILDCARD="+host)
			out, err := cmd.CombinedOutput()
			if err != nil && !strings.Contains(string(out), "--- ") {
				t.Skipf("no network namespace of its own here (unshare -rn): %v: %s", err, out)
			}
			if err != nil || !strings.Contains(string(out), "--- PASS: TestTCPProxyHeaderOnWildcardListener") {
				t.Errorf("listen = %q:\n%s", host+":<port>", out)
			}
		}
		return
	}
	headers := make(proxyHeaders, 4)
	origin := startTCPOrigin(t, headers.handle)
	_, port, _ := strings.Cut(testkit.FreePort(t), ":")
	h := newHarness(t, func(p *cfgParams) {
		p.Listen = host + ":" + port
		p.Edit = func(c *fileConfig) {
			c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-tcp", PEMFile: "ca-chain.pem",
				AssociatedHostnames: []string{tProxy}})
			a := tcpApp("tcp-proxy", tProxy, origin.url(), anyFleetDevice)
			a.ProxyProtocol = "v2"
			c.Applications = append(c.Applications, a)
		}
	})
	conf := h.tlsConfig(tProxy, h.pki.sensor2)
	conf.InsecureSkipVerify = true // the harness's certificate names the http applications only
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", "127.0.0.1:"+port, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	select {
	case hd := <-headers:
		if hd == nil {
			t.Fatal("the origin got no PROXY header it could read")
		}
		_, dst, _ := hd.TCPAddrs()
		if dst.String() != c.RemoteAddr().String() {
			t.Errorf("PROXY destination %v, want the address the device dialed, %v", dst, c.RemoteAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the origin was never dialed")
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Errorf("echo %q, %v", got, err)
	}
}
