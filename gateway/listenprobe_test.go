package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"golang.org/x/sys/unix"
)

// TestListenInUseRefused: a second gateway started on the address a running
// one listens on fails to start with "address already in use", instead of
// joining the first one's SO_REUSEPORT group and taking half of its devices;
// the first keeps serving. Once the first has stopped, a gateway starts on
// that address again, past the connections it left in TIME_WAIT.
func TestListenInUseRefused(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	if s := h.get(t, h.client(p.sensor1), href(hIoT, "/")).StatusCode; s != 200 {
		t.Fatalf("first gateway: %d", s)
	}

	second, err := New(Options{Load: func() (*configs.Config, error) { return configs.Load(h.cfgPath) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, booted, err := startRun(t, second); booted {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = second.Shutdown(ctx)
		t.Fatalf("a second gateway started on %s, the address the first listens on", h.addr)
	} else if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "listen "+h.addr) {
		t.Fatalf("second gateway on %s: Run = %v, want address already in use, naming the address", h.addr, err)
	}
	if second.Ready() {
		t.Error("the refused gateway reports ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := second.Shutdown(ctx); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Shutdown of the refused gateway = %v, want its Run's error", err)
	}
	for i := range 8 { // fresh connections: all of them reach the first
		if s := h.get(t, h.client(p.sensor1), href(hIoT, "/")).StatusCode; s != 200 {
			t.Fatalf("first gateway, request %d after the refusal: %d", i, s)
		}
	}

	// A keep-alive connection left idle is closed by the first gateway as it
	// drains: its side of it stays in TIME_WAIT, which must not keep the
	// next gateway off the port.
	idle := h.dial(t, hApp, p.sensor1)
	idle.send(request("GET", hApp, "/"))
	if r := idle.read("GET"); r.StatusCode != 200 {
		t.Fatalf("keep-alive request: %d", r.StatusCode)
	}
	h.stop()
	idle.expectEOF()
	_ = idle.c.NetConn().Close() // a FIN, no close_notify the gateway would answer with a reset
	testkit.WaitFor(t, "the first gateway's side of the idle connection in TIME_WAIT", 5*time.Second, func() bool {
		return timeWaitOn(t, h.addr)
	})
	third, err := New(Options{Load: func() (*configs.Config, error) { return configs.Load(h.cfgPath) }})
	if err != nil {
		t.Fatal(err)
	}
	run3, booted, err := startRun(t, third)
	if !booted {
		t.Fatalf("a gateway on %s after the first stopped: Run = %v", h.addr, err)
	}
	if s := h.get(t, h.client(p.sensor1), href(hIoT, "/")).StatusCode; s != 200 {
		t.Fatalf("gateway after the first stopped: %d", s)
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel3()
	if err := third.Shutdown(ctx3); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-run3
}

// timeWaitOn reports whether a TCP connection whose local address is addr (an
// IPv4 host:port) is in TIME_WAIT, from /proc/net/tcp.
func timeWaitOn(t *testing.T, addr string) bool {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	a := ap.Addr().As4()
	// /proc/net/tcp writes the address as the host-order hex of the
	// network-order word, then the port in hex: 127.0.0.1:80 is 0100007F:0050.
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == local && f[3] == "06" { // 06: TIME_WAIT
			return true
		}
	}
	return false
}

// TestCheckPortFree: the probe refuses a port another socket listens on
// with SO_REUSEPORT (which the event loops' own bind would join), and lets
// a start pass when only TIME_WAIT connections hold the port, even those
// of a listener without SO_REUSEADDR (what a fleetgate built before it set
// SO_REUSEADDR leaves behind at a restart).
func TestCheckPortFree(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = errors.Join(
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1))
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := checkPortFree(addr); !errors.Is(err, syscall.EADDRINUSE) {
		ln.Close()
		t.Fatalf("checkPortFree(%s) with a SO_REUSEPORT listener there = %v, want EADDRINUSE", addr, err)
	}
	if err := checkPortFree("127.0.0.1:0"); err != nil {
		t.Errorf("checkPortFree of port 0 = %v", err)
	}

	// The listener's side of a connection it closes first ends in TIME_WAIT.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	ln.Close()
	server.Close()
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after the server's close: no error")
	}
	client.Close()
	testkit.WaitFor(t, "the listener's side in TIME_WAIT", 5*time.Second, func() bool { return timeWaitOn(t, addr) })
	if err := checkPortFree(addr); err != nil {
		t.Fatalf("checkPortFree(%s) with only a TIME_WAIT connection there = %v, want nil", addr, err)
	}
}

// TestAdminListenInUseShutdown: a gateway whose Run fails at its admin
// listener (the address taken) has stopped as one whose listen address is
// taken has: Shutdown returns Run's error at once, not when its context
// ends, and the gateway is not ready.
func TestAdminListenInUseShutdown(t *testing.T) {
	h := newHarness(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	listen := testkit.FreePort(t)
	srv, err := New(Options{Load: func() (*configs.Config, error) {
		cfg, err := configs.Load(h.cfgPath)
		if err != nil {
			return nil, err
		}
		cfg.Gateway.Listen, cfg.Gateway.AdminListen = listen, taken.Addr().String()
		return cfg, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, booted, runErr := startRun(t, srv); booted {
		t.Fatalf("a gateway whose admin_listen %s is taken booted", taken.Addr())
	} else if !errors.Is(runErr, syscall.EADDRINUSE) {
		t.Fatalf("Run with admin_listen %s taken = %v, want address already in use", taken.Addr(), runErr)
	}
	if srv.Ready() {
		t.Error("the gateway whose Run failed reports ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Shutdown after Run failed at the admin listener = %v (after %v), want Run's error", err, time.Since(start).Round(time.Millisecond))
	}
}

// startRun runs s and waits up to 10 s for it to boot (booted) or for Run
// to fail first (its error); run carries Run's return once it has booted.
func startRun(t *testing.T, s *Server) (run <-chan error, booted bool, err error) {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- s.Run() }()
	select {
	case err = <-ch:
		return ch, false, err
	case <-s.Booted():
		return ch, true, nil
	case <-time.After(10 * time.Second):
		t.Fatal("Run neither failed nor booted in 10 s")
		return nil, false, nil
	}
}

// TestReloadBeforeRunKeepsRestartOnlySettings: a reload that comes
// before Run (serve's SIGHUP while starting) warns that admin_listen and
// event_loops "need a restart; the running values stay", so Run must start
// the admin listener on the address New loaded, not the reloaded one.
func TestReloadBeforeRunKeepsRestartOnlySettings(t *testing.T) {
	h := newHarness(t)
	first, second := testkit.FreePort(t), testkit.FreePort(t)
	path := filepath.Join(h.dir, "review.toml")
	write := func(admin string) {
		cfg := h.config()
		cfg.Gateway.Listen = testkit.FreePort(t)
		cfg.Gateway.AdminListen = admin
		h.writeFile("review.toml", marshalConfig(t, cfg))
	}
	write(first)
	logs := &testkit.Buffer{}
	s, err := New(Options{Load: func() (*configs.Config, error) { return configs.Load(path) }, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// listen as New read it: only admin_listen changes
	cfg := h.config()
	cfg.Gateway.Listen = s.Addr()
	cfg.Gateway.AdminListen = second
	h.writeFile("review.toml", marshalConfig(t, cfg))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	run, booted, err := startRun(t, s)
	if !booted {
		t.Fatalf("Run: %v", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-run
	}()
	if got := s.AdminAddr(); got != first {
		t.Errorf("admin listener on %s, want %s (admin_listen is restart-only; log: %s)", got, first, logs.String())
	}
}
