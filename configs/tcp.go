package configs

import (
	"net/url"
	"strings"
	"time"
)

// The keys that depend on an application's protocol: protocol itself, the
// origin's scheme, and the keys of tcp applications (proxy_protocol,
// idle_timeout, max_connection_age, relay_buffer) that an http application
// must not set.

// Bounds and defaults of a tcp application's keys.
const (
	defaultTCPIdleTimeout = 10 * time.Minute
	defaultRelayBuffer    = 256 << 10
	// minRelayBuffer holds one TLS record of plaintext (16KiB): a smaller
	// buffer could not take a whole decrypted record and the relay would stall.
	minRelayBuffer = 16 << 10
	// maxRelayBuffer bounds what one direction of one connection may hold:
	// beyond it a few thousand slow origins would exhaust memory.
	maxRelayBuffer = 64 << 20
)

// protocol checks protocol = "…" and returns it, or "" when it is not one the
// gateway serves (the protocol-specific checks are then skipped).
func (l *loader) protocol(path, s string) Protocol {
	switch p := Protocol(s); p {
	case ProtocolHTTP, ProtocolTCP, ProtocolMQTT:
		return p
	default:
		l.errorf(path, "%q is not \"http\", \"tcp\" or \"mqtt\"", s)
	}
	return ""
}

// origin checks an application's origin against its protocol: http(s):// for
// http, tcp://host:port for tcp. It returns nil on error or when the
// protocol is unknown.
func (l *loader) origin(path, s string, proto Protocol) *url.URL {
	if s == "" {
		if proto.Relayed() {
			l.errorf(path, "required: the upstream address, such as \"tcp://127.0.0.1:7000\"")
		} else {
			l.errorf(path, "required: the upstream URL, such as \"http://127.0.0.1:9000\"")
		}
		return nil
	}
	scheme, _, _ := strings.Cut(strings.ToLower(s), "://")
	switch {
	case proto == ProtocolHTTP && (scheme == "tcp" || scheme == "tls"):
		l.errorf(path, "%q is a raw TCP origin: set protocol = \"tcp\" on this application, or use an http:// or https:// origin", s)
	case proto == ProtocolHTTP:
		u, err := checkURL(s, true)
		if err == nil {
			return u
		}
		l.errorf(path, "%v", err)
	case proto.Relayed():
		u, err := checkTCPOrigin(s)
		if err == nil {
			return u
		}
		l.errorf(path, "%v", err)
	}
	return nil
}

// transport checks and applies the keys whose meaning depends on the
// protocol: origin_connect_timeout (both), forward_client_cert on a tcp
// application, and the tcp-only keys, with their defaults.
func (l *loader) transport(path string, fa *fileApplication, app *Application, g *Gateway) {
	key := func(k string) string { return joinKey(path, k) }
	app.OriginConnectTimeout = g.OriginConnectTimeout
	if fa.OriginConnectTimeout != nil {
		if app.OriginConnectTimeout = time.Duration(*fa.OriginConnectTimeout); app.OriginConnectTimeout <= 0 {
			l.errorf(key("origin_connect_timeout"), "must be longer than 0s")
		}
	}
	switch app.Protocol {
	case ProtocolHTTP:
		for _, k := range []struct {
			key, why string
			set      bool
		}{
			{"proxy_protocol", "an HTTP origin gets the device's identity in headers and the token", fa.ProxyProtocol != nil},
			{"idle_timeout", "HTTP connections use [gateway] idle_timeout", fa.IdleTimeout != nil},
			{"max_connection_age", "HTTP connections use [gateway] max_connection_age", fa.MaxConnectionAge != nil},
			{"relay_buffer", "HTTP bodies are bounded by [gateway] max_body_bytes and max_response_bytes", fa.RelayBuffer != nil},
		} {
			if k.set {
				l.errorf(key(k.key), "only for protocol = \"tcp\" or \"mqtt\": %s; remove it", k.why)
			}
		}
	case ProtocolTCP, ProtocolMQTT:
		if fa.ProxyProtocol != nil {
			switch v := *fa.ProxyProtocol; v {
			case ProxyProtocolNone, ProxyProtocolV1, ProxyProtocolV2:
				app.ProxyProtocol = v
			default:
				l.errorf(key("proxy_protocol"), "%q is not \"\" (no header), \"v1\" or \"v2\"", v)
			}
		}
		if fa.ForwardClientCert && app.ProxyProtocol != ProxyProtocolV2 && !l.bad(key("proxy_protocol")) {
			l.errorf(key("forward_client_cert"), "needs proxy_protocol = \"v2\": only a v2 header carries the client certificate")
		}
		app.IdleTimeout = defaultTCPIdleTimeout
		if fa.IdleTimeout != nil {
			if app.IdleTimeout = time.Duration(*fa.IdleTimeout); app.IdleTimeout <= 0 {
				l.errorf(key("idle_timeout"), "must be longer than 0s: an idle relayed connection must end some time")
			}
		}
		if fa.MaxConnectionAge != nil {
			app.MaxConnectionAge = time.Duration(*fa.MaxConnectionAge)
		}
		app.RelayBuffer = defaultRelayBuffer
		if fa.RelayBuffer != nil {
			switch app.RelayBuffer = int64(*fa.RelayBuffer); {
			case app.RelayBuffer < minRelayBuffer:
				l.errorf(key("relay_buffer"), "must be at least 16KiB (one TLS record of plaintext), not %d bytes", app.RelayBuffer)
			case app.RelayBuffer > maxRelayBuffer:
				l.errorf(key("relay_buffer"), "must be at most 64MiB per direction of each connection, not %d bytes", app.RelayBuffer)
			}
		}
	}
}
