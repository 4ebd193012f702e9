package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"
)

// TestOriginSlots: the bound's count, its waiting dials served oldest
// first, a wait that ends without a slot, and the slots promised to
// waiting dials by connections closing for them.
func TestOriginSlots(t *testing.T) {
	hc := &fasthttp.HostClient{Addr: "127.0.0.1:1"} // no connections: reclaim finds none
	s := newOriginSlots(2)
	if !s.tryAcquire() || !s.tryAcquire() {
		t.Fatal("two slots of two not taken")
	}
	if s.tryAcquire() {
		t.Fatal("a third slot of two taken")
	}
	start := time.Now()
	if s.acquire(hc, 50*time.Millisecond) {
		t.Fatal("a waiting dial got a slot nobody gave back")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("the wait ended after %v, before its 50ms", d)
	}
	if s.waiting() {
		t.Fatal("a dial whose wait ended still counts as waiting")
	}

	// Two dials wait; the first to wait gets the first slot given back.
	got := make(chan int, 2)
	for i := 1; i <= 2; i++ {
		go func() {
			if s.acquire(hc, 10*time.Second) {
				got <- i
			}
		}()
		for deadline := time.Now().Add(5 * time.Second); int(s.want.Load()) != i; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("dial %d never waited", i)
			}
		}
	}
	if s.tryAcquire() {
		t.Fatal("a loop's pool took a slot while dials wait")
	}
	// A loop's request that waited longer than both dials keeps its
	// connection: no promise.
	if s.promise(start) {
		t.Fatal("a connection promised to a dial younger than the loop's oldest request")
	}
	// A connection closing for the waiting dials: the first promise is
	// the first dial's, the second the second's, and a third finds none.
	if !s.promise(time.Time{}) || !s.promise(time.Time{}) || s.promise(time.Time{}) {
		t.Fatal("two waiting dials: not exactly two promises")
	}
	if s.waiting() {
		t.Fatal("dials promised their slots still count as waiting for one")
	}
	s.release(true)
	if first := <-got; first != 1 {
		t.Fatalf("dial %d got the first slot given back; want dial 1", first)
	}
	s.release(true)
	<-got
	if s.promised != 0 || len(s.waiters) != 0 || s.open != 2 {
		t.Fatalf("after both dials: %d promised, %d waiting, %d open; want 0, 0, 2", s.promised, len(s.waiters), s.open)
	}
	s.release(false)
	s.release(false)
	if !s.tryAcquire() {
		t.Fatal("no slot free after both connections closed")
	}
}

// boundOrigin is an http origin that records the most connections to it
// the gateway held open at once, as the kernel counts them: the
// established sockets whose far end is the origin's port, sampled at every
// request and every few milliseconds. The gateway's end of a connection
// leaves ESTABLISHED within its close call, whenever the origin's
// goroutines get to theirs. (The origin's end can lag: with the CPUs busy,
// the kernel may defer the receive side of a loopback FIN, which no
// client's bound can help.)
type boundOrigin struct {
	srv    *httptest.Server
	port   string // hex, as /proc/net/tcp writes it
	hold   time.Duration
	peak   atomic.Int32
	served atomic.Int32
	mu     sync.Mutex
	seen   []string      // the sockets counted at the peak, for a failure's message
	got    chan struct{} // a request arrived (buffered; tests that wait drain it)
	stop   chan struct{}
}

func startBoundOrigin(t *testing.T, hold time.Duration) *boundOrigin {
	t.Helper()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("needs /proc/net/tcp to count the origin's connections")
	}
	o := &boundOrigin{hold: hold, got: make(chan struct{}, 1024), stop: make(chan struct{})}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.sample()
		select {
		case o.got <- struct{}{}:
		default:
		}
		hold := o.hold
		if r.URL.Path == "/quick" {
			hold = 0
		}
		time.Sleep(hold)
		o.served.Add(1)
		if r.URL.Path == "/big" {
			// Longer than the loop gathers: it streams from a worker.
			_, _ = w.Write([]byte(strings.Repeat("b", loopResponseMax+8<<10)))
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	_, port, _ := net.SplitHostPort(o.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	o.port = fmt.Sprintf("%04X", n)
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-o.stop:
				return
			case <-tick.C:
				o.sample()
			}
		}
	}()
	t.Cleanup(func() {
		close(o.stop)
		o.srv.Close()
	})
	return o
}

// sample counts the established connections to the origin's port.
//
// The kernel lists /proc/net/tcp bucket by bucket over several reads, not
// as one snapshot: one listing can show a socket twice, or a socket that
// closed while it was read beside the one that replaced it. So the file is
// listed twice, back to back, and only the sockets (by inode) in both are
// counted: a socket never becomes established again once it leaves that
// state, so each of them was established throughout the moment between the
// two listings, all of them together.
func (o *boundOrigin) sample() {
	first := o.established()
	if len(first) == 0 {
		return
	}
	var lines []string
	for inode, line := range o.established() {
		if _, ok := first[inode]; ok {
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := int32(len(lines)); n > o.peak.Load() {
		o.peak.Store(n)
		o.seen = lines
	}
}

// established lists the established sockets whose remote port is the
// origin's (the gateway's ends of its connections), by inode.
func (o *boundOrigin) established() map[string]string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return nil
	}
	defer f.Close()
	socks := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// sl local_address rem_address st … uid timeout inode; 01 is
		// ESTABLISHED.
		if len(fields) > 9 && strings.HasSuffix(fields[2], ":"+o.port) && fields[3] == "01" {
			socks[fields[9]] = strings.Join(fields[1:10], " ")
		}
	}
	return socks
}

// peakSockets is the sockets counted at the peak, one per line.
func (o *boundOrigin) peakSockets() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.seen, "\n")
}

// boundHarness is a gateway in front of o with max_conns_per_origin and
// origin_connect_timeout (which bounds the wait for a connection) set.
func boundHarness(t *testing.T, o *boundOrigin, max int, connect, originTimeout string) *harness {
	return newHarness(t, func(p *cfgParams) {
		p.Origin = o.srv.URL
		p.OriginTimeout = originTimeout
		p.Edit = func(c *fileConfig) {
			c.Gateway.MaxConnsPerOrigin = max
			c.Gateway.OriginConnectTimeout = connect
		}
	})
}

// TestMaxConnsPerOriginBoundsEveryPool: with max_conns_per_origin = 2,
// eight devices' requests held by the origin are all served, and the
// origin never has more than two connections from the gateway open at
// once. The bound holds over every pool: the requests that come with a
// handshake go out from a worker's pooled client, those on kept
// connections from the event loops' own pools (both loops), waiting there
// for a connection, and the long answers stream from a worker on a
// connection a loop handed off.
func TestMaxConnsPerOriginBoundsEveryPool(t *testing.T) {
	o := startBoundOrigin(t, 40*time.Millisecond)
	h := boundHarness(t, o, 2, "20s", "20s")
	const devices, rounds = 8, 4
	conns := make([]*rawConn, devices)
	for i := range conns {
		conns[i] = h.dial(t, hApp, h.pki.sensor1)
	}
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		errs := make(chan string, devices)
		for i, c := range conns {
			path := "/held"
			if (i+round)%4 == 3 {
				path = "/big"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.c.Write([]byte(request("GET", hApp, path))); err != nil {
					errs <- fmt.Sprintf("round %d, device %d: write: %v", round, i, err)
					return
				}
				r, err := c.readErr("GET")
				switch {
				case err != nil:
					errs <- fmt.Sprintf("round %d, device %d, %s: %v", round, i, path, err)
				case r.StatusCode != http.StatusOK:
					errs <- fmt.Sprintf("round %d, device %d, %s: %d %s", round, i, path, r.StatusCode, r.body)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
	if got := o.served.Load(); got != devices*rounds {
		t.Errorf("the origin served %d requests; want %d", got, devices*rounds)
	}
	if peak := o.peak.Load(); peak > 2 {
		t.Fatalf("the origin saw %d connections open at once; max_conns_per_origin is 2:\n%s", peak, o.peakSockets())
	}
	if peak := o.peak.Load(); peak < 1 {
		t.Fatalf("the origin's count saw no connection at all")
	}
}

// TestMaxConnsPerOriginWaitEnds: with the origin's one connection busy,
// another request waits at most origin_connect_timeout for it, then is
// answered 503, as the pooled client answers when it has no free
// connection; once the connection is free, the next request is served.
func TestMaxConnsPerOriginWaitEnds(t *testing.T) {
	o := startBoundOrigin(t, 1500*time.Millisecond)
	h := boundHarness(t, o, 1, "300ms", "10s")
	a := h.dial(t, hApp, h.pki.sensor1)
	b := h.dial(t, hApp, h.pki.sensor2)
	a.send(request("GET", hApp, "/held"))
	select {
	case <-o.got:
	case <-time.After(5 * time.Second):
		t.Fatal("the first request never reached the origin")
	}
	start := time.Now()
	b.send(request("GET", hApp, "/quick"))
	r := b.read("GET")
	waited := time.Since(start)
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(r.body, "no free connections") {
		t.Fatalf("a request with the origin's one connection busy: %d %q; want 503, no free connections", r.StatusCode, r.body)
	}
	if waited < 300*time.Millisecond {
		t.Errorf("refused after %v, before origin_connect_timeout (300ms)", waited)
	}
	if r := a.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("the held request: %d %s", r.StatusCode, r.body)
	}
	b.send(request("GET", hApp, "/quick"))
	if r := b.read("GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("once the connection is free: %d %s", r.StatusCode, r.body)
	}
	if peak := o.peak.Load(); peak > 1 {
		t.Fatalf("the origin saw %d connections open at once; max_conns_per_origin is 1:\n%s", peak, o.peakSockets())
	}
}

// loopPoolsOf is the loops' pools the server keeps now.
func loopPoolsOf(h *harness) []*loopPool {
	var pools []*loopPool
	h.srv.loopPools.Range(func(_, v any) bool {
		pools = append(pools, v.(*loopPool))
		return true
	})
	return pools
}

// queuedIn is how many exchanges wait in p for one of their origin's
// connections, asked on p's loop (-1: the loop did not answer).
func queuedIn(p *loopPool) int {
	got := make(chan int, 1)
	err := p.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		got <- len(p.queue)
		return nil
	}))
	if err != nil {
		return -1
	}
	select {
	case n := <-got:
		return n
	case <-time.After(time.Second):
		return -1
	}
}

// TestMaxConnsPerOriginReloadWhileQueued: a reload that gives the
// application a new origin client (here, a new origin_timeout) while
// requests wait in the loops' pools for one of the origin's connections
// retires those pools: the waiting requests go on with the pooled client
// of their own snapshot, which waits for the old connections to finish,
// and every one is served; so are the requests after the reload, with the
// new client.
func TestMaxConnsPerOriginReloadWhileQueued(t *testing.T) {
	o := startBoundOrigin(t, 100*time.Millisecond)
	h := boundHarness(t, o, 2, "20s", "20s")
	const devices = 6
	conns := make([]*rawConn, devices)
	for i := range conns {
		conns[i] = h.dial(t, hApp, h.pki.sensor1)
	}
	round := func(path string, during func()) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan string, devices)
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.c.Write([]byte(request("GET", hApp, path))); err != nil {
					errs <- fmt.Sprintf("device %d: write: %v", i, err)
					return
				}
				r, err := c.readErr("GET")
				switch {
				case err != nil:
					errs <- fmt.Sprintf("device %d, %s: %v", i, path, err)
				case r.StatusCode != http.StatusOK:
					errs <- fmt.Sprintf("device %d, %s: %d %s", i, path, r.StatusCode, r.body)
				}
			}()
		}
		if during != nil {
			during()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
	// A loop's pool takes one of the origin's connections, so that the
	// held requests on that loop wait in its queue. The first request of
	// each connection goes out from a worker (its token is signed there),
	// and the pooled client keeps its connections idle: closed, their
	// slots go to the loops' pools as the requests that follow, one at a
	// time, find them empty.
	round("/quick", nil)
	for try := 0; ; try++ {
		for _, a := range h.srv.snap.Load().apps {
			a.origin.CloseIdleConnections()
		}
		for i, c := range conns {
			c.send(request("GET", hApp, "/quick"))
			if got := c.read("GET"); got.StatusCode != http.StatusOK {
				t.Fatalf("device %d, /quick: %d %s", i, got.StatusCode, got.body)
			}
		}
		if _, open := loopPools(h); open > 0 {
			break
		}
		if try == 9 {
			t.Fatal("after ten rounds the loops' pools still hold none of the origin's connections")
		}
	}
	// Rounds of held requests until one finds requests waiting in a loop's
	// pool, then the reload, while they wait.
	var waited []*loopPool // the pools that had requests waiting at the reload
	for r := 0; r < 8 && waited == nil && !t.Failed(); r++ {
		round("/held", func() {
			deadline := time.Now().Add(80 * time.Millisecond)
			for ; waited == nil && time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
				for _, p := range loopPoolsOf(h) {
					if queuedIn(p) > 0 {
						waited = append(waited, p)
					}
				}
			}
			if waited == nil {
				return
			}
			h.params.OriginTimeout = "19s"
			h.write(h.config())
			if err := h.srv.Reload(); err != nil {
				t.Errorf("Reload: %v", err)
			}
		})
	}
	if waited == nil {
		t.Fatal("no round of held requests found one waiting in a loop's pool")
	}
	for _, p := range waited {
		if !p.retired.Load() {
			t.Fatal("the reload did not retire the pool whose requests waited")
		}
		if n := queuedIn(p); n != 0 {
			t.Errorf("%d requests still wait in a retired pool after every answer", n)
		}
	}
	round("/quick", nil)
	round("/held", nil)
	// The old client's connections finish outside the new bound, so for
	// that moment the origin can see both clients' connections.
	if peak := o.peak.Load(); peak > 4 {
		t.Fatalf("the origin saw %d connections open at once; max_conns_per_origin is 2 for each client:\n%s", peak, o.peakSockets())
	}
}

// TestMaxConnsPerOriginDialFailsWhileQueued: a request that waits on its
// loop for one of the origin's connections (the workers' idle ones give
// way), when the loop's dial for it fails (the origin no longer accepts),
// goes to the pooled client, which answers as for an origin that is down,
// 502, at once; it does not wait out origin_connect_timeout while the loop
// dials again and again.
func TestMaxConnsPerOriginDialFailsWhileQueued(t *testing.T) {
	o := startBoundOrigin(t, 50*time.Millisecond)
	h := boundHarness(t, o, 2, "3s", "10s")
	c := h.dial(t, hApp, h.pki.sensor1)
	// The workers' pooled client takes both of the origin's connections
	// (two requests at once), then keeps them idle: every slot is taken,
	// and the loops have none.
	var origin *originClient
	for _, a := range h.srv.snap.Load().apps {
		if a.name == "app" {
			origin = a.origin
		}
	}
	if origin == nil {
		t.Fatal("no application named app in the harness's configuration")
	}
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(o.srv.URL + "/held")
			// The answer streams (stream.go): read whole, its connection
			// goes back to the pool rather than closed.
			if err := origin.Do(req, resp); err != nil || resp.StatusCode() != http.StatusOK || string(resp.Body()) != "ok" {
				t.Errorf("the pooled client's request: %d, %v", resp.StatusCode(), err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if origin.slots.waiting() || !origin.slots.full() {
		t.Fatal("the origin's two slots are not both taken by the pooled client")
	}
	// The origin stops accepting; the connections it has stay open.
	_ = o.srv.Listener.Close()
	start := time.Now()
	c.send(request("GET", hApp, "/quick"))
	r := c.read("GET")
	if took := time.Since(start); took >= 2*time.Second {
		t.Errorf("the request took %v to be answered; the dial failed at once", took)
	}
	if r.StatusCode != http.StatusBadGateway {
		t.Errorf("with the origin refusing connections: %d %s; want 502", r.StatusCode, r.body)
	}
}

// loopOf is the event loop that serves the device connection rc.
func loopOf(h *harness, rc *rawConn) gnet.EventLoop {
	var loop gnet.EventLoop
	addr := rc.c.LocalAddr().String()
	h.srv.live.Range(func(k, _ any) bool {
		if c, ok := k.(*conn); ok && c.gc.RemoteAddr().String() == addr {
			loop = c.gc.EventLoop()
			return false
		}
		return true
	})
	return loop
}

// TestMaxConnsPerOriginIdleOnOtherLoop: max_conns_per_origin 2, one loop's
// pool holds an idle connection, the other loop's pool holds one busy with
// a slow request. A second request on that other loop should get the idle
// connection's place (as a worker's dial would, by reclaim), not wait out
// origin_connect_timeout and be refused 503 while the origin has an idle
// connection from the gateway.
func TestMaxConnsPerOriginIdleOnOtherLoop(t *testing.T) {
	o := startBoundOrigin(t, 1500*time.Millisecond)
	h := boundHarness(t, o, 2, "300ms", "10s")
	var a, b1, b2 *rawConn
	var la, lb gnet.EventLoop
	for i := 0; i < 60 && (a == nil || b2 == nil); i++ {
		c := h.dial(t, hApp, h.pki.sensor1)
		c.send(request("GET", hApp, "/quick"))
		if r := c.read("GET"); r.StatusCode != http.StatusOK {
			t.Fatalf("warm-up: %d %s", r.StatusCode, r.body)
		}
		l := loopOf(h, c)
		switch {
		case l == nil:
		case a == nil:
			a, la = c, l
		case l == la:
		case b1 == nil:
			b1, lb = c, l
		case b2 == nil:
			b2 = c
		}
	}
	if b2 == nil {
		t.Fatal("could not place connections on two loops")
	}
	poolOn := func(l gnet.EventLoop) *loopPool {
		for _, p := range loopPoolsOf(h) {
			if p.loop == l {
				return p
			}
		}
		return nil
	}
	for try := 0; ; try++ {
		for _, app := range h.srv.snap.Load().apps {
			app.origin.CloseIdleConnections()
		}
		for _, c := range []*rawConn{a, b1, b2} {
			c.send(request("GET", hApp, "/quick"))
			if r := c.read("GET"); r.StatusCode != http.StatusOK {
				t.Fatalf("settling: %d %s", r.StatusCode, r.body)
			}
		}
		pa, pb := poolOn(la), poolOn(lb)
		if pa != nil && pb != nil && pa.open.Load() == 1 && pb.open.Load() == 1 {
			break
		}
		if try == 30 {
			t.Fatal("the two loops' pools never held one connection each")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for len(o.got) > 0 {
		<-o.got
	}
	b1.send(request("GET", hApp, "/held"))
	select {
	case <-o.got:
	case <-time.After(5 * time.Second):
		t.Fatal("the held request never reached the origin")
	}
	b2.send(request("GET", hApp, "/quick"))
	r := b2.read("GET")
	if r.StatusCode != http.StatusOK {
		t.Errorf("with the other loop's connection idle: %d %q; want 200", r.StatusCode, r.body)
	}
	_ = b1.read("GET")
}
