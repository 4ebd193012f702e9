package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Mode is how the simulated devices use their connections.
type Mode string

// The modes of a run.
const (
	// ModeFresh makes a new TCP connection and a full mTLS handshake for
	// every request, and closes it after the response (fleetgate's "no
	// duration" case: the fleet's hot path).
	ModeFresh Mode = "fresh"
	// ModeKeepalive sends many requests over each mTLS connection; a
	// connection the server closes is replaced by a new one.
	ModeKeepalive Mode = "keepalive"
	// ModeCookie first gets a session cookie with each device's certificate,
	// then sends requests carrying only the cookie over keep-alive TLS
	// connections that present no certificate.
	ModeCookie Mode = "cookie"
	// ModeTCP is for tcp applications and raw TLS relays: each connection
	// makes a full mTLS handshake, then echoes Messages messages of
	// MessageSize bytes through the relay to a TCP echo origin, one at a
	// time, and closes with close_notify.
	ModeTCP Mode = "tcp"
	// ModeTCPHold opens connections through a relay, echoes one message on
	// each (so that the origin side is connected too) and holds them idle:
	// the memory of an idle relayed connection (MeasureIdle with Echo).
	ModeTCPHold Mode = "tcp-hold"
)

// Defaults of Options.
const (
	DefaultConcurrency = 8
	DefaultDuration    = 10 * time.Second
	DefaultTimeout     = 5 * time.Second
	// MaxRunTime bounds a run given only a request count.
	MaxRunTime = 5 * time.Minute
	// DefaultCookieName is the session cookie of ModeCookie.
	DefaultCookieName = "CF_Authorization"
	// DefaultMessages is ModeTCP's messages per connection.
	DefaultMessages = 100
	// DefaultMessageSize is ModeTCP's message size in bytes.
	DefaultMessageSize = 64
	// MaxMessageSize bounds Options.MessageSize.
	MaxMessageSize = 16 << 20
)

// Options describe one run of the simulator. Zero fields take the defaults
// documented on each.
type Options struct {
	// Target is the server's host:port. Required.
	Target string
	// SNI is the TLS server name; empty: the host of Target.
	SNI string
	// Host is the HTTP Host header; empty: SNI.
	Host string
	// Devices are the fleet's certificates (leaf, then chain); connection k
	// of a worker presents the next one in turn. Required.
	Devices []tls.Certificate
	// RootCAs verify the server's certificate; nil with Insecure set skips
	// the check (the client's CPU only; the server's work is the same).
	RootCAs *x509.CertPool
	// Insecure skips the verification of the server's certificate.
	Insecure bool
	// Mode is fresh (default), keepalive or cookie.
	Mode Mode
	// TLSVersion is tls.VersionTLS13 (default) or tls.VersionTLS12.
	TLSVersion uint16
	// Group is the only key-exchange group offered: X25519 (default),
	// P-256, or X25519MLKEM768 (TLS 1.3 only).
	Group tls.CurveID
	// Concurrency is the number of workers, each with at most one request
	// in flight; default DefaultConcurrency.
	Concurrency int
	// Duration bounds the measured phase; Requests bounds its request count
	// (successes and failures). The first bound reached ends the run. Both
	// zero: DefaultDuration. Requests alone: at most MaxRunTime. In ModeTCP
	// a request is one echoed message.
	Duration time.Duration
	Requests int64
	// Warmup runs before the measured phase; its requests are not counted.
	Warmup time.Duration
	// Timeout bounds each request, dial and handshake included; default
	// DefaultTimeout.
	Timeout time.Duration
	// Path is the request path; default "/".
	Path string
	// BodySize > 0 sends POST requests with a body of that many bytes;
	// otherwise GET.
	BodySize int
	// PIDs are server processes whose CPU time (children included) is
	// measured over the run.
	PIDs []int
	// ClientCorePIDs are other processes that share the load client's CPU
	// (the origin, in the comparison harness): their CPU time over the run
	// is added to the client's own in Result.ClientCoreCPUS, so that the
	// report can tell when that core, not the server, was the limit.
	ClientCorePIDs []int
	// CookieName is the session cookie ModeCookie looks for; default
	// DefaultCookieName.
	CookieName string
	// SourceIPs > 0 spreads the client's connections over that many source
	// addresses 127.0.0.2, 127.0.0.3 … (a loopback target only), so that a
	// long fresh run does not run out of ephemeral ports.
	SourceIPs int
	// Messages is the number of messages each ModeTCP connection echoes
	// before it closes (default DefaultMessages); 1 makes a run about the
	// cost of a connect.
	Messages int
	// MessageSize is the size of a ModeTCP message in bytes, 1 to
	// MaxMessageSize (default DefaultMessageSize).
	MessageSize int
	// Label names the run in its Result (for scripts).
	Label string
	// Progress, when set, receives a live progress line about 4 times a
	// second (use it only on a terminal).
	Progress io.Writer
}

// ParseMode parses fresh, keepalive, cookie, tcp, tcp-hold or mqtt.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(s)); m {
	case ModeFresh, ModeKeepalive, ModeCookie, ModeTCP, ModeTCPHold, ModeMQTT:
		return m, nil
	}
	return "", fmt.Errorf("bench: mode %q: want fresh, keepalive, cookie, tcp, tcp-hold or mqtt", s)
}

// ParseTLSVersion parses "1.2" or "1.3".
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.3", "13", "tls1.3":
		return tls.VersionTLS13, nil
	case "1.2", "12", "tls1.2":
		return tls.VersionTLS12, nil
	}
	return 0, fmt.Errorf("bench: TLS version %q: want 1.2 or 1.3", s)
}

// ParseGroup parses a key-exchange group: x25519, p256 or mlkem
// (X25519MLKEM768).
func ParseGroup(s string) (tls.CurveID, error) {
	switch strings.ToLower(s) {
	case "x25519":
		return tls.X25519, nil
	case "p256", "p-256", "secp256r1":
		return tls.CurveP256, nil
	case "mlkem", "x25519mlkem768":
		return tls.X25519MLKEM768, nil
	}
	return 0, fmt.Errorf("bench: key-exchange group %q: want x25519, p256 or mlkem", s)
}

// ParsePIDs parses a comma-separated list of process IDs ("" is none).
func ParsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bench: -pid: %q is not a process ID", f)
		}
		out = append(out, pid)
	}
	return out, nil
}

// LoadRoots reads a PEM file of CA certificates into a pool.
func LoadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("bench: CA file %s: no PEM certificate", path)
	}
	return pool, nil
}

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Target == "" {
		return o, errors.New("bench: no target (-target host:port)")
	}
	host, _, err := net.SplitHostPort(o.Target)
	if err != nil {
		return o, fmt.Errorf("bench: target %q: %w", o.Target, err)
	}
	if o.SNI == "" {
		o.SNI = host
	}
	if o.Host == "" {
		o.Host = o.SNI
	}
	if len(o.Devices) == 0 {
		return o, errors.New("bench: no device certificates")
	}
	if o.RootCAs == nil && !o.Insecure {
		return o, errors.New("bench: no CA for the server's certificate (-cacert FILE, or -insecure)")
	}
	if o.Mode == "" {
		o.Mode = ModeFresh
	}
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return o, err
	}
	if o.Mode == ModeTCPHold {
		return o, errors.New("bench: mode tcp-hold holds idle connections: measure it with MeasureIdle (-idle N)")
	}
	if o.Mode == ModeMQTT {
		return o, errors.New("bench: mode mqtt runs with RunMQTT")
	}
	if o.Messages < 0 || o.MessageSize < 0 || o.MessageSize > MaxMessageSize {
		return o, fmt.Errorf("bench: %d messages of %d bytes: want a count ≥ 0 and a size of 1 … %d bytes (0: the defaults)",
			o.Messages, o.MessageSize, MaxMessageSize)
	}
	if o.Messages == 0 {
		o.Messages = DefaultMessages
	}
	if o.MessageSize == 0 {
		o.MessageSize = DefaultMessageSize
	}
	if o.TLSVersion == 0 {
		o.TLSVersion = tls.VersionTLS13
	}
	if o.TLSVersion != tls.VersionTLS12 && o.TLSVersion != tls.VersionTLS13 {
		return o, fmt.Errorf("bench: TLS version %#04x: want TLS 1.2 or 1.3", o.TLSVersion)
	}
	if o.Group == 0 {
		o.Group = tls.X25519
	}
	if o.Group == tls.X25519MLKEM768 && o.TLSVersion != tls.VersionTLS13 {
		return o, errors.New("bench: X25519MLKEM768 needs TLS 1.3")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Requests < 0 || o.Duration < 0 || o.Warmup < 0 {
		return o, errors.New("bench: negative duration, warm-up or request count")
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
		if o.Requests > 0 {
			o.Duration = MaxRunTime
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Path == "" {
		o.Path = "/"
	}
	if !strings.HasPrefix(o.Path, "/") {
		return o, fmt.Errorf("bench: path %q: must start with /", o.Path)
	}
	if o.BodySize < 0 {
		return o, fmt.Errorf("bench: body size %d: must not be negative", o.BodySize)
	}
	if o.CookieName == "" {
		o.CookieName = DefaultCookieName
	}
	if o.SourceIPs < 0 || o.SourceIPs > 1<<20 {
		return o, fmt.Errorf("bench: %d source addresses: want 0 … %d", o.SourceIPs, 1<<20)
	}
	if o.SourceIPs > 0 {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
			return o, fmt.Errorf("bench: spreading source addresses needs an IPv4 loopback target, not %q", host)
		}
	}
	return o, nil
}

// groupName is the display name of a key-exchange group.
func groupName(g tls.CurveID) string {
	switch g {
	case tls.X25519:
		return "x25519"
	case tls.CurveP256:
		return "p256"
	case tls.X25519MLKEM768:
		return "mlkem"
	}
	return g.String()
}

// versionName is the display name of a TLS version.
func versionName(v uint16) string {
	if v == tls.VersionTLS12 {
		return "1.2"
	}
	return "1.3"
}
