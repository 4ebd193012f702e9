package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/internal/procstat"
)

// IdleOptions configure MeasureIdle.
type IdleOptions struct {
	// Run gives the target, TLS settings and devices (its Mode, Duration
	// and Requests are ignored; Concurrency is the number of openers and
	// Timeout bounds each connection's set-up).
	Run Options
	// N is the number of idle connections to open.
	N int
	// PID is the server process whose RSS is measured.
	PID int
	// PerSource is the number of connections per source address; they are
	// spread over 127.0.0.2, 127.0.0.3 … so that ports never run out.
	// Default 1000.
	PerSource int
	// NoRequest leaves each connection idle right after the handshake;
	// by default one request is made first (a device that reported and
	// keeps its connection), which needs a keep-alive application.
	NoRequest bool
	// Echo > 0 is for relays (ModeTCPHold): instead of a request, each
	// connection echoes one message of Echo bytes through the relay, so
	// that its origin side is connected too, then idles.
	Echo int
	// Settle is the pause between the last connection and the RSS reading;
	// default 2s.
	Settle time.Duration
	// Label names the server in the result.
	Label string
}

// IdleResult is the memory cost of idle mTLS connections on a server.
type IdleResult struct {
	Label  string `json:"label,omitempty"`
	Target string `json:"target"`
	N      int    `json:"n"`
	// Echo is IdleOptions.Echo: the message each relayed connection echoed
	// before it idled (0: an HTTP request, or none).
	Echo int `json:"echo_bytes,omitempty"`
	// Open is the number of connections still open when RSS was read.
	Open   int              `json:"open"`
	Errors map[string]int64 `json:"errors"`
	// RSSBefore and RSSAfter are the server's resident set in bytes before
	// the first connection and after the last one (plus Settle).
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	// BytesPerConn is (RSSAfter - RSSBefore) / Open.
	BytesPerConn float64 `json:"bytes_per_conn"`
	OpenSeconds  float64 `json:"open_seconds"`
}

// MeasureIdle opens N mTLS connections to the target (each presenting the
// next device certificate, each after one request unless NoRequest), holds
// them idle, and reports the growth of the server's RSS per connection. The
// connections are closed before it returns. The server must allow N
// connections (file descriptors) and keep idle ones for longer than the
// opening takes; this process raises its own descriptor limit as far as it
// may.
func MeasureIdle(ctx context.Context, o IdleOptions) (*IdleResult, error) {
	if o.N < 1 {
		return nil, fmt.Errorf("bench: idle: %d connections: want at least 1", o.N)
	}
	if o.PerSource <= 0 {
		o.PerSource = 1000
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	if o.Echo < 0 || o.Echo > MaxMessageSize {
		return nil, fmt.Errorf("bench: idle: echo of %d bytes: want 0 … %d", o.Echo, MaxMessageSize)
	}
	run := o.Run.withMode(ModeKeepalive)
	run.SourceIPs = (o.N + o.PerSource - 1) / o.PerSource
	run, err := run.withDefaults()
	if err != nil {
		return nil, err
	}
	raiseFileLimit(uint64(o.N) + 256)
	r := &runner{o: run, tlsConf: clientConfig(run)}
	req := requestBytes(run, "")
	if o.Echo > 0 {
		req = make([]byte, o.Echo)
		for i := range req {
			req[i] = byte('a' + i%26)
		}
	}

	before, err := procstat.RSS(o.PID)
	if err != nil {
		return nil, err
	}
	res := &IdleResult{Label: o.Label, Target: run.Target, N: o.N, Echo: o.Echo, Errors: map[string]int64{}, RSSBefore: before}
	conns := make([]*tls.Conn, o.N)
	kinds := make([]errKind, o.N)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range run.Concurrency {
		wg.Go(func() {
			for i := range next {
				conns[i], kinds[i] = r.openIdle(ctx, i, req, !o.NoRequest, o.Echo > 0)
			}
		})
	}
feed:
	for i := range o.N {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	res.OpenSeconds = time.Since(start).Seconds()
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.NetConn().Close()
			}
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: idle: %w", err)
	}
	select {
	case <-time.After(o.Settle):
	case <-ctx.Done():
		return nil, fmt.Errorf("bench: idle: %w", ctx.Err())
	}
	if res.RSSAfter, err = procstat.RSS(o.PID); err != nil {
		return nil, err
	}
	// A connection the server has closed meanwhile does not count.
	for i, c := range conns {
		if c == nil {
			res.Errors[kinds[i]]++
			continue
		}
		if stillOpen(c) {
			res.Open++
		} else {
			res.Errors["closed_while_idle"]++
		}
	}
	if res.Open > 0 {
		res.BytesPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(res.Open)
	}
	return res, nil
}

// openIdle opens connection i: TCP from its spread source address, the
// handshake with the next device, and optionally one request (or, with
// echo, one message echoed through a relay).
func (r *runner) openIdle(ctx context.Context, i int, req []byte, request, echo bool) (*tls.Conn, errKind) {
	o := &r.o
	raw, err := r.dial(ctx, i%o.Concurrency, i/o.Concurrency)
	if err != nil {
		return nil, classify("dial", err, false)
	}
	_ = raw.SetDeadline(time.Now().Add(o.Timeout))
	c := tls.Client(raw, r.tlsConf)
	if err := c.HandshakeContext(context.WithValue(ctx, deviceKey{}, &o.Devices[i%len(o.Devices)])); err != nil {
		_ = raw.Close()
		return nil, classify("handshake", err, false)
	}
	if request && echo {
		if kind := echoOnce(c, req); kind != "" {
			_ = raw.Close()
			return nil, kind
		}
	} else if request {
		if _, err := c.Write(req); err != nil {
			_ = raw.Close()
			return nil, classify("write", err, false)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			_ = raw.Close()
			return nil, classify("read", err, false)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			_ = raw.Close()
			return nil, "server_closed"
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			_ = raw.Close()
			return nil, fmt.Sprintf("status_%d", resp.StatusCode)
		}
	}
	_ = raw.SetDeadline(time.Time{})
	return c, ""
}

// echoOnce sends msg on c and reads it back.
func echoOnce(c *tls.Conn, msg []byte) errKind {
	if _, err := c.Write(msg); err != nil {
		if alert := pendingAlert(c); alert != "" {
			return alert
		}
		return classify("write", err, false)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		return classify("read", err, false)
	}
	if !bytes.Equal(back, msg) {
		return "mismatch"
	}
	return ""
}

// stillOpen reports whether the server has not closed c: a read that would
// block means open; EOF or an error means closed. It consumes nothing on an
// open, idle connection.
func stillOpen(c *tls.Conn) bool {
	raw := c.NetConn()
	_ = raw.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := raw.Read(one[:])
	_ = raw.SetReadDeadline(time.Time{})
	if err == nil {
		return true // data (say, a ticket): still open
	}
	ne, ok := err.(interface{ Timeout() bool })
	return ok && ne.Timeout()
}

// raiseFileLimit raises this process's soft descriptor limit to at least
// n, as far as the hard limit allows.
func raiseFileLimit(n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= n {
		return
	}
	lim.Cur = min(n, lim.Max)
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// WriteText writes r for a person.
func (r *IdleResult) WriteText(w io.Writer) error {
	what := "idle mTLS connections"
	if r.Echo > 0 {
		what = "idle relayed mTLS connections"
	}
	_, err := fmt.Fprintf(w, "%s%s to %s: %d of %d open after %.1fs; RSS %.1f MiB → %.1f MiB: %.0f bytes per connection; errors %v\n",
		what, labelSuffix(r.Label), r.Target, r.Open, r.N, r.OpenSeconds, float64(r.RSSBefore)/(1<<20), float64(r.RSSAfter)/(1<<20), r.BytesPerConn, r.Errors)
	return err
}

// WriteJSON writes r as one line of JSON.
func (r *IdleResult) WriteJSON(w io.Writer) error { return writeJSONLine(w, r) }

// WriteJSON writes f as one line of JSON.
func (f *Floor) WriteJSON(w io.Writer) error { return writeJSONLine(w, f) }

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func labelSuffix(label string) string {
	if label == "" {
		return ""
	}
	return " [" + label + "]"
}
