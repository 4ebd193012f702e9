package main

// The mqtt part of TestDemo: mqtt.fleet.test is served in front of the demo
// broker, and the mosquitto commands the walkthrough prints get the outcome
// it says.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/demo"
	"github.com/fleetgate/fleetgate/internal/mqttwire"
)

// demoBroker is the demo's fixed MQTT broker (configs.DemoMQTTOrigin).
const demoBroker = "127.0.0.1:9883"

// checkDemoMQTT runs against a demo gateway listening on listen with its
// files in demoDir, whose stdout is out.
func checkDemoMQTT(t *testing.T, demoDir, listen, out string) {
	t.Helper()
	if strings.TrimPrefix(configs.DemoMQTTOrigin, "tcp://") != demoBroker {
		t.Fatalf("the demo broker moved to %s: update demoBroker", configs.DemoMQTTOrigin)
	}
	// The walkthrough prints the mosquitto commands, what they print, where
	// they come from and the /etc/hosts line they need.
	for _, want := range []string{"apt-get install mosquitto-clients", "\n    " + demo.MQTTHostsLine(listen) + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("the walkthrough lacks %q:\n%s", want, out)
		}
	}
	steps := demo.MQTTSteps(demoDir, listen)
	for _, s := range steps {
		block := "# " + s.Title + "\n" + s.Cmd + "\n"
		for _, l := range s.Output {
			block += "#   " + l + "\n"
		}
		if !strings.Contains(out, block) {
			t.Errorf("the walkthrough lacks the step:\n%s", block)
		}
	}

	// A Go device through the gateway: each is admitted with its own client
	// id, and the broker behind delivers what it publishes.
	roots := x509.NewCertPool()
	rootPEM, err := os.ReadFile(filepath.Join(demoDir, demo.RootCA))
	if err != nil || !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("demo root: %v", err)
	}
	dial := func(device string) (*tls.Conn, *bufio.Reader) {
		t.Helper()
		cfg := &tls.Config{ServerName: configs.DemoMQTTDomain, RootCAs: roots}
		if device != "" {
			cert, err := tls.LoadX509KeyPair(filepath.Join(demoDir, demo.DeviceCert(device)), filepath.Join(demoDir, demo.DeviceKey(device)))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", listen, cfg)
		if err != nil {
			t.Fatalf("TLS to %s as %q: %v", configs.DemoMQTTDomain, device, err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}
	// A device per version. The gateway binds the client id to the CN, and
	// mochi-mqtt cleans up a closed clean session by client id (its
	// subscriptions, then its client table entry) in the closed
	// connection's goroutine, which may run after the next session of that
	// id has registered: that session's entry is then the one deleted, and
	// what it publishes is delivered to no one. The broker runs in the
	// binary, so the test cannot wait for that cleanup: no client id
	// connects twice in a row.
	for _, s := range []struct {
		device  string
		version byte
	}{{"sensor-0001", mqttwire.V311}, {"sensor-0002", mqttwire.V5}} {
		c, r := dial(s.device)
		if code := testkit.MQTTSession(t, c, r, s.version, s.device); code != 0 {
			t.Errorf("MQTT %d: %s as %s: CONNACK %#x, want accepted", s.version, s.device, s.device, code)
		} else if got := testkit.MQTTPubSub(t, c, r, s.version, fmt.Sprintf("devices/%s/go-v%d", s.device, s.version), "21.5"); got != "21.5" {
			t.Errorf("MQTT %d: %s received %q", s.version, s.device, got)
		}
		c.Close()
	}
	for _, tc := range []struct {
		name, device, clientID string
		version, code          byte
	}{
		{"wrong client id, 3.1.1", "sensor-0001", "someone-else", mqttwire.V311, 2},
		{"wrong client id, 5.0", "sensor-0001", "someone-else", mqttwire.V5, 0x85},
		{"another device's client id", "sensor-0002", "sensor-0001", mqttwire.V311, 2},
		{"no certificate", "", "sensor-0001", mqttwire.V311, 5},
		{"no certificate, 5.0", "", "sensor-0001", mqttwire.V5, 0x87},
	} {
		c, r := dial(tc.device)
		if code := testkit.MQTTSession(t, c, r, tc.version, tc.clientID); code != tc.code {
			t.Errorf("%s: CONNACK %#x, want %#x", tc.name, code, tc.code)
		}
		if _, err := r.ReadByte(); err == nil {
			t.Errorf("%s: the connection stayed open after the refusal", tc.name)
		}
		c.Close()
	}

	// The commands themselves, as printed, when mosquitto-clients is
	// installed and a private mount namespace can give them the /etc/hosts
	// line (root on Linux): the real /etc/hosts is left alone.
	t.Run("mosquitto", func(t *testing.T) {
		for _, bin := range []string{"mosquitto_pub", "mosquitto_sub", "unshare"} {
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("%s is not installed", bin)
			}
		}
		if err := exec.Command("unshare", "-m", "mount", "--bind", "/etc/hosts", "/etc/hosts").Run(); err != nil {
			t.Skipf("no private mount namespace for an /etc/hosts line: %v", err)
		}
		etcHosts, err := os.ReadFile("/etc/hosts")
		if err != nil {
			t.Skip(err)
		}
		hosts := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(hosts, append(etcHosts, "\n"+demo.MQTTHostsLine(listen)+"\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, s := range steps {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := exec.CommandContext(ctx, "unshare", "-m", "sh", "-c", `mount --bind "$1" /etc/hosts && exec sh -c "$2"`, "sh", hosts, s.Cmd)
			got, err := cmd.CombinedOutput()
			cancel()
			exit := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				exit = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%s: %v", s.Title, err)
			}
			want := strings.Join(s.Output, "\n")
			if exit != s.Exit || strings.TrimSpace(string(got)) != want {
				t.Errorf("%s:\n%s\nexit %d, printed:\n%s\nwant exit %d and:\n%s", s.Title, s.Cmd, exit, got, s.Exit, want)
			}
		}
	})
}
