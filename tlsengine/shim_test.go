package tlsengine

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/tlsengine/enginetest"
)

// TestWouldBlockIsTemporary pins the contract crypto/tls relies on: the
// shim's "no data yet" error is a net.Error whose Temporary() is true
// (readRecordOrCCS then returns it without setting c.in.err).
func TestWouldBlockIsTemporary(t *testing.T) {
	var ne net.Error
	if !errors.As(ErrWouldBlock, &ne) {
		t.Fatal("ErrWouldBlock is not a net.Error")
	}
	// Temporary is deprecated, but it is what crypto/tls decides on.
	if !ne.Temporary() || ne.Timeout() {
		t.Fatalf("Temporary()=%v Timeout()=%v, want true false", ne.Temporary(), ne.Timeout())
	}
}

// TestCryptoTLSSurvivesWouldBlock: after ErrWouldBlock, crypto/tls's Conn is
// not poisoned: later records are read normally, again and again.
func TestCryptoTLSSurvivesWouldBlock(t *testing.T) {
	f := fixture(t)
	e, err := NewEngine(f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	loop := enginetest.NewLoop()
	defer loop.Close()
	mt, cc, err := memOpen(t, e, loop)
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(cc, f.client(teDevices, &f.deviceTLS))
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "server handshake", 10*time.Second, mt.conn.HandshakeComplete)
	for i, msg := range []string{"one", "two", "three"} {
		// Straight to crypto/tls, on the loop, with nothing buffered.
		errc := make(chan error, 1)
		loop.Post(func() {
			_, err := mt.conn.tls.Read(make([]byte, 10))
			errc <- err
		})
		if err := <-errc; err != ErrWouldBlock {
			t.Fatalf("#%d: tls.Conn.Read with no data = %v, want ErrWouldBlock itself", i, err)
		}
		if _, err := io.WriteString(client, msg); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, "the message", 10*time.Second, func() bool { return bytes.HasSuffix([]byte(mt.received()), []byte(msg)) })
	}
	if got := mt.received(); got != "onetwothree" {
		t.Errorf("received %q", got)
	}
}

// TestShimFraming: crypto/tls is handed whole records only; a header that
// crypto/tls refuses by itself is handed over at once.
func TestShimFraming(t *testing.T) {
	rec := func(typ byte, n int) []byte {
		return append([]byte{typ, 3, 3, byte(n >> 8), byte(n)}, bytes.Repeat([]byte{0xaa}, n)...)
	}
	two := append(rec(22, 10), rec(23, 0)...) // the second record is empty
	tests := []struct {
		name        string
		input       []byte
		ready       []int // ready bytes after feeding each byte
		passthrough bool
		oversized   bool
	}{
		{
			name:  "two records byte by byte",
			input: two,
			ready: func() []int {
				r := make([]int, len(two))
				for i := range r {
					switch {
					case i >= 19:
						r[i] = 20
					case i >= 14:
						r[i] = 15
					}
				}
				return r
			}(),
		},
		{name: "oversized", input: []byte{22, 3, 3, 0x48, 0x01}, ready: []int{0, 0, 0, 0, 5}, passthrough: true, oversized: true},
		{name: "largest allowed waits for its body", input: []byte{23, 3, 3, 0x48, 0x00}, ready: []int{0, 0, 0, 0, 0}},
		{name: "not tls", input: []byte("GET /"), ready: []int{0, 0, 0, 0, 5}, passthrough: true},
		{name: "sslv2", input: []byte{0x80, 0x2e, 1, 3, 1}, ready: []int{0, 0, 0, 0, 5}, passthrough: true},
		{name: "bad major version", input: []byte{22, 4, 1, 0, 1, 0}, ready: []int{0, 0, 0, 0, 5, 6}, passthrough: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShim(nil, nil, newAdmission(1, 1), DefaultMaxInbound)
			for i := range tt.input {
				if err := s.feed(tt.input[i : i+1]); err != nil {
					t.Fatal(err)
				}
				if got := s.ready - s.off; got != tt.ready[i] {
					t.Fatalf("after byte %d: ready = %d, want %d", i, got, tt.ready[i])
				}
			}
			if s.passthrough != tt.passthrough || s.oversized != tt.oversized {
				t.Errorf("passthrough=%v oversized=%v, want %v %v", s.passthrough, s.oversized, tt.passthrough, tt.oversized)
			}
		})
	}
}

// TestShimReadModes: after the handshake Read never blocks; a record handed
// out in pieces (small p) continues where it stopped.
func TestShimReadModes(t *testing.T) {
	s := newShim(nil, nil, newAdmission(1, 1), DefaultMaxInbound)
	s.endHandshake()
	if n, err := s.Read(make([]byte, 10)); n != 0 || err != ErrWouldBlock {
		t.Fatalf("empty: %d, %v", n, err)
	}
	rec := []byte{23, 3, 3, 0, 3, 'a', 'b', 'c'}
	_ = s.feed(rec[:6])
	if n, err := s.Read(make([]byte, 10)); n != 0 || err != ErrWouldBlock {
		t.Fatalf("partial record: %d, %v", n, err)
	}
	_ = s.feed(rec[6:])
	var got []byte
	p := make([]byte, 3)
	for {
		n, err := s.Read(p)
		got = append(got, p[:n]...)
		if err != nil {
			if err != ErrWouldBlock {
				t.Fatal(err)
			}
			break
		}
	}
	if !bytes.Equal(got, rec) {
		t.Fatalf("read %x, want %x", got, rec)
	}
	s.release()
	if _, err := s.Read(p); err != io.EOF {
		t.Fatalf("after release: %v, want EOF", err)
	}
}

// TestShimHandsOneRecordAtATime: each Read hands out at most one record,
// the rest of the one begun or the next, so crypto/tls never holds a
// record it has not processed; a partial record waits for its body.
func TestShimHandsOneRecordAtATime(t *testing.T) {
	rec := func(n int, fill byte) []byte {
		return append([]byte{23, 3, 3, byte(n >> 8), byte(n)}, bytes.Repeat([]byte{fill}, n)...)
	}
	one, two, three := rec(3, 'a'), rec(20, 'b'), rec(4, 'c')
	s := newShim(nil, nil, newAdmission(1, 1), DefaultMaxInbound)
	s.endHandshake()
	in := append(append(append([]byte{}, one...), two...), three[:6]...)
	if err := s.feed(in); err != nil {
		t.Fatal(err)
	}
	read := func(size int) ([]byte, error) {
		p := make([]byte, size)
		n, err := s.Read(p)
		return p[:n], err
	}
	steps := []struct {
		size int
		want []byte
	}{
		{64, one},       // room for more, but one record only
		{7, two[:7]},    // a record begun in a small p
		{64, two[7:]},   // continues to its end, not into the next
		{64, nil},       // the third is not whole yet
		{64, three},     // … and is, once its body came
		{64, nil},       // nothing left
		{64, rec(0, 0)}, // an empty record is one record too
	}
	for i, st := range steps {
		if i == 4 {
			if err := s.feed(three[6:]); err != nil {
				t.Fatal(err)
			}
		}
		if i == 6 {
			if err := s.feed(append(rec(0, 0), rec(2, 'd')...)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := read(st.size)
		if st.want == nil {
			if len(got) != 0 || err != ErrWouldBlock {
				t.Fatalf("step %d: read %x, %v; want nothing, ErrWouldBlock", i, got, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, st.want) {
			t.Fatalf("step %d: read %x, %v; want %x", i, got, err, st.want)
		}
	}
	if got, err := read(64); err != nil || !bytes.Equal(got, rec(2, 'd')) {
		t.Fatalf("after the empty record: read %x, %v", got, err)
	}
	// Once framing is abandoned, everything goes at once, as crypto/tls
	// refuses the bytes from the header alone.
	if err := s.feed(append(rec(1, 'e'), []byte("GET / HTTP/1.1")...)); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(64); len(got) != 6+14 {
		t.Fatalf("passthrough: read %d bytes, want all 20", len(got))
	}
}

// TestShimCPUSlot: a blocked handshake Read holds no CPU slot while it waits
// and takes one before returning bytes.
func TestShimCPUSlot(t *testing.T) {
	a := newAdmission(1, 10)
	s := newShim(nil, nil, a, DefaultMaxInbound)
	got := make(chan int, 1)
	read := func() {
		n, _ := s.Read(make([]byte, 100))
		got <- n
	}
	go read()
	time.Sleep(20 * time.Millisecond)
	if busy := len(a.cpu); busy != 0 {
		t.Fatalf("waiting Read holds %d slots", busy)
	}
	_ = s.feed([]byte{22, 3, 1, 0, 1, 1})
	if n := <-got; n != 6 {
		t.Fatalf("read %d bytes", n)
	}
	if busy := len(a.cpu); busy != 1 || !s.cpu.held {
		t.Fatalf("after returning bytes: %d slots busy, held=%v", busy, s.cpu.held)
	}
	go read()
	testkit.WaitFor(t, "the slot released while waiting", 5*time.Second, func() bool { return len(a.cpu) == 0 })
	s.stopHandshake(rTimeout, ErrHandshakeTimeout)
	if n := <-got; n != 0 {
		t.Fatalf("aborted read returned %d bytes", n)
	}
	if a.cpuNanos.Load() <= 0 {
		t.Error("CPU time not accounted")
	}
}

// TestShimSlotWaitIsAbortable: a handshake waiting for a CPU slot gives up
// when aborted (timeout, close) instead of waiting for the slot.
func TestShimSlotWaitIsAbortable(t *testing.T) {
	a := newAdmission(1, 10)
	a.cpu <- struct{}{} // the only slot is taken
	s := newShim(nil, nil, a, DefaultMaxInbound)
	_ = s.feed([]byte{22, 3, 1, 0, 0})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.stopHandshake(rTimeout, ErrHandshakeTimeout)
	select {
	case err := <-errc:
		if err != ErrHandshakeTimeout {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still waiting for a slot after abort")
	}
}

// TestShimWriteCopies: crypto/tls reuses its buffer, so each write is copied.
func TestShimWriteCopies(t *testing.T) {
	loop := enginetest.NewLoop()
	defer loop.Close()
	rt := enginetest.NewTransport(loop, ErrWouldBlock)
	s := newShim(nil, rt, newAdmission(1, 1), DefaultMaxInbound)
	b := []byte("record one")
	_, _ = s.Write(b)
	copy(b, "RECORD TWO")
	_, _ = s.Write(b)
	if w := rt.Writes(); len(w) != 2 || string(w[0]) != "record one" || string(w[1]) != "RECORD TWO" {
		t.Fatalf("writes %q", w)
	}
	s.release()
	if _, err := s.Write(b); err == nil {
		t.Fatal("write after release succeeded")
	}
}

// TestUnknownSNIAlertBytes: an unknown name gets exactly one write, the
// fatal alert unrecognized_name (112): no certificate, no internal_error.
func TestUnknownSNIAlertBytes(t *testing.T) {
	f := fixture(t)
	e, err := NewEngine(f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	loop := enginetest.NewLoop()
	defer loop.Close()
	for i, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		rt := enginetest.NewTransport(loop, ErrWouldBlock)
		c, err := e.Open(rt)
		if err != nil {
			t.Fatal(err)
		}
		conf := f.client("nope.fleet.test", nil)
		conf.MaxVersion = v
		_ = c.Feed(captureClientHello(t, conf))
		counted(t, e, ReasonUnknownSNI, uint64(i+1))
		w := rt.Writes()
		if len(w) != 1 {
			t.Fatalf("version %x: %d writes, want 1", v, len(w))
		}
		if a := w[0]; len(a) != 7 || a[0] != 21 || a[1] != 3 || a[3] != 0 || a[4] != 2 || a[5] != 2 || a[6] != 112 {
			t.Fatalf("version %x: alert bytes %x, want 15 03 0x 00 02 02 70", v, a)
		}
	}
}

// byteConn writes one byte per Write and reads at most one byte per Read.
type byteConn struct{ net.Conn }

func (c byteConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

func (c byteConn) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return c.Conn.Read(p)
}

// TestBytesOneAtATime: every byte a separate TCP write from the client, a
// separate Feed on the server, and a separate read back on the client.
func TestBytesOneAtATime(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), true)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		raw, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		conf := f.client(teDevices, &f.deviceTLS)
		conf.MaxVersion = v
		c := tls.Client(byteConn{raw}, conf)
		if err := c.Handshake(); err != nil {
			t.Fatalf("version %x: handshake: %v", v, err)
		}
		if got := ask(t, c, "verdict"); got != "valid" {
			t.Errorf("version %x: verdict = %q", v, got)
		}
		if got := ask(t, c, "echo one byte at a time"); got != "one byte at a time" {
			t.Errorf("version %x: echo = %q", v, got)
		}
		c.Close()
	}
}

// flushOnReadConn buffers writes until the next Read, so the client's
// flights go out in as few TCP writes as possible: the ClientHello in one,
// the client's Finished and first request together in the next.
type flushOnReadConn struct {
	net.Conn
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *flushOnReadConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *flushOnReadConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.buf.Len() > 0 {
		c.writes++
		_, err := c.Conn.Write(c.buf.Bytes())
		c.buf.Reset()
		if err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// TestFinishedAndRequestTogether: data that arrives in the same segment as
// the client's Finished is answered (the engine wakes the loop after the
// handshake) — TLS 1.3, where the client sends the request with Finished.
func TestFinishedAndRequestTogether(t *testing.T) {
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	fc := &flushOnReadConn{Conn: raw}
	c := tls.Client(fc, f.client(teDevices, &f.deviceTLS))
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := ask(t, c, "echo together"); got != "together" {
		t.Fatalf("echo = %q", got)
	}
	if fc.writes != 2 {
		t.Errorf("client made %d TCP writes, want 2 (ClientHello; Finished+request)", fc.writes)
	}
}

// TestKeyUpdateOpenSSL: a TLS 1.3 client KeyUpdate mid-stream ("k": no
// update requested; "K": the server must answer with its own KeyUpdate,
// written by crypto/tls through the shim), then more data.
func TestKeyUpdateOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	f := fixture(t)
	s := startServer(t, f.config(t), false)
	dir := t.TempDir()
	files := map[string][]byte{"root.pem": f.rootPEM, "dev.pem": f.device.CertPEM(), "inter.pem": f.inter.CertPEM(), "dev.key": f.devKeyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// -msg traces every TLS message: ">>> … KeyUpdate" is openssl's own,
	// "<<< … KeyUpdate" the server's answer to an update request.
	cmd := exec.Command(openssl, "s_client", "-msg", "-connect", s.addr, "-servername", teDevices, "-tls1_3",
		"-CAfile", filepath.Join(dir, "root.pem"), "-cert", filepath.Join(dir, "dev.pem"),
		"-cert_chain", filepath.Join(dir, "inter.pem"), "-key", filepath.Join(dir, "dev.key"))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string, 1000)
	var readers sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
	}
	go func() { readers.Wait(); close(lines) }()
	var seen []string
	expect := func(match func(string) bool, what string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("openssl exited before %s; output:\n%s", what, strings.Join(seen, "\n"))
				}
				if !strings.HasPrefix(l, "    ") { // skip hex dumps
					seen = append(seen, l)
				}
				if match(l) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s from openssl; output:\n%s", what, strings.Join(seen, "\n"))
			}
		}
	}
	line := func(want string) func(string) bool { return func(l string) bool { return l == want } }
	keyUpdate := func(dir string) func(string) bool {
		return func(l string) bool { return strings.HasPrefix(l, dir+" ") && strings.HasSuffix(l, "KeyUpdate") }
	}
	// s_client takes a line starting with k/K as a command and drops the
	// rest of what it read, so each command waits for its effect.
	send := func(l string) {
		t.Helper()
		if _, err := io.WriteString(stdin, l+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	send("verdict")
	expect(line("valid"), `"valid"`)
	send("k") // KeyUpdate, update_not_requested
	expect(keyUpdate(">>>"), "the client's KeyUpdate")
	send("echo after k")
	expect(line("after k"), `"after k"`)
	send("K") // KeyUpdate, update_requested: crypto/tls answers with its own
	expect(keyUpdate(">>>"), "the client's KeyUpdate")
	expect(keyUpdate("<<<"), "the server's KeyUpdate")
	send("echo after K")
	expect(line("after K"), `"after K"`)
	send("echo still fine")
	expect(line("still fine"), `"still fine"`)
}

// TestBadInput: bytes that are not a TLS handshake close just that
// connection, with crypto/tls's alert where one applies, counted by reason;
// a good device is served afterwards.
func TestBadInput(t *testing.T) {
	f := fixture(t)
	cfg := f.config(t)
	cfg.HandshakeTimeout = 5 * time.Second
	s := startServer(t, cfg, false)
	hello12 := func() []byte {
		conf := f.client(teDevices, nil)
		conf.MaxVersion = tls.VersionTLS12
		return captureClientHello(t, conf)
	}()
	alert := func(desc byte) []byte { return []byte{21, 3, 3, 0, 2, 2, desc} }
	garbageHello := append([]byte{22, 3, 1, 0, 200, 1, 0, 0, 196}, bytes.Repeat([]byte{0xff}, 196)...)
	hugeMsg := []byte{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}
	tests := []struct {
		name      string
		send      [][]byte
		reason    string
		wantAlert byte // 0 = any reply (or none)
	}{
		{"http request", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: devices.fleet.test\r\n\r\n")}, ReasonNotTLS, 0},
		{"sslv2 hello", [][]byte{{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15, 0, 0, 0, 0x10}}, ReasonNotTLS, 70},
		{"oversized record", [][]byte{{22, 3, 1, 0xff, 0xff}, bytes.Repeat([]byte{0}, 100)}, ReasonRecordOverflow, 22},
		{"alert before hello", [][]byte{alert(40)}, ReasonClientAlert, 0},
		{"alert after hello", [][]byte{hello12, alert(40)}, ReasonClientAlert, 0},
		{"garbage hello", [][]byte{garbageHello}, ReasonTLSError, 50},
		{"huge handshake message", [][]byte{hugeMsg}, ReasonTLSError, 0},
		{"hello then eof", [][]byte{hello12[:20]}, ReasonClosed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.eng.Stats().Handshakes[tt.reason]
			var got []byte
			if tt.reason == ReasonClosed {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write(tt.send[0])
				testkit.WaitFor(t, "the handshake in flight", 5*time.Second, func() bool { return s.eng.Stats().InFlight == 1 })
				c.Close()
			} else {
				got, _ = rawExchange(t, s.addr, tt.send...)
			}
			counted(t, s.eng, tt.reason, before+1)
			if tt.wantAlert != 0 {
				if !containsAlert(got, tt.wantAlert) {
					t.Errorf("reply %x lacks alert %d", got, tt.wantAlert)
				}
			}
		})
	}
	testkit.WaitFor(t, "no handshake in flight", 10*time.Second, func() bool { return s.eng.Stats().InFlight == 0 })
	c, err := s.dial(t, f.client(teDevices, &f.deviceTLS))
	if err != nil {
		t.Fatalf("a good device after bad input: %v", err)
	}
	defer c.Close()
	if got := ask(t, c, "verdict"); got != "valid" {
		t.Errorf("verdict = %q", got)
	}
}

// containsAlert reports whether b holds a plaintext fatal alert record with
// description desc.
func containsAlert(b []byte, desc byte) bool {
	for len(b) >= recordHeaderLen {
		n := int(b[3])<<8 | int(b[4])
		if len(b) < recordHeaderLen+n {
			return false
		}
		if b[0] == recordTypeAlert && n == 2 && b[6] == desc {
			return true
		}
		b = b[recordHeaderLen+n:]
	}
	return false
}
