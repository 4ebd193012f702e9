package demo

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
)

// Step is one curl command of the demo walkthrough and the status it gets.
type Step struct {
	Title  string
	Cmd    string
	Status int
}

// Steps returns the walkthrough for a gateway listening on listen with its
// demo files in dir. Each command prints the HTTP status on its last line.
func Steps(dir, listen string) []Step {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		host, port = "127.0.0.1", "8443"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		dir = abs
	}
	f := func(rel string) string { return shellQuote(filepath.Join(dir, rel)) }
	curl := func(domain, extra string) string {
		return fmt.Sprintf("curl -s -o /dev/null -w '%%{http_code}\\n' --resolve %s:%s:%s --cacert %s%s https://%s:%s/",
			domain, port, host, f(RootCA), extra, domain, port)
	}
	cert := func(name string) string {
		return fmt.Sprintf(" --cert %s --key %s", f(DeviceCert(name)), f(DeviceKey(name)))
	}
	jar := f("cookies.txt")
	return []Step{
		{"no certificate → 403", curl("devices.fleet.test", ""), 403},
		{"sensor-0001 on devices.fleet.test (no duration) → 200", curl("devices.fleet.test", cert("sensor-0001")), 200},
		{"sensor-0002 on devices.fleet.test (not in the policy) → 403", curl("devices.fleet.test", cert("sensor-0002")), 403},
		{"sensor-0002 on app.fleet.test → 200 with a CF_Authorization cookie", curl("app.fleet.test", cert("sensor-0002")+" -c "+jar), 200},
		{"the cookie alone on app.fleet.test → 200", curl("app.fleet.test", " -b "+jar), 200},
	}
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:=@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
