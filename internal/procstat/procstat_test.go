package procstat

import (
	"os"
	"strings"
	"testing"
)

// TestRSS reads this process's resident set and its peak; a process that
// does not exist is an error that names it.
func TestRSS(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Fatalf("RSS(self) = %v, %v", rss, err)
	}
	peak, err := PeakRSS(os.Getpid())
	if err != nil || peak < rss {
		t.Fatalf("PeakRSS(self) = %v, %v; RSS %d", peak, err, rss)
	}
	if _, err := RSS(-1); err == nil || !strings.Contains(err.Error(), "VmRSS of process -1") {
		t.Fatalf("RSS(-1): %v, want an error naming the process", err)
	}
}
