package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/internal/procstat"
)

// ModeMQTT is a fleet of MQTT devices: each device connects over mTLS
// (CONNECT with its certificate's CN as the client id, CONNACK), publishes
// Messages messages at QoS 0 or 1 at a set rate, optionally holds its
// connection idle (pinging at its keep-alive), and disconnects. It runs
// with RunMQTT, not Run.
const ModeMQTT Mode = "mqtt"

// Defaults of MQTTOptions.
const (
	DefaultMQTTKeepAlive   = 60 * time.Second
	DefaultMQTTConcurrency = 64
	// MaxMQTTMessageSize bounds MQTTOptions.MessageSize (MQTT's own limit
	// is 256 MiB; a bench has no use for that).
	MaxMQTTMessageSize = 1 << 20
	// mqttMaxPacket bounds what the bench reads from a broker.
	mqttMaxPacket = 1 << 20
)

// MQTTTopic is the topic a device publishes to, with {cn} its CN.
const MQTTTopic = "devices/{cn}/telemetry"

// Rate is a publish rate: messages per second for the whole fleet, or per
// device. Zero is unpaced (each device publishes as fast as its broker
// acknowledges, or as its connection takes QoS 0 messages).
type Rate struct {
	PerS      float64
	PerDevice bool
}

// ParseRate parses "0" or "" (unpaced), "N" or "N/s" (N messages per
// second for the fleet) and "N/device" (N messages per second per device).
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Rate{}, nil
	}
	num, per, perDevice := s, "", false
	if i := strings.IndexByte(s, '/'); i >= 0 {
		num, per = s[:i], s[i+1:]
	}
	switch per {
	case "", "s":
	case "device":
		perDevice = true
	default:
		return Rate{}, fmt.Errorf("bench: rate %q: want N (per second for the fleet), N/s or N/device", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v >= 0 && v <= 1e9) {
		return Rate{}, fmt.Errorf("bench: rate %q: want a number of messages per second from 0 to 1e9", s)
	}
	return Rate{PerS: v, PerDevice: perDevice}, nil
}

// String formats r as ParseRate reads it.
func (r Rate) String() string {
	switch {
	case r.PerS == 0:
		return "unpaced"
	case r.PerDevice:
		return strconv.FormatFloat(r.PerS, 'g', -1, 64) + "/device"
	}
	return strconv.FormatFloat(r.PerS, 'g', -1, 64) + "/s"
}

// interval is the time between two messages of one device when n devices
// publish (0: unpaced).
func (r Rate) interval(n int) time.Duration {
	if r.PerS <= 0 || n <= 0 {
		return 0
	}
	perDevice := r.PerS
	if !r.PerDevice {
		perDevice = r.PerS / float64(n)
	}
	return time.Duration(float64(time.Second) / perDevice)
}

// ParseMQTTVersion parses "3.1.1" (or 4, its protocol level) and "5" (or
// 5.0) into a protocol level.
func ParseMQTTVersion(s string) (byte, error) {
	switch s {
	case "3.1.1", "311", "4":
		return 4, nil
	case "5", "5.0":
		return 5, nil
	}
	return 0, fmt.Errorf("bench: MQTT version %q: want 3.1.1 or 5", s)
}

// mqttVersionName is the display name of a protocol level.
func mqttVersionName(level byte) string {
	if level == 5 {
		return "5.0"
	}
	return "3.1.1"
}

// MQTTOptions describe one RunMQTT.
type MQTTOptions struct {
	// Target is the broker's (or the gateway's) host:port. Required.
	Target string
	// SNI is the TLS server name; empty: the host of Target.
	SNI string
	// Devices are the fleet: device i connects once, presenting Devices[i]
	// with its CN as the client id. Required.
	Devices []tls.Certificate
	// RootCAs verify the server's certificate, unless Insecure.
	RootCAs  *x509.CertPool
	Insecure bool
	// TLSVersion (default TLS 1.3) and Group (default X25519) as in Options.
	TLSVersion uint16
	Group      tls.CurveID
	// Version is the MQTT protocol level: 4 (3.1.1, default) or 5.
	Version byte
	// QoS of the messages: 0 or 1.
	QoS byte
	// Messages each device publishes after connecting (0: none).
	Messages int
	// MessageSize is the payload size in bytes (default DefaultMessageSize).
	MessageSize int
	// Rate paces the messages (zero: unpaced).
	Rate Rate
	// Hold keeps the devices connected and idle this long after they have
	// published, each sending PINGREQ at its keep-alive.
	Hold time.Duration
	// KeepAlive is the keep-alive of the CONNECT (default
	// DefaultMQTTKeepAlive, at most 65535 s).
	KeepAlive time.Duration
	// Concurrency is the number of connects in flight at once (default
	// DefaultMQTTConcurrency).
	Concurrency int
	// Timeout bounds a connect (dial, handshake, CONNECT → CONNACK) and
	// each acknowledgement (default DefaultTimeout).
	Timeout time.Duration
	// PIDs are server processes whose CPU time is measured per phase and
	// whose resident set is read while the fleet is connected.
	PIDs []int
	// Label names the run's server set-up and Scenario the run's shape in
	// the MQTTResult (for scripts).
	Label, Scenario string
}

// withDefaults validates o and fills in its defaults.
func (o MQTTOptions) withDefaults() (MQTTOptions, error) {
	base, err := Options{Target: o.Target, SNI: o.SNI, Devices: o.Devices, RootCAs: o.RootCAs, Insecure: o.Insecure,
		TLSVersion: o.TLSVersion, Group: o.Group, Mode: ModeKeepalive}.withDefaults()
	if err != nil {
		return o, err
	}
	o.SNI, o.TLSVersion, o.Group = base.SNI, base.TLSVersion, base.Group
	if o.Version == 0 {
		o.Version = 4
	}
	if o.Version != 4 && o.Version != 5 {
		return o, fmt.Errorf("bench: MQTT protocol level %d: want 4 (3.1.1) or 5", o.Version)
	}
	if o.QoS > 1 {
		return o, fmt.Errorf("bench: QoS %d: want 0 or 1", o.QoS)
	}
	if o.Messages < 0 || o.MessageSize < 0 || o.MessageSize > MaxMQTTMessageSize {
		return o, fmt.Errorf("bench: %d messages of %d bytes: want a count ≥ 0 and a size of 0 … %d bytes",
			o.Messages, o.MessageSize, MaxMQTTMessageSize)
	}
	if o.MessageSize == 0 {
		o.MessageSize = DefaultMessageSize
	}
	if o.Hold < 0 {
		return o, errors.New("bench: negative hold")
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultMQTTKeepAlive
	}
	if o.KeepAlive < time.Second || o.KeepAlive > 65535*time.Second {
		return o, fmt.Errorf("bench: keep-alive %s: want 1s … 65535s", o.KeepAlive)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultMQTTConcurrency
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return o, nil
}

// MQTTResult is the report of one RunMQTT; its JSON form is what
// `fleetgate bench -mode mqtt -json` prints.
type MQTTResult struct {
	Label       string `json:"label,omitempty"`
	Scenario    string `json:"scenario,omitempty"`
	Target      string `json:"target"`
	SNI         string `json:"sni"`
	TLS         string `json:"tls"`
	Group       string `json:"group"`
	MQTTVersion string `json:"mqtt_version"`
	QoS         int    `json:"qos"`
	Devices     int    `json:"devices"`
	Concurrency int    `json:"concurrency"`
	// MessagesPerDevice of MessageSize bytes, paced at Rate.
	MessagesPerDevice int     `json:"messages_per_device"`
	MessageSize       int     `json:"message_size"`
	Rate              string  `json:"rate"`
	KeepAliveS        float64 `json:"keepalive_s"`

	// Connected is the devices whose CONNECT got a successful CONNACK;
	// ConnectS the time from the first dial to the last CONNACK (how long
	// the whole fleet took to connect).
	Connected      int64   `json:"connected"`
	ConnectS       float64 `json:"connect_s"`
	ConnectsPerS   float64 `json:"connects_per_s"`
	ConnectLatency Latency `json:"connect_latency_us"` // dial, handshake, CONNECT → CONNACK

	// Messages is the messages published (QoS 1: acknowledged; QoS 0:
	// written, and followed by a PINGREQ answered, so the broker has read
	// them), over PublishS seconds.
	Messages       int64    `json:"messages"`
	PublishS       float64  `json:"publish_s"`
	MessagesPerS   float64  `json:"messages_per_s"`
	PublishLatency *Latency `json:"publish_latency_us,omitempty"` // QoS 1: PUBLISH → PUBACK

	// HoldS is the idle phase; Pings the PINGREQs answered in the whole run
	// (a device pings a keep-alive after it last sent a packet, while the
	// rest of the fleet connects too); and StillConnected the devices
	// connected at the end of the run.
	HoldS          float64 `json:"hold_s"`
	Pings          int64   `json:"pings"`
	StillConnected int64   `json:"still_connected"`

	// Errors counts failures by kind: dial, handshake, tls_alert, write,
	// read, timeout, closed (the server closed an established connection),
	// refused_v311_N_… or refused_v5_0xNN_… (a CONNACK refusing the
	// device, by return code or reason code), puback_0xNN (an MQTT 5
	// PUBACK with an error reason), unexpected_<packet> and malformed.
	Errors     map[string]int64 `json:"errors"`
	ErrorTotal int64            `json:"error_total"`

	// Server figures, when PIDs were given: each process's name, the CPU of
	// all of them per connect and per message, and each process's resident
	// set while the fleet was connected and its peak over its life.
	ServerPIDs            []int    `json:"server_pids,omitempty"`
	ServerProcs           []string `json:"server_procs,omitempty"`
	ServerCPUPerConnectUS *float64 `json:"server_cpu_us_per_connect,omitempty"`
	ServerCPUPerMessageUS *float64 `json:"server_cpu_us_per_message,omitempty"`
	ServerRSSBytes        []int64  `json:"server_rss_bytes,omitempty"`
	ServerPeakRSSBytes    []int64  `json:"server_peak_rss_bytes,omitempty"`

	ClientCPUPerConnectUS float64 `json:"client_cpu_us_per_connect"`
	ClientCPUPerMessageUS float64 `json:"client_cpu_us_per_message"`

	Started time.Time `json:"started"`
}

// mqttDevice is one simulated device and its connection.
type mqttDevice struct {
	cert  *tls.Certificate
	cn    string
	level byte // the MQTT protocol level of the run
	conn  *tls.Conn
	br    *bufio.Reader
	wbuf  bytes.Buffer
	id    uint16 // the last packet identifier used
	errs  map[string]int64
	hist  *hdrhistogram.Histogram // QoS 1 publish latency
	sent  int64
	pings int64
	acked bool // its CONNECT was accepted
	// lastSent is when the device last sent a packet: it pings a
	// keep-alive after that.
	lastSent time.Time
}

// fail records kind and closes the device's connection.
func (d *mqttDevice) fail(kind errKind) {
	d.errs[kind]++
	d.drop()
}

func (d *mqttDevice) drop() {
	if d.conn != nil {
		_ = d.conn.NetConn().Close()
		d.conn = nil
	}
}

// mqttRunner is the state of one RunMQTT.
type mqttRunner struct {
	o       MQTTOptions
	tlsConf *tls.Config
	payload []byte
}

// RunMQTT connects the fleet, one connection per device (Concurrency
// connects in flight), then has every connected device publish its
// messages, then holds the connections idle for Hold, then disconnects
// them (DISCONNECT, close_notify). Failures are counted in the result; the
// error is for a run that could not start (bad options, a server PID that
// cannot be read, a device certificate without a CN) or that ctx cut short.
func RunMQTT(ctx context.Context, opts MQTTOptions) (*MQTTResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	devs := make([]*mqttDevice, len(o.Devices))
	for i := range o.Devices {
		cn, err := commonName(&o.Devices[i])
		if err != nil {
			return nil, fmt.Errorf("bench: device %d: %w", i, err)
		}
		devs[i] = &mqttDevice{cert: &o.Devices[i], cn: cn, level: o.Version, errs: map[string]int64{}, hist: newHistogram()}
	}
	if _, err := procsCPU(o.PIDs); err != nil {
		return nil, err
	}
	raiseFileLimit(uint64(len(devs)) + 256)
	r := &mqttRunner{
		o:       o,
		tlsConf: clientConfig(Options{SNI: o.SNI, RootCAs: o.RootCAs, Insecure: o.Insecure, TLSVersion: o.TLSVersion, Group: o.Group}),
		payload: bytes.Repeat([]byte{'m'}, o.MessageSize),
	}
	res := &MQTTResult{
		Label: o.Label, Scenario: o.Scenario, Target: o.Target, SNI: o.SNI, TLS: versionName(o.TLSVersion),
		Group: groupName(o.Group), MQTTVersion: mqttVersionName(o.Version), QoS: int(o.QoS), Devices: len(devs),
		Concurrency: o.Concurrency, MessagesPerDevice: o.Messages, MessageSize: o.MessageSize, Rate: o.Rate.String(),
		KeepAliveS: o.KeepAlive.Seconds(), Errors: map[string]int64{}, ServerPIDs: o.PIDs, Started: time.Now().UTC(),
	}
	for _, pid := range o.PIDs {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		res.ServerProcs = append(res.ServerProcs, strings.TrimSpace(string(comm)))
	}
	defer func() {
		for _, d := range devs {
			d.drop()
		}
	}()

	// Phase 1: the fleet connects.
	// A connected device keeps its connection alive (PINGREQ at its
	// keep-alive) until the whole fleet is connected.
	cpu0, self0, t0 := r.mark()
	connectHist := newHistogram()
	var mu sync.Mutex
	next := make(chan *mqttDevice)
	var wg, idlers sync.WaitGroup
	fleetUp := make(chan time.Time)
	for range min(o.Concurrency, len(devs)) {
		wg.Go(func() {
			for d := range next {
				start := time.Now()
				if kind := r.connect(ctx, d); kind != "" {
					if ctx.Err() == nil {
						d.errs[kind]++
					}
					continue
				}
				mu.Lock()
				_ = connectHist.RecordValue(max(time.Since(start).Microseconds(), 1))
				mu.Unlock()
				idlers.Go(func() {
					if kind := r.idle(ctx, d, fleetUp); kind != "" && ctx.Err() == nil {
						d.fail(kind)
					}
				})
			}
		})
	}
feed:
	for _, d := range devs {
		select {
		case next <- d:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	cpu1, self1, t1 := r.mark()
	close(fleetUp)
	idlers.Wait()
	res.Connected = connectHist.TotalCount()
	res.ConnectS = t1.Sub(t0).Seconds()
	if res.ConnectS > 0 {
		res.ConnectsPerS = float64(res.Connected) / res.ConnectS
	}
	res.ConnectLatency = latencyOf(connectHist)
	if res.Connected > 0 {
		res.ClientCPUPerConnectUS = float64((self1 - self0).Microseconds()) / float64(res.Connected)
		if len(o.PIDs) > 0 {
			per := float64((cpu1 - cpu0).Microseconds()) / float64(res.Connected)
			res.ServerCPUPerConnectUS = &per
		}
	}
	connected := make([]*mqttDevice, 0, len(devs))
	for _, d := range devs {
		if d.acked {
			connected = append(connected, d) // its connection may have failed since
		}
	}

	// Phase 2: every connected device publishes.
	if o.Messages > 0 && len(connected) > 0 && ctx.Err() == nil {
		interval := o.Rate.interval(len(connected))
		for i, d := range connected {
			if d.conn == nil {
				continue
			}
			// Spread the devices' first messages over one interval.
			offset := time.Duration(int64(interval) * int64(i) / int64(len(connected)))
			wg.Go(func() { r.publish(ctx, d, t1.Add(offset), interval) })
		}
		wg.Wait()
		cpu2, self2, t2 := r.mark()
		res.PublishS = t2.Sub(t1).Seconds()
		h := newHistogram()
		for _, d := range connected {
			res.Messages += d.sent
			h.Merge(d.hist)
		}
		if res.PublishS > 0 {
			res.MessagesPerS = float64(res.Messages) / res.PublishS
		}
		if o.QoS == 1 {
			l := latencyOf(h)
			res.PublishLatency = &l
		}
		if res.Messages > 0 {
			res.ClientCPUPerMessageUS = float64((self2 - self1).Microseconds()) / float64(res.Messages)
			if len(o.PIDs) > 0 {
				per := float64((cpu2 - cpu1).Microseconds()) / float64(res.Messages)
				res.ServerCPUPerMessageUS = &per
			}
		}
	}

	// Phase 3: the devices hold their connections idle.
	if o.Hold > 0 && ctx.Err() == nil {
		th := time.Now()
		end := th.Add(o.Hold)
		for _, d := range connected {
			if d.conn == nil {
				continue
			}
			wg.Go(func() { r.hold(ctx, d, end) })
		}
		wg.Wait()
		res.HoldS = time.Since(th).Seconds()
	}
	for _, d := range connected {
		res.Pings += d.pings
		if d.conn != nil {
			res.StillConnected++
		}
	}
	for _, pid := range o.PIDs {
		rss, err := procstat.RSS(pid)
		if err != nil {
			return nil, err
		}
		peak, err := procstat.PeakRSS(pid)
		if err != nil {
			return nil, err
		}
		res.ServerRSSBytes = append(res.ServerRSSBytes, rss)
		res.ServerPeakRSSBytes = append(res.ServerPeakRSSBytes, peak)
	}
	for _, d := range connected {
		r.disconnect(d)
	}
	for _, d := range devs {
		for k, n := range d.errs {
			res.Errors[k] += n
			res.ErrorTotal += n
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("bench: mqtt run cut short: %w", err)
	}
	return res, nil
}

// mark reads the servers' CPU, this process's CPU and the clock at a phase
// boundary (a server PID that went away reads as zero: its run's CPU
// figures are then meaningless, and its RSS read fails the run).
func (r *mqttRunner) mark() (server, self time.Duration, now time.Time) {
	server, _ = procsCPU(r.o.PIDs)
	return server, selfCPU(), time.Now()
}

// commonName is the CN of a device certificate.
func commonName(c *tls.Certificate) (string, error) {
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return "", errors.New("no certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return "", err
		}
	}
	if leaf.Subject.CommonName == "" {
		return "", errors.New("certificate without a common name (the client id)")
	}
	return leaf.Subject.CommonName, nil
}

// connect opens d's connection: TCP, the mTLS handshake with its
// certificate, CONNECT with its CN as the client id, and a CONNACK that
// accepts it. It returns the failure's kind ("" on success).
func (r *mqttRunner) connect(ctx context.Context, d *mqttDevice) errKind {
	o := &r.o
	dialer := net.Dialer{Timeout: o.Timeout}
	raw, err := dialer.DialContext(ctx, "tcp", o.Target)
	if err != nil {
		return classify("dial", err, false)
	}
	_ = raw.SetDeadline(time.Now().Add(o.Timeout))
	c := tls.Client(raw, r.tlsConf)
	if err := c.HandshakeContext(context.WithValue(ctx, deviceKey{}, d.cert)); err != nil {
		_ = raw.Close()
		return classify("handshake", err, false)
	}
	d.conn, d.br = c, bufio.NewReaderSize(c, 4<<10)
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: o.Version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: d.cn,
			Keepalive:        uint16(o.KeepAlive / time.Second),
			Clean:            true,
		},
	}
	if kind := d.send(&pk, pk.ConnectEncode); kind != "" {
		d.drop()
		return kind
	}
	fh, body, err := readPacket(d.br)
	if err != nil {
		d.drop()
		return classifyRead(err)
	}
	if fh.Type != packets.Connack {
		d.drop()
		return "unexpected_" + packetName(fh.Type)
	}
	ack := packets.Packet{FixedHeader: fh, ProtocolVersion: o.Version}
	if err := ack.ConnackDecode(body); err != nil {
		d.drop()
		return "malformed"
	}
	if ack.ReasonCode != 0 {
		d.drop()
		return refusedKind(o.Version, ack.ReasonCode)
	}
	_ = raw.SetDeadline(time.Time{})
	d.acked = true
	return ""
}

// send encodes pk with encode into d's buffer and writes it.
func (d *mqttDevice) send(pk *packets.Packet, encode func(*bytes.Buffer) error) errKind {
	d.wbuf.Reset()
	if err := encode(&d.wbuf); err != nil {
		return "encode"
	}
	d.lastSent = time.Now()
	if _, err := d.conn.Write(d.wbuf.Bytes()); err != nil {
		if alert := pendingAlert(d.conn); alert != "" {
			return alert
		}
		return classify("write", err, true)
	}
	return ""
}

// publish sends the device's messages, the first at first and then one
// every interval (0: unpaced). At QoS 1 each waits for its PUBACK, which
// times its latency; at QoS 0 a PINGREQ answered after the last one shows
// that the broker has read them all.
func (r *mqttRunner) publish(ctx context.Context, d *mqttDevice, first time.Time, interval time.Duration) {
	o := &r.o
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: o.QoS},
		ProtocolVersion: o.Version,
		TopicName:       strings.ReplaceAll(MQTTTopic, "{cn}", d.cn),
		Payload:         r.payload,
	}
	at := first
	var written int64
	for range o.Messages {
		if ctx.Err() != nil {
			return
		}
		if interval > 0 {
			if kind := r.idleUntil(ctx, d, at); kind != "" {
				if ctx.Err() == nil {
					d.fail(kind)
				}
				return
			}
			at = at.Add(interval)
		}
		if o.QoS == 1 {
			d.id++
			if d.id == 0 {
				d.id = 1
			}
			pk.PacketID = d.id
		}
		start := time.Now()
		_ = d.conn.SetDeadline(start.Add(o.Timeout))
		if kind := d.send(&pk, pk.PublishEncode); kind != "" {
			d.fail(kind)
			return
		}
		if o.QoS == 0 {
			written++
			continue
		}
		if kind := d.await(packets.Puback, pk.PacketID); kind != "" {
			d.fail(kind)
			return
		}
		d.sent++
		_ = d.hist.RecordValue(max(time.Since(start).Microseconds(), 1))
	}
	if o.QoS == 0 {
		_ = d.conn.SetDeadline(time.Now().Add(o.Timeout))
		if kind := d.ping(); kind != "" {
			d.fail(kind)
			return
		}
		d.sent += written
	}
}

// hold keeps d's connection idle until end, pinging as a device's MQTT
// client does.
func (r *mqttRunner) hold(ctx context.Context, d *mqttDevice, end time.Time) {
	if kind := r.idleUntil(ctx, d, end); kind != "" && ctx.Err() == nil {
		d.fail(kind)
	}
}

// idleUntil waits until t, pinging as idle does.
func (r *mqttRunner) idleUntil(ctx context.Context, d *mqttDevice, t time.Time) errKind {
	wake := time.NewTimer(time.Until(t))
	defer wake.Stop()
	return r.idle(ctx, d, wake.C)
}

// idle waits until done delivers or closes, sending PINGREQ whenever a
// keep-alive has passed since the device last sent a packet (MQTT's rule
// for clients).
func (r *mqttRunner) idle(ctx context.Context, d *mqttDevice, done <-chan time.Time) errKind {
	ping := time.NewTimer(time.Until(d.lastSent.Add(r.o.KeepAlive)))
	defer ping.Stop()
	for {
		select {
		case <-done:
			return ""
		case <-ctx.Done():
			return "cancelled"
		case <-ping.C:
		}
		_ = d.conn.SetDeadline(time.Now().Add(r.o.Timeout))
		if kind := d.ping(); kind != "" {
			return kind
		}
		d.pings++
		ping.Reset(time.Until(d.lastSent.Add(r.o.KeepAlive)))
	}
}

// ping sends PINGREQ and waits for PINGRESP.
func (d *mqttDevice) ping() errKind {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}
	if kind := d.send(&pk, pk.PingreqEncode); kind != "" {
		return kind
	}
	return d.await(packets.Pingresp, 0)
}

// await reads packets until one of type want (a PUBACK: with packet
// identifier id) arrives; a PINGRESP on the way is skipped.
func (d *mqttDevice) await(want byte, id uint16) errKind {
	for {
		fh, body, err := readPacket(d.br)
		if err != nil {
			return classifyRead(err)
		}
		switch {
		case fh.Type == want && want == packets.Puback:
			ack := packets.Packet{FixedHeader: fh, ProtocolVersion: d.level}
			if err := ack.PubackDecode(body); err != nil {
				return "malformed"
			}
			if ack.PacketID != id {
				continue // a late acknowledgement of an earlier message
			}
			if ack.ReasonCode >= 0x80 {
				return fmt.Sprintf("puback_%#02x", ack.ReasonCode)
			}
			return ""
		case fh.Type == want:
			return ""
		case fh.Type == packets.Pingresp:
			continue
		case fh.Type == packets.Disconnect:
			return "disconnected_by_server"
		default:
			return "unexpected_" + packetName(fh.Type)
		}
	}
}

// disconnect ends d's session as a device that is done does: DISCONNECT,
// close_notify, close.
func (r *mqttRunner) disconnect(d *mqttDevice) {
	if d.conn == nil {
		return
	}
	_ = d.conn.SetDeadline(time.Now().Add(r.o.Timeout))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: r.o.Version}
	_ = d.send(&pk, pk.DisconnectEncode)
	_ = d.conn.Close()
	d.conn = nil
}

// errMalformedPacket is readPacket's error for bytes that are not an MQTT
// packet, or one larger than the bench accepts.
var errMalformedPacket = errors.New("bench: malformed MQTT packet")

// readPacket reads one MQTT control packet: its fixed header (decoded by
// the packets package) and its body.
func readPacket(br *bufio.Reader) (packets.FixedHeader, []byte, error) {
	var fh packets.FixedHeader
	b, err := br.ReadByte()
	if err != nil {
		return fh, nil, err
	}
	if err := fh.Decode(b); err != nil {
		return fh, nil, fmt.Errorf("%w: %v", errMalformedPacket, err)
	}
	n, _, err := packets.DecodeLength(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fh, nil, io.ErrUnexpectedEOF
		}
		return fh, nil, fmt.Errorf("%w: %v", errMalformedPacket, err)
	}
	if n > mqttMaxPacket {
		return fh, nil, fmt.Errorf("%w: %d bytes", errMalformedPacket, n)
	}
	fh.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return fh, nil, err
	}
	return fh, body, nil
}

// classifyRead names a failed read: malformed, or as classify does for an
// established connection (a TLS alert, a timeout, or closed).
func classifyRead(err error) errKind {
	if errors.Is(err, errMalformedPacket) {
		return "malformed"
	}
	return classify("read", err, true)
}

// packetName is the lower-case name of a packet type.
func packetName(t byte) string {
	if name, ok := packets.PacketNames[t]; ok {
		return strings.ToLower(name)
	}
	return strconv.Itoa(int(t))
}

// mqtt311Refusals are the CONNACK return codes of MQTT 3.1.1.
var mqtt311Refusals = map[byte]string{
	1: "unacceptable_protocol_version", 2: "identifier_rejected", 3: "server_unavailable",
	4: "bad_user_name_or_password", 5: "not_authorized",
}

// refusedKind names a refusing CONNACK: refused_v311_5_not_authorized,
// refused_v5_0x87_not_authorized.
func refusedKind(level byte, code byte) errKind {
	if level != 5 {
		return fmt.Sprintf("refused_v311_%d_%s", code, orDefault(mqtt311Refusals[code], "unknown"))
	}
	return fmt.Sprintf("refused_v5_%#02x_%s", code, orDefault(mqtt5Reason(code), "unknown"))
}

// mqtt5Reason is the name of an MQTT 5 reason code, from the packets
// package's table ("" when it has none).
func mqtt5Reason(code byte) string {
	for _, c := range []packets.Code{
		packets.ErrUnspecifiedError, packets.ErrMalformedPacket, packets.ErrProtocolViolation,
		packets.ErrImplementationSpecificError, packets.ErrUnsupportedProtocolVersion,
		packets.ErrClientIdentifierNotValid, packets.ErrBadUsernameOrPassword, packets.ErrNotAuthorized,
		packets.ErrServerUnavailable, packets.ErrServerBusy, packets.ErrBanned, packets.ErrBadAuthenticationMethod,
		packets.ErrPacketTooLarge, packets.ErrQuotaExceeded, packets.ErrConnectionRateExceeded,
	} {
		if c.Code == code {
			return strings.ReplaceAll(c.Reason, " ", "_")
		}
	}
	return ""
}

// orDefault is s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WriteJSON writes r as one JSON line.
func (r *MQTTResult) WriteJSON(w io.Writer) error { return writeJSONLine(w, r) }

// WriteText writes r for a person.
func (r *MQTTResult) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "fleetgate bench%s: %s (SNI %s), mode mqtt %s, TLS %s, %s, %d devices (%d connects in flight)",
		labelSuffix(r.Label), r.Target, r.SNI, r.MQTTVersion, r.TLS, r.Group, r.Devices, r.Concurrency)
	if r.Scenario != "" {
		fmt.Fprintf(&b, ", scenario %s", r.Scenario)
	}
	b.WriteString("\n")
	c := r.ConnectLatency
	fmt.Fprintf(&b, "  connect      %d of %d connected in %.2fs: %.1f connects/s; p50 %s  p99 %s  max %s  (dial, mTLS, CONNECT → CONNACK)\n",
		r.Connected, r.Devices, r.ConnectS, r.ConnectsPerS, fmtUS(c.P50), fmtUS(c.P99), fmtUS(c.Max))
	if r.MessagesPerDevice > 0 {
		fmt.Fprintf(&b, "  publish      QoS %d, %d × %d B per device, rate %s: %d messages in %.2fs, %.1f messages/s\n",
			r.QoS, r.MessagesPerDevice, r.MessageSize, r.Rate, r.Messages, r.PublishS, r.MessagesPerS)
		if l := r.PublishLatency; l != nil {
			fmt.Fprintf(&b, "  puback       p50 %s  p99 %s  max %s  (PUBLISH → PUBACK)\n", fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.Max))
		}
	}
	if r.HoldS > 0 {
		fmt.Fprintf(&b, "  hold         %.1fs idle at keep-alive %.0fs: %d pings answered, %d still connected\n",
			r.HoldS, r.KeepAliveS, r.Pings, r.StillConnected)
	}
	if r.ErrorTotal > 0 {
		b.WriteString("  errors      ")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, " %s=%d", k, r.Errors[k])
		}
		b.WriteString("\n")
	}
	if len(r.ServerPIDs) > 0 {
		fmt.Fprintf(&b, "  server CPU   %s µs/connect, %s µs/message (PIDs %v)\n",
			fmtOptUS(r.ServerCPUPerConnectUS), fmtOptUS(r.ServerCPUPerMessageUS), r.ServerPIDs)
		for i, pid := range r.ServerPIDs {
			fmt.Fprintf(&b, "  server RSS   %s (%d): %.1f MiB with the fleet connected, peak %.1f MiB\n",
				r.ServerProcs[i], pid, mib(r.ServerRSSBytes[i]), mib(r.ServerPeakRSSBytes[i]))
		}
	}
	fmt.Fprintf(&b, "  client CPU   %.1f µs/connect, %.1f µs/message\n", r.ClientCPUPerConnectUS, r.ClientCPUPerMessageUS)
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
