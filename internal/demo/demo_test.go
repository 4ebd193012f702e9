package demo

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/configs"
)

func TestPrepareCreatesOnceAndLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo") // does not exist yet
	created, err := Prepare(dir)
	if err != nil || !created {
		t.Fatalf("first Prepare: created %v, err %v", created, err)
	}
	files := []string{configs.DemoCAChain, RootCA, configs.DemoDevicesCert, configs.DemoDevicesKey,
		configs.DemoAppCert, configs.DemoAppKey, configs.DemoMQTTCert, configs.DemoMQTTKey, configs.DemoTokenKey,
		configs.DemoConsoleCert, configs.DemoConsoleKey, configs.DemoIdPSecret, IdPCert, IdPKey, LaptopCert, LaptopKey, LaptopP12}
	for _, d := range Devices {
		files = append(files, DeviceCert(d), DeviceKey(d))
	}
	if got := Files(); len(got) != len(files) {
		t.Errorf("Files() = %v, want the %d files %v", got, len(files), files)
	}
	before := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("missing %s: %v", f, err)
		}
		before[f] = b
	}
	for _, f := range []string{configs.DemoTokenKey, DeviceKey("sensor-0001"), configs.DemoAppKey, configs.DemoIdPSecret, IdPKey, LaptopKey, LaptopP12} {
		if fi, _ := os.Stat(filepath.Join(dir, f)); fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is readable by others: %v", f, fi.Mode())
		}
	}

	// The embedded demo configuration loads against it.
	cfg, err := configs.Parse("demo.toml", configs.Demo(), dir)
	if err != nil {
		t.Fatalf("the demo configuration does not load: %v", err)
	}
	if len(cfg.Applications) != 4 {
		t.Fatalf("%d demo applications, want 4", len(cfg.Applications))
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}

	// Device certificates chain to the root that the curl commands trust.
	rootPEM, _ := pem.Decode(before[RootCA])
	root, err := x509.ParseCertificate(rootPEM.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range Devices {
		chain := parseChain(t, before[DeviceCert(d)])
		if len(chain) != 2 || chain[0].Subject.CommonName != d {
			t.Fatalf("%s: chain of %d, leaf %q", d, len(chain), chain[0].Subject.CommonName)
		}
		inter := x509.NewCertPool()
		inter.AddCert(chain[1])
		roots := x509.NewCertPool()
		roots.AddCert(root)
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s does not verify for client auth: %v", d, err)
		}
	}

	// Each server certificate covers its domain and chains to the root.
	for _, s := range []struct{ domain, cert string }{
		{configs.DemoDevicesDomain, configs.DemoDevicesCert},
		{configs.DemoAppDomain, configs.DemoAppCert},
		{configs.DemoMQTTDomain, configs.DemoMQTTCert},
		{configs.DemoConsoleDomain, configs.DemoConsoleCert},
		{configs.DemoIdPDomain, IdPCert},
	} {
		chain := parseChain(t, before[s.cert])
		if len(chain) != 2 {
			t.Fatalf("%s: chain of %d", s.cert, len(chain))
		}
		inter := x509.NewCertPool()
		inter.AddCert(chain[1])
		roots := x509.NewCertPool()
		roots.AddCert(root)
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: s.domain, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("%s does not verify for %s: %v", s.cert, s.domain, err)
		}
	}

	// A second start reuses the folder untouched.
	created, err = Prepare(dir)
	if err != nil || created {
		t.Fatalf("second Prepare: created %v, err %v", created, err)
	}
	for f, b := range before {
		if now, _ := os.ReadFile(filepath.Join(dir, f)); string(now) != string(b) {
			t.Errorf("%s changed on the second start", f)
		}
	}
}

// TestPrepareCompletesAnOlderFolder: a folder made before the mqtt domain
// (or partly deleted) lacks a file; Prepare creates the PKI anew so that
// the demo configuration loads.
func TestPrepareCompletesAnOlderFolder(t *testing.T) {
	dir := t.TempDir()
	if _, err := Prepare(dir); err != nil {
		t.Fatal(err)
	}
	oldRoot, _ := os.ReadFile(filepath.Join(dir, RootCA))
	for _, f := range []string{configs.DemoMQTTCert, configs.DemoMQTTKey} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := configs.Parse(configs.DemoName, configs.Demo(), dir); err == nil {
		t.Fatal("the demo configuration loads without the mqtt certificate")
	}
	created, err := Prepare(dir)
	if err != nil || !created {
		t.Fatalf("Prepare on an incomplete folder: created %v, err %v", created, err)
	}
	if _, err := configs.Parse(configs.DemoName, configs.Demo(), dir); err != nil {
		t.Fatalf("the demo configuration does not load after Prepare: %v", err)
	}
	// Every file is new: certificates from the new intermediate only.
	if newRoot, _ := os.ReadFile(filepath.Join(dir, RootCA)); string(newRoot) == string(oldRoot) {
		t.Error("the root was kept, but the mqtt certificate cannot have been issued by it")
	}
}

func parseChain(t *testing.T, rest []byte) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return chain
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
}

func TestSteps(t *testing.T) {
	tests := []struct {
		name, dir, listen string
		wantHostPort      string
	}{
		{"loopback", "/tmp/demo", "127.0.0.1:8443", ":8443:127.0.0.1"},
		{"all interfaces", "/tmp/demo", ":9443", ":9443:127.0.0.1"},
		{"unspecified address", "/tmp/demo", "0.0.0.0:10443", ":10443:127.0.0.1"},
		{"bad listen falls back", "/tmp/demo", "nonsense", ":8443:127.0.0.1"},
		{"folder with a space", "/tmp/my demo", "127.0.0.1:8443", ":8443:127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			steps := Steps(tc.dir, tc.listen)
			if len(steps) != 5 {
				t.Fatalf("%d steps, want 5", len(steps))
			}
			want := []int{403, 200, 403, 200, 200}
			for i, s := range steps {
				if s.Status != want[i] {
					t.Errorf("step %d %q: status %d, want %d", i, s.Title, s.Status, want[i])
				}
				if !strings.Contains(s.Title, "→ "+strconv.Itoa(s.Status)) {
					t.Errorf("step %d: title %q does not name its status", i, s.Title)
				}
				if !strings.HasPrefix(s.Cmd, "curl ") || !strings.Contains(s.Cmd, tc.wantHostPort) || !strings.Contains(s.Cmd, "--cacert") {
					t.Errorf("step %d: command %q", i, s.Cmd)
				}
				if strings.Contains(tc.dir, " ") && !strings.Contains(s.Cmd, "'"+tc.dir+"/") {
					t.Errorf("step %d: a folder with a space is not quoted: %q", i, s.Cmd)
				}
			}
			if !strings.Contains(steps[3].Cmd, " -c ") || !strings.Contains(steps[4].Cmd, " -b ") || strings.Contains(steps[4].Cmd, "--cert") {
				t.Errorf("the cookie steps do not save then send the jar: %q / %q", steps[3].Cmd, steps[4].Cmd)
			}
		})
	}
}

func TestMQTTSteps(t *testing.T) {
	tests := []struct {
		name, dir, listen string
		port, hosts       string
	}{
		{"loopback", "/tmp/demo", "127.0.0.1:8443", "8443", "127.0.0.1 mqtt.fleet.test"},
		{"all interfaces", "/tmp/demo", ":9443", "9443", "127.0.0.1 mqtt.fleet.test"},
		{"another loopback address", "/tmp/demo", "127.0.0.2:8443", "8443", "127.0.0.2 mqtt.fleet.test"},
		{"bad listen falls back", "/tmp/demo", "nonsense", "8443", "127.0.0.1 mqtt.fleet.test"},
		{"folder with a space", "/tmp/my demo", "127.0.0.1:8443", "8443", "127.0.0.1 mqtt.fleet.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MQTTHostsLine(tc.listen); got != tc.hosts {
				t.Errorf("hosts line %q, want %q", got, tc.hosts)
			}
			steps := MQTTSteps(tc.dir, tc.listen)
			if len(steps) != 5 {
				t.Fatalf("%d steps, want 5", len(steps))
			}
			wantExit := []int{0, 0, 2, 0x85, 5}
			for i, s := range steps {
				if s.Exit != wantExit[i] {
					t.Errorf("step %d %q: exit %d, want %d", i, s.Title, s.Exit, wantExit[i])
				}
				if !strings.Contains(s.Title, " → ") {
					t.Errorf("step %d: title %q does not name its outcome", i, s.Title)
				}
				bin, _, _ := strings.Cut(s.Cmd, " ")
				if bin != "mosquitto_pub" && bin != "mosquitto_sub" {
					t.Errorf("step %d: %q is not a mosquitto client", i, s.Cmd)
				}
				if !strings.Contains(s.Cmd, " -h mqtt.fleet.test -p "+tc.port+" ") || !strings.Contains(s.Cmd, " --cafile ") {
					t.Errorf("step %d: command %q", i, s.Cmd)
				}
				if strings.Contains(tc.dir, " ") && !strings.Contains(s.Cmd, "'"+tc.dir+"/") {
					t.Errorf("step %d: a folder with a space is not quoted: %q", i, s.Cmd)
				}
				if (s.Exit != 0) != (len(s.Output) == 2 && strings.HasPrefix(s.Output[0], "Connection error: ")) {
					t.Errorf("step %d: exit %d with output %q", i, s.Exit, s.Output)
				}
			}
			sensor := "--cert " + shellQuote(filepath.Join(tc.dir, DeviceCert("sensor-0001")))
			for i, want := range []struct {
				has, hasNot []string
			}{
				{[]string{sensor, " -i sensor-0001 ", " -r", " -t " + MQTTTopic + " -m " + MQTTReading}, []string{"-V"}},
				{[]string{sensor, " -i sensor-0001 ", " -t 'devices/#'", " -C 1"}, nil},
				{[]string{sensor, " -i someone-else "}, []string{"-V"}},
				{[]string{sensor, " -i someone-else ", " -V mqttv5 "}, nil},
				{[]string{" -i sensor-0001 "}, []string{"--cert", "--key"}},
			} {
				for _, h := range want.has {
					if !strings.Contains(steps[i].Cmd, h) {
						t.Errorf("step %d: %q lacks %q", i, steps[i].Cmd, h)
					}
				}
				for _, h := range want.hasNot {
					if strings.Contains(steps[i].Cmd, h) {
						t.Errorf("step %d: %q has %q", i, steps[i].Cmd, h)
					}
				}
			}
			if len(steps[1].Output) != 1 || steps[1].Output[0] != MQTTTopic+" "+MQTTReading {
				t.Errorf("the subscriber's output: %q", steps[1].Output)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain path", "/tmp/demo/pki/ca.pem", "/tmp/demo/pki/ca.pem"},
		{"space", "/tmp/a b", "'/tmp/a b'"},
		{"single quote", "/tmp/it's", `'/tmp/it'\''s'`},
		{"dollar", "/tmp/$HOME", "'/tmp/$HOME'"},
		{"empty", "", "''"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := shellQuote(tc.in); got != tc.want {
				t.Fatalf("shellQuote(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestEchoHandler(t *testing.T) {
	// header.payload.signature with payload {"common_name":"sensor-0001"}
	tok := "eyJhbGciOiJFUzI1NiJ9.eyJjb21tb25fbmFtZSI6InNlbnNvci0wMDAxIn0.c2ln"
	tests := []struct {
		name   string
		header map[string]string
		claims map[string]any
	}{
		{"with an assertion", map[string]string{"Cf-Access-Jwt-Assertion": tok, "X-Forwarded-For": "127.0.0.1"}, map[string]any{"common_name": "sensor-0001"}},
		{"without", map[string]string{"X-A": "1"}, nil},
		{"malformed assertion", map[string]string{"Cf-Access-Jwt-Assertion": "nope"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "http://devices.fleet.test/a/b?c=d", strings.NewReader("x"))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			EchoHandler().ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("%d %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			var e Echo
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			if e.Method != "POST" || e.Path != "/a/b?c=d" || e.Host != "devices.fleet.test" {
				t.Errorf("echo %+v", e)
			}
			for k, v := range tc.header {
				if e.Headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, e.Headers[k], v)
				}
			}
			if len(e.Claims) != len(tc.claims) || (tc.claims != nil && e.Claims["common_name"] != tc.claims["common_name"]) {
				t.Errorf("claims %v, want %v", e.Claims, tc.claims)
			}
		})
	}
}

func TestStartOrigin(t *testing.T) {
	srv, err := StartOrigin("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := StartOrigin("256.0.0.1:1"); err == nil {
		t.Error("StartOrigin accepted a bad address")
	}
}
