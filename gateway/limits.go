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
	n    int
	last time.Time
}

// shed counts one refused connection and logs when a second has passed
// since the reason's last line.
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
	if now.Sub(c.last) < time.Second {
		l.mu.Unlock()
		return
	}
	n := c.n
	c.n, c.last = 0, now
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
