package gateway

import (
	"context"
	"log/slog"
	"time"
	"unicode/utf8"
)

// accessLog writes the request's one access-log line: who, where, what was
// decided and why, and how long each part took. Never a token or a key.
// bytesOut is the response body's size as sent (a streamed body is never
// held whole).
func (s *Server) accessLog(x *exchange, total time.Duration, bytesOut int64) {
	if !s.accessLg.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	v := x.c.tc.Verdict()
	app, decision, policyName := "", "", ""
	if x.app != nil {
		app = x.app.name
	}
	if x.decision.Policy != "" || x.decision.Allowed {
		decision = x.decision.Action.String()
		policyName = x.decision.Policy
	} else if x.status >= 400 {
		decision = "deny"
	}
	bytesIn := len(x.req.Header.RawHeaders()) + len(x.req.Body())
	attrs := []slog.Attr{
		slog.String("client_ip", x.c.remoteIP),
		slog.String("sni", x.c.tc.ServerName()),
		slog.String("host", x.host),
		slog.String("app", app),
		slog.String("method", string(x.req.Header.Method())),
		slog.String("path", string(x.req.URI().PathOriginal())),
		slog.Int("status", x.status),
		slog.String("decision", decision),
		slog.String("policy", policyName),
		slog.String("rule", x.decision.Rule),
		slog.String("reason", x.reason),
		slog.String("cert_verdict", v.Kind.String()),
		slog.String("cert_cn", logClip(v.Identity.CommonName)),
		slog.String("cert_sha256", v.Identity.SHA256),
		slog.Int("bytes_in", bytesIn),
		slog.Int64("bytes_out", bytesOut),
		slog.Float64("handshake_ms", ms(x.c.tc.HandshakeDuration())),
		slog.Float64("origin_ms", ms(x.originDur)),
		slog.Float64("total_ms", ms(total)),
	}
	if id, ok := x.input.LoggedIn(); ok {
		attrs = append(attrs, slog.String("email", id.Email), slog.String("idp", id.IdP))
	}
	if x.requestID != "" {
		attrs = append(attrs, slog.String("request_id", x.requestID))
	}
	if st := x.input.ServiceToken; st != nil {
		attrs = append(attrs, slog.String("service_token", st.Name)) // the name only, never the id or secret
	}
	if x.originKind != "" {
		attrs = append(attrs, slog.String("origin_error", x.originKind))
	}
	s.accessLg.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// maxLogValue bounds what a log line carries of a value a device chooses
// without a limit of its own worth logging whole: a certificate's common
// name (64 characters by RFC 5280, any length as presented) and an MQTT
// client id (up to max_connect_bytes). A line per refused connection must
// not let a peer write kilobytes to the log for each of its handshakes.
const maxLogValue = 256

// logClip returns s cut to maxLogValue bytes (at a character boundary),
// marked with "…" when cut.
func logClip(s string) string {
	if len(s) <= maxLogValue {
		return s
	}
	n := maxLogValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
