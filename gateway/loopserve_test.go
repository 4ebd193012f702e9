package gateway

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// peerOrigin is an origin that answers each request with the address it
// came from, and records when each of its connections closes.
type peerOrigin struct {
	srv    *httptest.Server
	mu     sync.Mutex
	closed map[string]bool // remote address → closed
}

func startPeerOrigin(t *testing.T) *peerOrigin {
	o := &peerOrigin{closed: map[string]bool{}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.RemoteAddr)
	}))
	o.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			o.mu.Lock()
			o.closed[c.RemoteAddr().String()] = true
			o.mu.Unlock()
		}
	}
	o.srv.Start()
	t.Cleanup(o.srv.Close)
	return o
}

// isClosed reports whether the connection from addr has closed.
func (o *peerOrigin) isClosed(addr string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed[addr]
}

// loopPools is the number of the loops' origin pools, and the connections
// they keep open (or are dialing).
func loopPools(h *harness) (pools, open int) {
	all := loopPoolsOf(h)
	for _, p := range all {
		open += int(p.open.Load())
	}
	return len(all), open
}

// loopConn starts a gateway in front of origin and returns a device's
// keep-alive connection to app.fleet.test whose requests have settled on
// the loop's own origin connection (onLoopPeer), with that connection's
// address at the origin.
func loopConn(t *testing.T, origin string) (*rawConn, string) {
	t.Helper()
	h := newHarness(t, func(p *cfgParams) { p.Origin = origin })
	c := h.dial(t, hApp, h.pki.sensor1)
	return c, onLoopPeer(t, c)
}

// onLoopPeer sends keep-alive requests on c until they reach the origin
// from one address several times in a row, other than the one the first
// request (a fresh token: signed on a worker) came from: the loop's own
// origin connection. It returns that address. The origin is a peerOrigin.
func onLoopPeer(t *testing.T, c *rawConn) string {
	t.Helper()
	return settleOnLoop(t, c, hApp, "/peer", func(r *response) string { return string(r.body) })
}

// settleOnLoop is onLoopPeer for requests to host and path, peerOf reading
// the address each answer says its request came from.
func settleOnLoop(t *testing.T, c *rawConn, host, path string, peerOf func(*response) string) string {
	t.Helper()
	first, last, same := "", "", 0
	for i := 0; i < 200; i++ {
		c.send(request("GET", host, path))
		r := c.read("GET")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.StatusCode, r.body)
		}
		peer := peerOf(r)
		if first == "" {
			first = peer
			continue
		}
		if peer == last && peer != first {
			if same++; same == 5 {
				return peer
			}
		} else {
			same = 0
		}
		last = peer
		time.Sleep(2 * time.Millisecond) // the loop's connection is dialed meanwhile
	}
	t.Fatalf("the requests to %s never settled on the loop's origin connection (first from %s, last from %s)", host, first, last)
	return ""
}

// TestLoopServesKeepAlive: once the loop has its own connection to the
// origin, a device's keep-alive requests all go out on it (one connection,
// however many requests), with the whole answer back to the device.
func TestLoopServesKeepAlive(t *testing.T) {
	o := startPeerOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	c := h.dial(t, hApp, h.pki.sensor1)
	peer := onLoopPeer(t, c)
	for i := 0; i < 20; i++ {
		c.send(request("GET", hApp, "/peer"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != peer {
			t.Fatalf("request %d: %d from %q; want 200 from the loop's connection %s", i, r.StatusCode, r.body, peer)
		}
	}
	// Pipelined: three requests in one write, answered in order.
	c.send(strings.Repeat(request("GET", hApp, "/peer"), 3))
	for i := 0; i < 3; i++ {
		if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != peer {
			t.Fatalf("pipelined %d: %d from %q", i, r.StatusCode, r.body)
		}
	}
	if pools, open := loopPools(h); pools != 1 || open != 1 {
		t.Fatalf("loop pools %d with %d connections; want 1 with 1", pools, open)
	}
}

// TestLoopSplitAnswer: an answer whose first part reaches the loop alone,
// and whose rest comes in a later read (an origin that flushes early), is
// delivered whole and in order: an answer that ends up over what the loop
// holds goes to a worker, and records the loop writes never overtake
// records still queued on it (the device would fail with bad_record_mac).
func TestLoopSplitAnswer(t *testing.T) {
	peer := startPeerOrigin(t)
	mux := http.NewServeMux()
	mux.Handle("/peer", peer.srv.Config.Handler)
	mux.HandleFunc("/split", func(w http.ResponseWriter, r *http.Request) {
		first, rest := 20000, 60000
		if r.URL.Query().Get("small") != "" {
			first, rest = 1000, 9000
		}
		w.Header().Set("Content-Length", strconv.Itoa(first+rest))
		_, _ = w.Write([]byte(strings.Repeat("a", first)))
		w.(http.Flusher).Flush()
		time.Sleep(30 * time.Millisecond)
		_, _ = w.Write([]byte(strings.Repeat("b", rest)))
	})
	peer.srv.Config.Handler = mux
	c, _ := loopConn(t, peer.srv.URL)
	for i, path := range []string{"/split?small=1", "/split", "/split", "/split?small=1"} {
		c.send(request("GET", hApp, path))
		r := c.read("GET")
		first, rest := 20000, 60000
		if strings.HasSuffix(path, "small=1") {
			first, rest = 1000, 9000
		}
		if want := strings.Repeat("a", first) + strings.Repeat("b", rest); r.StatusCode != http.StatusOK || r.body != want {
			t.Fatalf("answer %d (%s): %d, %d bytes; want 200 and %d bytes in order", i, path, r.StatusCode, len(r.body), first+rest)
		}
	}
}

// TestLoopInterimAnswer: an origin that sends 103 Early Hints, and its
// final answer a moment later, gets that final answer to the device (a
// worker reads past the interim one), not a 502.
func TestLoopInterimAnswer(t *testing.T) {
	peer := startPeerOrigin(t)
	mux := http.NewServeMux()
	mux.Handle("/peer", peer.srv.Config.Handler)
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		time.Sleep(30 * time.Millisecond)
		_, _ = io.WriteString(w, "final")
	})
	peer.srv.Config.Handler = mux
	c, _ := loopConn(t, peer.srv.URL)
	for i := 0; i < 3; i++ {
		c.send(request("GET", hApp, "/hints"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "final" {
			t.Fatalf("answer %d: %d %q; want 200 \"final\"", i, r.StatusCode, r.body)
		}
	}
}

// TestLoopPoolRetiredOnReload: a reload that moves the application to
// another origin closes the loop's idle connection to the old one, and
// keeps no pool for it; a connection opened before the reload is still
// answered by the origin of its own snapshot.
func TestLoopPoolRetiredOnReload(t *testing.T) {
	o1, o2 := startPeerOrigin(t), startPeerOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o1.srv.URL })
	old := h.dial(t, hApp, h.pki.sensor1)
	peer := onLoopPeer(t, old)

	h.params.Origin = o2.srv.URL
	h.write(h.config())
	if err := h.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !o1.isClosed(peer) {
		if time.Now().After(deadline) {
			t.Fatalf("the loop's idle connection %s to the old origin is still open after the reload", peer)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if pools, _ := loopPools(h); pools != 0 {
		t.Fatalf("%d loop pools after the reload; want none until a request of the new snapshot", pools)
	}
	// The connection of the old snapshot: its origin, by its pooled client.
	old.send(request("GET", hApp, "/peer"))
	if r := old.read("GET"); r.StatusCode != http.StatusOK || r.body == peer {
		t.Fatalf("old snapshot after the reload: %d from %q", r.StatusCode, r.body)
	}
	if pools, _ := loopPools(h); pools != 0 {
		t.Fatalf("a request of the old snapshot made %d loop pools for the retired origin", pools)
	}
	// A new connection: the new origin, soon on the loop.
	if p := onLoopPeer(t, h.dial(t, hApp, h.pki.sensor1)); o2.isClosed(p) {
		t.Fatalf("new origin's loop connection %s closed", p)
	}
}

// responseEnd reports whether buf holds a whole answer (its length n) as
// the loop's origin connection decides it: the header, then the body.
func responseEnd(buf []byte, head bool) (n, state int) {
	var h fasthttp.ResponseHeader
	hlen, blen, state := frameHeader(buf, head, &h)
	if state != framingComplete {
		return 0, state
	}
	return frameBody(buf, hlen, blen)
}

// TestResponseEnd: how the loop tells that an origin's answer is complete
// in its buffer, by the answer's framing.
func TestResponseEnd(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\n"
	for _, tc := range []struct {
		name, buf string
		head      bool
		n, state  int
	}{
		{"header incomplete", ok + "Content-Length: 2\r\n", false, 0, framingMore},
		{"length complete", ok + "Content-Length: 2\r\n\r\nhi", false, 40, framingComplete},
		{"length, more behind", ok + "Content-Length: 2\r\n\r\nhiXX", false, 40, framingComplete},
		{"length short", ok + "Content-Length: 3\r\n\r\nhi", false, 0, framingMore},
		{"chunked complete", ok + "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", false, 59, framingComplete},
		{"chunked with trailer", ok + "Transfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: v\r\n\r\n", false, 69, framingComplete},
		{"chunked, last chunk missing", ok + "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n", false, 0, framingMore},
		{"chunked, trailer unfinished", ok + "Transfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n", false, 0, framingMore},
		{"chunk size not hex", ok + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n", false, 0, framingBad},
		{"head: no body", ok + "Content-Length: 10\r\n\r\n", true, 39, framingComplete},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, 27, framingComplete},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, 48, framingComplete},
		{"until close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", false, 0, framingUntilClose},
		{"interim answer", "HTTP/1.1 100 Continue\r\n\r\n", false, 0, framingInterim},
		{"upgrade", "HTTP/1.1 101 Switching Protocols\r\n\r\n", false, 0, framingBad},
		{"not HTTP", "SSH-2.0-not-http\r\n\r\n", false, 0, framingBad},
	} {
		n, state := responseEnd([]byte(tc.buf), tc.head)
		if n != tc.n || state != tc.state {
			t.Errorf("%s: (%d, %d); want (%d, %d)", tc.name, n, state, tc.n, tc.state)
		}
	}
}

// hijackOrigin is a peer origin with two more paths, each answered on the
// raw connection: /mixed sends an answer with both Content-Length and
// chunked, then reports whether the gateway closed that connection (true)
// or sent another request on it (false); /drop closes the connection
// without an answer the first time a method asks, and answers "second try"
// after that.
func hijackOrigin(t *testing.T) (*peerOrigin, chan bool) {
	o := startPeerOrigin(t)
	mixedEnd := make(chan bool, 8)
	var mu sync.Mutex
	dropped := map[string]bool{}
	mux := http.NewServeMux()
	mux.Handle("/peer", o.srv.Config.Handler)
	mux.HandleFunc("/mixed", mixedAnswer(mixedEnd))
	mux.HandleFunc("/drop", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		first := !dropped[r.Method]
		dropped[r.Method] = true
		mu.Unlock()
		if first {
			if nc, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = nc.Close()
			}
			return
		}
		_, _ = io.WriteString(w, "second try")
	})
	o.srv.Config.Handler = mux
	return o, mixedEnd
}

// mixedAnswer answers on the raw connection with both Content-Length and
// chunked ("mixed", read as chunked), then reports on ended whether the
// gateway closed that connection (true) or sent another request on it
// (false).
func mixedAnswer(ended chan<- bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmixed\r\n0\r\n\r\n")
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := nc.Read(make([]byte, 1))
		ended <- n == 0 && err == io.EOF
	}
}

// expectMixedClosed waits for mixedAnswer's report: the connection that
// carried the mixed answer must have been closed, not given another request.
func expectMixedClosed(t *testing.T, ended <-chan bool) {
	t.Helper()
	select {
	case closed := <-ended:
		if !closed {
			t.Fatal("the origin connection that sent the mixed answer carried another request")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the origin connection that sent the mixed answer was neither closed nor reused")
	}
}

// TestLoopMixedFramingCloses: an origin answer with both Content-Length and
// Transfer-Encoding: chunked is read as chunked (RFC 9112) and delivered,
// but its origin connection is closed afterwards, never given another
// request: the origin may have framed it by the length.
func TestLoopMixedFramingCloses(t *testing.T) {
	o, mixedEnd := hijackOrigin(t)
	c, _ := loopConn(t, o.srv.URL)
	c.send(request("GET", hApp, "/mixed"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "mixed" {
		t.Fatalf("mixed answer: %d %q; want 200 \"mixed\" (read as chunked)", r.StatusCode, r.body)
	}
	c.send(request("GET", hApp, "/peer"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("the request after it: %d %q", r.StatusCode, r.body)
	}
	expectMixedClosed(t, mixedEnd)
}

// TestLoopRetryOnDroppedConnection: when the loop's origin connection
// closes after taking a request and before answering (an origin that
// timed its keep-alive out at that moment), an idempotent request goes
// again, on a worker's pooled client, and is answered; a POST is not sent
// twice: the device gets 502.
func TestLoopRetryOnDroppedConnection(t *testing.T) {
	o, _ := hijackOrigin(t)
	c, _ := loopConn(t, o.srv.URL)
	c.send(request("GET", hApp, "/drop"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "second try" {
		t.Fatalf("GET on a dropped connection: %d %q; want 200 \"second try\" (sent again)", r.StatusCode, r.body)
	}
	onLoopPeer(t, c)
	c.send("POST /drop HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 4\r\n\r\nbody")
	if r := c.read("POST"); r.StatusCode != http.StatusBadGateway {
		t.Fatalf("POST on a dropped connection: %d %q; want 502 (never sent twice)", r.StatusCode, r.body)
	}
}

// TestLoopExchangesKeepApart: the loop reuses the exchanges it has finished
// for later requests, so nothing of one request may show in another.
// Two devices, two keep-alive connections each, send requests at once,
// some pipelined; every answer must be the one for its own request (the
// origin echoes the path) and carry its own device's identity (the
// common name of the token the origin got).
func TestLoopExchangesKeepApart(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if parts := strings.Split(r.Header.Get("Cf-Access-Jwt-Assertion"), "."); len(parts) == 3 {
			var claims struct {
				CommonName string `json:"common_name"`
			}
			if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil && json.Unmarshal(b, &claims) == nil {
				cn = claims.CommonName
			}
		}
		_, _ = io.WriteString(w, r.URL.Path+" "+cn)
	}))
	t.Cleanup(origin.Close)
	h := newHarness(t, func(p *cfgParams) { p.Origin = origin.URL })
	devices := map[string]*device{"sensor-0001": h.pki.sensor1, "sensor-0002": h.pki.sensor2}
	var wg sync.WaitGroup
	for cn, dev := range devices {
		for k := 0; k < 2; k++ {
			c := h.dial(t, hApp, dev)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 150; i++ {
					n := 1 + i%3 // one, two or three requests in one write
					var batch strings.Builder
					for j := 0; j < n; j++ {
						batch.WriteString(request("GET", hApp, fmt.Sprintf("/%s/c%d/r%d/p%d", cn, k, i, j)))
					}
					if _, err := io.WriteString(c.c, batch.String()); err != nil {
						t.Errorf("%s connection %d: write: %v", cn, k, err)
						return
					}
					for j := 0; j < n; j++ {
						r, err := c.readErr("GET")
						if err != nil {
							t.Errorf("%s connection %d request %d.%d: %v", cn, k, i, j, err)
							return
						}
						want := fmt.Sprintf("/%s/c%d/r%d/p%d %s", cn, k, i, j, cn)
						if r.StatusCode != http.StatusOK || r.body != want {
							t.Errorf("%s connection %d: got %d %q; want 200 %q", cn, k, r.StatusCode, r.body, want)
							return
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	if _, open := loopPools(h); open == 0 {
		t.Fatal("no origin connection on a loop: the requests never ran on the loop")
	}
}

// TestResponseEndHugeLength: a Content-Length near the largest int is a
// body still to come, not an answer that ended before it began.
func TestResponseEndHugeLength(t *testing.T) {
	for _, cl := range []string{"9223372036854775807", "9223372036854775800"} {
		buf := []byte("HTTP/1.1 200 OK\r\nContent-Length: " + cl + "\r\n\r\nabc")
		if n, state := responseEnd(buf, false); state != framingMore || n != 0 {
			t.Errorf("Content-Length %s: (%d, %d); want (0, framingMore)", cl, n, state)
		}
	}
}

// TestLoopHugeContentLength: an origin that declares a length near the
// largest int, on a connection the loop keeps, gets its device a 502 and
// leaves the gateway serving the others.
func TestLoopHugeContentLength(t *testing.T) {
	o := startPeerOrigin(t)
	mux := http.NewServeMux()
	mux.Handle("/peer", o.srv.Config.Handler)
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nabc")
		time.Sleep(200 * time.Millisecond)
	})
	o.srv.Config.Handler = mux
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.srv.URL })
	c := h.dial(t, hApp, h.pki.sensor1)
	onLoopPeer(t, c)
	c.send(request("GET", hApp, "/huge"))
	r, err := c.readErr("GET")
	if err != nil {
		t.Fatalf("huge Content-Length: %v", err)
	}
	if r.StatusCode != http.StatusBadGateway {
		t.Fatalf("huge Content-Length: %d %q; want 502", r.StatusCode, r.body)
	}
	c2 := h.dial(t, hApp, h.pki.sensor2)
	c2.send(request("GET", hApp, "/peer"))
	if r := c2.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("after it: %d %q", r.StatusCode, r.body)
	}
}

// TestLoopMaxResponseBytes: max_response_bytes holds for answers the loop
// gathers itself (up to loopResponseMax) as it does on the pooled client's
// path: a 4 KiB body over a 1 KiB limit is a 502, not delivered.
func TestLoopMaxResponseBytes(t *testing.T) {
	o := startPeerOrigin(t)
	mux := http.NewServeMux()
	mux.Handle("/peer", o.srv.Config.Handler)
	mux.HandleFunc("/4k", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 4096))
	})
	o.srv.Config.Handler = mux
	h := newHarness(t, func(p *cfgParams) {
		p.Origin = o.srv.URL
		p.Edit = func(c *fileConfig) { c.Gateway.MaxResponseBytes = "1KiB" }
	})
	c := h.dial(t, hApp, h.pki.sensor1)
	onLoopPeer(t, c)
	for i := 0; i < 3; i++ {
		c.send(request("GET", hApp, "/4k"))
		r := c.read("GET")
		if r.StatusCode != http.StatusBadGateway {
			t.Fatalf("request %d on the loop: %d with %d body bytes; want 502 (max_response_bytes 1KiB)", i, r.StatusCode, len(r.body))
		}
	}
}

// loopOf is the event loop that serves rc's connection at the gateway.

// FuzzResponseEnd: whatever an origin sends, a complete answer is a length
// within what was received, and the loop slices nothing outside it.
func FuzzResponseEnd(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nabc"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, buf []byte, head bool) {
		var h fasthttp.ResponseHeader
		hlen, _, state := frameHeader(buf, head, &h)
		if state == framingComplete && (hlen <= 0 || hlen > len(buf)) {
			t.Fatalf("a header of %d bytes in %d", hlen, len(buf))
		}
		n, state := responseEnd(buf, head)
		if state == framingComplete && (n < hlen || n > len(buf)) {
			t.Fatalf("an answer of %d bytes (header %d) in %d", n, hlen, len(buf))
		}
	})
}
