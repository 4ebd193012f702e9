package gateway

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/bytedance/gopkg/util/gctuner"

	"github.com/fleetgate/fleetgate/configs"
)

// How many Ps (the Go scheduler's processors) a gateway runs with.
//
// gnet's event loop waits in epoll_wait, a system call, and a goroutine in
// a system call keeps its P until sysmon takes it back, 20 µs to 10 ms
// later. Whatever runs beside the loop either runs on the loop's own thread
// (a goroutine the loop made runnable runs when the loop yields before it
// waits: handshakes, request workers, whose origin round trips and answers
// the loop carries) or waits in Go's own network poller, which needs a free
// P to be woken. One P per CPU suits the first: a handshake and the loop
// take turns on one thread, with no thread woken and no P to hand over. An
// idle extra P costs the first: each time the loop yields, the scheduler
// wakes a thread to spin on the idle P, and the loop's goroutine moves from
// thread to thread (two context switches and a futex wake per yield; a
// fresh request through a plain http origin cost 20–30% more CPU). An
// extra P per loop suits the second: an https origin's answers (the pooled
// TLS client) wait in Go's poller for every request, and with the loop
// holding the only P they wait for sysmon, leaving the core a third idle.
// A relay's dial of its origin waits there too, but once per connection:
// with one P per CPU a relay spends less per message and takes new
// connections faster in a storm (docs/performance.md has the pairs). Not
// so a tls:// origin's handshake, whose round trips all wait there: with an
// extra P a TLS-origin relay took 1,200 connects a second at 813 µs each,
// against 656 at 986 µs with one.

// procsFor returns the GOMAXPROCS for a gateway: want when set, else one
// per CPU, plus one per event loop (loops <= 0: one per CPU) when an
// application's origin speaks TLS (tlsOrigin).
func procsFor(want, cpus, loops int, tlsOrigins bool) int {
	if want > 0 {
		return want
	}
	if !tlsOrigins {
		return cpus
	}
	if loops <= 0 {
		loops = cpus
	}
	return cpus + loops
}

// tlsOrigin reports whether an application speaks TLS to its origin: an
// http application's https origin, whose answers wait in Go's own network
// poller, or a tcp or mqtt application's tls:// origin, whose handshakes
// do.
func tlsOrigin(apps []configs.Application) bool {
	for i := range apps {
		if o := apps[i].Origin; o != nil && (o.Scheme == "https" || o.Scheme == "tls") {
			return true
		}
	}
	return false
}

// tuneRuntime sets GOMAXPROCS from [gateway] gomaxprocs (unless it is 0 and
// the GOMAXPROCS environment variable is set), the collector's pacing from
// gc_heap_target (tuneGC) and the soft memory limit from memory_limit
// (unless it is 0: then GOMEMLIMIT or none stays), at start and
// on every reload (the applications decide the automatic GOMAXPROCS). cpus
// is the runtime's GOMAXPROCS before the gateway changed it (the CPUs of the
// affinity mask or the cgroup quota, or the environment's value).
// baseLimit is the memory limit the process started with (GOMEMLIMIT's, or
// none), restored when a reload sets memory_limit back to 0. first logs
// the settings even when they are the runtime's already.
func tuneRuntime(cfg *configs.Config, cpus int, baseLimit int64, log *slog.Logger, first bool) {
	g := &cfg.Gateway
	if g.GOMAXPROCS > 0 || os.Getenv("GOMAXPROCS") == "" {
		n := procsFor(g.GOMAXPROCS, cpus, g.EventLoops, tlsOrigin(cfg.Applications))
		if prev := runtime.GOMAXPROCS(n); prev != n || first {
			log.Info("go scheduler", "gomaxprocs", n, "cpus", cpus)
		}
	} else if prev := runtime.GOMAXPROCS(cpus); prev != cpus || first {
		// gomaxprocs = 0 with GOMAXPROCS in the environment: its value
		// (again, after a reload that took gomaxprocs out).
		log.Info("go scheduler: GOMAXPROCS from the environment", "gomaxprocs", cpus)
	}
	tuneGC(g.GCHeapTarget, log, first)
	limit := baseLimit
	if g.MemoryLimit > 0 {
		limit = g.MemoryLimit
	}
	if prev := debug.SetMemoryLimit(limit); prev != limit {
		log.Info("go memory limit", "bytes", limit)
	}
}

// Bounds of the collector's percentage (GOGC) while gc_heap_target tunes
// it: never under Go's default, so a large live heap (many idle
// connections) keeps the resident size it has without the tuning; at most
// five times it, so a tiny heap does not grow without need.
const (
	minGCPercent = 100
	maxGCPercent = 500
)

// gcTuned reports whether tuneGC started the tuner (start and reloads run
// one at a time).
var gcTuned bool

// gcBounds sets gctuner's bounds once, before its first tuner starts: the
// tuner reads them after every collection without synchronization, so they
// are never written while one runs.
var gcBounds sync.Once

// tuneGC has the garbage collector's percentage follow the live heap after
// every collection (gctuner): with target > 0, a heap under half of target
// may grow toward it instead of only doubling (GOGC up to 500), a larger one
// is paced as by default. A GOGC environment variable wins: no tuning.
// target 0 stops the tuning and restores GOGC=100.
func tuneGC(target int64, log *slog.Logger, first bool) {
	if os.Getenv("GOGC") != "" {
		if first {
			log.Info("go garbage collector: GOGC from the environment")
		}
		return
	}
	if target <= 0 {
		if gcTuned {
			gctuner.Tuning(0)
			// The tuner's callback runs as a finalizer after each
			// collection; one already under way when it was stopped
			// still sets its percentage. Restore the default after it.
			if !finalizersRan(time.Second) {
				log.Warn("go garbage collector: the finalizers did not run within a second; the default pacing may be overwritten once by the stopped tuner")
			}
			debug.SetGCPercent(minGCPercent)
			gcTuned = false
			log.Info("go garbage collector: default pacing")
		}
		return
	}
	gcBounds.Do(func() {
		gctuner.SetMinGCPercent(minGCPercent)
		gctuner.SetMaxGCPercent(maxGCPercent)
	})
	gctuner.Tuning(uint64(target))
	gcTuned = true
	if first {
		log.Info("go garbage collector", "heap_target_bytes", target)
	}
}

// finalizersRan reports, within limit, that every finalizer running or
// queued when it was called has finished. The runtime runs finalizers one
// at a time on one goroutine: once a finalizer set here runs, any that ran
// before it (the stopped tuner's last callback) has returned. Collections
// are forced until it has run; a reload is the only caller.
func finalizersRan(limit time.Duration) bool {
	done := make(chan struct{})
	mark := new([32]byte) // not a tiny allocation, so it is collected alone
	runtime.SetFinalizer(mark, func(*[32]byte) { close(done) })
	mark = nil
	deadline := time.After(limit)
	for {
		runtime.GC()
		select {
		case <-done:
			return true
		case <-deadline:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}
