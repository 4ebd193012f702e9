package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/configs"
)

// serviceUnit reads the [Service] settings of configs/fleetgate.service.
func serviceUnit(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "configs", "fleetgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	svc := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("fleetgate.service: %q is not key=value", line)
			}
			svc[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestSystemdUnit: the sample systemd unit drives the real binary as it
// says. Its ExecStart's command line serves (with the test's configuration
// file in place of /etc/fleetgate's), its ExecReload's signal reloads, its
// KillSignal drains and exits 0, and its TimeoutStopSec leaves the default
// drain_timeout room before systemd's SIGKILL. systemd-analyze, when
// installed, finds nothing to say about the file.
func TestSystemdUnit(t *testing.T) {
	svc := serviceUnit(t)
	start := strings.Fields(svc["ExecStart"])
	if len(start) != 4 || filepath.Base(start[0]) != "fleetgate" || start[1] != "serve" || start[2] != "-c" {
		t.Fatalf("ExecStart %q: want fleetgate serve -c FILE", svc["ExecStart"])
	}
	m := regexp.MustCompile(`^/bin/kill -(HUP) \$MAINPID$`).FindStringSubmatch(svc["ExecReload"])
	if m == nil {
		t.Fatalf("ExecReload %q: want /bin/kill -HUP $MAINPID", svc["ExecReload"])
	}
	if svc["KillSignal"] != "SIGTERM" {
		t.Fatalf("KillSignal %q: want SIGTERM, which drains", svc["KillSignal"])
	}
	stopWithin, err := time.ParseDuration(svc["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}

	f := newFleet(t)
	// The default drain_timeout, from the fleet's file without its own.
	data, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	noDrain := regexp.MustCompile(`(?m)^drain_timeout = .*\n`).ReplaceAll(data, nil)
	cfg, err := configs.Parse("fleetgate.toml", noDrain, f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if drain := cfg.Gateway.DrainTimeout; stopWithin < 2*drain {
		t.Errorf("TimeoutStopSec %v leaves the default drain_timeout (%v) too little room before SIGKILL", stopWithin, drain)
	}

	args := append(append([]string(nil), start[1:3]...), "fleetgate.toml")
	p := startUntilReady(t, func(attempt int) (*process, string, []string) {
		if attempt > 1 {
			f.movePorts(t)
		}
		return startFleetgate(t, f.dir, args...), f.admin, []string{f.listen, f.admin}
	})
	reloads := p.stderr.Count("configuration reloaded")
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "configuration reloaded", reloads+1)
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, stopWithin); code != 0 {
		t.Fatalf("exit %d after the unit's KillSignal, want 0", code)
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: the unit's syntax is not verified")
		return
	}
	// verify wants ExecStart's binary to exist: point it at the test's.
	unit, err := os.ReadFile(filepath.Join("..", "..", "configs", "fleetgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fleetgate.service")
	if err := os.WriteFile(path, []byte(strings.Replace(string(unit), start[0], fleetgateBinary(t), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its findings about the file name the file; anything else it says is
	// about the machine it runs on (no systemd as PID 1 in a container).
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if strings.Contains(string(out), path) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	} else if err != nil || len(out) > 0 {
		t.Logf("systemd-analyze verify could not judge the file here: %v\n%s", err, out)
	}
}
