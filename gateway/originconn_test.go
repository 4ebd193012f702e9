package gateway

// Pooled origin connections: origin_timeout bounds each wait for the
// origin's bytes, a connection the origin closed while idle is not reused
// for a request, and neither is one that carried an answer with both
// Content-Length and Transfer-Encoding.

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestOriginTimeout(t *testing.T) {
	const originTimeout = time.Second // long enough for three handshakes under -race on a busy machine
	h := newHarness(t, func(p *cfgParams) { p.OriginTimeout = originTimeout.String() })
	type result struct {
		status int
		body   string
		err    error
		dur    time.Duration
	}
	// The slow request runs off the test goroutine, so it reports failure
	// through the channel (t.Fatal there would leave the test waiting):
	// exactly one result is always sent.
	slow := make(chan result, 1)
	c := h.client(h.pki.sensor1)
	go func() {
		start := time.Now()
		var res result
		resp, err := c.Get(href(hApp, "/hold/slow"))
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			res.status, res.body, err = resp.StatusCode, string(b), rerr
		}
		res.err, res.dur = err, time.Since(start)
		slow <- res
	}()
	h.origin.waitArrived(t)

	// While the slow request waits for its origin, others are served.
	for _, d := range []string{hApp, hIoT, hFwd} {
		if r := h.get(t, h.client(h.pki.sensor1), href(d, "/fast")); r.StatusCode != 200 {
			t.Fatalf("%s while another request waits: status %d", d, r.StatusCode)
		}
	}
	select {
	case res := <-slow:
		// Either the gateway answered the held request before its
		// origin_timeout, or the fast requests above were so slow that
		// they were not served "while another request waits": both make
		// the rest of the test meaningless.
		t.Fatalf("the slow request ended before the others were served: after %v, status %d, err %v, body %q",
			res.dur, res.status, res.err, res.body)
	default:
	}

	var res result
	select {
	case res = <-slow:
	case <-time.After(originTimeout + 15*time.Second):
		t.Fatalf("the slow request has not ended %v after origin_timeout", 15*time.Second)
	}
	if res.err != nil {
		t.Fatalf("the slow request failed after %v: %v", res.dur, res.err)
	}
	if res.status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504: %s", res.status, res.body)
	}
	// One attempt: a timed-out request is not sent to the origin again.
	if res.dur < originTimeout*8/10 || res.dur > originTimeout*5/2 {
		t.Errorf("504 after %v; origin_timeout is %v", res.dur, originTimeout)
	}
	if n := len(h.origin.arrived); n != 0 {
		t.Errorf("the origin got the timed-out request %d more times", n)
	}
	if !strings.Contains(h.logs.String(), `"kind":"timeout"`) {
		t.Errorf("the log does not name the timeout")
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/after")); r.StatusCode != 200 {
		t.Fatalf("after the timeout: status %d", r.StatusCode)
	}
}

func TestOriginClosedIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 16)
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Method+" ok")
	}))
	o.Config.IdleTimeout = 50 * time.Millisecond // the origin drops idle keep-alive connections quickly
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for i, method := range []string{"GET", "GET", "PUT", "POST"} {
		r := h.do(t, h.client(h.pki.sensor1), method, href(hApp, "/"), nil, "body")
		if r.StatusCode != 200 {
			t.Fatalf("request %d (%s) after the origin closed the pooled connection: %d %s", i, method, r.StatusCode, r.body)
		}
		select { // the origin closes the gateway's pooled connection
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the origin did not close its idle connection")
		}
	}
}

// TestWatchAnswer: originConn finds an answer's header however the reads
// split it (lines ending in CRLF or a bare LF), skips interim answers, and
// calls unsure an answer after which the connection must carry no other
// request: both Content-Length and Transfer-Encoding, a 101, the answer to
// a HEAD, a 204 or 304 announcing a body, one that is not HTTP, or one
// whose header it never saw end.
func TestWatchAnswer(t *testing.T) {
	const mixed = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmixed\r\n0\r\n\r\n"
	const plain = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Note: Transfer-Encoding: chunked\r\n\r\nplain"
	const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmixed\r\n0\r\n\r\n"
	for _, tc := range []struct {
		name    string
		headReq bool
		reads   []string
		unsure  bool
	}{
		{"mixed, one read", false, []string{mixed}, true},
		{"mixed, split in the field name", false, []string{mixed[:30], mixed[30:50], mixed[50:]}, true},
		{"mixed, split in the CRLF CRLF", false, []string{mixed[:66], mixed[66:]}, true},
		{"mixed after an interim answer", false, []string{"HTTP/1.1 100 Continue\r\n\r\n", mixed}, true},
		{"mixed after an interim answer, one read", false, []string{"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + mixed}, true},
		{"mixed, bare LF", false, []string{strings.ReplaceAll(mixed, "\r\n", "\n")}, true},
		{"length only (a value naming the other field)", false, []string{plain[:20], plain[20:]}, false},
		{"length only, bare LF", false, []string{"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"}, false},
		{"chunked only", false, []string{chunked}, false},
		{"101 without an upgrade asked", false, []string{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"}, true},
		{"the answer to a HEAD", true, []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"}, true},
		{"the answer to a HEAD, no length", true, []string{"HTTP/1.1 200 OK\r\n\r\n"}, true},
		{"204", false, []string{"HTTP/1.1 204 No Content\r\n\r\n"}, false},
		{"204 with Content-Length: 0", false, []string{"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"}, false},
		{"204 announcing a body", false, []string{"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"}, true},
		{"304", false, []string{"HTTP/1.1 304 Not Modified\r\nEtag: \"1\"\r\n\r\n"}, false},
		{"304 announcing a chunked body", false, []string{"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"}, true},
		{"not HTTP", false, []string{"SSH-2.0-not-http\r\n\r\n"}, true},
		{"a header never ending", false, []string{"HTTP/1.1 200 OK\r\n", strings.Repeat("X-Pad: 0123456789\r\n", maxWatchedHeader/10)}, true},
		{"a header ending past the bound, one read", false, []string{"HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: 0123456789\r\n", maxWatchedHeader/10) + "\r\nbody"}, true},
	} {
		c := &originConn{watch: true, headReq: tc.headReq}
		for _, r := range tc.reads {
			if !c.seen {
				c.watchAnswer([]byte(r))
			}
		}
		if c.unsure != tc.unsure {
			t.Errorf("%s: unsure %v; want %v", tc.name, c.unsure, tc.unsure)
		}
		if !c.seen && tc.name != "a header never ending" {
			t.Errorf("%s: the header was not seen whole", tc.name)
		}
	}
}

// TestPooledMixedFramingCloses: the pooled client (an https origin's) reads
// an answer with both Content-Length and chunked as chunked and delivers
// it, and never sends another request on that connection: the next request,
// a POST, goes to the origin on another one.
func TestPooledMixedFramingCloses(t *testing.T) {
	p := sharedPKI()
	mixedEnd := make(chan bool, 8)
	mux := http.NewServeMux()
	mux.HandleFunc("/mixed", mixedAnswer(mixedEnd))
	mux.HandleFunc("/after", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(b))
	})
	srv := startTLSOrigin(t, mux)

	h := newHarness(t, func(c *cfgParams) { c.Origin, c.OriginCAFile = srv.URL, "root.pem" })
	c := h.dial(t, hApp, p.sensor1)
	c.send(request("GET", hApp, "/mixed"))
	if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "mixed" {
		t.Fatalf("mixed answer: %d %q; want 200 \"mixed\" (read as chunked)", r.StatusCode, r.body)
	}
	c.send(request("POST", hApp, "/after", "Content-Length: 4") + "data")
	if r := c.read("POST"); r.StatusCode != http.StatusOK || r.body != "POST data" {
		t.Fatalf("the POST after it: %d %q; want 200 \"POST data\"", r.StatusCode, r.body)
	}
	expectMixedClosed(t, mixedEnd)
}

// FuzzWatchAnswer: however the origin's bytes are split into reads,
// originConn reaches the same verdict as when they come in one read.
func FuzzWatchAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), uint16(7), uint16(31))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), uint16(20), uint16(3))
	f.Fuzz(func(t *testing.T, in []byte, a, b uint16) {
		whole := &originConn{watch: true}
		whole.watchAnswer(in)
		split := &originConn{watch: true}
		i, j := int(a)%(len(in)+1), int(b)%(len(in)+1)
		if i > j {
			i, j = j, i
		}
		for _, part := range [][]byte{in[:i], in[i:j], in[j:]} {
			if !split.seen && len(part) > 0 {
				split.watchAnswer(part)
			}
		}
		if whole.unsure != split.unsure || whole.seen != split.seen {
			t.Fatalf("one read: unsure %v seen %v; in reads split at %d and %d: unsure %v seen %v", whole.unsure, whole.seen, i, j, split.unsure, split.seen)
		}
	})
}
