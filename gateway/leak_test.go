package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
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

// ending is one way a device's connection ends; run makes one such
// connection and reports whether the device saw what that ending promises.
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
		// 1s: a busy machine may pause a device longer than a shorter
		// timeout between its handshake and its first message.
		lifeApp("tcp-idle", "idle.tcp.test", echo.url(), func(a *appSection) { a.IdleTimeout = "1s" }),
		lifeApp("tcp-flood", "flood.tcp.test", flood.url(), func(a *appSection) { a.RelayBuffer = "64KiB" }))
	dial := f.dialLeaky
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
	checkEndingsLeaveNothing(t, f.harness, endings, nil, nil)
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
	// The CONNECTs are made here, on the test's goroutine (their encoder
	// reports to t).
	sensor311 := testkit.MQTTConnect(t, v3, "sensor-0001", 30)
	sensor5 := testkit.MQTTConnect(t, v5, "sensor-0001", 30)
	endings := []ending{
		// The raw application admits sensor-0001 and relays its CONNECT
		// byte for byte to a capturing origin, which never answers.
		{"admitted, then DISCONNECT", func() bool {
			c, _ := session(mRaw, f.pki.sensor1, sensor311)
			if c == nil {
				return false
			}
			_, err := c.Write([]byte{0xe0, 0}) // DISCONNECT
			return c.Close() == nil && err == nil
		}},
		{"admitted, then reset", func() bool {
			c, _ := session(mRaw, f.pki.sensor1, sensor311)
			if c == nil {
				return false
			}
			reset(c.NetConn())
			return true
		}},
		{"admitted by the broker, then closed", func() bool {
			// Every session is sensor-0001's: the broker takes the older
			// ones over, which ends them from its side.
			c, r := session(mToken, f.pki.sensor1, sensor5)
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
		{"refused: broker down", refused(mDown, f.pki.sensor1, sensor5, v5, 0x88)},
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
			c, _ := session(mToken, f.pki.sensor1, sensor5[:len(sensor5)/2])
			if c == nil {
				return false
			}
			reset(c.NetConn())
			return true
		}},
	}
	checkEndingsLeaveNothing(t, f.harness, endings, nil, nil)
}

// Every way an HTTP connection can end releases what it held (as for tcp
// and mqtt applications above): the requests, refusals, timeouts and
// resets of a device, and an origin that closes, answers garbage or is
// down.
func TestHTTPEndingsLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of connections: not with -short")
	}
	// 1s: a busy machine may pause a device longer than a shorter timeout
	// between the requests of a kept-alive connection.
	h := newHarness(t, func(p *cfgParams) {
		p.IdleTimeout = "1s"
		p.Edit = func(c *fileConfig) { c.Gateway.HeaderTimeout = "1s" }
	})
	dev := h.pki.sensor1
	type answer struct {
		status int
		err    error
	}
	// exchange sends req on a new connection to sni and reads one answer.
	exchange := func(sni, req string) (*tls.Conn, *bufio.Reader, answer) {
		c := h.dialLeaky(sni, dev)
		if c == nil {
			return nil, nil, answer{err: io.ErrUnexpectedEOF}
		}
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, req); err != nil {
			return c, br, answer{err: err}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return c, br, answer{err: err}
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return c, br, answer{status: resp.StatusCode, err: err}
	}
	get := func(host, path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	}
	closed := func(br *bufio.Reader) bool {
		_, err := br.ReadByte()
		return err != nil
	}
	// answered: one request on its own connection gets status, then the
	// device closes.
	answered := func(sni, req string, status int) func() bool {
		return func() bool {
			c, _, a := exchange(sni, req)
			if c == nil {
				return false
			}
			return c.Close() == nil && a.err == nil && a.status == status
		}
	}
	endings := []ending{
		{"keep-alive, then close_notify", func() bool {
			c, br, a := exchange(hApp, get(hApp, "/1"))
			if c == nil {
				return false
			}
			defer c.Close()
			if a.err != nil || a.status != 200 {
				return false
			}
			for range 2 {
				if _, err := io.WriteString(c, get(hApp, "/2")); err != nil {
					return false
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return false
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return false
				}
			}
			return true
		}},
		// A no-duration application's connection serves one request: the
		// next one takes a fresh handshake.
		{"no duration: one request", func() bool {
			c, br, a := exchange(hIoT, get(hIoT, "/"))
			if c == nil {
				return false
			}
			defer c.Close()
			return a.err == nil && a.status == 200 && closed(br)
		}},
		{"Connection: close", func() bool {
			c, br, a := exchange(hApp, "GET / HTTP/1.1\r\nHost: "+hApp+"\r\nConnection: close\r\n\r\n")
			if c == nil {
				return false
			}
			defer c.Close()
			return a.err == nil && a.status == 200 && closed(br)
		}},
		{"reset in the header", func() bool {
			c := h.dialLeaky(hIoT, dev)
			if c == nil {
				return false
			}
			_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+hIoT+"\r\nX-Half: ")
			reset(c.NetConn())
			return err == nil
		}},
		{"reset in the body", func() bool {
			c := h.dialLeaky(hIoT, dev)
			if c == nil {
				return false
			}
			_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: "+hIoT+"\r\nContent-Length: 50000\r\n\r\n"+strings.Repeat("b", 20000))
			reset(c.NetConn())
			return err == nil
		}},
		{"close_notify in the header", func() bool {
			c := h.dialLeaky(hIoT, dev)
			if c == nil {
				return false
			}
			defer c.Close()
			_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+hIoT+"\r\n")
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c) // an answer, or none, then the end
			return err == nil
		}},
		{"header timeout", func() bool {
			c := h.dialLeaky(hIoT, dev)
			if c == nil {
				return false
			}
			defer c.Close()
			_, err := io.WriteString(c, "GET / HTTP/1.1\r\n")
			resp, rerr := http.ReadResponse(bufio.NewReader(c), nil)
			return err == nil && rerr == nil && resp.StatusCode == 408 && resp.Close
		}},
		{"idle timeout", func() bool {
			c, br, a := exchange(hApp, get(hApp, "/"))
			if c == nil {
				return false
			}
			defer c.Close()
			return a.err == nil && a.status == 200 && closed(br)
		}},
		{"refused by the policies", func() bool { // sensor-0002 is not among hIoT's devices
			c := h.dialLeaky(hIoT, h.pki.sensor2)
			if c == nil {
				return false
			}
			defer c.Close()
			if _, err := io.WriteString(c, get(hIoT, "/")); err != nil {
				return false
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			return err == nil && resp.StatusCode == 403
		}},
		{"origin closes without an answer", answered(hIoT, get(hIoT, "/close"), 502)},
		{"origin answers garbage", answered(hIoT, get(hIoT, "/garbage"), 502)},
		{"origin down", answered(hDown, get(hDown, "/"), 502)},
		{"header too large", func() bool {
			// The answer says Connection: close, and the device closes: the
			// gateway lingers until then.
			c, _, a := exchange(hIoT, "GET / HTTP/1.1\r\nHost: "+hIoT+"\r\nX-Big: "+strings.Repeat("h", 8<<10)+"\r\n\r\n")
			if c == nil {
				return false
			}
			return c.Close() == nil && a.err == nil && a.status == 431
		}},
		{"body too large", func() bool {
			c := h.dialLeaky(hIoT, dev)
			if c == nil {
				return false
			}
			defer c.Close()
			_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: "+hIoT+"\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("b", 4000))
			resp, rerr := http.ReadResponse(bufio.NewReader(c), nil)
			return err == nil && rerr == nil && resp.StatusCode == 413
		}},
		{"abandoned handshake", func() bool {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				return false
			}
			_, err = c.Write([]byte{22, 3, 1, 0, 200, 1, 0, 0})
			return c.Close() == nil && err == nil
		}},
	}
	// The origin's connections are pooled (per event loop, and in the
	// fasthttp client for what leaves the loop): not counted, nor are the
	// goroutines of net/http's servers (the test origin's, serving them;
	// the admin listener's, whose client here closes each connection) or
	// the fasthttp pool's cleaner.
	checkEndingsLeaveNothing(t, h, endings, []int{h.origin.srv.Listener.Addr().(*net.TCPAddr).Port},
		[]string{"net/http.(*conn).serve", "github.com/valyala/fasthttp.(*HostClient).connsCleaner"})
}

// dialLeaky dials the gateway for the leak tests: it leaves closing the
// connection to the caller (nothing for the test's cleanup to hold) and
// returns nil when the handshake fails.
func (h *harness) dialLeaky(sni string, dev *device) *tls.Conn {
	conf := h.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = true
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", h.addr, conf)
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
// net.Conn dropped without Close) stays counted. Connections kept on
// purpose are not counted: the sockets with an end on one of the ports in
// pooled, and the goroutines with a frame of a function in serving.
func checkEndingsLeaveNothing(t *testing.T, f *harness, endings []ending, pooled []int, serving []string) {
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
	// The default client's idle connections (the metrics scrapes', the test
	// broker's JWKS fetches) are closed before each count: they are the
	// test's, not the gateway's.
	count := func() (int, int) {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		return openFDs(t, pooled...), busyGoroutines(serving...)
	}
	settled := func() bool {
		m := scrapeMetrics(t, f)
		open, _ := m.value("fleetgate_connections_open")
		relays, _ := m.value("fleetgate_tcp_connections")
		return open == 0 && relays == 0
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
		round(15)
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

// openFDs counts the process's open descriptors, pipes aside (the test's
// echo origins copy with io.Copy, which splices through pipes from a pool
// that only the garbage collector empties), and so are the TCP sockets
// with an end on one of the ports in pooled (connections kept on purpose).
func openFDs(t testing.TB, pooled ...int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var skip map[string]bool // socket inodes
	if len(pooled) > 0 {
		skip = socketsOnPorts(pooled)
	}
	n := 0
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && (strings.HasPrefix(l, "pipe:") || skip[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")]) {
			continue
		}
		n++
	}
	return n
}

// socketsOnPorts returns the inodes of the TCP sockets (IPv4 and IPv6)
// whose local or remote port is one of ports.
func socketsOnPorts(ports []int) map[string]bool {
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("%04X", p)] = true
	}
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 {
				continue
			}
			port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
			if want[port(fs[1])] || want[port(fs[2])] {
				inodes[fs[9]] = true
			}
		}
	}
	return inodes
}

// busyGoroutines counts the goroutines that are not idle workers of a pool
// (the handshake workers' pool, gnet's ants pool: those exit only once
// their idle time has passed), nor have a frame of a function named in
// pooled (what serves or watches connections kept on purpose).
func busyGoroutines(pooled ...string) int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
goroutines:
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
		for _, fn := range pooled {
			if strings.Contains(g, "\n"+fn+"(") {
				continue goroutines
			}
		}
		n++
	}
	return n
}
