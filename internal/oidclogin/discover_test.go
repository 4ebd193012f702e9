package oidclogin

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// blackhole is a listener that accepts connections and never answers: an
// identity provider that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestDiscoverHungProvider: while one login waits on a provider that never
// answers, the others return within their own deadlines instead of
// queueing behind it; and the discovery ends within the provider's timeout.
func TestDiscoverHungProvider(t *testing.T) {
	p := New(Config{Name: "corp", Issuer: "http://" + blackhole(t), ClientID: "fleetgate", Timeout: 3 * time.Second})
	defer p.Close()
	first := make(chan time.Duration, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, _, _ = p.Start(ctx, "https://console.fleet.test/cdn-cgi/access/callback")
		first <- time.Since(start)
	}()
	time.Sleep(100 * time.Millisecond) // the first one is fetching
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, _, err := p.Start(ctx, "https://console.fleet.test/cdn-cgi/access/callback")
			if d := time.Since(start); d > time.Second {
				errs <- errors.New("a login waited " + d.String() + " with a 300ms deadline")
			} else if !errors.Is(err, ErrUnavailable) {
				errs <- errors.New("want ErrUnavailable, got " + errString(err))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case d := <-first:
		if d > 5*time.Second {
			t.Errorf("the first login took %v with a 3s provider timeout", d)
		}
	case <-time.After(8 * time.Second):
		t.Error("the first login did not end within the provider's timeout")
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// TestDiscoverSlowFailureRemembered: a discovery that fails only after
// retryAfter or more (a provider that hangs, with the default 10 s timeout)
// is still remembered for retryAfter from when it failed: the login that
// waited for it gets the failure when it ends, not another discovery, and
// the next login is refused at once instead of waiting a whole timeout.
func TestDiscoverSlowFailureRemembered(t *testing.T) {
	timeout := retryAfter + time.Second
	p := New(Config{Name: "corp", Issuer: "http://" + blackhole(t), ClientID: "fleetgate", Timeout: timeout})
	defer p.Close()
	const redirect = "https://console.fleet.test/cdn-cgi/access/callback"
	ctx, cancel := context.WithTimeout(context.Background(), 3*timeout)
	defer cancel()
	start := time.Now()
	_, _, err := p.Start(ctx, redirect)
	if d := time.Since(start); !errors.Is(err, ErrUnavailable) || d > timeout+2*time.Second {
		t.Fatalf("first login: %v after %v; want ErrUnavailable after the provider's timeout (%v)", err, d, timeout)
	}
	start = time.Now()
	_, _, err = p.Start(ctx, redirect)
	if d := time.Since(start); !errors.Is(err, ErrUnavailable) || d > time.Second {
		t.Fatalf("next login: %v after %v; want the remembered failure at once", err, d)
	}
}
