package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/policy"
)

// TestTokenService: the printed secret hashes to the printed
// client_secret_sha256, the block loads as configuration, and the secret
// itself is not in the block.
func TestTokenService(t *testing.T) {
	t.Parallel()
	code, out, errOut := runInProcess(t, "token", "service", "-name", "backend-job", "-duration", "720h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	id := regexp.MustCompile(`(?m)^CF-Access-Client-Id: ([0-9a-f]{32}\.access)$`).FindStringSubmatch(out)
	secret := regexp.MustCompile(`(?m)^CF-Access-Client-Secret: ([0-9a-f]{64})$`).FindStringSubmatch(out)
	if id == nil || secret == nil {
		t.Fatalf("no id or secret in:\n%s", out)
	}
	block := out[strings.Index(out, "[[service_tokens]]"):]
	if strings.Contains(block, secret[1]) {
		t.Fatal("the TOML block holds the secret")
	}
	sum := sha256.Sum256([]byte(secret[1]))
	if !strings.Contains(block, `client_secret_sha256 = "`+hex.EncodeToString(sum[:])+`"`) || !strings.Contains(block, `client_id = "`+id[1]+`"`) {
		t.Fatalf("block:\n%s", block)
	}
	// The block is valid configuration, and the secret checks out against it.
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	file := filepath.Join(dir, "f.toml")
	writeServeConfig(t, file, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	data, _ := os.ReadFile(file)
	if err := os.WriteFile(file, append(data, "\n"+block...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	st, err := policy.NewServiceTokens(cfg.ServiceTokens)
	if err != nil {
		t.Fatal(err)
	}
	tok, why := st.Check([]byte(id[1]), []byte(secret[1]), time.Now())
	if tok == nil || tok.Name != "backend-job" || why != "" {
		t.Fatalf("the printed credentials do not check out: %q", why)
	}
	if left := time.Until(tok.Expires); left < 719*time.Hour || left > 721*time.Hour {
		t.Errorf("expires in %v, want 720h", left)
	}
	// Two runs never print the same credentials.
	_, out2, _ := runInProcess(t, "token", "service", "-name", "backend-job")
	if strings.Contains(out2, secret[1]) || strings.Contains(out2, id[1]) {
		t.Error("a second token repeats the first's id or secret")
	}
	if code, _, _ := runInProcess(t, "token", "service"); code != 2 {
		t.Errorf("no -name: exit %d, want 2", code)
	}
	if code, _, _ := runInProcess(t, "token", "service", "-name", `a"b`); code != 2 {
		t.Errorf("quote in -name: exit %d, want 2", code)
	}
	// Not UTF-8 (a Latin-1 "ü"): the block would not load as TOML.
	if code, out, _ := runInProcess(t, "token", "service", "-name", "m\xfcller"); code != 2 || out != "" {
		t.Errorf("-name not UTF-8: exit %d, stdout %q; want 2 and nothing printed", code, out)
	}
}
