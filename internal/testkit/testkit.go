// Package testkit holds the small helpers the project's tests share: polling
// for a condition, a goroutine-safe output buffer, a free loopback port (and
// a server's start retried when another process took it first), an
// HTTP exchange read whole (Fetch), the descriptors a storm needs
// (NeedFDs), and an MQTT test client (CONNECT,
// packets read back, subscribe and publish).
// It is imported by tests only; nothing on the serving path uses it.
package testkit

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Poll is how often WaitFor and Eventually look at their condition.
const Poll = 5 * time.Millisecond

// WaitFor polls cond until it holds, failing the test with what when d
// passes first. The time is a safety net for a test that would otherwise
// hang, never what the test measures: pick it generously.
func WaitFor(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	if !Eventually(d, cond) {
		tb.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Eventually polls cond until it holds (true) or d passes (false), for
// callers that are not a test's goroutine (which may not call Fatal).
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Poll)
	}
	return true
}

// Spin is Eventually for a wait that usually ends within microseconds and
// runs thousands of times (each fuzz iteration waits for its handshake
// goroutine): it yields (runtime.Gosched) for the first spinYields looks,
// then sleeps spinSleep between looks, instead of Poll, which would make
// such a loop thousands of times slower.
func Spin(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for i := 0; !cond(); i++ {
		if time.Now().After(deadline) {
			return false
		}
		if i < spinYields {
			runtime.Gosched()
		} else {
			time.Sleep(spinSleep)
		}
	}
	return true
}

// Spin's pace: yields first, then short sleeps.
const (
	spinYields = 50
	spinSleep  = 20 * time.Microsecond
)

// Buffer is a bytes.Buffer that several goroutines may write and read: a log
// sink, or a child process's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Count returns how many times s occurs in what was written so far: a test
// that checks a log line after an action compares the count before and
// after it, so that a line from an earlier action cannot satisfy it.
func (b *Buffer) Count(s string) int {
	return strings.Count(b.String(), s)
}

// FreePort returns a loopback address ("127.0.0.1:port") that was free a
// moment ago.
func FreePort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		tb.Fatalf("free port: %v", err)
	}
	return addr
}

// PortTaken reports whether err says a listen address was already in use:
// a port found free (FreePort) that another process bound before the
// caller did.
func PortTaken(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// BootRetrying calls start (attempt 1, 2, …), which starts a server's run
// and returns a channel closed once it serves and the channel its run's
// error comes on, until a server boots. A run that fails before that
// because its port was taken (PortTaken) has start pick another port on
// the next attempt, up to five; any other failure, or no boot in 10 s,
// fails the test.
func BootRetrying(tb testing.TB, start func(attempt int) (booted <-chan struct{}, runErr <-chan error)) {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		booted, runErr := start(attempt)
		select {
		case <-booted:
			return
		case err := <-runErr:
			if PortTaken(err) && attempt < 5 {
				continue
			}
			tb.Fatalf("the server stopped before it booted: %v", err)
		case <-time.After(10 * time.Second):
			tb.Fatal("the server did not boot in 10 s")
		}
	}
}

// Fetch sends req with c and returns the response with its body read whole
// (and closed), failing the test when the exchange itself fails: for tests
// that drive a browser-like client through redirects and forms.
func Fetch(tb testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	tb.Helper()
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		tb.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(body)
}

// NeedFDs raises the soft file-descriptor limit to the hard one (Go does so
// at start on Linux; this is for other set-ups) and skips the test when it
// cannot hold n descriptors: a storm of connections that would fail for
// want of them would say nothing about the gateway.
func NeedFDs(tb testing.TB, n uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Skipf("cannot read the file-descriptor limit: %v", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < n {
		tb.Skipf("the file-descriptor limit is %d; this storm needs about %d (raise ulimit -n)", lim.Cur, n)
	}
}
