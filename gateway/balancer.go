package gateway

import (
	"errors"
	"net/netip"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleetgate/fleetgate/internal/proxyv2"
)

// A load balancer in front of the gateway ([gateway].proxy_protocol_from)
// passes each device's connection on from its own address. It says whose
// connection it is in a PROXY protocol header ahead of the device's first
// TLS byte, and the gateway reads that header before anything else: from
// then on the device's address is the header's, for the per-address cap,
// ip selectors and lists, logs, X-Forwarded-For and the PROXY header a tcp
// origin receives. Only the listed addresses are believed: any other
// client's connection is read as TLS from its first byte, so a device that
// sends a header of its own fails its handshake.

// fromBalancer reports whether addr, a connection's peer, is one of the
// load balancers of proxy_protocol_from.
func (s *snapshot) fromBalancer(addr netip.Addr) bool {
	for _, p := range s.cfg.Gateway.ProxyProtocolFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// proxiedAddrs are a balanced connection's two ends as its PROXY header
// gave them: the device's address and the one it connected to.
type proxiedAddrs struct {
	src, dst netip.AddrPort
}

// balancerHeader reads the PROXY header that starts a connection from a
// load balancer, on the event loop, before any byte goes to TLS. It waits
// (within the handshake timeout, which runs from the accept) until the
// header is whole, takes the device's address from it and admits the
// device under max_connections_per_ip, then feeds what followed the
// header to TLS. A connection whose first bytes are not a valid header is
// closed, counted as refused with the reason "proxy_header". A header that
// names no client (a LOCAL command, as in the balancer's health checks, or
// "PROXY UNKNOWN") keeps the balancer's address.
func (c *conn) balancerHeader(gc gnet.Conn) gnet.Action {
	buf, _ := gc.Peek(-1)
	h, n, err := proxyv2.Parse(buf)
	if err != nil {
		reason := "invalid PROXY header"
		if errors.Is(err, proxyv2.ErrNoHeader) {
			reason = "no PROXY header"
		}
		c.srv.metrics.connRefused("proxy_header")
		c.srv.shedLog.shed(c.srv.log, reason, c.remoteIP, time.Now())
		return gnet.Close
	}
	if n == 0 {
		return gnet.None
	}
	_, _ = gc.Discard(n)
	c.awaitHeader = false
	if !h.Local {
		c.proxied = &proxiedAddrs{src: h.Source, dst: h.Destination}
		c.remoteAddr = h.Source.Addr()
		c.remoteIP = c.remoteAddr.String()
		c.tc.SetRemoteAddr(c.remoteAddr)
	}
	counted, ok := c.srv.admitAddr(c.snap, c.remoteAddr)
	if !ok {
		return gnet.Close
	}
	c.countedIP = counted
	c.srv.metrics.connAccepted()
	data, _ := gc.Next(-1)
	if len(data) == 0 {
		return gnet.None
	}
	return c.traffic(data)
}
