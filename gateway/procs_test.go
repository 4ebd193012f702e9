package gateway

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/fleetgate/fleetgate/configs"
)

func TestProcsFor(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		want, cpus, loops, proc int
	}{
		{name: "one pinned core, default loops", cpus: 1, proc: 2},
		{name: "two cores, default loops", cpus: 2, proc: 4},
		{name: "two cores, one loop", cpus: 2, loops: 1, proc: 3},
		{name: "explicit value wins", want: 1, cpus: 8, loops: 8, proc: 1},
		{name: "explicit value above the CPUs", want: 16, cpus: 2, proc: 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := procsFor(tc.want, tc.cpus, tc.loops); got != tc.proc {
				t.Fatalf("procsFor(%d, %d, %d) = %d, want %d", tc.want, tc.cpus, tc.loops, got, tc.proc)
			}
		})
	}
}

func TestTuneRuntime(t *testing.T) {
	procs, limit := runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs); debug.SetMemoryLimit(limit) })
	t.Setenv("GOMAXPROCS", "")
	log := slog.New(slog.DiscardHandler)

	tuneRuntime(&configs.Gateway{EventLoops: 1, MemoryLimit: 64 << 20}, 1, limit, log, true)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("GOMAXPROCS = %d, want 2 (one CPU plus one event loop)", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Fatalf("memory limit = %d, want %d", got, 64<<20)
	}
	// A reload: GOMAXPROCS stays, memory_limit = 0 restores the start's limit.
	tuneRuntime(&configs.Gateway{GOMAXPROCS: 7}, 1, limit, log, false)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("after a reload GOMAXPROCS = %d, want it unchanged (2)", got)
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("after a reload memory limit = %d, want the start's %d", got, limit)
	}
	// The environment's GOMAXPROCS wins over gomaxprocs = 0, not over a value.
	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	tuneRuntime(&configs.Gateway{}, 3, limit, log, true)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("with GOMAXPROCS=3 in the environment: %d", got)
	}
	tuneRuntime(&configs.Gateway{GOMAXPROCS: 5}, 3, limit, log, true)
	if got := runtime.GOMAXPROCS(0); got != 5 {
		t.Fatalf("gomaxprocs = 5: GOMAXPROCS = %d", got)
	}
}
