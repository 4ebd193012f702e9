// Command fleetgate-prof runs the gateway like `fleetgate serve -c FILE`,
// with Go's CPU profiler on from start to SIGTERM or SIGINT. bench/profile.sh
// loads it with `fleetgate bench` and prints the profile with
// `go tool pprof -top`, to show where a missed target's time goes.
//
//	fleetgate-prof -c fleetgate.toml -cpuprofile cpu.pprof
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/gateway"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetgate-prof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "configuration `file` (TOML)")
	out := fs.String("cpuprofile", "cpu.pprof", "write the CPU profile to `file`")
	heap := fs.String("memprofile", "", "on SIGUSR1, run a GC and write the heap profile to `file` (idle-memory analysis)")
	rate := fs.Int("memprofilerate", 0, "record one allocation per `bytes` allocated (runtime.MemProfileRate; 1 records every allocation, for an exact per-connection count; 0 keeps Go's default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "fleetgate-prof: -c FILE is required")
		return 2
	}
	if *rate < 0 {
		fmt.Fprintln(stderr, "fleetgate-prof: -memprofilerate must be 0 or more")
		return 2
	}
	if *rate > 0 {
		runtime.MemProfileRate = *rate
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := gateway.New(gateway.Options{Load: func() (*configs.Config, error) { return configs.Load(*file) }, Logger: logger})
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate-prof:", err)
		return 1
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate-prof:", err)
		return 1
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(stderr, "fleetgate-prof:", err)
		return 1
	}
	defer pprof.StopCPUProfile()

	if *heap != "" {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				if err := writeHeap(*heap); err != nil {
					fmt.Fprintln(stderr, "fleetgate-prof:", err)
				}
			}
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run() }()
	select {
	case err := <-runErr:
		if err != nil {
			fmt.Fprintln(stderr, "fleetgate-prof:", err)
			return 1
		}
		return 0
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-runErr
	return 0
}

// writeHeap writes the heap profile as of a fresh GC, so in-use figures
// are the live memory of the moment (the idle connections, for bench/idle.sh).
func writeHeap(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
