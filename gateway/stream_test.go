package gateway

// Origin response bodies on their way to the device: a huge body streamed
// through without being held, an origin that closes mid-response,
// max_response_bytes, and a body of unknown length to an HTTP/1.0 device.
// (An origin that never answers: TestOriginTimeout.)

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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

// TestHugeBodyStreamed: a 128 MiB origin body reaches the device complete,
// with its Content-Length or chunked, while the heap never grows by half
// the body's size, even while the device pauses reading (backpressure). The
// heap is the process's, device and origin included: what it grows by that
// does not depend on the body's size (about 28 MiB under the race detector
// on a busy machine, 39 MiB seen in a loaded -count=4 run of the whole
// package, against 2 MiB alone) is not the gateway holding the body, so the
// body is large enough for half of it to stand well above that.
func TestHugeBodyStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for _, tc := range []struct {
		path string
		size int64
	}{{"/body", 128 << 20}, {"/chunked", 128 << 20}} {
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
			if grew > size/2 { // buffered whole, it would be more than the body
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

// TestHTTP10StreamedBodyUnframed: HTTP/1.0 has no chunked coding, so a
// streamed body of unknown length goes to an HTTP/1.0 device unframed and
// the connection closes after it; an HTTP/1.1 device gets it chunked.
func TestHTTP10StreamedBodyUnframed(t *testing.T) {
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	const n = 1 << 20 // past what the gateway buffers: streamed
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("GET /chunked?n=1048576 HTTP/1.0\r\nHost: " + hApp + "\r\nConnection: keep-alive\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET", ProtoMajor: 1, ProtoMinor: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) != 0 || resp.Header.Get("Transfer-Encoding") != "" {
		t.Fatalf("an HTTP/1.0 device got Transfer-Encoding %v", resp.TransferEncoding)
	}
	if !resp.Close {
		t.Errorf("a close-delimited body must come with Connection: close")
	}
	if _, err := checkPattern(resp.Body, n); err != nil {
		t.Fatalf("body: %v", err)
	}

	c11 := h.dial(t, hApp, h.pki.sensor1)
	c11.send(request("GET", hApp, "/chunked?n=1048576"))
	resp11, err := http.ReadResponse(c11.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	defer resp11.Body.Close()
	if len(resp11.TransferEncoding) != 1 || resp11.TransferEncoding[0] != "chunked" || resp11.Close {
		t.Fatalf("HTTP/1.1: transfer encoding %v, close %v; want chunked and kept", resp11.TransferEncoding, resp11.Close)
	}
	if _, err := checkPattern(resp11.Body, n); err != nil {
		t.Fatalf("body: %v", err)
	}
}
