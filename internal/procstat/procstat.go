// Package procstat reads a process's resident memory from
// /proc/<pid>/status: what the benchmarks compare between servers and what
// the storm tests bound.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RSS is the resident set of process pid in bytes (VmRSS).
func RSS(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// PeakRSS is the peak resident set of process pid over its life in bytes
// (VmHWM).
func PeakRSS(pid int) (int64, error) { return statusBytes(pid, "VmHWM") }

// statusBytes reads a "KEY: N kB" line of /proc/<pid>/status.
func statusBytes(pid int, key string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("procstat: %s of process %d: %w", key, pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("procstat: %s of process %d: unexpected line %q", key, pid, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("procstat: %s of process %d: %w", key, pid, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("procstat: %s of process %d: no %s line in /proc/%d/status", key, pid, key, pid)
}
