package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/mqttwire"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ending is one way a relayed connection ends; run reports whether the
// device saw what that ending promises.
type ending struct {
	name string
	run  func() bool
}

// Every way a tcp application's connection can end releases what it held:
// after many connections of each ending, the process is back to the
// descriptors and the goroutines it had before them, and none is counted
// open.
func TestTCPEndingsLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of relays: not with -short")
	}
	echo := startTCPOrigin(t, echoHandler)
	flood := startTCPOrigin(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for range 256 {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	f := newTCPFixture(t,
		lifeApp("tcp-idle", "idle.tcp.test", echo.url(), func(a *appSection) { a.IdleTimeout = "300ms" }),
		lifeApp("tcp-flood", "flood.tcp.test", flood.url(), func(a *appSection) { a.RelayBuffer = "64KiB" }))
	dial := func(sni string, dev *device) *tls.Conn { return f.dialLeaky(sni, dev) }
	echoed := func(c *tls.Conn) bool {
		if _, err := io.WriteString(c, "ping"); err != nil {
			return false
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err == nil
	}
	endings := []ending{
		{"device close_notify", func() bool {
			c := dial(tEcho, f.pki.sensor1)
			if c == nil {
				return false
			}
			ok := echoed(c)
			return c.Close() == nil && ok
		}},
		{"device reset", func() bool {
			c := dial(tEcho, f.pki.sensor1)
			if c == nil {
				return false
			}
			ok := echoed(c)
			reset(c.NetConn())
			return ok
		}},
		{"device closes without close_notify", func() bool {
			c := dial(tEcho, f.pki.sensor1)
			if c == nil {
				return false
			}
			ok := echoed(c)
			return c.NetConn().Close() == nil && ok
		}},
		{"device gone mid-message", func() bool {
			c := dial(tEcho, f.pki.sensor1)
			if c == nil {
				return false
			}
			_, err := io.WriteString(c, strings.Repeat("x", 40<<10))
			reset(c.NetConn())
			return err == nil
		}},
		{"origin closes", func() bool {
			c := dial(tClosed, f.pki.sensor1)
			if c == nil {
				return false
			}
			defer c.Close()
			b, err := io.ReadAll(c)
			return err == nil && string(b) == "bye\n"
		}},
		{"origin down", func() bool {
			c := dial(tDown, f.pki.sensor1)
			if c == nil {
				return false
			}
			defer c.Close()
			_, err := c.Read(make([]byte, 1))
			return err == io.EOF
		}},
		{"refused in the handshake", func() bool {
			c := dial(tEcho, f.pki.sensor2)
			if c == nil {
				return true // TLS 1.3: the alert may come with the handshake's end
			}
			defer c.Close()
			_, err := c.Read(make([]byte, 1))
			return err != nil && err != io.EOF
		}},
		{"abandoned handshake", func() bool {
			c, err := net.Dial("tcp", f.addr)
			if err != nil {
				return false
			}
			_, err = c.Write([]byte{22, 3, 1, 0, 200, 1, 0, 0}) // a ClientHello's first bytes
			return c.Close() == nil && err == nil
		}},
		{"idle", func() bool {
			c := dial("idle.tcp.test", f.pki.sensor1)
			if c == nil {
				return false
			}
			defer c.Close()
			ok := echoed(c)
			_, err := c.Read(make([]byte, 1))
			return ok && err == io.EOF
		}},
		{"backpressure", func() bool {
			c := dial("flood.tcp.test", f.pki.sensor1)
			if c == nil {
				return false
			}
			defer c.Close()
			time.Sleep(200 * time.Millisecond) // the device does not read
			// Cut: the stream ends, with close_notify or, when the device's
			// socket could not take it, without (a truncation).
			_, err := io.Copy(io.Discard, c)
			return err == nil || err == io.ErrUnexpectedEOF
		}},
	}
	checkEndingsLeaveNothing(t, f.tcpFixture(), endings)
}

// Every way an mqtt application's connection can end, at the gate or
// after it, releases what it held (as for tcp applications above).
func TestMQTTEndingsLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of relays: not with -short")
	}
	f := newMQTTFixture(t)
	// The capturing origins hand each connection's bytes to the test: take
	// them, so that their handlers end.
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	for _, c := range []*captured{f.raw, f.tmpl} {
		go func() {
			for {
				select {
				case <-c.got:
				case <-done:
					return
				}
			}
		}()
	}
	const v3, v5 = mqttwire.V311, mqttwire.V5
	session := func(sni string, dev *device, first []byte) (*tls.Conn, *bufio.Reader) {
		c := f.dialLeaky(sni, dev)
		if c == nil {
			return nil, nil
		}
		if _, err := c.Write(first); err != nil {
			_ = c.Close()
			return nil, nil
		}
		return c, bufio.NewReader(c)
	}
	connack := func(r *bufio.Reader, version byte) (byte, bool) {
		pk, err := testkit.ReadMQTT(r, version)
		if err != nil || pk.FixedHeader.Type != packets.Connack {
			return 0, false
		}
		return pk.ReasonCode, true
	}
	refused := func(sni string, dev *device, first []byte, version, code byte) func() bool {
		return func() bool {
			c, r := session(sni, dev, first)
			if c == nil {
				return false
			}
			defer c.Close()
			got, ok := connack(r, version)
			_, err := r.ReadByte()
			return ok && got == code && err != nil
		}
	}
	endings := []ending{
		// The raw application admits sensor-0001 and relays its CONNECT
		// byte for byte to a capturing origin, which never answers.
		{"admitted, then DISCONNECT", func() bool {
			c, _ := session(mRaw, f.pki.sensor1, testkit.MQTTConnect(t, v3, "sensor-0001", 30))
			if c == nil {
				return false
			}
			_, err := c.Write([]byte{0xe0, 0}) // DISCONNECT
			return c.Close() == nil && err == nil
		}},
		{"admitted, then reset", func() bool {
			c, _ := session(mRaw, f.pki.sensor1, testkit.MQTTConnect(t, v3, "sensor-0001", 30))
			if c == nil {
				return false
			}
			reset(c.NetConn())
			return true
		}},
		{"admitted by the broker, then closed", func() bool {
			// Every session is sensor-0001's: the broker takes the older
			// ones over, which ends them from its side.
			c, r := session(mToken, f.pki.sensor1, testkit.MQTTConnect(t, v5, "sensor-0001", 30))
			if c == nil {
				return false
			}
			// A session taken over before its CONNACK ends without one; a
			// refusal would be a CONNACK with a failure code.
			code, ok := connack(r, v5)
			return c.Close() == nil && (!ok || code == 0)
		}},
		{"refused: client id", refused(mToken, f.pki.sensor1, testkit.MQTTConnect(t, v5, "sensor-0002", 30), v5, 0x85)},
		{"refused: policy", refused(mRaw, f.pki.sensor2, testkit.MQTTConnect(t, v3, "x", 30), v3, 5)},
		{"refused: too large", refused(mTmpl, f.pki.sensor1, testkit.MQTTConnect(t, v5, strings.Repeat("x", 300), 30), v5, 0x95)},
		{"refused: broker down", refused(mDown, f.pki.sensor1, testkit.MQTTConnect(t, v5, "sensor-0001", 30), v5, 0x88)},
		{"not MQTT", func() bool {
			c, r := session(mRaw, f.pki.sensor1, []byte("GET / HTTP/1.1\r\n\r\n"))
			if c == nil {
				return false
			}
			defer c.Close()
			_, err := r.ReadByte()
			return err != nil
		}},
		{"closed before CONNECT", func() bool {
			c := f.dialLeaky(mToken, f.pki.sensor1)
			return c != nil && c.Close() == nil
		}},
		{"reset in the middle of CONNECT", func() bool {
			b := testkit.MQTTConnect(t, v5, "sensor-0001", 30)
			c, _ := session(mToken, f.pki.sensor1, b[:len(b)/2])
			if c == nil {
				return false
			}
			reset(c.NetConn())
			return true
		}},
	}
	checkEndingsLeaveNothing(t, f.tcpFixture, endings)
}

// tcpFixture returns f: the leak checker takes any fixture of tcp or mqtt
// applications.
func (f *tcpFixture) tcpFixture() *tcpFixture { return f }

// dialLeaky is dialTCP for the leak tests: it leaves closing the
// connection to the caller (nothing for the test's cleanup to hold) and
// returns nil when the handshake fails.
func (f *tcpFixture) dialLeaky(sni string, dev *device) *tls.Conn {
	conf := f.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = true
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", f.addr, conf)
	if err != nil {
		return nil
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// reset closes c with a TCP reset instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// checkEndingsLeaveNothing runs each ending many times, concurrently, and
// fails unless every connection is then counted closed and the process's
// descriptors and goroutines are back where they were before. The garbage
// collector is off meanwhile: a socket released only by a finalizer (a
// net.Conn dropped without Close) stays counted.
func checkEndingsLeaveNothing(t *testing.T, f *tcpFixture, endings []ending) {
	t.Helper()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	round := func(n int) {
		for _, e := range endings {
			var wg sync.WaitGroup
			var mu sync.Mutex
			failed := 0
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if !e.run() {
						mu.Lock()
						failed++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if failed > 0 {
				t.Errorf("%s: %d of %d did not end as they should", e.name, failed, n)
			}
		}
	}
	// The metrics are read without keep-alive, and the idle connections of
	// the default client (the test broker's JWKS fetches) are closed before
	// each count: they are the test's, not the gateway's.
	count := func() (int, int) {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		return openFDs(t), busyGoroutines()
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	metrics := func() string {
		resp, err := client.Get("http://" + f.srv.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	settled := func() bool {
		for _, l := range strings.Split(metrics(), "\n") {
			if (strings.HasPrefix(l, "fleetgate_tcp_connections{") || strings.HasPrefix(l, "fleetgate_connections_open ")) &&
				!strings.HasSuffix(l, " 0") {
				return false
			}
		}
		return true
	}
	round(2) // what starts lazily (pools, the loops' buffers) starts now
	testkit.WaitFor(t, "the warm-up's connections to be counted closed", 20*time.Second, settled)
	// The baseline: the counts once they hold still (the origins' handlers
	// finish a moment after the gateway's side).
	fds, gs := count()
	for still, deadline := 0, time.Now().Add(10*time.Second); still < 5 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		f2, g2 := count()
		if f2 == fds && g2 == gs {
			still++
			continue
		}
		fds, gs, still = f2, g2, 0
	}
	for range 2 {
		round(25)
	}
	testkit.WaitFor(t, "every connection to be counted closed", 30*time.Second, settled)
	var nowFDs, nowGs int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if nowFDs, nowGs = count(); nowFDs <= fds && nowGs <= gs {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	t.Fatalf("after the connections ended: %d descriptors (%d before them), %d goroutines besides idle pool workers (%d before)\n%s",
		nowFDs, fds, nowGs, gs, buf[:n])
}

// openFDs counts the process's open descriptors, pipes aside: the test's
// echo origins copy with io.Copy, which splices through pipes from a pool
// that only the garbage collector empties.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			continue
		}
		n++
	}
	return n
}

// busyGoroutines counts the goroutines that are not idle workers of a pool
// (the handshake workers' pool, gnet's ants pool): those exit only once
// their idle time has passed.
func busyGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		// The first frame under the header is where the goroutine waits.
		lines := strings.SplitN(g, "\n", 3)
		if len(lines) < 2 {
			continue
		}
		if top := lines[1]; strings.HasPrefix(top, "github.com/fleetgate/fleetgate/internal/workpool.(*Pool).work(") ||
			strings.HasPrefix(top, "github.com/panjf2000/ants/v2.(*goWorker).run.func1(") {
			continue
		}
		n++
	}
	return n
}
