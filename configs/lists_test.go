package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// withSelector returns base with the first policy's include replaced, and
// more appended (its first line is line 20).
func withSelector(include, more string) func(*testing.T) string {
	return func(t *testing.T) string {
		return edit(t, base, `include = [{ valid_certificate = true }]`, "include = "+include) + more
	}
}

const listsAndTokens = `
[[lists]]
name = "quarantine"
kind = "common_name"
values = ["sensor-0005"]

[[service_tokens]]
name = "backend-job"
client_id = "abc.access"
client_secret_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
expires = "2030-01-01T00:00:00Z"
`

func TestSelectorConfigErrors(t *testing.T) {
	runErrorCases(t, []errorCase{
		{name: "malformed pattern", src: withSelector(`[{ common_name_pattern = "sensor-[" }]`, ""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: common_name_pattern: malformed pattern "sensor-[" (path.Match syntax: *, ?, [a-z], \ escapes)`}},
		{name: "empty pattern", src: withSelector(`[{ common_name_pattern = "" }]`, ""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: common_name_pattern: must not be empty`}},
		{name: "wrong value type", src: withSelector(`[{ san_uri = 7 }]`, ""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: san_uri: want a string, got an integer`}},
		{name: "host bits set", src: withSelector(`[{ ip = ["10.0.0.1/8"] }]`, ""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: ip: [0]: "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)`}},
		{name: "invalid CIDR", src: withSelector(`[{ ip = ["10.0.0.0/8", "2001:db8::/129"] }]`, ""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: ip: [1]: "2001:db8::/129" is not a CIDR such as "10.0.0.0/8" or "2001:db8::/32"`}},
		{name: "unknown list", src: withSelector(`[{ list = "quarantined" }]`, listsAndTokens),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: list: no [[lists]] entry is named "quarantined"`}},
		{name: "unknown client CA", src: withSelector(`[{ client_ca = "other" }]`, ""),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: client_ca: no [[client_cas]] entry is named "other"`}},
		{name: "unknown service token", src: withSelector(`[{ service_token = "backend" }]`, listsAndTokens),
			want: []string{`fleetgate.toml:19: applications[0].policies[0].include[0]: service_token: no [[service_tokens]] entry is named "backend"`}},
		{name: "bad list value", src: appended("[[lists]]\nname = \"fps\"\nkind = \"fingerprint\"\nvalues = [\"abcd\"]\n"),
			want: []string{`fleetgate.toml:23: lists[0].values[0]: fingerprint "abcd" is not 64 hex digits (a SHA-256)`}},
		{name: "bad list kind and no values", src: appended("[[lists]]\nname = \"x\"\nkind = \"cn\"\n"),
			want: []string{
				`fleetgate.toml:20: lists[0]: needs file (one value per line) or values = [...]`,
				`fleetgate.toml:22: lists[0].kind: unknown list kind "cn" (want common_name, fingerprint, serial, san_uri or ip)`,
			}},
		{name: "bad line in a list file", setup: func(t *testing.T, dir string, _ *testPKI) {
			must(t, os.WriteFile(filepath.Join(dir, "ips.txt"), []byte("# lab\n10.0.0.1\n10.0.0.0/8\n"), 0o600))
		}, src: appended("[[lists]]\nname = \"lab\"\nkind = \"ip\"\nfile = \"ips.txt\"\n"),
			want: []string{`fleetgate.toml:23: lists[0].file: ips.txt:3: "10.0.0.0/8" is not an IP address (lists hold exact addresses, not CIDRs)`}},
		{name: "service token problems", src: appended("[[service_tokens]]\nname = \"a\"\nclient_id = \"has space\"\nclient_secret_sha256 = \"secret\"\nexpires = \"tomorrow\"\n"),
			want: []string{
				`fleetgate.toml:22: service_tokens[0].client_id: must be printable ASCII without spaces (it travels in an HTTP header)`,
				`fleetgate.toml:23: service_tokens[0].client_secret_sha256: not 64 hex digits (the SHA-256 of the client secret)`,
				`fleetgate.toml:24: service_tokens[0].expires: "tomorrow" is not an RFC 3339 time such as "2027-06-01T00:00:00Z"`,
			}},
	})
}

func TestServiceTokenSelectorsOnTCP(t *testing.T) {
	dir := t.TempDir()
	writeDemoDir(t, dir)
	data, err := os.ReadFile("fleetgate.toml")
	must(t, err)
	src := string(data)
	// The tcp application's policy: its include is the last one of the file.
	i := strings.LastIndex(src, `include = [{ valid_certificate = true }]`)
	src = src[:i] + `include = [{ any_valid_service_token = true }, { service_token = "backend-job" }]` + src[i+len(`include = [{ valid_certificate = true }]`):]
	_, err = Parse("fleetgate.toml", []byte(src), dir)
	got := problems(t, err)
	if len(got) != 2 || !strings.Contains(got[0], "include[0]: any_valid_service_token: only for http applications") ||
		!strings.Contains(got[1], "include[1]: service_token: only for http applications") {
		t.Errorf("problems: %q", got)
	}
}

func TestListsAndTokensLoad(t *testing.T) {
	dir := t.TempDir()
	writeDemoDir(t, dir)
	must(t, os.WriteFile(filepath.Join(dir, "q.txt"), []byte("# quarantined\nsensor-0007\n\nsensor-0008\n"), 0o600))
	src := edit(t, base, `include = [{ valid_certificate = true }]`,
		`include = [{ list = "quarantine" }, { list = "file" }, { client_ca = "fleet" }, { service_token = "backend-job" }]`) +
		listsAndTokens + "\n[[lists]]\nname = \"file\"\nkind = \"common_name\"\nfile = \"q.txt\"\n"
	cfg, err := Parse("fleetgate.toml", []byte(src), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Lists) != 2 || cfg.Lists[0].Len() != 1 || cfg.Lists[1].Len() != 2 || cfg.Lists[1].Path != filepath.Join(dir, "q.txt") {
		t.Fatalf("lists: %+v", cfg.Lists)
	}
	set := cfg.ListsSet()
	if !set.Get("file").Contains("sensor-0008") || set.Get("quarantine").Kind != policy.ListCommonName {
		t.Error("lists' contents")
	}
	if len(cfg.ServiceTokens) != 1 || cfg.ServiceTokens[0].ClientID != "abc.access" ||
		!cfg.ServiceTokens[0].Expires.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("service tokens: %+v", cfg.ServiceTokens)
	}
	// A TOML date-time works as well as a string.
	src2 := strings.Replace(src, `expires = "2030-01-01T00:00:00Z"`, `expires = 2030-01-01T00:00:00Z`, 1)
	if cfg, err := Parse("fleetgate.toml", []byte(src2), dir); err != nil || cfg.ServiceTokens[0].Expires.Year() != 2030 {
		t.Errorf("TOML date-time: %v", err)
	}
}

func TestClientCANotAssociated(t *testing.T) {
	src := edit(t, base, "associated_hostnames = [\"devices.fleet.test\", \"app.fleet.test\"]\n",
		"associated_hostnames = [\"devices.fleet.test\", \"app.fleet.test\"]\n\n[[client_cas]]\nname = \"other\"\npem_file = \"pki/ca-chain.pem\"\nassociated_hostnames = [\"elsewhere.fleet.test\"]\n")
	src = edit(t, src, `include = [{ valid_certificate = true }]`, `include = [{ client_ca = "other" }]`)
	_, err := parseIn(t, src)
	got := problems(t, err)
	found := false
	for _, p := range got {
		found = found || strings.Contains(p, `client CA "other" is not associated with "devices.fleet.test"`)
	}
	if !found {
		t.Errorf("problems: %q", got)
	}
}

// TestClientCAsShareACertificate: two [[client_cas]] entries holding the same
// certificate load, with a warning naming both.
func TestClientCAsShareACertificate(t *testing.T) {
	src := edit(t, base, "associated_hostnames = [\"devices.fleet.test\", \"app.fleet.test\"]\n",
		"associated_hostnames = [\"devices.fleet.test\", \"app.fleet.test\"]\n\n[[client_cas]]\nname = \"line-b\"\npem_file = \"pki/ca-chain.pem\"\nassociated_hostnames = [\"devices.fleet.test\"]\n")
	cfg, err := parseIn(t, src)
	if err != nil {
		t.Fatal(err)
	}
	w := warnings(cfg.Warnings)
	if !strings.Contains(w, `client CA "line-b" shares a certificate with "fleet"`) || strings.Count(w, "shares a certificate") != 1 {
		t.Errorf("warnings:\n%s", w)
	}
}

// TestServiceTokenClientIDWarning: a client_id that does not end in
// ".access" loads with a warning (an origin could take it for a device's
// common name).
func TestServiceTokenClientIDWarning(t *testing.T) {
	dir := t.TempDir()
	writeDemoDir(t, dir)
	src := base + listsAndTokens
	cfg, err := Parse("fleetgate.toml", []byte(src), dir)
	if err != nil {
		t.Fatal(err)
	}
	if w := warnings(cfg.Warnings); strings.Contains(w, "client_id") {
		t.Errorf("a .access id warned:\n%s", w)
	}
	src = strings.Replace(src, `client_id = "abc.access"`, `client_id = "sensor-0001"`, 1)
	cfg, err = Parse("fleetgate.toml", []byte(src), dir)
	if err != nil {
		t.Fatal(err)
	}
	if w := warnings(cfg.Warnings); !strings.Contains(w, `service_tokens[0].client_id: does not end in ".access"`) {
		t.Errorf("warnings:\n%s", w)
	}
}
