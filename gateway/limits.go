package gateway

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// shedLog writes the log line of connections refused at once as they are
// accepted (the handshake queue full, or over max_handshake_rate): at most
// one line a second per reason, with how many were refused since the last,
// so that a storm shows in the log without a line per device. Nothing is
// known of such a connection but its address: no byte of it was read.
type shedLog struct {
	mu   sync.Mutex
	byOf map[string]*shedCount
}

type shedCount struct {
	n      int       // refused since the last line
	client string    // the address of the last of them
	last   time.Time // when the last line was written
	gen    int       // counts lines, so that a late flush knows it is stale
	flush  *time.Timer
}

// shed counts one refused connection. The first of a reason is logged at
// once; those that follow within a second wait, and are logged together a
// second after the last line (by a timer, or by the next refusal if it
// comes first): the count of a storm's last second is not held back until
// the next storm.
func (l *shedLog) shed(log *slog.Logger, reason, client string, now time.Time) {
	l.mu.Lock()
	if l.byOf == nil {
		l.byOf = map[string]*shedCount{}
	}
	c := l.byOf[reason]
	if c == nil {
		c = &shedCount{}
		l.byOf[reason] = c
	}
	c.n++
	c.client = client
	if wait := c.last.Add(time.Second).Sub(now); wait > 0 {
		if c.flush == nil {
			gen := c.gen
			c.flush = time.AfterFunc(wait, func() { l.flushPending(log, reason, gen) })
		}
		l.mu.Unlock()
		return
	}
	l.logLocked(log, reason, c, now)
}

// flushPending logs what waited since line gen of reason, unless another
// line has been written since.
func (l *shedLog) flushPending(log *slog.Logger, reason string, gen int) {
	l.mu.Lock()
	c := l.byOf[reason]
	if c.gen != gen || c.n == 0 {
		l.mu.Unlock()
		return
	}
	l.logLocked(log, reason, c, c.last.Add(time.Second))
}

// logLocked writes reason's line with what waited, as of now; it is called
// with l.mu held and releases it.
func (l *shedLog) logLocked(log *slog.Logger, reason string, c *shedCount, now time.Time) {
	if c.flush != nil {
		c.flush.Stop()
		c.flush = nil
	}
	n, client := c.n, c.client
	c.n, c.last = 0, now
	c.gen++
	l.mu.Unlock()
	log.Warn("connections refused at accept", "reason", reason, "count", n, "last_client", client)
}

// ipCounter counts the open connections of each client address, for
// [gateway].max_connections_per_ip. It holds an entry only while its address
// has a connection open, so its size is bounded by max_connections.
type ipCounter struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// enter counts one more connection from addr, or reports false (and counts
// nothing) when addr already has limit open.
func (c *ipCounter) enter(addr netip.Addr, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[netip.Addr]int)
	}
	if c.n[addr] >= limit {
		return false
	}
	c.n[addr]++
	return true
}

// leave counts one connection from addr as closed.
func (c *ipCounter) leave(addr netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[addr] <= 1 {
		delete(c.n, addr)
		return
	}
	c.n[addr]--
}
