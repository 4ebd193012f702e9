package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/gateway"
	"github.com/fleetgate/fleetgate/internal/pki"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	good := filepath.Join(dir, "good.toml")
	writeServeConfig(t, good, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	code, out, errOut := runInProcess(t, "check", "-c", good)
	if code != 0 {
		t.Fatalf("good file: exit %d\n%s%s", code, out, errOut)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], good+": ") || !strings.Contains(lines[0], "ok: 2 applications, 1 client CAs") ||
		lines[1] != `application "devices" (http, devices.fleet.test): selectors common_name` ||
		lines[2] != `application "app" (http, app.fleet.test): selectors valid_certificate` {
		t.Fatalf("good file: want a summary and one line per application, got %q", out)
	}

	badFile := `[gateway]
listen = "nope"
max_body_bytes = "lots"
lisen = "x"

[tokens]
signing_key_file = "missing.pem"

[[applications]]
name = "a"
domain = "http://x"
origin = "ftp://y"
`
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(badFile), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runInProcess(t, "check", "-c", bad)
	if code != 1 {
		t.Fatalf("bad file: exit %d, want 1\n%s%s", code, out, errOut)
	}
	if out != "" {
		t.Errorf("bad file: stdout %q, want nothing", out)
	}
	line := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `(:\d+)?: [a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: \S.*$`)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	for _, l := range lines {
		if !line.MatchString(l) && !strings.HasPrefix(l, "warning: ") {
			t.Errorf("not a file:line: path: msg line: %q", l)
		}
	}
	for _, want := range []string{
		":2: gateway.listen: ",
		":3: gateway.max_body_bytes: ",
		":4: gateway.lisen: ",
		":7: tokens.signing_key_file: ",
		":11: applications[0].domain: ",
		":12: applications[0].origin: ",
	} {
		if !strings.Contains(errOut, bad+want) {
			t.Errorf("check does not report %q", bad+want)
		}
	}
	if len(lines) < 6 {
		t.Errorf("check printed %d problems, want every one (at least 6):\n%s", len(lines), errOut)
	}
	missing := filepath.Join(dir, "missing.toml")
	if code, _, errOut := runInProcess(t, "check", "-c", missing); code != 1 || !strings.Contains(errOut, missing) {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

// TestCheckReportsSelectorsAndLists: check names, per application, the
// selectors and lists its policies use, and how many entries each list has.
func TestCheckReportsSelectorsAndLists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	file := filepath.Join(dir, "lists.toml")
	writeServeConfig(t, file, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var q strings.Builder
	q.WriteString("# quarantined\n")
	for i := range 1500 {
		fmt.Fprintf(&q, "sensor-%04d\n", 5000+i)
	}
	if err := os.WriteFile(filepath.Join(dir, "quarantine.txt"), []byte(q.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(data), `include = [{ valid_certificate = true }]`,
		`include = [{ valid_certificate = true }, { common_name_pattern = "sensor-*" }]
exclude = [{ list = "quarantine" }, { list = "recalled" }]`, 1) + `
[[lists]]
name = "quarantine"
kind = "common_name"
file = "quarantine.txt"

[[lists]]
name = "recalled"
kind = "serial"
values = ["4f:1a:09", "4F1A0A"]
`
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runInProcess(t, "check", "-c", file)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		`application "devices" (http, devices.fleet.test): selectors common_name` + "\n",
		`application "app" (http, app.fleet.test): selectors common_name_pattern, list, valid_certificate; lists quarantine (1500 entries), recalled (2 entries)` + "\n",
		`list "quarantine": common_name, 1500 entries (quarantine.txt)` + "\n",
		`list "recalled": serial, 2 entries (inline values)` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckRefusesARepeatedTokenKey: serve refuses a key set that holds one
// key twice (the signing key again in previous_key_files, under its own or
// another file name, or one previous key twice), so check must refuse it
// too, naming the entry and its line.
func TestCheckRefusesARepeatedTokenKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	file := filepath.Join(dir, "fleetgate.toml")
	writeServeConfig(t, file, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	base, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tokenKey, err := os.ReadFile(filepath.Join(dir, "pki", "token.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "copy.pem"), tokenKey, 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := pki.NewKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(filepath.Join(dir, "old.pem"), old); err != nil {
		t.Fatal(err)
	}
	line := strings.Count(string(base[:strings.Index(string(base), "signing_key_file")]), "\n") + 2
	for _, tc := range []struct {
		name, previous, want string
	}{
		{"the signing key file", `["pki/token.pem"]`, fmt.Sprintf(":%d: tokens.previous_key_files[0]: pki/token.pem holds the same key as tokens.signing_key_file", line)},
		{"a copy of the signing key", `["copy.pem"]`, fmt.Sprintf(":%d: tokens.previous_key_files[0]: copy.pem holds the same key as tokens.signing_key_file", line)},
		{"one previous key twice", `["old.pem", "old.pem"]`, fmt.Sprintf(":%d: tokens.previous_key_files[1]: old.pem holds the same key as tokens.previous_key_files[0]", line)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			src := strings.Replace(string(base), `signing_key_file = "pki/token.pem"`, `signing_key_file = "pki/token.pem"`+"\nprevious_key_files = "+tc.previous, 1)
			if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runInProcess(t, "check", "-c", cfg)
			if code != 1 || !strings.Contains(errOut, cfg+tc.want) {
				t.Fatalf("check: exit %d, want 1 and %q\n%s%s", code, cfg+tc.want, out, errOut)
			}
			// serve refuses it as well (before it opens a socket).
			if _, err := gateway.New(gateway.Options{Load: func() (*configs.Config, error) { return loadOptions.Load(cfg) }}); err == nil {
				t.Fatal("serve accepts what check refuses")
			}
		})
	}
}

// TestCheckWithoutSigningKey: as the README and configs/fleetgate.toml say,
// a file with only [[client_cas]] and [[applications]] works: check accepts
// it with a warning that tokens are signed with a key made at start.
func TestCheckWithoutSigningKey(t *testing.T) {
	t.Parallel()
	file := writeEditedConfig(t, "[tokens]\nsigning_key_file = \"pki/token.pem\"\n", "")
	code, out, errOut := runInProcess(t, "check", "-c", file)
	if code != 0 || !strings.Contains(out, "1 warnings") || !strings.Contains(errOut, "warning: "+file+": tokens: no signing_key_file: tokens are signed with a key generated at start") {
		t.Fatalf("check: exit %d, want 0 and the ephemeral key warning\n%s%s", code, out, errOut)
	}
	// serve reads the file the same way.
	if cfg, err := loadOptions.Load(file); err != nil || !cfg.Tokens.EphemeralKey {
		t.Fatalf("serve's load: %v", err)
	}
}

// TestCheckPrintsWarningsWithErrors: check prints every error and every
// warning, as its usage and docs/commands.md say, also when the file has
// errors: a warning (such as a client CA about to expire) is what an
// operator fixing the errors needs to see as well.
func TestCheckPrintsWarningsWithErrors(t *testing.T) {
	t.Parallel()
	// No signing key: a warning. A bad listen address: an error.
	file := writeEditedConfig(t, "[tokens]\nsigning_key_file = \"pki/token.pem\"\n", "",
		`listen = "127.0.0.1:8443"`, `listen = "nope"`)
	code, _, errOut := runInProcess(t, "check", "-c", file)
	if code != 1 || !strings.Contains(errOut, file+":2: gateway.listen: ") {
		t.Fatalf("check: exit %d, want 1 and the listen error\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "warning: "+file+": tokens: no signing_key_file") {
		t.Errorf("check does not print the warning of a file that also has errors:\n%s", errOut)
	}
}

// writeEditedConfig writes a PKI and a serve configuration into a temporary
// folder, replaces in the configuration's text each old with its new (pairs
// of arguments), and returns the file's path. A replacement that finds
// nothing fails the test.
func writeEditedConfig(t *testing.T, oldNew ...string) string {
	t.Helper()
	dir := t.TempDir()
	runPKI(t, dir, "pki", "sensor-0001")
	file := filepath.Join(dir, "fleetgate.toml")
	writeServeConfig(t, file, serveParams{Listen: "127.0.0.1:8443", Admin: "127.0.0.1:9443", Origin: "http://127.0.0.1:9000"})
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(src, oldNew[i]) {
			t.Fatalf("the serve configuration has no %q to replace", oldNew[i])
		}
		src = strings.Replace(src, oldNew[i], oldNew[i+1], 1)
	}
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}
