package tlsengine

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// teEarly is a Config.Early owner: it answers "echo X" with "early X", so
// the test sees which path served a command, and records what it saw.
type teEarly struct {
	mu       sync.Mutex
	buf      []byte
	tc       *Conn
	openPush bool // Push ran on a connection already published (must not)
	served   chan bool
}

func (e *teEarly) Push(p []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tc.HandshakeComplete() {
		e.openPush = true
	}
	e.buf = append(e.buf, p...)
}

func (e *teEarly) Serve() {
	e.mu.Lock()
	lines := strings.SplitAfter(string(e.buf), "\n")
	e.mu.Unlock()
	for _, l := range lines {
		if cmd, ok := strings.CutPrefix(l, "echo "); ok && strings.HasSuffix(cmd, "\n") {
			_, _ = e.tc.Write([]byte("early " + cmd))
		}
	}
	e.served <- e.tc.HandshakeComplete()
}

// slowVerifier delays the verdict (computed after crypto/tls's handshake,
// before the connection opens) so that the client's first bytes are
// buffered by the time the handshake ends.
func slowVerifier(d time.Duration) ChainVerifier {
	cache := NewVerdictCache(1024)
	return teVerifierFunc(func(site *Site, chain []*x509.Certificate, now time.Time) verdict.Verdict {
		time.Sleep(d)
		return cache.Verdict(site, chain, now)
	})
}

// TestEarlyData: application data buffered when the handshake ends goes to
// Config.Early's owner on the handshake's goroutine, before the connection
// is published, all of it and in order; Serve runs on the open connection;
// what the device sends afterwards is the event loop's again. An owner that
// declines leaves everything to the loop.
func TestEarlyData(t *testing.T) {
	f := fixture(t)
	for _, tt := range []struct {
		name    string
		decline bool
		sites   []string // the site names Early was asked about
	}{
		{name: "taken"},
		{name: "declined", decline: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				asked []string
				early = &teEarly{served: make(chan bool, 1)}
			)
			cfg := f.config(t)
			cfg.Verifier = slowVerifier(150 * time.Millisecond)
			cfg.Early = func(c *Conn, site *Site) EarlyData {
				mu.Lock()
				asked = append(asked, site.Name)
				mu.Unlock()
				if c.HandshakeComplete() {
					t.Error("Early was asked about a connection already published")
				}
				if tt.decline {
					return nil
				}
				early.tc = c
				return early
			}
			srv := startServer(t, cfg, false)
			conn, err := srv.dial(t, f.client(teDevices, &f.deviceTLS))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			// Two commands in the first flight, while the verdict is still
			// being computed.
			if _, err := io.WriteString(conn, "echo a\necho b\n"); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(conn)
			want := []string{"early a", "early b"}
			if tt.decline {
				want = []string{"a", "b"}
			}
			for _, w := range want {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("reading %q: %v", w, err)
				}
				if got := strings.TrimSuffix(line, "\n"); got != w {
					t.Fatalf("answer %q, want %q", got, w)
				}
			}
			if !tt.decline {
				select {
				case open := <-early.served:
					if !open {
						t.Error("Serve ran before the connection was published")
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Serve did not run")
				}
				early.mu.Lock()
				if early.openPush {
					t.Error("Push ran after the connection was published")
				}
				early.mu.Unlock()
			}
			// The next command is the loop's.
			if _, err := io.WriteString(conn, "echo c\n"); err != nil {
				t.Fatal(err)
			}
			line, err := r.ReadString('\n')
			if err != nil || line != "c\n" {
				t.Fatalf("after the early data: %q, %v; want \"c\"", line, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(asked) != 1 || asked[0] != teDevices {
				t.Errorf("Early asked about sites %q, want [%s]", asked, teDevices)
			}
		})
	}
}

// TestEarlyDataWithoutData: a device that sends nothing with its Finished
// still opens through Early (Serve runs, Push does not), and what it sends
// later is the event loop's.
func TestEarlyDataWithoutData(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	early := &teEarly{served: make(chan bool, 1)}
	var mu sync.Mutex
	cfg.Early = func(c *Conn, _ *Site) EarlyData {
		mu.Lock()
		defer mu.Unlock()
		early.tc = c
		return early
	}
	srv := startServer(t, cfg, false)
	conn, err := srv.dial(t, f.client(teDevices, &f.deviceTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case open := <-early.served:
		if !open {
			t.Error("Serve ran before the connection was published")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not run")
	}
	if got := ask(t, conn, "verdict"); got != "valid" {
		t.Errorf("verdict %q, want valid", got)
	}
	early.mu.Lock()
	defer early.mu.Unlock()
	if len(early.buf) != 0 {
		t.Errorf("Push had %q, want nothing", early.buf)
	}
}

// holdConn passes its first write through and holds back every later one
// until flush, which sends them in one write.
type holdConn struct {
	net.Conn
	writes int
	held   []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.writes++
	if h.writes == 1 {
		return h.Conn.Write(p)
	}
	h.held = append(h.held, p...)
	return len(p), nil
}

func (h *holdConn) flush() error {
	_, err := h.Conn.Write(h.held)
	h.held = nil
	h.writes = 0 // pass through from now on
	return err
}

// TestEarlyDataReadAhead: the client's Finished and its first request in
// one segment. crypto/tls reads ahead, so the request is in its buffer, not
// the engine's, when the handshake ends: it must reach Push all the same
// (else nothing would ever read it: no more bytes come to wake the loop).
func TestEarlyDataReadAhead(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	early := &teEarly{served: make(chan bool, 1)}
	cfg.Early = func(c *Conn, _ *Site) EarlyData {
		early.tc = c
		return early
	}
	srv := startServer(t, cfg, false)
	raw, err := net.DialTimeout("tcp", srv.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	hold := &holdConn{Conn: raw}
	conn := tls.Client(hold, f.client(teDevices, &f.deviceTLS))
	if err := conn.Handshake(); err != nil { // TLS 1.3: returns once Finished is written (held)
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "echo a\n"); err != nil {
		t.Fatal(err)
	}
	if err := hold.flush(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "early a\n" {
		t.Fatalf("answer %q, %v; want \"early a\"", line, err)
	}
}
