package loopwrite

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// socket is a Socket over a real descriptor whose Write records what it is
// given instead of queueing it, as gnet's Write would.
type socket struct {
	fd       int
	buffered int
	got      [][]byte
	err      error
}

func (s *socket) Fd() int               { return s.fd }
func (s *socket) OutboundBuffered() int { return s.buffered }
func (s *socket) Write(p []byte) (int, error) {
	s.got = append(s.got, append([]byte(nil), p...))
	return len(p), s.err
}

// pair is a connected non-blocking stream socket pair: the first is
// written, the second read.
func pair(t testing.TB) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fds[0]); _ = unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func readAll(t *testing.T, fd int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
			continue
		}
		if errors.Is(err, unix.EAGAIN) || n == 0 {
			return out
		}
		t.Fatal(err)
	}
}

func TestWriteStraightToTheSocket(t *testing.T) {
	w, r := pair(t)
	s := &socket{fd: w}
	msg := []byte("a relayed record")
	n, err := Write(s, msg)
	if err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(s.got) != 0 {
		t.Fatalf("the connection's Write was called with %q", s.got)
	}
	if got := readAll(t, r); !bytes.Equal(got, msg) {
		t.Fatalf("the peer read %q", got)
	}
}

// Bytes queued before p must go out first: p goes behind them, through the
// connection's Write, and nothing reaches the socket directly.
func TestWriteBehindQueuedBytes(t *testing.T) {
	w, r := pair(t)
	s := &socket{fd: w, buffered: 10}
	msg := []byte("after the queue")
	if n, err := Write(s, msg); err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(s.got) != 1 || !bytes.Equal(s.got[0], msg) {
		t.Fatalf("the connection's Write got %q", s.got)
	}
	if got := readAll(t, r); len(got) != 0 {
		t.Fatalf("the peer read %q ahead of the queue", got)
	}
}

// What the socket does not take goes to the connection's Write, in order
// after what it took.
func TestWriteRestQueued(t *testing.T) {
	w, r := pair(t)
	if err := unix.SetsockoptInt(w, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	s := &socket{fd: w}
	msg := make([]byte, MaxRaw)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	n, err := Write(s, msg)
	if err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(s.got) != 1 {
		t.Fatalf("the connection's Write was called %d times, want once with the rest", len(s.got))
	}
	sent := readAll(t, r)
	if len(sent) == 0 || len(sent) == len(msg) {
		t.Fatalf("the socket took %d of %d bytes: the test wants a partial write", len(sent), len(msg))
	}
	if !bytes.Equal(append(sent, s.got[0]...), msg) {
		t.Fatal("the socket's part and the queued rest are not the message in order")
	}
}

// A write larger than MaxRaw goes whole through the connection's Write,
// even to a socket with room for it.
func TestWriteLargeThroughConn(t *testing.T) {
	w, r := pair(t)
	s := &socket{fd: w}
	msg := bytes.Repeat([]byte{'x'}, MaxRaw+1)
	if n, err := Write(s, msg); err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(s.got) != 1 || !bytes.Equal(s.got[0], msg) {
		t.Fatalf("the connection's Write got %d writes, want the whole message once", len(s.got))
	}
	if got := readAll(t, r); len(got) != 0 {
		t.Fatalf("%d bytes reached the socket directly", len(got))
	}
}

// A full socket (EAGAIN) queues all of p.
func TestWriteFullSocket(t *testing.T) {
	w, _ := pair(t)
	for {
		if _, err := unix.Write(w, make([]byte, 64<<10)); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	s := &socket{fd: w}
	msg := []byte("no room")
	if n, err := Write(s, msg); err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(s.got) != 1 || !bytes.Equal(s.got[0], msg) {
		t.Fatalf("the connection's Write got %q", s.got)
	}
}

// A broken socket hands p to the connection's Write, whose error (it
// closes the connection) is what Write returns.
func TestWriteBrokenSocket(t *testing.T) {
	w, r := pair(t)
	_ = unix.Close(r)
	broken := errors.New("write: broken pipe")
	s := &socket{fd: w, err: broken}
	msg := []byte("to nobody")
	if _, err := Write(s, msg); !errors.Is(err, broken) {
		t.Fatalf("Write error %v, want the connection's", err)
	}
	if len(s.got) != 1 || !bytes.Equal(s.got[0], msg) {
		t.Fatalf("the connection's Write got %q", s.got)
	}
}

func TestWriteNoDescriptor(t *testing.T) {
	s := &socket{fd: -1}
	if _, err := Write(s, []byte("x")); err != nil || len(s.got) != 1 {
		t.Fatalf("Write = %v, connection's Write got %q", err, s.got)
	}
}

// BenchmarkWrite: a 64 B write to a socket (a non-blocking Unix socket pair,
// drained every 256 writes), through gnet's path (unix.Write, a
// syscall.Syscall with the runtime's entersyscall and exitsyscall) and
// through Write (one raw system call). The difference is what each write on
// the event loop saves. Run pinned to one CPU, as the gateway's loop:
// GOMAXPROCS=1 taskset -c 0 go test -run '^$' -bench Write ./internal/loopwrite/
func BenchmarkWrite(b *testing.B) {
	msg := make([]byte, 64)
	drain := make([]byte, 64<<10)
	for _, bc := range []struct {
		name  string
		write func(s *socket, p []byte) error
	}{
		{"syscall", func(s *socket, p []byte) error { _, err := unix.Write(s.fd, p); return err }},
		{"raw", func(s *socket, p []byte) error { _, err := Write(s, p); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w, r := pair(b)
			s := &socket{fd: w}
			i := 0
			for b.Loop() {
				if err := bc.write(s, msg); err != nil {
					b.Fatal(err)
				}
				if i++; i%256 == 0 {
					for {
						if n, _ := unix.Read(r, drain); n <= 0 {
							break
						}
					}
				}
			}
			if len(s.got) > 0 {
				b.Fatalf("%d writes were queued: the socket was full", len(s.got))
			}
		})
	}
}
