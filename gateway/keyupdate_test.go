package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// keyUpdateDevice is a device's TLS 1.3 connection whose writing a
// testkit.KeyUpdater has taken over: it can ask for key updates, which
// crypto/tls's client cannot.
type keyUpdateDevice struct {
	raw net.Conn
	tc  *tls.Conn
	ku  *testkit.KeyUpdater
}

func dialKeyUpdates(t *testing.T, h *harness, sni string, dev *device) *keyUpdateDevice {
	t.Helper()
	var keyLog bytes.Buffer
	conf := h.tlsConfig(sni, dev)
	conf.InsecureSkipVerify = sni != hApp // the harness's certificate names the http applications only
	conf.MinVersion, conf.KeyLogWriter = tls.VersionTLS13, &keyLog
	raw, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
	tc := tls.Client(raw, conf)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	ku, err := testkit.NewKeyUpdater(keyLog.Bytes(), tc.ConnectionState().CipherSuite)
	if err != nil {
		t.Skip(err) // a suite the KeyUpdater does not seal (ChaCha20 on a machine without AES)
	}
	return &keyUpdateDevice{raw: raw, tc: tc, ku: ku}
}

// flood sends rounds of 15 key update requests and one byte of data (the
// most crypto/tls takes without data between: data's bytes in turn, then
// its last again and again), reading nothing, until the gateway closes the
// connection; it returns the bytes it sent.
//
// It first sends one request and data's first byte, and waits for the
// gateway's answer: the client's handshake ends before the gateway's does,
// and a flood sent before the gateway has finished its side of the
// handshake would meet the engine's bound on what a connection may buffer
// meanwhile (closed as an inbound overflow), not the key update check.
func (d *keyUpdateDevice) flood(t *testing.T, data []byte, limit int) int {
	t.Helper()
	out := d.ku.Data(d.ku.KeyUpdate(nil), data[:1])
	if _, err := d.raw.Write(out); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAtLeast(d.raw, make([]byte, 64), 1); err != nil {
		t.Fatalf("no answer to the first key update request: %v", err)
	}
	sent, next := len(out), min(1, len(data)-1)
	for sent < limit {
		out = out[:0]
		for range 20 {
			for range 15 {
				out = d.ku.KeyUpdate(out)
			}
			out = d.ku.Data(out, data[next:next+1])
			next = min(next+1, len(data)-1)
		}
		if _, err := d.raw.Write(out); err != nil {
			return sent // closed: reset or broken pipe
		}
		sent += len(out)
	}
	t.Fatalf("the gateway still took key update requests after %d bytes", sent)
	return sent
}

// TestKeyUpdateFloodClosesRelay: a relayed device that asks for key update
// after key update, with a byte of data between, while reading nothing,
// would have the gateway queue an answer for each without bound; it is
// closed (reason key_updates) long before.
func TestKeyUpdateFloodClosesRelay(t *testing.T) {
	f := newTCPFixture(t)
	d := dialKeyUpdates(t, f.harness, tEcho, f.pki.sensor1)
	sent := d.flood(t, []byte{'x'}, 4<<20)
	t.Logf("closed after %d bytes", sent)
	f.closeLine(t, "tcp-echo", closeKeyUpdates)
}

// TestKeyUpdateFloodClosesHTTP: the same on an HTTP connection, whose
// request bytes go into its pipe: it is closed, and says why.
func TestKeyUpdateFloodClosesHTTP(t *testing.T) {
	h := newHarness(t)
	d := dialKeyUpdates(t, h, hApp, h.pki.sensor1)
	d.flood(t, []byte{' '}, 4<<20) // spaces: never a whole request header
	testkit.WaitFor(t, "the closing line", 10*time.Second, func() bool {
		return strings.Contains(h.logs.String(), "key updates out of proportion")
	})
}

// TestKeyUpdateFloodBeforeCONNECT: the same on an mqtt application's
// connection while the gate still reads the device's CONNECT (sent a byte
// at a time between the requests): it is refused, and says why.
func TestKeyUpdateFloodBeforeCONNECT(t *testing.T) {
	const dom = "ku.mqtt.test"
	down := testkit.FreePort(t) // never dialed: no CONNECT is ever whole
	h := newHarness(t, func(p *cfgParams) {
		p.Edit = func(c *fileConfig) {
			c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "fleet-ku", PEMFile: "ca-chain.pem",
				AssociatedHostnames: []string{dom}})
			a := httpApp("mqtt-ku", dom, "tcp://"+down, admit("devices", anyFleetDevice))
			a.Protocol = "mqtt"
			c.Applications = append(c.Applications, a)
		}
	})
	d := dialKeyUpdates(t, h, dom, h.pki.sensor1)
	d.flood(t, testkit.MQTTConnect(t, 4, strings.Repeat("s", 2000), 30), 4<<20)
	testkit.WaitFor(t, "the refusal line", 10*time.Second, func() bool {
		return strings.Contains(h.logs.String(), `"reason":"too many key update requests"`)
	})
}

// TestKeyUpdatesAnswered: a device that updates its keys now and then, as
// a TLS 1.3 stack may, is answered and served: the relay echoes, and an
// HTTP request after them is answered, each read through the updated keys.
func TestKeyUpdatesAnswered(t *testing.T) {
	t.Run("relay", func(t *testing.T) {
		f := newTCPFixture(t)
		d := dialKeyUpdates(t, f.harness, tEcho, f.pki.sensor1)
		for i := range 50 {
			out := d.ku.KeyUpdate(nil)
			out = d.ku.Data(out, []byte{'a' + byte(i%26)})
			if _, err := d.raw.Write(out); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 1)
			if _, err := io.ReadFull(d.tc, got); err != nil || got[0] != 'a'+byte(i%26) {
				t.Fatalf("echo %d after a key update: %q, %v", i, got, err)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		h := newHarness(t)
		d := dialKeyUpdates(t, h, hApp, h.pki.sensor1)
		var out []byte
		for range 10 {
			out = d.ku.KeyUpdate(out)
		}
		out = d.ku.Data(out, []byte(request("GET", hApp, "/after-updates")))
		if _, err := d.raw.Write(out); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(d.tc), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "/after-updates") {
			t.Fatalf("after 10 key updates: %d %s", resp.StatusCode, body)
		}
	})
}
