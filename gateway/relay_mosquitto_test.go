package gateway

// A real MQTT broker behind a tcp application: mosquitto 2.0 (Debian's
// package, which reads no PROXY header) on loopback, with mosquitto_pub and
// mosquitto_sub as the devices, presenting their client certificates to the
// gateway. The clients reach the gateway through a SOCKS5 proxy of the test
// (their --proxy option), which connects every request to the gateway: so
// they connect to the application's domain by name, send it as SNI and
// verify the gateway's certificate for it, with no DNS entry for it.

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// mqttDomain is the tcp application's domain, the clients' -h.
const mqttDomain = "mqtt.fleet.test"

// socks5ToGateway is a SOCKS5 proxy (no authentication, CONNECT only) on
// loopback that connects every request to target, whatever name it asks
// for; it records the names asked for.
type socks5ToGateway struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	names  []string
}

func startSOCKS5(t *testing.T, target string) *socks5ToGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &socks5ToGateway{ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return s
}

// serve handles one client: the greeting (method "no authentication"),
// one CONNECT request, then bytes both ways until either side closes.
func (s *socks5ToGateway) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 5 {
		return
	}
	if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil { // the methods offered
		return
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return
	}
	req := make([]byte, 4) // VER CMD RSV ATYP
	if _, err := io.ReadFull(c, req); err != nil || req[0] != 5 || req[1] != 1 {
		return
	}
	var name string
	switch req[3] {
	case 1: // IPv4
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		name = net.IP(b).String()
	case 3: // a domain name, its length first
		n := make([]byte, 1)
		if _, err := io.ReadFull(c, n); err != nil {
			return
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		name = string(b)
	case 4: // IPv6
		b := make([]byte, 16)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		name = net.IP(b).String()
	default:
		return
	}
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil { // the port
		return
	}
	s.mu.Lock()
	s.names = append(s.names, name)
	s.mu.Unlock()
	up, err := net.DialTimeout("tcp", s.target, 5*time.Second)
	if err != nil {
		_, _ = c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		return
	}
	defer up.Close()
	if _, err := c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done // either side gone: close both, which ends the other copy
	_ = c.Close()
	_ = up.Close()
	<-done
}

// startMosquitto runs mosquitto on a free loopback port, anonymous and
// without persistence, with the configuration lines extra besides, and
// returns its address and its log (every line, connections included). As
// for the harness's gateway, a port taken between the moment it was found
// free and mosquitto's bind is given up for another: mosquitto then says
// so and exits.
func startMosquitto(t *testing.T, bin, extra string) (addr string, log *testkit.Buffer) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	for attempt := 1; ; attempt++ {
		addr = testkit.FreePort(t)
		_, port, _ := net.SplitHostPort(addr)
		body := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\nconnection_messages true\n%s", port, extra)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out := &testkit.Buffer{}
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cancel()
			<-done
			if t.Failed() {
				t.Logf("mosquitto log:\n%s", out.String())
			}
		})
		// "mosquitto version ... running" comes once its listener is bound;
		// a bind that fails ends the process. (A dial alone could reach
		// whoever took the port.)
		testkit.WaitFor(t, "mosquitto to listen", 10*time.Second, func() bool {
			select {
			case <-done:
				return true
			default:
				return strings.Contains(out.String(), " running")
			}
		})
		select {
		case <-done:
			if strings.Contains(out.String(), "Address already in use") && attempt < 5 {
				continue
			}
			t.Fatalf("mosquitto exited at its start:\n%s", out.String())
		default:
		}
		log = out
		break
	}
	testkit.WaitFor(t, "mosquitto to listen", 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	return addr, log
}

// TestMosquittoBehindTCPApplication: a message published through the
// gateway by mosquitto_pub reaches mosquitto_sub through the gateway, and a
// device the application refuses never reaches the broker.
func TestMosquittoBehindTCPApplication(t *testing.T) {
	var bins [3]string
	for i, name := range []string{"mosquitto", "mosquitto_pub", "mosquitto_sub"} {
		path, err := exec.LookPath(name)
		if err != nil {
			// Debian installs the broker in /usr/sbin, often not in PATH.
			if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
				path, err = "/usr/sbin/"+name, nil
			}
		}
		if err != nil {
			t.Skipf("%s is not installed (apt-get install mosquitto mosquitto-clients): the real-broker test is skipped", name)
		}
		bins[i] = path
	}
	broker, brokerLog := startMosquitto(t, bins[0], "")

	p := sharedPKI()
	// The application's own server certificate, valid for the name the
	// clients verify; written before the gateway loads its configuration.
	certDir := t.TempDir()
	server := p.inter.MustIssue(pki.Server(mqttDomain))
	if err := server.WriteFiles(filepath.Join(certDir, "mqtt.pem"), filepath.Join(certDir, "mqtt-key.pem"), p.inter); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *cfgParams) {
		c.Edit = func(c *fileConfig) {
			c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-mqtt", PEMFile: "ca-chain.pem",
				AssociatedHostnames: []string{mqttDomain}})
			a := tcpApp("mqtt-broker", mqttDomain, "tcp://"+broker, commonName("sensor-0001"))
			a.Policies[0].Name = "sensor-0001 only"
			a.TLSCertFile, a.TLSKeyFile = filepath.Join(certDir, "mqtt.pem"), filepath.Join(certDir, "mqtt-key.pem")
			c.Applications = append(c.Applications, a)
		}
	})
	proxy := startSOCKS5(t, h.addr)
	writeDevice := func(name string, d *device) (certFile, keyFile string) {
		certFile, keyFile = filepath.Join(h.dir, name+".pem"), filepath.Join(h.dir, name+"-key.pem")
		h.writeFile(name+".pem", pki.ChainPEM(d.cert, p.inter))
		h.writeFile(name+"-key.pem", d.cert.KeyPEM())
		return certFile, keyFile
	}
	goodCert, goodKey := writeDevice("good", p.sensor1)
	badCert, badKey := writeDevice("refused", p.sensor2) // a fleet device the policy does not admit
	tlsArgs := func(cert, key, id string) []string {
		return []string{"-h", mqttDomain, "-p", "8883", "--proxy", "socks5h://" + proxy.ln.Addr().String(),
			"--cafile", filepath.Join(h.dir, "root.pem"),
			"--cert", cert, "--key", key, "-i", id, "-V", "mqttv311"}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := exec.CommandContext(ctx, bins[2], append(tlsArgs(goodCert, goodKey, "fleetgate-sub"),
		"-t", "fleet/telemetry", "-C", "1", "-W", "15", "-q", "1")...)
	var subOut, subErr strings.Builder
	sub.Stdout, sub.Stderr = &subOut, &subErr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Wait() }()
	testkit.WaitFor(t, "the subscription to reach the broker", 15*time.Second, func() bool {
		return strings.Contains(brokerLog.String(), "Sending SUBACK to fleetgate-sub")
	})

	pub := exec.CommandContext(ctx, bins[1], append(tlsArgs(goodCert, goodKey, "fleetgate-pub"),
		"-t", "fleet/telemetry", "-m", "temperature=21.5", "-q", "1")...)
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub through the gateway: %v\n%s", err, out)
	}
	select {
	case err := <-subDone:
		if err != nil {
			t.Fatalf("mosquitto_sub: %v\n%s", err, subErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("mosquitto_sub did not finish")
	}
	if got := strings.TrimSpace(subOut.String()); got != "temperature=21.5" {
		t.Errorf("mosquitto_sub received %q, want the published message", got)
	}
	if !strings.Contains(brokerLog.String(), "as fleetgate-pub") {
		t.Error("the broker did not log the publisher's connection")
	}

	// The refused device: its TLS session ends with bad_certificate, and the
	// broker never hears of it (the gateway does not dial the origin).
	// Under TLS 1.3 the client's handshake is over before the gateway reads
	// its certificate, so mosquitto_pub sees the alert as a lost connection;
	// under TLS 1.2 the alert ends the handshake: a TLS error. (-d makes
	// mosquitto_pub print OpenSSL's error, the alert's name.)
	connsBefore := strings.Count(brokerLog.String(), "New connection from")
	for _, tc := range []struct{ version, want string }{
		{"tlsv1.3", "connection was lost"},
		{"tlsv1.2", "bad certificate"},
	} {
		bad := exec.CommandContext(ctx, bins[1], append(tlsArgs(badCert, badKey, "fleetgate-refused"),
			"--tls-version", tc.version, "-d", "-t", "fleet/telemetry", "-m", "should not arrive", "-q", "1")...)
		out, err := bad.CombinedOutput()
		if err == nil {
			t.Fatalf("mosquitto_pub (%s) with a refused certificate succeeded:\n%s", tc.version, out)
		}
		if !strings.Contains(strings.ToLower(string(out)), tc.want) {
			t.Errorf("the refused publisher (%s) failed with %v: %s; want %q", tc.version, err, out, tc.want)
		}
	}
	testkit.WaitFor(t, "the gateway's refusal line", 5*time.Second, func() bool {
		for line := range strings.SplitSeq(h.logs.String(), "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "tcp connection refused" &&
				l["app"] == "mqtt-broker" && l["cert_cn_presented"] == "sensor-0002" {
				return true
			}
		}
		return false
	})
	time.Sleep(200 * time.Millisecond) // what would have reached the broker has
	log := brokerLog.String()
	if n := strings.Count(log, "New connection from"); n != connsBefore {
		t.Errorf("the broker saw %d new connections during the refused publish", n-connsBefore)
	}
	if strings.Contains(log, "fleetgate-refused") || strings.Contains(log, "should not arrive") {
		t.Error("the refused device reached the broker")
	}
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	for _, name := range proxy.names {
		if name != mqttDomain {
			t.Errorf("a client asked the proxy for %q, want %q (the name it verifies and sends as SNI)", name, mqttDomain)
		}
	}
}
