package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/internal/procstat"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestServeReturnsStormMemory: a fleet of 3,000 devices connects at once
// to the real binary, each makes one request and stays connected. Left
// quiet (memory_release_after = "500ms" by default), the gateway returns
// the heap the storm's handshakes left unused: it says so in its log, and
// its resident size falls, while every device stays connected.
func TestServeReturnsStormMemory(t *testing.T) {
	f := newFleet(t)
	p := f.serve(t)
	cert := f.deviceCert(t, "pki", "sensor-0001")
	conf := &tls.Config{RootCAs: f.roots, Certificates: []tls.Certificate{cert}, ServerName: "app.fleet.test", MinVersion: tls.VersionTLS13}
	const line = "returned unused heap to the system"
	before := p.stderr.Count(line)

	const devices = 3000
	// Each device is a descriptor here and one in the gateway, beside the
	// origin's connections.
	testkit.NeedFDs(t, devices+1024)
	held := make([]*tls.Conn, devices)
	errs := make([]error, devices)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				held[i], errs[i] = connectAndRequest(f.listen, conf)
			}
		})
	}
	for i := range devices {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range held {
			if c != nil {
				_ = c.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("device %d of the storm: %v", i, err)
		}
	}
	if n := p.stderr.Count(line); n != before {
		t.Fatalf("the heap was returned during the storm (%d lines), while it allocated", n-before)
	}
	storm := rss(t, p.cmd.Process.Pid)
	p.waitLog(t, line, before+1)
	quiet := rss(t, p.cmd.Process.Pid)
	t.Logf("resident: %d KiB after the storm, %d KiB once quiet", storm>>10, quiet>>10)
	// A race-enabled build keeps shadow memory for the heap it returns.
	if !slices.Contains(buildFlags, "-race") && quiet > storm-8<<20 {
		t.Errorf("resident size %d KiB after the storm, %d KiB after the release: want at least 8 MiB less", storm>>10, quiet>>10)
	}
	// The devices are still connected: each answers a second request.
	for _, i := range []int{0, devices / 2, devices - 1} {
		if err := request(held[i]); err != nil {
			t.Errorf("device %d after the release: %v", i, err)
		}
	}
}

// connectAndRequest connects a device to the gateway at addr and makes one
// request on the connection, which it returns open.
func connectAndRequest(addr string, conf *tls.Config) (*tls.Conn, error) {
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	if err := request(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// request sends a GET on c and reads its answer, which must be a 200.
func request(c *tls.Conn) error {
	if _, err := io.WriteString(c, "GET /held HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func rss(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := procstat.RSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
