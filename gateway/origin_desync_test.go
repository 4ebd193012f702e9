package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// forgedAnswer is a body that is itself a whole HTTP answer: content a
// device could have uploaded to the origin, for another device to receive
// if the gateway read it as the next answer on the connection.
const forgedAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Forged: 1\r\n\r\nFORGED"

// sloppyOrigin is a keep-alive origin that breaks HTTP's rules in the ways
// a hand-written server does:
//   - /file: a HEAD is answered as a GET, the header first, the body (a
//     forged answer) a moment later;
//   - /empty: a 204 that announces a body, and sends it a moment later;
//   - /switch: a 101 to a request that asked for no upgrade; what it
//     receives next on the connection goes to switched;
//   - /bare: an answer whose lines end with a bare LF;
//   - anything else: "answer for <path>".
type sloppyOrigin struct {
	url      string
	switched chan string
}

func startSloppyOrigin(t *testing.T, useTLS bool) *sloppyOrigin {
	t.Helper()
	var ln net.Listener
	var err error
	o := &sloppyOrigin{switched: make(chan string, 4), url: "http://"}
	if useTLS {
		p := sharedPKI()
		cert := p.inter.MustIssue(pki.Server("127.0.0.1"))
		ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate(p.inter)}})
		o.url = "https://"
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	o.url += ln.Addr().String()
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go o.serve(c)
		}
	}()
	return o
}

func (o *sloppyOrigin) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		switch req.URL.Path {
		case "/file":
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(forgedAnswer))
			time.Sleep(50 * time.Millisecond)
			_, _ = io.WriteString(c, forgedAnswer)
		case "/empty":
			_, _ = fmt.Fprintf(c, "HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n", len(forgedAnswer))
			time.Sleep(50 * time.Millisecond)
			_, _ = io.WriteString(c, forgedAnswer)
		case "/switch":
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			buf := make([]byte, 4096)
			if n, _ := br.Read(buf); n > 0 {
				o.switched <- string(buf[:n])
			}
			return
		case "/bare":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 4\n\nbare")
		case "/firmware":
			// As RFC 9110 allows: a HEAD's answer and a 304 give the length
			// of what they do not send. Slow, so that a burst holds as many
			// connections.
			time.Sleep(300 * time.Millisecond)
			status := "200 OK"
			if req.Method == http.MethodGet {
				status = "304 Not Modified"
			}
			_, _ = io.WriteString(c, "HTTP/1.1 "+status+"\r\nEtag: \"v1\"\r\nContent-Length: 5\r\n\r\n")
		default:
			body := "answer for " + req.URL.Path
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
}

// sloppyHarness is a one-loop gateway whose app.fleet.test goes to o, with
// two devices' keep-alive connections warmed up: each has had answers
// through the same origin connections.
func sloppyHarness(t *testing.T, o *sloppyOrigin) (h *harness, a, b *rawConn) {
	h = newHarness(t, func(p *cfgParams) {
		p.Origin = o.url
		if strings.HasPrefix(o.url, "https") {
			p.OriginCAFile = "root.pem"
		}
		p.Edit = func(c *fileConfig) { c.Gateway.EventLoops = 1 }
	})
	a, b = h.dial(t, hApp, h.pki.sensor1), h.dial(t, hApp, h.pki.sensor2)
	for range 5 {
		for _, c := range []*rawConn{a, b} {
			c.send(request("GET", hApp, "/warm"))
			if r := c.read("GET"); r.StatusCode != http.StatusOK {
				t.Fatalf("warm-up: %d %s", r.StatusCode, r.body)
			}
		}
	}
	return h, a, b
}

// expectOwnAnswers sends requests from both devices in turn: each must get
// the answer to its own request, not one meant for the other.
func expectOwnAnswers(t *testing.T, a, b *rawConn) {
	t.Helper()
	for i := range 3 {
		for name, c := range map[string]*rawConn{"A": a, "B": b} {
			path := fmt.Sprintf("/device-%s-%d", name, i)
			c.send(request("GET", hApp, path))
			if r := c.read("GET"); r.StatusCode != http.StatusOK || r.body != "answer for "+path {
				t.Errorf("device %s asked for %s and got %d %q (X-Forged %q)", name, path, r.StatusCode, r.body, r.Header.Get("X-Forged"))
			}
		}
	}
}

// TestOriginBodyBehindBodilessAnswer: an origin that sends a body behind an
// answer that has none (the answer to a HEAD, a 204 announcing one) must
// not make the gateway read that body as the answer to the next request on
// the connection, another device's: the connection carries no other
// request. On the loop's origin connections (http) and the pooled client's
// (https).
func TestOriginBodyBehindBodilessAnswer(t *testing.T) {
	for _, origin := range []struct {
		name string
		tls  bool
	}{{"loop", false}, {"pooled", true}} {
		for _, bodiless := range []struct{ method, path string }{{"HEAD", "/file"}, {"GET", "/empty"}} {
			t.Run(origin.name+" "+bodiless.method+" "+bodiless.path, func(t *testing.T) {
				_, a, b := sloppyHarness(t, startSloppyOrigin(t, origin.tls))
				a.send(request(bodiless.method, hApp, bodiless.path))
				if r := a.read(bodiless.method); r.body != "" {
					t.Errorf("%s %s: body %q", bodiless.method, bodiless.path, r.body)
				}
				time.Sleep(10 * time.Millisecond) // B's request goes out before the stray body comes
				expectOwnAnswers(t, a, b)
			})
		}
	}
}

// TestOriginSwitchWithoutUpgrade: a 101 to a request that asked for no
// upgrade is answered 502, and the switched connection carries no other
// request: the next device's request (and its token) goes to the origin on
// another connection.
func TestOriginSwitchWithoutUpgrade(t *testing.T) {
	for _, origin := range []struct {
		name string
		tls  bool
	}{{"loop", false}, {"pooled", true}} {
		t.Run(origin.name, func(t *testing.T) {
			o := startSloppyOrigin(t, origin.tls)
			_, a, b := sloppyHarness(t, o)
			a.send(request("GET", hApp, "/switch"))
			if r := a.read("GET"); r.StatusCode != http.StatusBadGateway {
				t.Errorf("GET /switch: %d %q; want 502", r.StatusCode, r.body)
			}
			expectOwnAnswers(t, a, b)
			select {
			case got := <-o.switched:
				t.Errorf("a request went into the switched connection: %.80q", got)
			default:
			}
		})
	}
}

// TestOriginBareLFAnswer: an answer whose lines all end with a bare LF
// (which RFC 9112 allows a recipient to refuse) is refused: 502 at once on the loop, which finds where its header ends and
// that fasthttp does not read it to there; the pooled client's fasthttp
// waits for a CRLF CRLF until origin_timeout (504). Either way no device
// gets another's answer after it.
func TestOriginBareLFAnswer(t *testing.T) {
	for _, origin := range []struct {
		name string
		tls  bool
		want int
	}{{"loop", false, http.StatusBadGateway}, {"pooled", true, http.StatusGatewayTimeout}} {
		t.Run(origin.name, func(t *testing.T) {
			_, a, b := sloppyHarness(t, startSloppyOrigin(t, origin.tls))
			a.send(request("GET", hApp, "/bare"))
			if r := a.read("GET"); r.StatusCode != origin.want {
				t.Errorf("GET /bare: %d %q; want %d", r.StatusCode, r.body, origin.want)
			}
			expectOwnAnswers(t, a, b)
		})
	}
}

// TestPooledBurstOfUnsureAnswers: a burst of answers after which a pooled
// origin connection carries no other request (HEADs; 304s announcing the
// length of what they did not send, as RFC 9110 allows) leaves no pool of
// dead connections that fails the next request: a HEAD goes to the origin
// with Connection: close, and a request that finds only unusable idle
// connections goes again on a new one.
func TestPooledBurstOfUnsureAnswers(t *testing.T) {
	o := startSloppyOrigin(t, true)
	h := newHarness(t, func(p *cfgParams) { p.Origin, p.OriginCAFile = o.url, "root.pem" })
	for _, burst := range []struct {
		name, method string
		extra        []string
		status       int
	}{
		{"HEAD", "HEAD", nil, http.StatusOK},
		{"304 with a length", "GET", []string{`If-None-Match: "v1"`}, http.StatusNotModified},
	} {
		t.Run(burst.name, func(t *testing.T) {
			conns := make([]*rawConn, 8)
			for i := range conns {
				conns[i] = h.dial(t, hApp, h.pki.sensor1)
			}
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.send(request(burst.method, hApp, "/firmware", burst.extra...))
				}()
			}
			wg.Wait()
			for _, c := range conns {
				if r := c.read(burst.method); r.StatusCode != burst.status {
					t.Fatalf("%s: %d %q", burst.name, r.StatusCode, r.body)
				}
			}
			c := h.dial(t, hApp, h.pki.sensor2)
			c.send(request("POST", hApp, "/after", "Content-Length: 2") + "ok")
			if r := c.read("POST"); r.StatusCode != http.StatusOK || r.body != "answer for /after" {
				t.Fatalf("a POST after the burst: %d %q", r.StatusCode, r.body)
			}
		})
	}
}
