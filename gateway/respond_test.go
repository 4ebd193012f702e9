package gateway

// How the answer goes out: the last response of a no-duration request,
// corked with its close_notify, whatever its size.

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNoDurationResponseSizes: the last response of a no-duration request
// goes out corked with its close_notify (tlsengine.Conn.Cork), in one write
// up to 64 KiB and in pieces beyond: whatever its size, the device reads
// the whole body, then a clean TLS close.
func TestNoDurationResponseSizes(t *testing.T) {
	o := startFaultOrigin(t)
	h := newHarness(t, func(p *cfgParams) { p.Origin = o.URL })
	for _, n := range []int64{0, 1000, 60 << 10, 70 << 10, 200 << 10} {
		for _, path := range []string{"/body", "/chunked"} {
			rc := h.dial(t, hIoT, h.pki.sensor1)
			rc.send(request("GET", hIoT, path+"?n="+strconv.FormatInt(n, 10)))
			r := rc.read("GET")
			if r.StatusCode != http.StatusOK {
				t.Fatalf("%s n=%d: status %d", path, n, r.StatusCode)
			}
			if got, err := checkPattern(strings.NewReader(r.body), n); err != nil || got != n {
				t.Fatalf("%s n=%d: %d bytes, %v", path, n, got, err)
			}
			if !r.Close {
				t.Errorf("%s n=%d: no Connection: close on a no-duration response", path, n)
			}
			_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var one [1]byte
			if k, err := rc.br.Read(one[:]); k != 0 || err != io.EOF {
				t.Errorf("%s n=%d: after the body, read %d bytes, %v; want a clean close_notify EOF", path, n, k, err)
			}
		}
	}
}
