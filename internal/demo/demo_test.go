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
		configs.DemoAppCert, configs.DemoAppKey, configs.DemoTokenKey}
	for _, d := range Devices {
		files = append(files, DeviceCert(d), DeviceKey(d))
	}
	before := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("missing %s: %v", f, err)
		}
		before[f] = b
	}
	for _, f := range []string{configs.DemoTokenKey, DeviceKey("sensor-0001"), configs.DemoAppKey} {
		if fi, _ := os.Stat(filepath.Join(dir, f)); fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is readable by others: %v", f, fi.Mode())
		}
	}

	// The embedded demo configuration loads against it.
	cfg, err := configs.Parse("demo.toml", configs.Demo(), dir)
	if err != nil {
		t.Fatalf("the demo configuration does not load: %v", err)
	}
	if len(cfg.Applications) != 2 {
		t.Fatalf("%d demo applications, want 2", len(cfg.Applications))
	}

	// Device certificates chain to the root that the curl commands trust.
	rootPEM, _ := pem.Decode(before[RootCA])
	root, err := x509.ParseCertificate(rootPEM.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range Devices {
		rest := before[DeviceCert(d)]
		var chain []*x509.Certificate
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, c)
		}
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
