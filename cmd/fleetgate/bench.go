package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/bench"
)

const benchUsage = `Usage:
  fleetgate bench [flags]                        simulate a fleet against -target
  fleetgate bench -init DIR                      make a bench PKI (CA, server certificate, token key) in DIR
  fleetgate bench -floor                         measure the crypto floor of one fresh mTLS request
  fleetgate bench -origin ADDR                   run the benchmark origin (plain HTTP) until SIGTERM
  fleetgate bench -stdlib-server ADDR -dir DIR -upstream URL
                                                 run the Go standard-library mTLS proxy until SIGTERM
  fleetgate bench -idle N -target ADDR -pid PID  memory per idle mTLS connection of server PID
  fleetgate bench -summarize FILE -floor-us F    the comparison's Markdown table (and -out, -png)

Relays (tcp applications and their peers):
  fleetgate bench -mode tcp -target ADDR         echo -messages messages of -message-size bytes
                                                 per connection through a relay to a TCP echo origin
  fleetgate bench -mode tcp-hold -idle N -target ADDR -pid PID
                                                 memory per idle relayed connection of server PID
  fleetgate bench -origin-tcp ADDR [-origin-tls -dir DIR]
                                                 run the TCP echo origin until SIGTERM (with -origin-tls,
                                                 over TLS with DIR's server certificate)
  fleetgate bench -relay-server ADDR -dir DIR -relay-upstream HOST:PORT
                                                 run the Go crypto/tls + io.Copy relay until SIGTERM
  fleetgate bench -summarize-relay FILE          the relay comparison's Markdown tables

MQTT (mqtt applications and brokers):
  fleetgate bench -mode mqtt -target ADDR        -devices N connect (client id = CN), publish
                                                 -messages each at -qos and -rate, -hold idle
  fleetgate bench -summarize-mqtt FILE           the mqtt comparison's Markdown tables

Device certificates are generated once into DIR/devices (from DIR's CA, or
from -ca-cert/-ca-key) and reused by later runs.

`

// benchFlags are the flags of `fleetgate bench`.
type benchFlags struct {
	target, sni, host, dir, caCert, caKey, cacert string
	mode, tlsVersion, group, path, pids, label    string
	clientCorePIDs                                string
	devices, concurrency, bodySize, sourceIPs     int
	requests                                      int64
	duration, warmup, timeout                     time.Duration
	jsonOut, insecure, floor                      bool
	initDir, origin, stdlibServer, upstream       string
	idle, messages, messageSize                   int
	originTCP, relayServer, relayUpstream         string
	originTLS                                     bool
	summarize, summarizeRelay, out, png           string
	floorUS                                       float64
	qos                                           int
	rate, mqttVersion, scenario, summarizeMQTT    string
	hold, keepAlive                               time.Duration
	set                                           map[string]bool // the flags given
}

func cmdBench(args []string, stdout, stderr io.Writer) int {
	var f benchFlags
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.target, "target", "127.0.0.1:8443", "the server to load (`host:port`)")
	fs.StringVar(&f.sni, "sni", "", "TLS server `name` (default: the host of -target)")
	fs.StringVar(&f.host, "host", "", "HTTP Host `header` (default: -sni)")
	fs.StringVar(&f.dir, "dir", filepath.Join("bench", "pki"), "bench PKI `folder` (from -init); devices are kept in DIR/devices")
	fs.IntVar(&f.devices, "devices", 100, "simulated devices, each with its own certificate")
	fs.StringVar(&f.caCert, "ca-cert", "", "CA certificate `file` (PEM, issuer first) that issues missing devices (default: DIR's intermediate)")
	fs.StringVar(&f.caKey, "ca-key", "", "the key `file` of -ca-cert (PEM)")
	fs.StringVar(&f.cacert, "cacert", "", "CA `file` that verifies the server's certificate (default: DIR/root.pem)")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the server's certificate")
	fs.IntVar(&f.concurrency, "concurrency", bench.DefaultConcurrency, "workers, each with one request in flight")
	fs.DurationVar(&f.duration, "duration", 0, "measured phase (default 10s; with -requests alone, at most 5m)")
	fs.Int64Var(&f.requests, "requests", 0, "measured requests, or messages with -mode tcp (0: bounded by -duration)")
	fs.DurationVar(&f.warmup, "warmup", 0, "warm-up before measuring, not counted")
	fs.DurationVar(&f.timeout, "timeout", bench.DefaultTimeout, "bound on each request, dial and handshake included")
	fs.StringVar(&f.mode, "mode", "fresh", "fresh (a handshake per request), keepalive, cookie (certificate once, then the session cookie), tcp (echo through a relay), tcp-hold (idle relayed connections, with -idle) or mqtt (a fleet of MQTT devices)")
	fs.IntVar(&f.messages, "messages", bench.DefaultMessages, "-mode tcp: messages echoed per connection before it closes (1: measure connects); -mode mqtt: messages each device publishes (0: none)")
	fs.IntVar(&f.messageSize, "message-size", bench.DefaultMessageSize, "-mode tcp, tcp-hold and mqtt: message (payload) size in `bytes`")
	fs.IntVar(&f.qos, "qos", 1, "-mode mqtt: QoS of the messages, 0 or 1")
	fs.StringVar(&f.rate, "rate", "0", "-mode mqtt: publish `rate`: N or N/s for the fleet, N/device per device, 0 unpaced")
	fs.DurationVar(&f.hold, "hold", 0, "-mode mqtt: after publishing, hold the devices connected and idle this long, pinging at -keepalive")
	fs.DurationVar(&f.keepAlive, "keepalive", bench.DefaultMQTTKeepAlive, "-mode mqtt: the CONNECT's keep-alive (whole seconds)")
	fs.StringVar(&f.mqttVersion, "mqtt-version", "3.1.1", "-mode mqtt: MQTT version, 3.1.1 or 5")
	fs.StringVar(&f.scenario, "scenario", "", "-mode mqtt: a `name` for the run's shape in the report (for scripts)")
	fs.StringVar(&f.summarizeMQTT, "summarize-mqtt", "", "JSON-lines `file` of mqtt comparison runs: print the Markdown tables")
	fs.StringVar(&f.tlsVersion, "tls", "1.3", "TLS version: 1.2 or 1.3")
	fs.StringVar(&f.group, "group", "x25519", "key-exchange group: x25519, p256 or mlkem (X25519MLKEM768)")
	fs.StringVar(&f.path, "path", "/", "request `path`")
	fs.IntVar(&f.bodySize, "body-size", 0, "POST a body of this many `bytes` (0: GET)")
	fs.StringVar(&f.pids, "pid", "", "server `PIDs` (comma-separated): report their CPU µs per request")
	fs.StringVar(&f.clientCorePIDs, "client-core-pids", "", "other `PIDs` on the client's CPU (e.g. the origin): their CPU counts toward the client core's busy share")
	fs.IntVar(&f.sourceIPs, "source-ips", 0, "spread connections over `N` source addresses in 127.0.0.0/8")
	fs.StringVar(&f.label, "label", "", "a `name` for this run in the report")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as one JSON object")
	fs.StringVar(&f.initDir, "init", "", "make a bench PKI in `DIR` and exit")
	fs.BoolVar(&f.floor, "floor", false, "measure the crypto floor and exit")
	fs.StringVar(&f.origin, "origin", "", "run the benchmark origin on `ADDR`")
	fs.StringVar(&f.stdlibServer, "stdlib-server", "", "run the standard-library proxy on `ADDR` (certificates from -dir)")
	fs.StringVar(&f.upstream, "upstream", "http://127.0.0.1:9000", "origin `URL` of -stdlib-server")
	fs.StringVar(&f.originTCP, "origin-tcp", "", "run the TCP echo origin on `ADDR`")
	fs.BoolVar(&f.originTLS, "origin-tls", false, "-origin-tcp speaks TLS, with the bench PKI's server certificate (from -dir)")
	fs.StringVar(&f.relayServer, "relay-server", "", "run the Go TLS relay on `ADDR` (certificates from -dir)")
	fs.StringVar(&f.relayUpstream, "relay-upstream", "127.0.0.1:9001", "TCP origin (`host:port`) of -relay-server")
	fs.IntVar(&f.idle, "idle", 0, "open `N` idle mTLS connections to -target and report server -pid's RSS growth per connection")
	fs.StringVar(&f.summarize, "summarize", "", "JSON-lines `file` of comparison runs: print the Markdown table")
	fs.StringVar(&f.summarizeRelay, "summarize-relay", "", "JSON-lines `file` of relay comparison runs: print the Markdown tables")
	fs.Float64Var(&f.floorUS, "floor-us", 0, "crypto floor in µs for -summarize (0: measure it now)")
	fs.StringVar(&f.out, "out", "", "with -summarize: also write the Markdown to `file`")
	fs.StringVar(&f.png, "png", "", "with -summarize: also draw the chart to `file`")
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetgate bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if f.concurrency < 1 {
		fmt.Fprintf(stderr, "fleetgate bench: -concurrency %d: want at least 1\n", f.concurrency)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case f.initDir != "":
		err = benchInit(f.initDir, stdout)
	case f.floor:
		err = benchFloor(stdout, f.jsonOut)
	case f.origin != "":
		err = benchServe(ctx, stdout, "origin", func() (benchServer, error) { return bench.StartOrigin(f.origin) })
	case f.originTCP != "":
		err = benchServe(ctx, stdout, "tcp echo origin", func() (benchServer, error) {
			var conf *tls.Config
			if f.originTLS {
				cert, err := tls.LoadX509KeyPair(filepath.Join(f.dir, bench.ServerFile), filepath.Join(f.dir, bench.ServerKeyFile))
				if err != nil {
					return nil, err
				}
				conf = &tls.Config{Certificates: []tls.Certificate{cert}}
			}
			return bench.StartEchoOrigin(f.originTCP, conf)
		})
	case f.relayServer != "":
		err = benchServe(ctx, stdout, "go relay", func() (benchServer, error) {
			return bench.StartGoRelay(bench.GoRelayOptions{
				Listen: f.relayServer, Upstream: f.relayUpstream,
				CertFile: filepath.Join(f.dir, bench.ServerFile), KeyFile: filepath.Join(f.dir, bench.ServerKeyFile),
				ClientCAFile: filepath.Join(f.dir, bench.RootFile),
			})
		})
	case f.stdlibServer != "":
		err = benchServe(ctx, stdout, "stdlib server", func() (benchServer, error) {
			return bench.StartStdlib(bench.StdlibOptions{
				Listen: f.stdlibServer, Upstream: f.upstream,
				CertFile: filepath.Join(f.dir, bench.ServerFile), KeyFile: filepath.Join(f.dir, bench.ServerKeyFile),
				ClientCAFile: filepath.Join(f.dir, bench.RootFile),
			})
		})
	case f.summarizeMQTT != "":
		err = bench.SummarizeMQTT(f.summarizeMQTT, stdout)
	case f.summarizeRelay != "":
		err = bench.SummarizeRelay(f.summarizeRelay, stdout)
	case f.summarize != "":
		err = bench.Summarize(bench.SummaryOptions{Input: f.summarize, FloorUS: f.floorUS, Markdown: f.out, PNG: f.png}, stdout)
	default:
		err = benchRun(ctx, &f, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate:", err) // package bench's errors start with "bench:"
		return 1
	}
	return 0
}

func benchInit(dir string, stdout io.Writer) error {
	created, err := bench.InitPKI(dir)
	if err != nil {
		return err
	}
	if !created {
		fmt.Fprintf(stdout, "fleetgate bench: %s already holds a bench PKI; kept\n", dir)
		return nil
	}
	fmt.Fprintf(stdout, "fleetgate bench: bench PKI in %s (%s trusts devices, %s + %s serve %v, %s signs tokens)\n",
		dir, bench.RootFile, bench.ServerFile, bench.ServerKeyFile, bench.DefaultServerNames, bench.TokenKeyFile)
	return nil
}

func benchFloor(stdout io.Writer, jsonOut bool) error {
	fl, err := bench.MeasureFloor()
	if err != nil {
		return err
	}
	if jsonOut {
		return fl.WriteJSON(stdout)
	}
	return fl.WriteText(stdout)
}

// benchServer is a running server of package bench (HTTP or TCP).
type benchServer interface {
	Addr() string
	Done() <-chan error
	Shutdown(ctx context.Context) error
}

// benchServe runs one of the package's servers until ctx ends.
func benchServe(ctx context.Context, stdout io.Writer, what string, start func() (benchServer, error)) error {
	s, err := start()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "fleetgate bench: %s on %s (pid %d)\n", what, s.Addr(), os.Getpid())
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		return nil
	case err := <-s.Done():
		return err
	}
}

func benchRun(ctx context.Context, f *benchFlags, stdout, stderr io.Writer) error {
	o := bench.Options{Target: f.target, SNI: f.sni, Host: f.host, Insecure: f.insecure,
		Concurrency: f.concurrency, Duration: f.duration, Requests: f.requests, Warmup: f.warmup,
		Timeout: f.timeout, Path: f.path, BodySize: f.bodySize, SourceIPs: f.sourceIPs, Label: f.label,
		Messages: f.messages, MessageSize: f.messageSize}
	var err error
	if o.Mode, err = bench.ParseMode(f.mode); err != nil {
		return err
	}
	if o.TLSVersion, err = bench.ParseTLSVersion(f.tlsVersion); err != nil {
		return err
	}
	if o.Group, err = bench.ParseGroup(f.group); err != nil {
		return err
	}
	if o.PIDs, err = bench.ParsePIDs(f.pids); err != nil {
		return err
	}
	if o.ClientCorePIDs, err = bench.ParsePIDs(f.clientCorePIDs); err != nil {
		return fmt.Errorf("bench: -client-core-pids %q: want comma-separated process IDs", f.clientCorePIDs)
	}
	if !f.insecure {
		cacert := f.cacert
		if cacert == "" {
			cacert = filepath.Join(f.dir, bench.RootFile)
		}
		if o.RootCAs, err = bench.LoadRoots(cacert); err != nil {
			return err
		}
	}
	if o.Devices, err = bench.LoadFleet(bench.FleetOptions{Dir: f.dir, N: f.devices, CACertFile: f.caCert, CAKeyFile: f.caKey}); err != nil {
		return err
	}
	if isTerminal(stderr) {
		o.Progress = stderr
	}
	if o.Mode == bench.ModeMQTT {
		return benchMQTT(ctx, f, o, stdout)
	}
	if f.idle > 0 {
		return benchIdle(ctx, f, o, stdout)
	}
	if o.Mode == bench.ModeTCPHold {
		return fmt.Errorf("bench: -mode tcp-hold needs -idle N (the connections to hold) and -pid")
	}
	res, err := bench.Run(ctx, o)
	if err != nil && res == nil {
		return err
	}
	if werr := writeReport(res, f.jsonOut, stdout); werr != nil {
		return werr
	}
	if err == nil && res.Requests == 0 && res.ErrorTotal > 0 {
		// A run in which nothing succeeded measured nothing: scripts must
		// not mistake it for a result.
		return fmt.Errorf("bench: every request failed (%d errors)", res.ErrorTotal)
	}
	return err
}

// benchMQTT is `fleetgate bench -mode mqtt`: the fleet of o.Devices as MQTT
// devices.
func benchMQTT(ctx context.Context, f *benchFlags, o bench.Options, stdout io.Writer) error {
	if f.idle > 0 {
		return fmt.Errorf("bench: -mode mqtt holds its devices with -hold DURATION, not -idle")
	}
	if f.qos != 0 && f.qos != 1 {
		return fmt.Errorf("bench: -qos %d: want 0 or 1", f.qos)
	}
	if f.keepAlive%time.Second != 0 {
		return fmt.Errorf("bench: -keepalive %s: want whole seconds", f.keepAlive)
	}
	mo := bench.MQTTOptions{Target: o.Target, SNI: o.SNI, Devices: o.Devices, RootCAs: o.RootCAs, Insecure: o.Insecure,
		TLSVersion: o.TLSVersion, Group: o.Group, QoS: byte(f.qos), Messages: f.messages, MessageSize: f.messageSize,
		Hold: f.hold, KeepAlive: f.keepAlive, Timeout: o.Timeout, PIDs: o.PIDs, Label: f.label, Scenario: f.scenario}
	if f.set["concurrency"] {
		mo.Concurrency = f.concurrency
	}
	var err error
	if mo.Version, err = bench.ParseMQTTVersion(f.mqttVersion); err != nil {
		return err
	}
	if mo.Rate, err = bench.ParseRate(f.rate); err != nil {
		return err
	}
	res, err := bench.RunMQTT(ctx, mo)
	if res == nil {
		return err
	}
	if werr := writeReport(res, f.jsonOut, stdout); werr != nil {
		return werr
	}
	if err == nil && res.Connected == 0 {
		// Nothing connected: scripts must not mistake the run for a result.
		return fmt.Errorf("bench: no device connected (%d errors)", res.ErrorTotal)
	}
	return err
}

func benchIdle(ctx context.Context, f *benchFlags, o bench.Options, stdout io.Writer) error {
	if len(o.PIDs) != 1 {
		return fmt.Errorf("bench: -idle needs exactly one server -pid")
	}
	opts := bench.IdleOptions{Run: o, N: f.idle, PID: o.PIDs[0], Label: f.label}
	if o.Mode == bench.ModeTCP || o.Mode == bench.ModeTCPHold {
		// A relayed connection echoes one message, so that its origin side
		// is connected too, then idles.
		opts.Echo = o.MessageSize
		opts.Run.Mode = ""
	}
	res, err := bench.MeasureIdle(ctx, opts)
	if err != nil {
		return err
	}
	if f.jsonOut {
		return res.WriteJSON(stdout)
	}
	return res.WriteText(stdout)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	file, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// report is a run's result, written as JSON or as text.
type report interface {
	WriteJSON(io.Writer) error
	WriteText(io.Writer) error
}

// writeReport writes r as JSON (-json) or as text.
func writeReport(r report, jsonOut bool, w io.Writer) error {
	if jsonOut {
		return r.WriteJSON(w)
	}
	return r.WriteText(w)
}
