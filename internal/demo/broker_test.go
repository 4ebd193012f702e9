package demo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

func TestStartBrokerRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:1883", "localhost:1883", "nonsense"} {
		if b, err := StartBroker(addr, nil); err == nil {
			_ = b.Close()
			t.Errorf("StartBroker(%q) accepted an address that is not loopback", addr)
		} else if !strings.HasPrefix(err.Error(), "demo: broker: ") {
			t.Errorf("StartBroker(%q): %v", addr, err)
		}
	}
}

// TestStartBroker: the broker admits any client, in MQTT 3.1.1 and 5.0, and
// delivers what is published to the subscribers; a busy port is an error.
func TestStartBroker(t *testing.T) {
	addr := testkit.FreePort(t)
	b, err := StartBroker(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = CloseBroker(b, 5*time.Second) }()
	if b2, err := StartBroker(addr, nil); err == nil {
		_ = b2.Close()
		t.Error("a second broker started on the same port")
	}
	// A client id and a topic per version. mochi-mqtt cleans up a closed
	// clean session by client id (its subscriptions, then the client
	// table's entry) in the closed connection's goroutine, which may run
	// after the next connection of that id has registered: the entry then
	// deleted is the new client's, and a publication finds no one to
	// deliver to.
	for _, v := range []byte{4, 5} {
		id := fmt.Sprintf("anyone-v%d", v)
		c, r := brokerSession(t, addr, v, id)
		if got := testkit.MQTTPubSub(t, c, r, v, "devices/"+id, "21.5"); got != "21.5" {
			t.Errorf("v%d: received %q", v, got)
		}
		c.Close()
	}
}

// TestBrokerReconnectSameID: a device that reconnects at once under its
// client id, again and again, receives what it publishes to itself every
// time: the cleanup of its previous clean session never takes the new
// session's entry with it. (The race this guards against is rare on any
// one reconnect; hence the rounds.)
func TestBrokerReconnectSameID(t *testing.T) {
	addr := testkit.FreePort(t)
	b, err := StartBroker(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = CloseBroker(b, 5*time.Second) }()
	for i := range 40 {
		v := byte(4 + i%2)
		c, r := brokerSession(t, addr, v, "sensor-0001")
		if got := testkit.MQTTPubSub(t, c, r, v, fmt.Sprintf("devices/sensor-0001/r%d", i), "21.5"); got != "21.5" {
			t.Fatalf("round %d: received %q", i, got)
		}
		c.Close()
	}
}

// TestCloseBroker: a client still connected when the broker closes is
// disconnected, and the close returns; a client that already left is
// waited for first, so that its leaving does not race the close.
func TestCloseBroker(t *testing.T) {
	addr := testkit.FreePort(t)
	b, err := StartBroker(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, _ := brokerSession(t, addr, 4, "leaving")
	gone.Close() // its clean session is deleted while CloseBroker waits
	stays, r := brokerSession(t, addr, 4, "staying")
	defer stays.Close()
	if err := CloseBroker(b, 3*time.Second); err != nil { // the leaving client's cleanup, on a loaded machine
		t.Fatal(err)
	}
	if _, err := r.ReadByte(); err == nil {
		// A DISCONNECT (MQTT 5) or nothing: the connection must end.
		if _, err := io.ReadAll(r); err != nil {
			t.Fatalf("the staying client's connection did not end cleanly: %v", err)
		}
	}
}

// brokerSession connects to the broker at addr as id, in MQTT version
// (4: 3.1.1, 5: 5.0), and fails the test unless the CONNACK accepts it.
func brokerSession(t *testing.T, addr string, version byte, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if code := testkit.MQTTSession(t, c, r, version, id); code != 0 {
		t.Fatalf("v%d %s: CONNACK %#x, want accepted", version, id, code)
	}
	return c, r
}
