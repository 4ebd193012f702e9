package gateway

// The CRL file watch: a replaced CRL applies without a SIGHUP, and one that
// lands while the main file is broken is applied once the file is fixed.

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestRevocationFileWatch: replacing the CRL file is enough; no SIGHUP.
func TestRevocationFileWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the CRL watch interval")
	}
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	if r := h.get(t, h.client(h.pki.sensor1), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("before: status %d", r.StatusCode)
	}
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	h.writeCRL(h.pki.sensor1)
	testkit.WaitFor(t, "the watched CRL to revoke sensor-0001", 4*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor1), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
	if r := h.get(t, h.client(h.pki.sensor2), href(hApp, "/")); r.StatusCode != http.StatusOK {
		t.Fatalf("a device the CRL does not list: status %d, want 200", r.StatusCode)
	}
}

// TestRevocationWatchRetriesAfterRefusedReload: a new CRL that lands while
// the main file is being edited (invalid) is not lost: fixing the file
// makes the watcher reload again, and the CRL applies.
func TestRevocationWatchRetriesAfterRefusedReload(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the CRL watch interval")
	}
	h := newHarness(t, func(p *cfgParams) { p.CRL = true })
	h.writeFile("fleetgate.toml", []byte("[gateway\n")) // mid-edit
	time.Sleep(10 * time.Millisecond)
	h.writeCRL(h.pki.sensor1)
	testkit.WaitFor(t, "the refused reload", 4*crlWatchInterval, func() bool {
		return strings.Contains(h.logs.String(), "reload refused")
	})
	time.Sleep(10 * time.Millisecond)
	h.write(h.config()) // the edit is done; no SIGHUP
	testkit.WaitFor(t, "the CRL to apply once the file is fixed", 4*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor1), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
}

// TestRevocationWatchFixSavedDuringRefusedReload: a fix to the main file
// saved while the watcher's reload is being refused (after the reload read
// the broken file) still makes the watcher reload again: the main file's
// stamp is the one from before that reload, not one taken after the fix.
func TestRevocationWatchFixSavedDuringRefusedReload(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the CRL watch interval")
	}
	var hp atomic.Pointer[harness]
	var fixOnce sync.Once
	fixed := make(chan struct{})
	h := newHarness(t, func(p *cfgParams) {
		p.CRL = true
		p.Refused = func() {
			fixOnce.Do(func() {
				// The operator's save lands right after the reload read the file.
				h := hp.Load()
				_ = os.WriteFile(h.cfgPath, marshalConfig(t, h.config()), 0o600)
				close(fixed)
			})
		}
	})
	hp.Store(h)
	h.writeFile("fleetgate.toml", []byte("[gateway\n")) // mid-edit
	time.Sleep(10 * time.Millisecond)
	h.writeCRL(h.pki.sensor1)
	select {
	case <-fixed:
	case <-time.After(4 * crlWatchInterval):
		t.Fatal("the watcher did not reload on the new CRL")
	}
	testkit.WaitFor(t, "the CRL to apply once the file is fixed", 4*crlWatchInterval, func() bool {
		return h.get(t, h.client(h.pki.sensor1), href(hApp, "/")).StatusCode == http.StatusForbidden
	})
}
