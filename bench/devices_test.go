package bench

import (
	"bytes"
	"sync"
	"testing"
)

// TestConcurrentFleetsShareAFolder: bench processes started together on one
// folder (here goroutines, each with its own lock file description) create
// the PKI once and issue each device once: every caller gets the same,
// matching certificate and key, never one's certificate with another's key.
func TestConcurrentFleetsShareAFolder(t *testing.T) {
	dir := t.TempDir()
	const callers, devices = 4, 12
	fleets := make([][][]byte, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			if _, err := InitPKI(dir); err != nil {
				errs[c] = err
				return
			}
			certs, err := LoadFleet(FleetOptions{Dir: dir, N: devices})
			if err != nil {
				errs[c] = err
				return
			}
			for _, tc := range certs {
				fleets[c] = append(fleets[c], tc.Certificate[0])
			}
		})
	}
	wg.Wait()
	for c, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", c, err)
		}
	}
	for c := 1; c < callers; c++ {
		for i := range devices {
			if !bytes.Equal(fleets[c][i], fleets[0][i]) {
				t.Fatalf("caller %d got another certificate for device %d than caller 0", c, i+1)
			}
		}
	}
	// What is on disk loads as matching pairs (LoadX509KeyPair checks it).
	if _, err := LoadFleet(FleetOptions{Dir: dir, N: devices}); err != nil {
		t.Fatalf("reloading the folder: %v", err)
	}
}
