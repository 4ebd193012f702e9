package gateway

// The lifetimes of relayed tcp connections that end without either peer
// closing: a device certificate expiring while connected, and
// max_connection_age.

import (
	"errors"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// echoOnce writes a byte through c and reads it back: the relay is up.
func echoOnce(t *testing.T, c io.ReadWriter) {
	t.Helper()
	if _, err := io.WriteString(c, "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo through the relay: %v", err)
	}
}

// TestTCPCertificateExpiresWhileConnected: a device whose certificate
// expires a few seconds after it connected is closed at its NotAfter, with
// close_notify and reason expired, though it keeps talking.
func TestTCPCertificateExpiresWhileConnected(t *testing.T) {
	p := sharedPKI()
	// NotAfter is whole seconds in the certificate: round up so that at
	// least three seconds are left when the device connects.
	notAfter := time.Now().Add(4 * time.Second).Truncate(time.Second)
	opts := pki.Device("sensor-0001")
	opts.NotBefore, opts.NotAfter = time.Now().Add(-time.Hour), notAfter
	cert := p.inter.MustIssue(opts)
	dev := &device{name: "sensor-0001", cert: cert, tls: cert.TLSCertificate(p.inter)}

	echo := startTCPOrigin(t, echoHandler)
	f := newTCPFixture(t, lifeApp("tcp-expiry", "expiry.tcp.test", echo.url(), func(*appSection) {}))
	c, err := f.dialTCP(t, "expiry.tcp.test", dev)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c)
	if left := time.Until(cert.Cert.NotAfter); left < time.Second {
		t.Skipf("the machine is too slow: only %v of validity left once connected", left)
	}
	// Keep talking until the gateway closes: activity does not extend it.
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	var closedAt time.Time
	for {
		if _, err := io.WriteString(c, "k"); err != nil {
			closedAt = time.Now()
			break
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			closedAt = time.Now()
			if !errors.Is(err, io.EOF) {
				t.Errorf("the expired device read %v, want close_notify (EOF)", err)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	na := cert.Cert.NotAfter
	if closedAt.Before(na.Add(-100*time.Millisecond)) || closedAt.After(na.Add(2*time.Second)) {
		t.Errorf("closed at %v, NotAfter %v: want at NotAfter (up to 2s late)", closedAt.Format(time.StampMilli), na.Format(time.StampMilli))
	}
	line := f.closeLine(t, "tcp-expiry", closeExpired)
	if line["cn"] != "sensor-0001" {
		t.Errorf("close line: %v", line)
	}
	if m := f.metrics(t); !containsLine(m, `fleetgate_tcp_closes_total{app="tcp-expiry",reason="expired"} 1`) {
		t.Error("the expired close is not counted")
	}
}

// TestTCPMaxConnectionAge: with max_connection_age = "1s" a connection,
// busy or not, is closed after 1s ±10% (allowing up to 3s on a busy
// machine), with reason max_age.
func TestTCPMaxConnectionAge(t *testing.T) {
	echo := startTCPOrigin(t, echoHandler)
	f := newTCPFixture(t, lifeApp("tcp-age", "age.tcp.test", echo.url(), func(a *appSection) { a.MaxConnectionAge = "1s" }))
	for i := range 2 {
		start := time.Now()
		c, err := f.dialTCP(t, "age.tcp.test", f.pki.sensor1)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c)
		_, err = c.Read(make([]byte, 1))
		d := time.Since(start)
		if !errors.Is(err, io.EOF) {
			t.Errorf("connection %d: read %v, want close_notify", i, err)
		}
		if d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("connection %d closed after %v, want 1s ±10%%", i, d)
		}
		_ = c.Close()
	}
	testkit.WaitFor(t, "two max_age close lines", 10*time.Second, func() bool {
		n := 0
		for _, l := range f.logLines(t) {
			if l["msg"] == "tcp connection closed" && l["app"] == "tcp-age" && l["reason"] == closeMaxAge {
				n++
				if ms, _ := l["duration_ms"].(float64); ms < 900 || ms > 3000 {
					t.Errorf("duration_ms %v in %v, want 900…3000", ms, l)
				}
			}
		}
		return n == 2
	})
	if m := f.metrics(t); !containsLine(m, `fleetgate_tcp_closes_total{app="tcp-age",reason="max_age"} 2`) {
		t.Error("the max_age closes are not counted")
	}
}

// containsLine reports whether the exposition has the line exactly.
func containsLine(exposition, line string) bool {
	return strings.Contains(exposition, "\n"+line+"\n")
}
