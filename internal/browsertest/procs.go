package browsertest

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// killLeftovers kills the processes that still run with files under dir,
// the browser's temporary HOME (see processesUsing), and returns how many
// it found. The folder is unique to one Browser, so these are only
// processes that this Browser started. A child can fork just as its parent dies, so it looks
// again until a few passes in a row find nothing.
func killLeftovers(dir string) int {
	deadline := time.Now().Add(3 * time.Second)
	total := 0
	for quiet := 0; quiet < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := signalUsing(dir, syscall.SIGKILL)
		total += n
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return total
}

// processesUsing returns the ids of the live processes that have dir, or
// a path under it, as the value of a --flag=value argument. dir is the
// browser's temporary HOME: every chromium process gets --user-data-dir
// under it, and the crash handler, which is not chromium's child,
// --database under it. A zombie has an empty command line, so only
// processes that still run count.
func processesUsing(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		// chromium rewrites the command line of its children into one
		// string with spaces, so split on both.
		for _, a := range bytes.FieldsFunc(cmdline, func(r rune) bool { return r == 0 || r == ' ' }) {
			if refersTo(a, dir) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// refersTo says whether arg is --flag=value with value dir or a path
// under it.
func refersTo(arg []byte, dir string) bool {
	if !bytes.HasPrefix(arg, []byte("--")) {
		return false
	}
	_, value, ok := bytes.Cut(arg, []byte("="))
	return ok && (string(value) == dir || bytes.HasPrefix(value, []byte(dir+"/")))
}

// signalUsing sends sig to each process that processesUsing finds and
// returns how many there were.
func signalUsing(dir string, sig syscall.Signal) int {
	pids := processesUsing(dir)
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return len(pids)
}
