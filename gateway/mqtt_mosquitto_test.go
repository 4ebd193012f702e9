package gateway

// mosquitto (Debian) behind fleetgate, with mosquitto_pub and mosquitto_sub
// as devices, MQTT 3.1.1 and 5.0: allowed devices publish and receive, a
// wrong client id gets the refusal as the client prints it, and a mosquitto
// acl_file with "pattern write devices/%u/#" shows that the username the
// broker sees is the certificate's CN, whatever the device sent. Skipped when
// the binaries are missing (apt-get install mosquitto mosquitto-clients).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// mosquittoDomain is the application's domain. The clients send -h as SNI;
// the name does not resolve, so they reach the gateway through a SOCKS5
// proxy (--proxy socks5h://, the proxy resolves the name) that the test runs.
const mosquittoDomain = "broker.mqtt.test"

// mosquittoTools finds the broker and its clients, or skips the test.
func mosquittoTools(t *testing.T) (broker, pub, sub string) {
	t.Helper()
	broker, err := exec.LookPath("mosquitto")
	if err != nil {
		if broker, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Skip("mosquitto not installed")
		}
	}
	pub, err1 := exec.LookPath("mosquitto_pub")
	sub, err2 := exec.LookPath("mosquitto_sub")
	if err1 != nil || err2 != nil {
		t.Skip("mosquitto-clients not installed")
	}
	return broker, pub, sub
}

// mosquittoClients writes the fixture's two devices' certificates for the
// clients and returns what runs one: bin (mosquitto_pub or mosquitto_sub)
// as dev on mosquittoDomain, through a SOCKS5 proxy to the gateway, with
// args after the connection's own.
func mosquittoClients(t *testing.T, f *tcpFixture) func(bin string, dev *device, args ...string) (string, error) {
	t.Helper()
	proxy := "socks5h://" + startSOCKS5(t, f.addr).ln.Addr().String()
	for _, d := range []*device{f.pki.sensor1, f.pki.sensor2} {
		f.writeFile(d.name+".pem", pki.ChainPEM(d.cert, f.pki.inter))
		f.writeFile(d.name+"-key.pem", d.cert.KeyPEM())
	}
	return func(bin string, dev *device, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		all := append([]string{"-h", mosquittoDomain, "-p", "8883", "--proxy", proxy, "--cafile", filepath.Join(f.dir, "root.pem"), "--insecure",
			"--cert", filepath.Join(f.dir, dev.name+".pem"), "--key", filepath.Join(f.dir, dev.name+"-key.pem")}, args...)
		out, err := exec.CommandContext(ctx, bin, all...).CombinedOutput()
		return string(out), err
	}
}

func TestMQTTMosquitto(t *testing.T) {
	broker, pub, sub := mosquittoTools(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		// mosquitto runs as the current user; it reads these files.
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acl := write("acl", "pattern write devices/%u/#\npattern read devices/#\n")
	// Run as the current user (as root, mosquitto would switch to the
	// user "mosquitto", who cannot read the test's folder).
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	brokerAddr, _ := startMosquitto(t, broker, fmt.Sprintf("user %s\nacl_file %s\n", me.Username, acl))

	f := newTCPFixture(t, func(c *fileConfig) {
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mosquitto", PEMFile: "ca-chain.pem",
			AssociatedHostnames: []string{mosquittoDomain}})
		a := httpApp("mosquitto", mosquittoDomain, "tcp://"+brokerAddr, admit("fleet", anyFleetDevice))
		a.Protocol, a.MQTTClientID, a.MQTTUsername = "mqtt", "common_name", "common_name"
		c.Applications = append(c.Applications, a)
	})
	run := mosquittoClients(t, f)
	for _, v := range []struct{ name, flag string }{{"3.1.1", "mqttv311"}, {"5.0", "mqttv5"}} {
		t.Run(v.name, func(t *testing.T) {
			topic := "devices/sensor-0001/" + v.flag
			spoof := "devices/sensor-0002/" + v.flag
			// Retained, so that the subscriber started afterwards gets them.
			if out, err := run(pub, f.pki.sensor1, "-V", v.flag, "-i", "sensor-0001", "-q", "1", "-r", "-t", topic, "-m", "21.5"); err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, out)
			}
			// The device claims the username sensor-0002: the broker sees its
			// CN, so the ACL refuses the write to sensor-0002's topics.
			if out, err := run(pub, f.pki.sensor1, "-V", v.flag, "-i", "sensor-0001", "-u", "sensor-0002", "-q", "1", "-r", "-t", spoof, "-m", "spoofed"); err != nil {
				t.Logf("mosquitto_pub (spoof): %v\n%s", err, out)
			}
			out, _ := run(sub, f.pki.sensor2, "-V", v.flag, "-i", "sensor-0002", "-t", "devices/#", "-v", "-W", "3")
			if !strings.Contains(out, topic+" 21.5") {
				t.Errorf("mosquitto_sub did not receive the allowed message:\n%s", out)
			}
			if strings.Contains(out, "spoofed") {
				t.Errorf("the broker took the device's username, not its CN:\n%s", out)
			}
			// A wrong client id: the client prints the CONNACK's refusal.
			out, err := run(pub, f.pki.sensor1, "-V", v.flag, "-i", "someone-else", "-t", topic, "-m", "x")
			if err == nil || !strings.Contains(strings.ToLower(out), "identifier") {
				t.Errorf("mosquitto_pub with a wrong client id: %v\n%s", err, out)
			}
			t.Logf("mosquitto_pub -V %s -i someone-else prints: %s", v.flag, strings.TrimSpace(out))
		})
	}
}
