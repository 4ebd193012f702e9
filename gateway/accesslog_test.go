package gateway

// The access log: one line per request, saying who, where, what was decided
// and why; bytes_out is what was sent (none for a HEAD), and a body refused
// while it is read is logged as refused before the policies.

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestHeadRefusalLogsNoBody: the access log's bytes_out for a HEAD is what
// was sent: no body.
func TestHeadRefusalLogsNoBody(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, nil) // no certificate: 403
	c.send(request("HEAD", hApp, "/"))
	if r := c.read("HEAD"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d", r.StatusCode)
	}
	// The line is written just after the answer: wait for it.
	var line map[string]any
	testkit.WaitFor(t, "the HEAD's access log line", 5*time.Second, func() bool {
		for _, l := range h.accessLines(t) {
			if l["method"] == "HEAD" {
				line = l
				return true
			}
		}
		return false
	})
	if line["bytes_out"] != float64(0) {
		t.Errorf("HEAD logged bytes_out %v, want 0", line["bytes_out"])
	}
}

// TestBodyRefusalLoggedBeforePolicies: a body refused while it is read
// (413 here) is logged and counted as refused before the policies, as the
// same 413 after Expect is, although the policies ran on the header.
func TestBodyRefusalLoggedBeforePolicies(t *testing.T) {
	h := newHarness(t)
	c := h.dial(t, hApp, h.pki.sensor1)
	c.send("POST /up HTTP/1.1\r\nHost: " + hApp + "\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("u", 70000))
	if r := c.read("POST"); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", r.StatusCode)
	}
	var line map[string]any
	testkit.WaitFor(t, "the access log line", 5*time.Second, func() bool {
		for _, l := range h.accessLines(t) {
			if l["status"] == float64(413) {
				line = l
				return true
			}
		}
		return false
	})
	// The access log's word for a refusal no policy made is "deny" (the
	// metrics' decision label is "none"); either way, no policy.
	if line["decision"] != "deny" || line["policy"] != "" {
		t.Errorf("413 logged with decision %v, policy %q; want deny and no policy", line["decision"], line["policy"])
	}
}

func TestAccessLog(t *testing.T) {
	h := newHarness(t)
	p := h.pki
	login := h.get(t, h.client(p.sensor2), href(hApp, "/log/me?x=1"))
	_, ck := sessionCookieOf(t, login)
	h.do(t, h.client(nil), "GET", href(hApp, "/with-cookie"), http.Header{"Cookie": {"CF_Authorization=" + ck.Value}}, "")
	h.get(t, h.client(nil), href(hIoT, "/refused"))
	noDur := h.get(t, h.client(p.sensor1), href(hIoT, "/nodur"))
	assertion := noDur.echo(t).Headers.Get("Cf-Access-Jwt-Assertion")

	var lines []map[string]any // each is written once its response is out
	testkit.WaitFor(t, "four access-log lines", 5*time.Second, func() bool {
		lines = h.accessLines(t)
		return len(lines) >= 4
	})
	byPath := map[string]map[string]any{}
	for _, l := range lines {
		path, _ := l["path"].(string)
		if _, dup := byPath[path]; dup {
			t.Errorf("two access-log lines for %s", path)
		}
		byPath[path] = l
	}
	tests := []struct {
		path     string
		status   float64
		decision string
		policy   string
		reason   string
		cn       string
	}{
		{"/log/me", 200, "non_identity", "fleet devices", `allowed by policy "fleet devices"`, "sensor-0002"},
		{"/with-cookie", 200, "non_identity", "fleet devices", `allowed by policy "fleet devices"`, ""},
		{"/refused", 403, "deny", "", "no client certificate", ""},
		{"/nodur", 200, "non_identity", "sensor-0001 only", `allowed by policy "sensor-0001 only"`, "sensor-0001"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			l := byPath[tc.path]
			if l == nil {
				t.Fatalf("no access-log line for %s among %d", tc.path, len(lines))
			}
			for _, k := range []string{"time", "client_ip", "sni", "host", "method", "path", "status", "decision", "policy", "reason",
				"cert_cn", "cert_sha256", "bytes_in", "bytes_out", "handshake_ms", "origin_ms", "total_ms"} {
				if _, ok := l[k]; !ok {
					t.Errorf("no %q in %v", k, l)
				}
			}
			if l["status"] != tc.status || l["decision"] != tc.decision || l["policy"] != tc.policy || l["reason"] != tc.reason || l["cert_cn"] != tc.cn {
				t.Errorf("line %v", l)
			}
			if l["client_ip"] != "127.0.0.1" || l["method"] != "GET" || l["sni"] == "" {
				t.Errorf("line %v", l)
			}
		})
	}
	all := h.logs.String()
	for name, secret := range map[string]string{
		"session token":         ck.Value,
		"session signature":     ck.Value[strings.LastIndexByte(ck.Value, '.')+1:],
		"no-duration assertion": assertion[strings.LastIndexByte(assertion, '.')+1:],
		"private key":           "PRIVATE KEY",
	} {
		if strings.Contains(all, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
}

func TestLogClip(t *testing.T) {
	short := strings.Repeat("a", maxLogValue)
	if got := logClip(short); got != short {
		t.Errorf("logClip of %d bytes changed it", len(short))
	}
	long := "x" + strings.Repeat("€", maxLogValue) // 3-byte characters: the cut falls inside one
	got := logClip(long)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "…") || len(got) > maxLogValue+len("…") || len(got) < maxLogValue-3 {
		t.Errorf("logClip: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
