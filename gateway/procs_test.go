package gateway

import (
	"log/slog"
	"net/url"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

func TestProcsFor(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		want, cpus, loops, proc int
		https                   bool
	}{
		{name: "one pinned core", cpus: 1, proc: 1},
		{name: "two cores", cpus: 2, loops: 1, proc: 2},
		{name: "one pinned core, an https origin", cpus: 1, https: true, proc: 2},
		{name: "two cores, an https origin, default loops", cpus: 2, https: true, proc: 4},
		{name: "two cores, an https origin, one loop", cpus: 2, loops: 1, https: true, proc: 3},
		{name: "explicit value wins", want: 1, cpus: 8, loops: 8, https: true, proc: 1},
		{name: "explicit value above the CPUs", want: 16, cpus: 2, proc: 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := procsFor(tc.want, tc.cpus, tc.loops, tc.https); got != tc.proc {
				t.Fatalf("procsFor(%d, %d, %d, %v) = %d, want %d", tc.want, tc.cpus, tc.loops, tc.https, got, tc.proc)
			}
		})
	}
}

func TestHTTPSOriginDetected(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	plain := configs.Application{Protocol: configs.ProtocolHTTP, Origin: u("http://127.0.0.1:8080")}
	for _, tc := range []struct {
		name string
		apps []configs.Application
		want bool
	}{
		{name: "no application", want: false},
		{name: "plain http origins", apps: []configs.Application{plain, plain}, want: false},
		{name: "an https origin", apps: []configs.Application{plain, {Protocol: configs.ProtocolHTTP, Origin: u("https://origin.example")}}, want: true},
		{name: "a tcp application", apps: []configs.Application{plain, {Protocol: configs.ProtocolTCP, Origin: u("tcp://127.0.0.1:1883")}}, want: false},
		{name: "an mqtt application", apps: []configs.Application{{Protocol: configs.ProtocolMQTT, Origin: u("tcp://127.0.0.1:1883")}}, want: false},
		{name: "a tls:// origin", apps: []configs.Application{plain, {Protocol: configs.ProtocolMQTT, Origin: u("tls://broker.internal:8883")}}, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tlsOrigin(tc.apps); got != tc.want {
				t.Fatalf("tlsOrigin = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTuneRuntime(t *testing.T) {
	procs, limit := runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs); debug.SetMemoryLimit(limit) })
	t.Setenv("GOMAXPROCS", "")
	log := slog.New(slog.DiscardHandler)
	origin, err := url.Parse("https://origin.example")
	if err != nil {
		t.Fatal(err)
	}
	https := []configs.Application{{Protocol: configs.ProtocolHTTP, Origin: origin}}

	tuneRuntime(&configs.Config{Gateway: configs.Gateway{EventLoops: 1, MemoryLimit: 64 << 20}, Applications: https}, 1, limit, log, true)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("GOMAXPROCS = %d, want 2 (one CPU plus one event loop, for an https origin)", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Fatalf("memory limit = %d, want %d", got, 64<<20)
	}
	// A reload without the https origin: one P per CPU; memory_limit = 0
	// restores the start's limit.
	tuneRuntime(&configs.Config{Gateway: configs.Gateway{EventLoops: 1}}, 1, limit, log, false)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("after a reload without https origins GOMAXPROCS = %d, want 1", got)
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("after a reload memory limit = %d, want the start's %d", got, limit)
	}
	// A reload with an explicit value applies it.
	tuneRuntime(&configs.Config{Gateway: configs.Gateway{GOMAXPROCS: 7}}, 1, limit, log, false)
	if got := runtime.GOMAXPROCS(0); got != 7 {
		t.Fatalf("after a reload with gomaxprocs = 7: GOMAXPROCS = %d", got)
	}
	// The environment's GOMAXPROCS wins over gomaxprocs = 0, not over a value.
	t.Setenv("GOMAXPROCS", "3")
	tuneRuntime(&configs.Config{Applications: https}, 3, limit, log, true)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("with GOMAXPROCS=3 in the environment: %d", got)
	}
	tuneRuntime(&configs.Config{Gateway: configs.Gateway{GOMAXPROCS: 5}}, 3, limit, log, false)
	if got := runtime.GOMAXPROCS(0); got != 5 {
		t.Fatalf("gomaxprocs = 5: GOMAXPROCS = %d", got)
	}
	// A reload that takes the value out: the environment's again.
	tuneRuntime(&configs.Config{}, 3, limit, log, false)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("gomaxprocs taken out, GOMAXPROCS=3 in the environment: %d", got)
	}
}

// gcPercent reads the collector's percentage (GOGC) without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestTuneGC: with gc_heap_target the collector's percentage follows the
// live heap after each collection: a test process's heap under a 1 TiB
// target gets the ceiling, 500; target 0 stops the tuning and restores 100 for good;
// a GOGC environment variable is left alone.
func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	prev := gcPercent()
	t.Cleanup(func() { tuneGC(0, slog.New(slog.DiscardHandler), false); debug.SetGCPercent(prev) })
	log := slog.New(slog.DiscardHandler)
	// collect runs collections, after each of which a tuner would run.
	collect := func() {
		for i := 0; i < 3; i++ {
			runtime.GC()
		}
		time.Sleep(50 * time.Millisecond)
	}

	tuneGC(1<<40, log, true)
	testkit.WaitFor(t, "GOGC 500 under a 1 TiB target", 5*time.Second, func() bool {
		runtime.GC() // the tuner runs after a collection
		return gcPercent() == maxGCPercent
	})

	tuneGC(0, log, false)
	if got := gcPercent(); got != minGCPercent {
		t.Fatalf("after gc_heap_target = 0: GOGC = %d, want %d", got, minGCPercent)
	}
	collect()
	if got := gcPercent(); got != minGCPercent {
		t.Fatalf("the tuner kept running after gc_heap_target = 0: GOGC = %d", got)
	}

	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150)
	tuneGC(1<<30, log, true)
	collect()
	if got := gcPercent(); got != 150 {
		t.Fatalf("with GOGC=150 in the environment: GOGC = %d", got)
	}
}
