package demo

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/oidcop"
)

// Step is one curl command of the demo walkthrough and the status it gets.
type Step struct {
	Title  string
	Cmd    string
	Status int
}

// target returns the address the walkthrough's commands dial for a gateway
// listening on listen: a loopback address for a wildcard one.
func target(listen string) (host, port string) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		host, port = "127.0.0.1", "8443"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return host, port
}

// demoFile returns a function that names a demo file, absolute and quoted
// for the shell.
func demoFile(dir string) func(rel string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return func(rel string) string { return shellQuote(filepath.Join(dir, rel)) }
}

// Steps returns the walkthrough for a gateway listening on listen with its
// demo files in dir. Each command prints the HTTP status on its last line.
func Steps(dir, listen string) []Step {
	host, port := target(listen)
	f := demoFile(dir)
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

// MQTTStep is one mosquitto_pub or mosquitto_sub command of the demo
// walkthrough, with what it prints and its exit status.
type MQTTStep struct {
	Title  string
	Cmd    string
	Output []string // the lines the command prints, stdout then stderr
	Exit   int
}

// MQTTTopic and MQTTReading are what the walkthrough's device publishes.
const (
	MQTTTopic   = "devices/sensor-0001/temperature"
	MQTTReading = "21.5"
)

// MQTTHostsLine is the /etc/hosts line the mosquitto commands need for a
// gateway listening on listen. The clients connect to the name they are
// given and send it as SNI, and have no equivalent of curl's --resolve.
func MQTTHostsLine(listen string) string {
	host, _ := target(listen)
	return host + " " + configs.DemoMQTTDomain
}

// MQTTSteps returns the mqtt walkthrough for a gateway listening on listen
// with its demo files in dir: mosquitto_pub and mosquitto_sub (Debian's
// mosquitto-clients) against mqtt.fleet.test, which binds the client id to
// the certificate's CN. They run one after the other: the publication is
// retained, so the subscriber that follows receives it.
func MQTTSteps(dir, listen string) []MQTTStep {
	_, port := target(listen)
	f := demoFile(dir)
	client := func(bin, device, extra string) string {
		cmd := fmt.Sprintf("%s -h %s -p %s --cafile %s", bin, configs.DemoMQTTDomain, port, f(RootCA))
		if device != "" {
			cmd += fmt.Sprintf(" --cert %s --key %s", f(DeviceCert(device)), f(DeviceKey(device)))
		}
		return cmd + extra
	}
	pub := func(device, id, extra string) string {
		return client("mosquitto_pub", device, extra+" -i "+id+" -t "+MQTTTopic+" -m "+MQTTReading)
	}
	return []MQTTStep{
		{"sensor-0001 publishes as client id sensor-0001 (retained, QoS 1) → accepted, prints nothing",
			pub("sensor-0001", "sensor-0001", " -q 1 -r"), nil, 0},
		{"sensor-0001 subscribes as sensor-0001 → receives the reading, prints it and exits",
			client("mosquitto_sub", "sensor-0001", " -i sensor-0001 -t "+shellQuote("devices/#")+" -v -C 1"),
			[]string{MQTTTopic + " " + MQTTReading}, 0},
		{"sensor-0001 as client id someone-else → refused: CONNACK return code 2, identifier rejected",
			pub("sensor-0001", "someone-else", ""),
			[]string{"Connection error: Connection Refused: identifier rejected.", "Error: The connection was refused."}, 2},
		{"the same in MQTT 5 → refused: CONNACK reason 0x85, client identifier not valid",
			pub("sensor-0001", "someone-else", " -V mqttv5"),
			[]string{"Connection error: Client Identifier not valid", "Error: A network protocol error occurred when communicating with the broker."}, 0x85},
		{"no certificate → refused: CONNACK return code 5, not authorized",
			pub("", "sensor-0001", ""),
			[]string{"Connection error: Connection Refused: not authorised.", "Error: The connection was refused."}, 5},
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

// ConsoleGuide is the walkthrough of console.fleet.test, where people log
// in: what a browser needs, and a curl command that shows the first step.
type ConsoleGuide struct {
	// URL is what the browser opens.
	URL string
	// HostsLines are the /etc/hosts lines the browser needs: it resolves
	// console.fleet.test and idp.fleet.test itself (the gateway reaches
	// the demo IdP on loopback without them).
	HostsLines []string
	// Chromium are the shell commands (libnss3-tools) that import the demo
	// root CA and the laptop's .p12 into ~/.pki/nssdb, the NSS database
	// Chromium and Chrome use on Linux.
	Chromium []string
	// Firefox says where Firefox's settings import the same two files.
	Firefox string
	// User and Password log in at the demo IdP.
	User, Password string
	// Redirect is a curl command, with the laptop's certificate, that
	// prints the status and the Location of the console's answer to a
	// browser without a session: 302 to the demo IdP's authorization
	// endpoint. It prints one line that starts with RedirectPrefix.
	Redirect Step
	// RedirectPrefix is how Redirect's output line starts.
	RedirectPrefix string
}

// Console returns the console walkthrough for a gateway listening on
// listen with its demo files in dir.
func Console(dir, listen string) ConsoleGuide {
	host, port := target(listen)
	f := demoFile(dir)
	idpHost, _, err := net.SplitHostPort(configs.DemoIdPListen)
	if err != nil {
		idpHost = "127.0.0.1"
	}
	hosts := []string{host + " " + configs.DemoConsoleDomain + " " + configs.DemoIdPDomain}
	if idpHost != host {
		hosts = []string{host + " " + configs.DemoConsoleDomain, idpHost + " " + configs.DemoIdPDomain}
	}
	nss := "sql:$HOME/.pki/nssdb"
	return ConsoleGuide{
		URL:        ConsoleURL(listen),
		HostsLines: hosts,
		Chromium: []string{
			"mkdir -p ~/.pki/nssdb && { [ -f ~/.pki/nssdb/cert9.db ] || certutil -d " + nss + " -N --empty-password; }",
			"certutil -d " + nss + " -A -t C,, -n 'fleetgate demo root CA' -i " + f(RootCA),
			"pk12util -d " + nss + " -i " + f(LaptopP12) + " -W " + shellQuote(LaptopP12Password),
		},
		Firefox: "Settings → Privacy & Security → Certificates → View Certificates: Authorities → Import " +
			f(RootCA) + " (trust it to identify websites); Your Certificates → Import " + f(LaptopP12) +
			" (password " + LaptopP12Password + ")",
		User:     oidcop.DemoEmail,
		Password: oidcop.DemoPassword,
		Redirect: Step{
			Title: "a browser (Accept: text/html) without a session is sent to the demo IdP: prints 302 and where to",
			Cmd: fmt.Sprintf("curl -s -o /dev/null -w '%%{http_code} %%{redirect_url}\\n' --resolve %s:%s:%s --cacert %s --cert %s --key %s -H 'Accept: text/html' %s",
				configs.DemoConsoleDomain, port, host, f(RootCA), f(LaptopCert), f(LaptopKey), ConsoleURL(listen)),
			Status: 302,
		},
		RedirectPrefix: "302 " + configs.DemoIdPIssuer + "/authorize?client_id=" + oidcop.DemoClientID + "&",
	}
}
