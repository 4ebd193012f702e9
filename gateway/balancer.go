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
//
// Such a connection is admitted as a device's own is, in the same order,
// once its header has named the device: max_connections_per_ip for that
// device, then the handshake queue and rate. It waits for its first TLS byte
// first, so that a balancer's health check (a header naming no client, then
// a close) starts no handshake and counts as nothing.

// fromBalancer reports whether addr, a connection's peer, is one of the
// load balancers of proxy_protocol_from.
func (s *snapshot) fromBalancer(addr netip.Addr) bool {
	addr = addr.WithZone("") // a link-local peer's zone is not part of the ranges
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
// until the header is whole and a TLS byte follows, takes the device's
// address from it, admits the device (Server.admit) and feeds TLS what
// followed the header. A connection whose first bytes are not a valid header
// is closed, counted as refused with the reason "proxy_header". A header
// that names no client (a LOCAL command, as in the balancer's health
// checks, or "PROXY UNKNOWN") keeps the balancer's address.
func (c *conn) balancerHeader(gc gnet.Conn) gnet.Action {
	s := c.srv
	if !c.headerRead {
		buf, _ := gc.Peek(-1)
		h, n, err := proxyv2.Parse(buf)
		if err != nil {
			reason := "invalid PROXY header"
			if errors.Is(err, proxyv2.ErrNoHeader) {
				reason = "no PROXY header"
			}
			s.metrics.connRefused("proxy_header")
			s.shedLog.shed(s.log, reason, c.remoteIP, time.Now())
			s.log.Debug("closing connection", "balancer", c.remoteIP, "reason", err.Error())
			return gnet.Close
		}
		if n == 0 {
			return gnet.None
		}
		_, _ = gc.Discard(n)
		c.headerRead = true
		if !h.Local {
			c.proxied = &proxiedAddrs{src: h.Source, dst: h.Destination}
			c.remoteAddr = h.Source.Addr()
			c.remoteIP = c.remoteAddr.String()
		}
	}
	if gc.InboundBuffered() == 0 {
		return gnet.None
	}
	c.headerTimer.Stop()
	if s.draining.Load() {
		s.metrics.connRefused("draining")
		return gnet.Close
	}
	tc, counted := s.admit(gc, c.snap, c.remoteAddr)
	if tc == nil {
		return gnet.Close
	}
	tc.SetRemoteAddr(c.remoteAddr)
	c.tc, c.countedIP, c.awaitHeader = tc, counted, false
	s.started(c)
	data, _ := gc.Next(-1)
	return c.traffic(data)
}
