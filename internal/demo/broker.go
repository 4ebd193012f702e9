package demo

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// StartBroker serves an MQTT broker (mochi-mqtt, MQTT 3.1.1 and 5.0,
// retained messages kept in memory) on addr until the returned server is
// closed. It admits every client and allows every topic: in the demo the
// gateway in front of it is what checks the devices, so addr must be a
// loopback address: any other is refused. A nil logger discards the
// broker's log.
func StartBroker(addr string, logger *slog.Logger) (*mqtt.Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("demo: broker: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("demo: broker: %q is not a loopback address: the demo broker admits every client", addr)
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := mqtt.New(&mqtt.Options{Logger: logger})
	if err := b.AddHook(&admitAll{b: b}, nil); err != nil {
		return nil, fmt.Errorf("demo: broker: %w", err)
	}
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "demo", Address: addr})); err != nil {
		return nil, fmt.Errorf("demo: broker: %w", err)
	}
	if err := b.Serve(); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("demo: broker: %w", err)
	}
	return b, nil
}

// CloseBroker closes b once its clients are gone, waiting at most wait for
// them, and as long again for the close itself. Why not b.Close alone: mochi-mqtt
// v2.7.9's Close takes its client list's read lock twice (GetByListener
// calls Len), so a client connecting or disconnecting at that moment queues
// a writer between the two and the close deadlocks. With no client left,
// nothing writes; should one still arrive, the caller gets an error after
// wait instead of hanging (the close goes on in the background).
func CloseBroker(b *mqtt.Server, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for atomic.LoadInt64(&b.Info.ClientsConnected) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		_ = b.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		return errors.New("demo: broker: close did not finish (a client was still connecting or leaving)")
	}
}

// admitAll is the demo broker's authentication: every client connects and
// may publish and subscribe to every topic. (Not mochi's hooks/auth
// package, which brings a YAML parser along for its ledger.)
type admitAll struct {
	mqtt.HookBase
	b *mqtt.Server
}

func (*admitAll) ID() string { return "demo-admit-all" }

func (*admitAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnConnect
}

// OnConnect ends a device's previous clean session, when it has one, and
// waits (at most a second) until the broker has cleaned it up, before the
// new session of that client id registers. Devices reconnect at once
// under their client id, and the gateway's client id binding makes every
// session of one device use the same. Why wait: mochi-mqtt v2.7.9 cleans
// up a closed clean session by client id in the closed connection's
// goroutine; when that runs after the new session has registered (the old
// connection's end noticed a moment after the new CONNECT, say), it
// deletes the new session's entry, and what is published to it is
// delivered to no one. A clean session carries nothing over, so ending it
// first is what the takeover would have done.
func (h *admitAll) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	old, ok := h.b.Clients.Get(cl.ID)
	if !ok || old == cl || !cleanSession(old) {
		return nil
	}
	if !old.Closed() {
		_ = h.b.DisconnectClient(old, packets.ErrSessionTakenOver)
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if now, ok := h.b.Clients.Get(cl.ID); !ok || now != old {
			return nil
		}
	}
	return nil
}

// cleanSession reports whether cl's session ends with its connection, as
// mochi-mqtt decides it (MQTT 5: a session expiry of 0; 3.1.1: clean).
func cleanSession(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

func (*admitAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (*admitAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
