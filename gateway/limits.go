package gateway

import (
	"net/netip"
	"sync"
)

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
