package gateway

// Overload: at three times the handshake capacity the
// admitted handshakes complete and the excess is refused at once, counted;
// at max_connections new connections are refused and open ones keep being
// served; the optional per-address cap. The 60 s flood with memory samples
// is `make flood` (scripts/flood.sh).

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// refusedFast dials addr and expects the gateway to close the connection
// without a handshake, well before handshake_timeout (5s in the harness).
// It returns how long the refusal took.
func refusedFast(t *testing.T, h *harness) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", h.addr, h.tlsConfig(hApp, h.pki.sensor1))
	d := time.Since(start)
	if err == nil {
		c.Close()
		t.Error("a connection over the limit completed its handshake")
	}
	if d > 3*time.Second {
		t.Errorf("refused after %v: not at once (handshake_timeout is 5s)", d)
	}
	return d
}

// TestHandshakeOverloadSheds fills the handshake queue (4) with stalled
// connections, then tries twice as many more: three times the capacity.
// The excess is refused at once and counted as shed; the stalled
// connections, admitted, then complete their handshakes and are served.
func TestHandshakeOverloadSheds(t *testing.T) {
	v := newHarness(t).variantWith(t, func(c *fileConfig) {
		c.Gateway.HandshakeQueue, c.Gateway.HandshakeWorkers = 4, 1
	})
	const capacity = 4
	type held struct {
		raw    net.Conn
		opened time.Time
	}
	var admitted []held
	for range capacity {
		raw, err := net.DialTimeout("tcp", v.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		admitted = append(admitted, held{raw, time.Now()})
	}
	testkit.WaitFor(t, "the handshake queue to fill", 5*time.Second, func() bool {
		return v.srv.engine.Stats().InFlight == capacity
	})

	var wg sync.WaitGroup
	for range 2 * capacity {
		wg.Go(func() { refusedFast(t, v) })
	}
	wg.Wait()

	for i, a := range admitted {
		c := tls.Client(a.raw, v.tlsConfig(hApp, v.pki.sensor1))
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatalf("admitted connection %d: handshake: %v", i, err)
		}
		if d := time.Since(a.opened); d > 5*time.Second {
			t.Errorf("admitted connection %d: handshake done %v after the connection opened; handshake_timeout is 5s", i, d)
		}
		rc := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
		rc.send(request("GET", hApp, "/admitted"))
		if r := rc.read("GET"); r.StatusCode != http.StatusOK {
			t.Fatalf("admitted connection %d: status %d", i, r.StatusCode)
		}
	}
	st := v.srv.engine.Stats()
	if st.Handshakes["shed"] != 2*capacity {
		t.Errorf("engine: %d handshakes shed, want %d", st.Handshakes["shed"], 2*capacity)
	}
	if st.Handshakes["ok"] < capacity {
		t.Errorf("engine: %d handshakes ok, want %d", st.Handshakes["ok"], capacity)
	}
	s := expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 2*capacity, "reason", "shed")})
	if n, _ := s.value("fleetgate_connections_refused_total", "reason", "shed"); n != 2*capacity {
		t.Errorf("fleetgate_connections_refused_total{reason=shed} = %v, want %d", n, 2*capacity)
	}
}

// TestHandshakeBurstAccounting: twelve devices handshake at once against a
// queue of four and one CPU slot. Which ones are shed depends on timing;
// the accounting does not: every device is either served or refused at
// once, and the refusals are exactly the sheds counted.
func TestHandshakeBurstAccounting(t *testing.T) {
	v := newHarness(t).variantWith(t, func(c *fileConfig) {
		c.Gateway.HandshakeQueue, c.Gateway.HandshakeWorkers = 4, 1
	})
	const devices = 12
	var mu sync.Mutex
	served, refused := 0, 0
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range devices {
		wg.Go(func() {
			<-start
			begin := time.Now()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", v.addr, v.tlsConfig(hIoT, v.pki.sensor1))
			if err != nil {
				if d := time.Since(begin); d > 3*time.Second {
					t.Errorf("refused after %v", d)
				}
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(c, request("GET", hIoT, "/burst"))
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
			if err != nil {
				t.Errorf("admitted, then: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
				return
			}
			mu.Lock()
			served++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	t.Logf("%d served, %d shed", served, refused)
	if served+refused != devices || served < 4 {
		t.Fatalf("%d served + %d refused of %d devices", served, refused, devices)
	}
	if n := v.srv.engine.Stats().Handshakes["shed"]; n != uint64(refused) {
		t.Errorf("engine counted %d shed, the devices saw %d refusals", n, refused)
	}
}

// TestMaxConnectionsKeepsExisting: at max_connections a new connection is
// refused at once, and the open ones keep being served.
func TestMaxConnectionsKeepsExisting(t *testing.T) {
	v := newHarness(t).variantWith(t, func(c *fileConfig) { c.Gateway.MaxConnections = 3 })
	var open []*rawConn
	for range 3 {
		c := v.dial(t, hApp, v.pki.sensor1)
		c.send(request("GET", hApp, "/first"))
		if r := c.read("GET"); r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
		open = append(open, c)
	}
	refusedFast(t, v)
	refusedFast(t, v)
	for i, c := range open {
		c.send(request("GET", hApp, "/again"))
		if r := c.read("GET"); r.StatusCode != 200 {
			t.Fatalf("open connection %d after the refusals: status %d", i, r.StatusCode)
		}
	}
	expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 2, "reason", "max_connections")})
	_ = open[0].c.Close()
	testkit.WaitFor(t, "a connection to close", 5*time.Second, func() bool { return v.srv.conns.Load() == 2 })
	c := v.dial(t, hApp, v.pki.sensor1)
	c.send(request("GET", hApp, "/room"))
	if r := c.read("GET"); r.StatusCode != 200 {
		t.Fatalf("below max_connections again: status %d", r.StatusCode)
	}
}

// dialFrom opens a TLS connection to h from source address ip.
func dialFrom(h *harness, ip string) (*rawConn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := tls.DialWithDialer(d, "tcp", h.addr, h.tlsConfig(hApp, h.pki.sensor1))
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	h.t.Cleanup(func() { c.Close() })
	return &rawConn{t: h.t, c: c, br: bufio.NewReader(c)}, nil
}

// TestMaxConnectionsPerIP: with max_connections_per_ip = 2 a third
// connection from one address is refused at once, another address is not
// affected, and the address gets room again when one closes. The cap is off
// by default.
func TestMaxConnectionsPerIP(t *testing.T) {
	base := newHarness(t)
	if n := base.srv.snap.Load().cfg.Gateway.MaxConnectionsPerIP; n != 0 {
		t.Fatalf("max_connections_per_ip defaults to %d, want 0 (off)", n)
	}
	for range 4 { // off: one address may open many
		c := base.dial(t, hApp, base.pki.sensor1)
		c.send(request("GET", hApp, "/"))
		if r := c.read("GET"); r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
	}

	v := base.variantWith(t, func(c *fileConfig) { c.Gateway.MaxConnectionsPerIP = 2 })
	var mine []*rawConn
	for range 2 {
		c, err := dialFrom(v, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, c)
	}
	if _, err := dialFrom(v, "127.0.0.1"); err == nil {
		t.Fatal("a third connection from 127.0.0.1 was admitted")
	}
	other, err := dialFrom(v, "127.0.0.2")
	if err != nil {
		t.Fatalf("another address was refused: %v", err)
	}
	for i, c := range append(mine, other) {
		c.send(request("GET", hApp, "/"))
		if r := c.read("GET"); r.StatusCode != 200 {
			t.Fatalf("connection %d: status %d", i, r.StatusCode)
		}
	}
	expectMetrics(t, v, []want{w("fleetgate_connections_refused_total", 1, "reason", "max_connections_per_ip")})
	_ = mine[0].c.Close()
	testkit.WaitFor(t, "a connection to close", 5*time.Second, func() bool { return v.srv.conns.Load() == 2 })
	if _, err := dialFrom(v, "127.0.0.1"); err != nil {
		t.Fatalf("after a close, 127.0.0.1 is still refused: %v", err)
	}
	var ne net.Error
	if _, err := dialFrom(v, "127.0.0.1"); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("at the cap again: %v", err)
	}
}

// TestShedLog: connections refused at accept are logged at most once a
// second per reason, each line with how many since the last.
func TestShedLog(t *testing.T) {
	var buf testkit.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	var l shedLog
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 5 {
		l.shed(log, "rate", "192.0.2.1", t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	l.shed(log, "shed", "192.0.2.2", t0.Add(200*time.Millisecond))
	l.shed(log, "rate", "192.0.2.3", t0.Add(1100*time.Millisecond))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{`"reason":"rate","count":1,"last_client":"192.0.2.1"`,
		`"reason":"shed","count":1,"last_client":"192.0.2.2"`,
		`"reason":"rate","count":5,"last_client":"192.0.2.3"`}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) || !strings.Contains(lines[i], "connections refused at accept") {
			t.Errorf("line %d = %s, want %s", i, lines[i], w)
		}
	}
}

// TestShedLogFlushesTheLastSecond: refusals that wait for their reason's
// next line are logged a second after the last one even when no refusal
// follows them: the end of a storm is not held back until the next one.
func TestShedLogFlushesTheLastSecond(t *testing.T) {
	var buf testkit.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	var l shedLog
	start := time.Now()
	for i := range 3 {
		l.shed(log, "rate", "192.0.2."+strconv.Itoa(i+1), time.Now())
	}
	testkit.WaitFor(t, "the line of the two refusals that waited", 5*time.Second, func() bool {
		return strings.Contains(buf.String(), `"count":2,"last_client":"192.0.2.3"`)
	})
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("the waiting refusals were logged after %v, within the second of the first line", d)
	}
	if lines := strings.Count(buf.String(), "connections refused at accept"); lines != 2 {
		t.Errorf("%d lines, want 2 (the first refusal, then the two that waited):\n%s", lines, buf.String())
	}
}
