package gateway

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/fleetgate/fleetgate/configs"
)

// Why GOMAXPROCS is raised above the CPU count: gnet's event loop waits in
// epoll_wait, a system call, and a goroutine in a system call keeps its P
// (the scheduler's processor) until sysmon takes it back, 20 µs to 10 ms
// later. With one P per CPU, a loop that has just gone to sleep holds the P
// that the handshake goroutines and the origin responses (Go's own network
// poller) need: on one core the core was about two thirds busy with work
// waiting. One extra P per event loop means a sleeping loop never holds the
// last one; the CPU slots (handshake_workers) still bound the handshakes
// computing at once to one per CPU, so the extra Ps add no parallel work,
// only a free processor for whatever is runnable.

// procsFor returns the GOMAXPROCS for a gateway: want when set, else cpus
// plus one per event loop (loops <= 0: one per CPU).
func procsFor(want, cpus, loops int) int {
	if want > 0 {
		return want
	}
	if loops <= 0 {
		loops = cpus
	}
	return cpus + loops
}

// tuneRuntime sets GOMAXPROCS from [gateway] gomaxprocs (unless it is 0 and
// the GOMAXPROCS environment variable is set) and the soft memory limit from
// memory_limit (unless it is 0: then GOMEMLIMIT or none stays). cpus is the
// runtime's GOMAXPROCS before the gateway changed it (the CPUs of the
// affinity mask or the cgroup quota, or the environment's value).
// baseLimit is the memory limit the process started with (GOMEMLIMIT's, or
// none), restored when a reload sets memory_limit back to 0.
func tuneRuntime(g *configs.Gateway, cpus int, baseLimit int64, log *slog.Logger, first bool) {
	if first {
		if g.GOMAXPROCS > 0 || os.Getenv("GOMAXPROCS") == "" {
			n := procsFor(g.GOMAXPROCS, cpus, g.EventLoops)
			runtime.GOMAXPROCS(n)
			log.Info("go scheduler", "gomaxprocs", n, "cpus", cpus)
		} else {
			log.Info("go scheduler: GOMAXPROCS from the environment", "gomaxprocs", cpus)
		}
	}
	limit := baseLimit
	if g.MemoryLimit > 0 {
		limit = g.MemoryLimit
	}
	if prev := debug.SetMemoryLimit(limit); prev != limit {
		log.Info("go memory limit", "bytes", limit)
	}
}
