package gateway

// TLS posture through the real listener: TLS 1.2 and 1.3
// only; in TLS 1.2 only ECDHE key exchange with AEAD ciphers; the server
// certificate chain served complete; renegotiation refused; no compression.
// Go's client covers what it can offer; openssl (skipped when absent) offers
// what Go's client cannot: DHE, every other suite at once, renegotiation.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// postureDial completes a handshake with conf (SNI app.fleet.test, device
// sensor-0001) and returns the connection state, or the handshake error.
func postureDial(h *harness, mod func(*tls.Config)) (tls.ConnectionState, error) {
	conf := h.tlsConfig(hApp, h.pki.sensor1)
	conf.MinVersion = 0
	mod(conf)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", h.addr, conf)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

// rsaVariant starts a second gateway whose server certificate has an RSA
// key: with it, the RSA key-exchange suites would be possible, so refusing
// them is the configuration's doing, not the key's.
func rsaVariant(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	p := h.pki
	rsaServer := p.inter.MustIssue(func() pki.Options {
		o := pki.Server(harnessDomains...)
		o.KeyType = pki.RSA2048
		return o
	}())
	if err := rsaServer.WriteFiles(filepath.Join(h.dir, "server-rsa.pem"), filepath.Join(h.dir, "server-rsa-key.pem"), p.inter); err != nil {
		t.Fatal(err)
	}
	return h.variantWith(t, func(c *fileConfig) {
		for i := range c.Applications {
			c.Applications[i].TLSCertFile, c.Applications[i].TLSKeyFile = "server-rsa.pem", "server-rsa-key.pem"
		}
	})
}

func TestTLSVersions(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name    string
		version uint16
		ok      bool
	}{
		{"TLS 1.0", tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := postureDial(h, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tc.version, tc.version })
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.ok && st.Version != tc.version:
				t.Fatalf("negotiated %s", tls.VersionName(st.Version))
			case !tc.ok && err == nil:
				t.Fatalf("negotiated %s", tls.VersionName(st.Version))
			case !tc.ok && !strings.Contains(err.Error(), "protocol version"):
				t.Errorf("refused, but not for the version: %v", err)
			}
		})
	}
	// A client offering everything gets TLS 1.3.
	if st, err := postureDial(h, func(c *tls.Config) { c.MinVersion = tls.VersionTLS10 }); err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("a client offering 1.0 to 1.3: %s, %v", tls.VersionName(st.Version), err)
	}
}

// allowedTLS12 reports whether a TLS 1.2 suite has ECDHE key exchange and an
// AEAD cipher.
func allowedTLS12(id uint16) bool {
	name := tls.CipherSuiteName(id)
	return strings.HasPrefix(name, "TLS_ECDHE_") && (strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305"))
}

func TestTLS12CipherSuites(t *testing.T) {
	ecdsa := newHarness(t)
	rsa := rsaVariant(t)
	var every []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if slicesContains(s.SupportedVersions, tls.VersionTLS12) {
			every = append(every, s.ID)
		}
	}
	for _, tc := range []struct {
		name string
		h    *harness
		ecdh string // the suites' key-exchange signature: "ECDSA" or "RSA"
	}{{"ECDSA certificate", ecdsa, "_ECDSA_"}, {"RSA certificate", rsa, "_RSA_"}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range every {
				name := tls.CipherSuiteName(id)
				if strings.HasPrefix(name, "TLS_ECDHE_") && !strings.Contains(name, tc.ecdh) {
					continue // needs the other certificate type
				}
				st, err := postureDial(tc.h, func(c *tls.Config) {
					c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{id}
				})
				allowed := allowedTLS12(id)
				switch {
				case allowed != (err == nil):
					t.Errorf("%s: allowed %v, handshake error %v", name, allowed, err)
				case err != nil && !strings.Contains(err.Error(), "remote error"):
					t.Errorf("%s: the client, not the server, refused: %v", name, err)
				case err == nil && st.CipherSuite != id:
					t.Errorf("%s: negotiated %s", name, tls.CipherSuiteName(st.CipherSuite))
				}
			}
			// Offered everything, the server picks an allowed suite.
			st, err := postureDial(tc.h, func(c *tls.Config) { c.MaxVersion, c.CipherSuites = tls.VersionTLS12, every })
			if err != nil || !allowedTLS12(st.CipherSuite) {
				t.Fatalf("offered every suite: %s, %v", tls.CipherSuiteName(st.CipherSuite), err)
			}
		})
	}
	t.Run("openssl", func(t *testing.T) {
		openssl := opensslPath(t)
		for _, tc := range []struct {
			name, cipher string
			ok           bool
		}{
			{"DHE key exchange with AES-GCM", "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305", false},
			{"RSA key exchange", "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES128-SHA", false},
			{"every suite but ECDHE with AEAD", "ALL:COMPLEMENTOFALL:!ECDHE+AESGCM:!ECDHE+CHACHA20:@SECLEVEL=0", false},
			{"ECDHE with AES-GCM", "ECDHE-RSA-AES128-GCM-SHA256", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, ok := opensslConnect(t, openssl, rsa, "-tls1_2", "-cipher", tc.cipher)
				if ok != tc.ok {
					t.Fatalf("handshake succeeded: %v, want %v\n%s", ok, tc.ok, out)
				}
			})
		}
	})
}

func slicesContains(s []uint16, v uint16) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestServerChainComplete: the gateway sends the leaf and the intermediate
// of server.pem, so a device that trusts only the root verifies it.
func TestServerChainComplete(t *testing.T) {
	h := newHarness(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		st, err := postureDial(h, func(c *tls.Config) { c.MinVersion, c.MaxVersion = v, v })
		if err != nil {
			t.Fatalf("%s: %v", tls.VersionName(v), err) // the client trusts only the root
		}
		got := st.PeerCertificates
		if len(got) != 2 || !bytes.Equal(got[0].Raw, h.pki.server.DER) || !bytes.Equal(got[1].Raw, h.pki.inter.DER) {
			var names []string
			for _, c := range got {
				names = append(names, c.Subject.CommonName)
			}
			t.Fatalf("%s: the server sent %v, want [leaf, Fleet Intermediate]", tls.VersionName(v), names)
		}
		if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) != 3 {
			t.Fatalf("%s: verified chains %v", tls.VersionName(v), st.VerifiedChains)
		}
	}
}

// TestNoCompression: offered DEFLATE next to null, a TLS 1.2 server hello
// selects null; a TLS 1.3 ClientHello offering it is refused
// (illegal_parameter, RFC 8446 section 4.1.2). openssl agrees.
func TestNoCompression(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name    string
		version uint16
	}{{"TLS 1.2", tls.VersionTLS12}, {"TLS 1.3", tls.VersionTLS13}} {
		t.Run(tc.name, func(t *testing.T) {
			conf := h.tlsConfig(hApp, h.pki.sensor1)
			conf.MinVersion, conf.MaxVersion = tls.VersionTLS12, tc.version
			hello := withDeflate(t, captureHello(t, conf))
			c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			typ, body := readRecord(t, bufio.NewReader(c))
			if tc.version == tls.VersionTLS13 {
				// alert(21), fatal(2), illegal_parameter(47)
				if typ != 21 || len(body) != 2 || body[1] != 47 {
					t.Fatalf("record type %d %x, want an illegal_parameter alert", typ, body)
				}
				return
			}
			if typ != 22 || len(body) < 4 || body[0] != 2 {
				t.Fatalf("record type %d %x, want a ServerHello", typ, body[:min(len(body), 8)])
			}
			method, err := serverHelloCompression(body[4:])
			if err != nil {
				t.Fatal(err)
			}
			if method != 0 {
				t.Fatalf("the server selected compression method %d", method)
			}
		})
	}
	t.Run("openssl", func(t *testing.T) {
		out, ok := opensslConnect(t, opensslPath(t), h, "-tls1_2")
		if !ok || !strings.Contains(out, "Compression: NONE") {
			t.Fatalf("openssl: handshake %v, want Compression: NONE\n%s", ok, out)
		}
	})
}

// captureHello returns the ClientHello record a client with conf sends.
func captureHello(t *testing.T, conf *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_ = tls.Client(b, conf).Handshake()
		_ = b.Close()
	}()
	_, body := readRecord(t, bufio.NewReader(a))
	rec := []byte{22, 3, 1, 0, 0}
	binary.BigEndian.PutUint16(rec[3:], uint16(len(body)))
	return append(rec, body...)
}

// withDeflate rewrites a ClientHello record to offer DEFLATE (1) before
// null (0) compression.
func withDeflate(t *testing.T, rec []byte) []byte {
	t.Helper()
	const hs = 5 + 4 // record and handshake headers
	i := hs + 2 + 32 // client_version, random
	i += 1 + int(rec[i])
	i += 2 + int(binary.BigEndian.Uint16(rec[i:]))
	if rec[i] != 1 || rec[i+1] != 0 {
		t.Fatalf("compression methods %x, want [00]", rec[i:i+2])
	}
	out := append(append(append([]byte{}, rec[:i]...), 2, 1, 0), rec[i+2:]...)
	binary.BigEndian.PutUint16(out[3:], uint16(len(out)-5))
	n := len(out) - hs
	out[6], out[7], out[8] = byte(n>>16), byte(n>>8), byte(n)
	return out
}

// readRecord reads one TLS record.
func readRecord(t *testing.T, r *bufio.Reader) (typ byte, body []byte) {
	t.Helper()
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatalf("read record: %v", err)
	}
	body = make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("read record: %v", err)
	}
	return hdr[0], body
}

// serverHelloCompression returns the compression method of a ServerHello
// body (after its handshake header).
func serverHelloCompression(b []byte) (byte, error) {
	i := 2 + 32 // server_version, random
	if len(b) <= i {
		return 0, errors.New("short ServerHello")
	}
	i += 1 + int(b[i]) + 2 // session_id, cipher_suite
	if len(b) <= i {
		return 0, errors.New("short ServerHello")
	}
	return b[i], nil
}

// TestRenegotiationRefused: a TLS 1.2 client asking to renegotiate (openssl's
// "R") gets an alert and the connection closes; the gateway keeps serving.
func TestRenegotiationRefused(t *testing.T) {
	openssl := opensslPath(t)
	h := newHarness(t)
	stdin, out, done := startSClient(t, openssl, h, "posture", "-tls1_2", "-crlf")
	testkit.WaitFor(t, "the openssl handshake", 10*time.Second, func() bool { return strings.Contains(out.String(), "Verify return code") })
	if !strings.Contains(out.String(), "Secure Renegotiation IS supported") {
		t.Logf("openssl reports no secure renegotiation support:\n%s", out.String())
	}
	_, _ = io.WriteString(stdin, "R\n")
	time.Sleep(200 * time.Millisecond)
	// If renegotiation had been accepted, this request would be answered.
	_, _ = io.WriteString(stdin, "GET / HTTP/1.1\nHost: "+hApp+"\n\n")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the connection stayed open after the renegotiation request:\n%s", out.String())
	}
	o := out.String()
	if !strings.Contains(o, "RENEGOTIATING") {
		t.Skipf("this openssl does not renegotiate on R:\n%s", o)
	}
	if strings.Contains(o, "HTTP/1.1 ") || !strings.Contains(o, "alert") {
		t.Fatalf("want an alert and no answer after the renegotiation request:\n%s", o)
	}
	for _, line := range strings.Split(o, "\n") {
		if strings.Contains(line, "alert") {
			t.Logf("openssl: %s", line)
		}
	}
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != 200 {
		t.Fatalf("after the renegotiation attempt: status %d", r.StatusCode)
	}
}

// startSClient starts an interactive openssl s_client to h (SNI
// app.fleet.test, device sensor-0001, written under name) with extra flags:
// its input, its output and error together, and a channel closed when it
// has exited. The test's cleanup ends it.
func startSClient(t *testing.T, openssl string, h *harness, name string, extra ...string) (io.Writer, *testkit.Buffer, <-chan struct{}) {
	t.Helper()
	cert, key := h.writeDevice(t, h.pki.sensor1, name)
	args := append([]string{"s_client", "-connect", h.addr, "-servername", hApp,
		"-CAfile", filepath.Join(h.dir, "root.pem"), "-cert", cert, "-key", key}, extra...)
	cmd := exec.Command(openssl, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		<-done
	})
	return stdin, out, done
}

// opensslPath returns the openssl binary, skipping the test when there is
// none.
func opensslPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	return p
}

var opensslMu sync.Mutex // one s_client at a time: a busy machine stays responsive

// opensslConnect runs one openssl s_client handshake with h (SNI
// app.fleet.test, device sensor-0001) and extra flags; it reports whether
// the handshake completed, with openssl's output.
func opensslConnect(t *testing.T, openssl string, h *harness, extra ...string) (string, bool) {
	t.Helper()
	opensslMu.Lock()
	defer opensslMu.Unlock()
	cert, key := h.writeDevice(t, h.pki.sensor1, "posture")
	args := append([]string{"s_client", "-connect", h.addr, "-servername", hApp,
		"-CAfile", filepath.Join(h.dir, "root.pem"), "-cert", cert, "-key", key}, extra...)
	cmd := exec.Command(openssl, args...)
	cmd.Stdin = strings.NewReader("") // EOF at once: disconnect after the handshake
	done := make(chan struct{})
	var b []byte
	var err error
	go func() {
		b, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("openssl %v hung:\n%s", extra, b)
	}
	out := string(b)
	// openssl prints the negotiated cipher only when the handshake completed.
	ok := err == nil && strings.Contains(out, "Cipher is ") && !strings.Contains(out, "Cipher is (NONE)")
	return out, ok
}

// TestRefusalEndsTheStreamAtOnce: a client that reads until the end of the
// stream (openssl s_client, its input left open) gets a refusal with input
// left unread (431) and the stream's end at once: the gateway half-closes
// with close_notify behind the answer and lingers only to discard what the
// client still sends, instead of holding the end back for lingerTime.
func TestRefusalEndsTheStreamAtOnce(t *testing.T) {
	openssl := opensslPath(t)
	h := newHarness(t)
	opensslMu.Lock()
	defer opensslMu.Unlock()
	stdin, out, done := startSClient(t, openssl, h, "linger", "-quiet", "-ign_eof")
	// The request goes once the handshake is over (s_client -quiet prints
	// the verification of the chain); its header is over the limit, and a
	// body announced with it is never sent.
	testkit.WaitFor(t, "the openssl handshake", 10*time.Second, func() bool { return strings.Contains(out.String(), "verify return:") })
	_, _ = io.WriteString(stdin, "POST /up HTTP/1.1\r\nHost: "+hApp+"\r\nContent-Length: 1000\r\nX-Big: "+strings.Repeat("a", 6000)+"\r\n\r\n")
	testkit.WaitFor(t, "the 431", 10*time.Second, func() bool { return strings.Contains(out.String(), "HTTP/1.1 431") })
	answered := time.Now()
	select {
	case <-done:
	case <-time.After(lingerTime + 2*time.Second):
		t.Fatalf("openssl is still reading after the 431:\n%s", out.String())
	}
	if d := time.Since(answered); d > lingerTime/2 {
		t.Fatalf("the stream ended %v after the 431; want close_notify right behind it", d)
	}
}
