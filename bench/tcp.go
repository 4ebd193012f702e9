package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// tcpWorker is a worker's ModeTCP state: its message, the buffer its echo
// is read into, and its connect records.
type tcpWorker struct {
	msg, echo   []byte
	seq         uint64 // messages sent: stamped into each message
	connectHist *hdrhistogram.Histogram
	connects    int64
}

// initTCP prepares w for ModeTCP.
func (w *worker) initTCP() {
	size := w.r.o.MessageSize
	t := &tcpWorker{msg: make([]byte, size), echo: make([]byte, size), connectHist: newHistogram()}
	for i := range t.msg {
		t.msg[i] = byte('a' + (w.id+i)%26)
	}
	w.tcp = t
}

// doTCP echoes one message, connecting first when the worker has no
// connection; it returns the failure's kind ("" for success) and the time
// the message was sent, so that a message's latency leaves out the connect.
// A connection closes with close_notify after Options.Messages messages.
func (w *worker) doTCP(ctx context.Context, start time.Time) (errKind, time.Time) {
	o := &w.r.o
	t := w.tcp
	if w.conn == nil {
		if kind := w.connect(ctx, true); kind != "" {
			return kind, start
		}
		if w.measuring {
			t.connects++
			_ = t.connectHist.RecordValue(max(time.Since(start).Microseconds(), 1))
		}
		start = time.Now()
	}
	reused := w.uses > 0
	w.uses++
	t.seq++
	stamp(t.msg, t.seq)
	_ = w.conn.SetDeadline(time.Now().Add(o.Timeout))
	if _, err := w.conn.Write(t.msg); err != nil {
		kind := classify("write", err, reused)
		if alert := pendingAlert(w.conn); alert != "" {
			kind = alert
		}
		w.drop()
		return kind, start
	}
	if _, err := io.ReadFull(w.conn, t.echo); err != nil {
		w.drop()
		return classify("read", err, reused), start
	}
	if !bytes.Equal(t.echo, t.msg) {
		w.drop()
		return "mismatch", start // the relay lost, reordered or added bytes
	}
	if w.uses >= o.Messages {
		w.closeNotify()
	}
	return "", start
}

// closeNotify ends the worker's connection as a device that is done does:
// close_notify, then the socket.
func (w *worker) closeNotify() {
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.r.o.Timeout))
	_ = w.conn.Close()
	w.conn = nil
}

// stamp writes seq into the first bytes of msg (as many as fit), so that
// an echo of an earlier message does not pass for this one.
func stamp(msg []byte, seq uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	copy(msg, b[:])
}

// tcpStats merges the workers' ModeTCP records; messages is the measured
// echoes that succeeded.
func tcpStats(o Options, workers []*worker, elapsed time.Duration, messages int64) *TCPStats {
	s := &TCPStats{MessageSize: o.MessageSize, MessagesPerConn: o.Messages, Messages: messages}
	h := newHistogram()
	for _, w := range workers {
		if w.tcp != nil {
			h.Merge(w.tcp.connectHist)
			s.Connects += w.tcp.connects
		}
	}
	if elapsed > 0 {
		s.MessagesPerS = float64(messages) / elapsed.Seconds()
		s.ConnectsPerS = float64(s.Connects) / elapsed.Seconds()
	}
	s.ConnectLatency = latencyOf(h)
	return s
}

// serverCPU sets the per-message and per-connect CPU from the server's
// CPU seconds over the run.
func (s *TCPStats) serverCPU(seconds float64) {
	if s.Messages > 0 {
		per := seconds * 1e6 / float64(s.Messages)
		s.ServerCPUPerMessageUS = &per
	}
	if s.Connects > 0 {
		per := seconds * 1e6 / float64(s.Connects)
		s.ServerCPUPerConnectUS = &per
	}
}

// writeTCPText is WriteText for a ModeTCP run.
func (r *Result) writeTCPText(w io.Writer) error {
	var b strings.Builder
	t := r.TCP
	fmt.Fprintf(&b, "fleetgate bench%s: %s (SNI %s), mode tcp, TLS %s, %s, %d workers, %d devices, %d messages of %d bytes per connection\n",
		labelSuffix(r.Label), r.Target, r.SNI, r.TLS, r.Group, r.Concurrency, r.Devices, t.MessagesPerConn, t.MessageSize)
	fmt.Fprintf(&b, "  messages     %d echoed, %d errors in %.2fs (after %.1fs of warm-up)\n", t.Messages, r.ErrorTotal, r.DurationS, r.WarmupS)
	if r.ErrorTotal > 0 {
		fmt.Fprintf(&b, "  errors      ")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, " %s=%d", k, r.Errors[k])
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  throughput   %.1f messages/s, %.1f connects/s (%d connects)\n", t.MessagesPerS, t.ConnectsPerS, t.Connects)
	l, c := r.Latency, t.ConnectLatency
	fmt.Fprintf(&b, "  message      p50 %s  p99 %s  max %s  (round trip through the relay)\n", fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.Max))
	fmt.Fprintf(&b, "  connect      p50 %s  p99 %s  max %s  (dial and mTLS handshake)\n", fmtUS(c.P50), fmtUS(c.P99), fmtUS(c.Max))
	if t.ServerCPUPerMessageUS != nil || t.ServerCPUPerConnectUS != nil {
		fmt.Fprintf(&b, "  server CPU   %s µs/message, %s µs/connect (%.2fs over PIDs %v)\n",
			fmtOptUS(t.ServerCPUPerMessageUS), fmtOptUS(t.ServerCPUPerConnectUS), deref(r.ServerCPUS), r.ServerPIDs)
	}
	fmt.Fprintf(&b, "  client CPU   %.1f µs/message\n", r.ClientCPUPerReqUS)
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtOptUS formats an optional figure with one decimal ("-" when unset).
func fmtOptUS(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", *v)
}

func deref(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}
