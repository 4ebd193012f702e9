package gateway

// Faults: an origin that closes mid-response, a huge
// body streamed through without being held, max_response_bytes, reloads
// under load, and a shutdown under load. (An origin that never answers:
// TestOriginTimeout.)

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// patternPeriod is the period of the fault origin's bodies: byte i is
// 'a' + (i % patternPeriod) % 26 (a prime period, so that no chunk or
// record boundary lines up with it).
const patternPeriod = 251

// patternBuf holds the pattern from every phase: patternAt(off, n) is a
// slice of it.
var patternBuf = func() []byte {
	b := make([]byte, patternPeriod+64<<10)
	for i := range b {
		b[i] = byte('a' + i%patternPeriod%26)
	}
	return b
}()

// patternAt returns the n (at most 64KiB) pattern bytes from offset off.
func patternAt(off int64, n int) []byte {
	start := int(off % patternPeriod)
	return patternBuf[start : start+n]
}

// patternReader yields n bytes of the pattern, from offset 0.
type patternReader struct{ off, n int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), r.n-r.off, 64<<10))
	copy(p, patternAt(r.off, k))
	r.off += int64(k)
	return k, nil
}

// checkPattern verifies that r yields exactly n bytes of the pattern and
// returns how many it read.
func checkPattern(r io.Reader, n int64) (int64, error) {
	buf := make([]byte, 32<<10)
	var off int64
	for {
		k, err := r.Read(buf)
		if !bytes.Equal(buf[:k], patternAt(off, k)) {
			return off, fmt.Errorf("the bytes after offset %d differ", off)
		}
		off += int64(k)
		if errors.Is(err, io.EOF) {
			if off != n {
				return off, fmt.Errorf("%d bytes, want %d", off, n)
			}
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// startFaultOrigin serves, for ?n=BYTES:
//
//	/body       n bytes of bodyPattern with a Content-Length
//	/chunked    the same without one (chunked)
//	/cut?k=K    announces n bytes, sends K, then drops the connection
//	/cutchunked sends K bytes chunked, then drops the connection
func startFaultOrigin(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		k, _ := strconv.ParseInt(r.URL.Query().Get("k"), 10, 64)
		switch r.URL.Path {
		case "/body":
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			_, _ = io.Copy(w, &patternReader{n: n})
		case "/chunked":
			_, _ = io.Copy(w, &patternReader{n: n})
		case "/cut", "/cutchunked":
			if r.URL.Path == "/cut" {
				w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			}
			_, _ = io.Copy(w, &patternReader{n: k})
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // the connection is dropped mid-body
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestOriginClosesMidResponse(t *testing.T) {
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	cl := h.client(h.pki.sensor1)
	// Within the part read before the response starts: a clean 502.
	for _, path := range []string{"/cut?n=10000&k=3000", "/cutchunked?k=3000"} {
		r := h.get(t, cl, href(hApp, path))
		if r.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502: %.100s", path, r.StatusCode, r.body)
		}
	}
	// Past it the status is out: the device gets a truncated body, never a
	// complete-looking one.
	for _, path := range []string{"/cut?n=1000000&k=300000", "/cutchunked?k=300000"} {
		resp, err := cl.Get(href(hApp, path))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		n, err := checkPattern(resp.Body, 1000000)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("%s: the device received %d bytes as a complete body", path, n)
		}
		if n > 300000 {
			t.Fatalf("%s: %d bytes received, the origin sent 300000", path, n)
		}
	}
	testkit.WaitFor(t, "the access-log lines", 5*time.Second, func() bool {
		kinds := 0
		for _, l := range h.accessLines(t) {
			if l["origin_error"] == "truncated" {
				kinds++
			}
		}
		return kinds == 4
	})
	// The gateway keeps serving.
	for _, path := range []string{"/", "/body?n=100000"} {
		resp, err := cl.Get(href(hApp, path))
		if err != nil {
			t.Fatalf("%s after the cuts: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s after the cuts: status %d", path, resp.StatusCode)
		}
	}
}

// TestHugeBodyStreamed: a 64 MiB origin body reaches the device complete,
// with its Content-Length (or chunked, 32 MiB), while the gateway's heap
// never grows by anything near the body's size, even while the device
// pauses reading (backpressure).
func TestHugeBodyStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 128 MiB")
	}
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for _, tc := range []struct {
		path string
		size int64
	}{{"/body", 64 << 20}, {"/chunked", 32 << 20}} {
		path, size := tc.path, tc.size
		t.Run(path, func(t *testing.T) {
			// Collect garbage eagerly while measuring: HeapInuse then tracks
			// what is live (a body buffered whole would be), not how much
			// garbage the collector's pacing let pile up, which depends on
			// what the rest of the package left on the heap.
			defer debug.SetGCPercent(debug.SetGCPercent(10))
			c := h.dial(t, hApp, h.pki.sensor1)
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var ms runtime.MemStats
				for {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()
			_ = c.c.SetDeadline(time.Now().Add(60 * time.Second))
			c.send(request("GET", hApp, path+"?n="+strconv.FormatInt(size, 10)))
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if path == "/body" && resp.ContentLength != size {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, size)
			}
			// Read 1 MiB, then stop reading for a while: the origin (local,
			// fast) would fill the gateway's buffers if nothing held it back.
			if _, err := checkPattern(io.LimitReader(resp.Body, 1<<20), 1<<20); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			n, err := checkPatternFrom(resp.Body, 1<<20, size)
			close(stop)
			<-sampled
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
			grew := int64(peak.Load()) - int64(base.HeapInuse)
			t.Logf("heap in use grew by at most %.1f MiB for a %d MiB body", float64(grew)/(1<<20), size>>20)
			if grew > 24<<20 { // buffered whole, it would be more than the body
				t.Errorf("heap in use grew by %.1f MiB while a %d MiB body went through", float64(grew)/(1<<20), size>>20)
			}
		})
	}
}

// checkPatternFrom is checkPattern for a body whose first off bytes were
// already read.
func checkPatternFrom(r io.Reader, off, n int64) (int64, error) {
	pad := &patternReader{n: off}
	got, err := checkPattern(io.MultiReader(pad, r), n)
	return got - off, err
}

func TestMaxResponseBytes(t *testing.T) {
	o := startFaultOrigin(t)
	v := newHarness(t, func(p *cfgParams) { p.Origin = o.URL }).variantWith(t, func(c *fileConfig) { c.Gateway.MaxResponseBytes = "1MiB" })
	cl := v.client(v.pki.sensor1)
	tests := []struct {
		name, path string
		status     int
		complete   bool // the body arrives whole
	}{
		{"under the limit", "/body?n=1000000", 200, true},
		{"under the limit, chunked", "/chunked?n=1000000", 200, true},
		{"declared over the limit", "/body?n=2000000", 502, true},
		{"chunked, over the limit mid-stream", "/chunked?n=2000000", 200, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := cl.Get(href(hApp, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			n, err := checkPattern(resp.Body, 1000000)
			switch {
			case tc.complete && err != nil:
				t.Fatalf("after %d bytes: %v", n, err)
			case !tc.complete && err == nil:
				t.Fatal("a body over max_response_bytes arrived complete")
			case !tc.complete && n > 1<<20:
				t.Fatalf("%d bytes passed the 1MiB limit", n)
			}
		})
	}
	testkit.WaitFor(t, "the access-log lines", 5*time.Second, func() bool {
		n := 0
		for _, l := range v.accessLines(t) {
			if l["origin_error"] == "response_too_large" {
				n++
			}
		}
		return n == 2
	})
}

// loadClient makes requests until stop is closed, each on a fresh connection
// (the connection closes after the response), and records failures.
type loadClient struct {
	h      *harness
	sni    string
	ok     atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	errs   []string
}

// once sends one request on a new connection. dialed reports whether the
// handshake completed (the connection was admitted); err is set when the
// request then failed.
func (l *loadClient) once(path string) (dialed bool, err error) {
	c, err := tlsDial(l.h, l.sni)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, request("GET", l.sni, path)); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return true, err
	}
	if resp.StatusCode != 200 {
		return true, fmt.Errorf("status %d", resp.StatusCode)
	}
	return true, nil
}

func (l *loadClient) fail(err error) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

// tlsDial completes a handshake with the gateway as sensor-0001.
func tlsDial(h *harness, sni string) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", h.addr, h.tlsConfig(sni, h.pki.sensor1))
}

// TestReloadUnderLoad: the configuration reloads every 20ms while clients
// make requests on fresh and on kept-alive connections: none fails.
func TestReloadUnderLoad(t *testing.T) {
	h := newHarness(t)
	l := &loadClient{h: h, sni: hIoT} // no duration: a fresh connection per request
	keep := h.client(h.pki.sensor1)   // app: connections kept alive across reloads
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := l.once("/reload"); err != nil {
					l.fail(err)
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := keep.Get(href(hApp, "/keep"))
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				l.fail(err)
			} else {
				l.ok.Add(1)
			}
		}
	})
	reloads := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); reloads++ {
		if err := h.srv.Reload(); err != nil {
			t.Fatalf("reload %d: %v", reloads, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reloads, %d requests served, %d failed", reloads, l.ok.Load(), l.failed.Load())
	if l.failed.Load() != 0 {
		t.Fatalf("%d requests failed during reloads: %v", l.failed.Load(), l.errs)
	}
	if l.ok.Load() < 10 {
		t.Fatalf("only %d requests were served", l.ok.Load())
	}
}

// TestShutdownUnderLoad: Shutdown while requests are held at the origin and
// clients keep opening connections: every request whose connection was
// admitted gets its response, later connections are refused, and Run
// returns nil.
func TestShutdownUnderLoad(t *testing.T) {
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = "10s" })
	const held = 6
	heldErr := make(chan error, held)
	for i := range held {
		go func() {
			c, err := tlsDial(h, hApp)
			if err != nil {
				heldErr <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			path := "/hold/" + strconv.Itoa(i)
			_, _ = io.WriteString(c, request("GET", hApp, path))
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				if err == nil && (resp.StatusCode != 200 || !strings.Contains(string(b), path)) {
					err = fmt.Errorf("%s: status %d: %.100s", path, resp.StatusCode, b)
				}
			}
			heldErr <- err
		}()
	}
	for range held {
		h.origin.waitArrived(t)
	}

	// Clients that keep coming, each on a fresh connection.
	l := &loadClient{h: h, sni: hIoT}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				dialed, err := l.once("/more")
				switch {
				case !dialed:
					refused.Add(1) // not admitted: the gateway is draining or gone
					if !h.srv.draining.Load() {
						l.fail(fmt.Errorf("refused before the drain: %v", err))
					}
					return
				case err != nil:
					l.fail(err) // admitted, then lost
				default:
					l.ok.Add(1)
				}
			}
		})
	}
	testkit.WaitFor(t, "some requests under load", 10*time.Second, func() bool { return l.ok.Load() >= 5 })

	h.stopped = true // this test shuts the gateway down itself
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- h.srv.Shutdown(ctx)
	}()
	testkit.WaitFor(t, "the drain to start", 5*time.Second, func() bool { return !h.srv.Ready() })
	time.Sleep(200 * time.Millisecond) // the held requests are still waiting
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with requests in flight", err)
	default:
	}
	for range held {
		h.origin.release <- struct{}{}
	}
	for range held {
		if err := <-heldErr; err != nil {
			t.Errorf("a request in flight at the shutdown: %v", err)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Shutdown")
	}
	wg.Wait()
	t.Logf("%d requests served under load, %d admitted and lost, %d connections refused", l.ok.Load(), l.failed.Load(), refused.Load())
	if l.failed.Load() != 0 {
		t.Fatalf("%d admitted requests got no response: %v", l.failed.Load(), l.errs)
	}
}

// TestNoDurationResponseSizes: the last response of a no-duration request
// goes out corked with its close_notify (tlsengine.Conn.Cork), in one write
// up to 64 KiB and in pieces beyond: whatever its size, the device reads
// the whole body, then a clean TLS close.
func TestNoDurationResponseSizes(t *testing.T) {
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for _, n := range []int64{0, 1000, 60 << 10, 70 << 10, 200 << 10} {
		for _, path := range []string{"/body", "/chunked"} {
			rc := h.dial(t, hIoT, h.pki.sensor1)
			rc.send(request("GET", hIoT, path+"?n="+strconv.FormatInt(n, 10)))
			r := rc.read("GET")
			if r.StatusCode != http.StatusOK {
				t.Fatalf("%s n=%d: status %d", path, n, r.StatusCode)
			}
			if got, err := checkPattern(strings.NewReader(r.body), n); err != nil || got != n {
				t.Fatalf("%s n=%d: %d bytes, %v", path, n, got, err)
			}
			if !r.Close {
				t.Errorf("%s n=%d: no Connection: close on a no-duration response", path, n)
			}
			_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var one [1]byte
			if k, err := rc.br.Read(one[:]); k != 0 || err != io.EOF {
				t.Errorf("%s n=%d: after the body, read %d bytes, %v; want a clean close_notify EOF", path, n, k, err)
			}
		}
	}
}

// TestNonReaderHeldBack: a device that never reads but keeps sending small
// requests, each served by a new worker, is held back by the outbound
// bound like one large response is: its answers do not pile up in the
// gateway (they did: 150 answers of 200 KiB, 26 MiB buffered).
func TestNonReaderHeldBack(t *testing.T) {
	fo := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = fo.URL })
	raw, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.(*net.TCPConn).SetReadBuffer(4096)
	c := tls.Client(raw, h.tlsConfig(hApp, h.pki.sensor1))
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	var writeErr error // the gateway may give up on the connection; then nothing is left to measure
	sent := 0
	for ; sent < 150; sent++ {
		if _, writeErr = c.Write([]byte(request("GET", hApp, "/body?n=204800"))); writeErr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)

	// Measure this device's connection, found on its event loop by its
	// address: the bound below means nothing unless it was measured.
	type sample struct {
		addr string
		n    int
	}
	local := raw.LocalAddr().String()
	measured, buffered := false, 0
	h.srv.live.Range(func(k, _ any) bool {
		got := make(chan sample, 1)
		if err := k.(*conn).gc.AsyncWrite(nil, func(gc gnet.Conn, err error) error {
			s := sample{n: -1}
			if err == nil && gc.RemoteAddr() != nil {
				s = sample{gc.RemoteAddr().String(), gc.OutboundBuffered()}
			}
			got <- s
			return nil
		}); err != nil {
			return true // closed meanwhile: not this device's, or reported below
		}
		select {
		case s := <-got:
			if s.n >= 0 && s.addr == local {
				measured, buffered = true, s.n
				return false
			}
		case <-time.After(2 * time.Second):
			t.Errorf("the event loop did not answer the outbound-buffer query in 2s")
		}
		return true
	})
	if !measured {
		t.Fatalf("the device's connection (%s) was not measured: it is not open (after %d requests; last write error %v)", local, sent, writeErr)
	}
	if buffered == 0 {
		t.Fatalf("nothing buffered for a device that sent %d requests and read nothing: were they served at all?", sent)
	}
	t.Logf("%d requests sent, %d KiB buffered", sent, buffered>>10)
	if buffered > 2*flowCheck+flowLowWater {
		t.Fatalf("%d KiB of answers buffered for a device that reads nothing; the bound is about %d KiB", buffered>>10, (flowCheck+flowLowWater)>>10)
	}
}
