package demo

import (
	"fmt"
	"io"
	"log/slog"
	"net"

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
	if err := b.AddHook(new(admitAll), nil); err != nil {
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

// admitAll is the demo broker's authentication: every client connects and
// may publish and subscribe to every topic. (Not mochi's hooks/auth
// package, which brings a YAML parser along for its ledger.)
type admitAll struct{ mqtt.HookBase }

func (*admitAll) ID() string { return "demo-admit-all" }

func (*admitAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (*admitAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (*admitAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
