package testkit

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	n := 0
	if !Eventually(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("Eventually stopped after %d looks", n)
	}
	start := time.Now()
	if Eventually(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds held")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("gave up before the time was up")
	}
}

// TestSpin: Spin looks again far sooner than Poll (100 looks at Poll would
// take half a second), and still gives up when the time is up.
func TestSpin(t *testing.T) {
	n := 0
	start := time.Now()
	if !Spin(10*time.Second, func() bool { n++; return n == 100 }) || n != 100 {
		t.Fatalf("Spin stopped after %d looks", n)
	}
	if d := time.Since(start); d > 50*Poll {
		t.Errorf("100 looks took %v, no faster than polling every %v", d, Poll)
	}
	start = time.Now()
	if Spin(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds held")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("gave up before the time was up")
	}
}

func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.Count("line\n"); got != 800 {
		t.Fatalf("Count = %d, want 800", got)
	}
}

func TestFreePort(t *testing.T) {
	addr := FreePort(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreePort gave %s, which cannot be listened on: %v", addr, err)
	}
	_ = l.Close()
}

// TestFetch: the response comes back with its body read whole.
func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(r.Method + " " + r.URL.Path))
	}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/pot", nil)
	resp, body := Fetch(t, srv.Client(), req)
	if resp.StatusCode != http.StatusTeapot || body != "POST /pot" {
		t.Fatalf("Fetch = %d %q, want 418 \"POST /pot\"", resp.StatusCode, body)
	}
}

// TestBootRetrying: a start whose port was taken is called again, and the
// first that boots ends the retries.
func TestBootRetrying(t *testing.T) {
	attempts := 0
	BootRetrying(t, func(attempt int) (<-chan struct{}, <-chan error) {
		attempts++
		booted, runErr := make(chan struct{}), make(chan error, 1)
		if attempt < 3 {
			runErr <- &net.OpError{Op: "listen", Net: "tcp", Err: syscall.EADDRINUSE}
		} else {
			close(booted)
		}
		return booted, runErr
	})
	if attempts != 3 {
		t.Fatalf("%d attempts, want 3", attempts)
	}
	if PortTaken(errors.New("gateway: listen 127.0.0.1:1: bind: permission denied")) {
		t.Error("a bind refused for another reason counted as a taken port")
	}
}
