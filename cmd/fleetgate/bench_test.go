package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchExitCodes: -h is not an error, a concurrency below 1 is a usage
// error, and a run in which every request failed exits 1 (scripts must not
// read it as a measurement).
func TestBenchExitCodes(t *testing.T) {
	t.Parallel()
	pkiDir := filepath.Join(t.TempDir(), "pki")
	if code, _, stderr := runInProcess(t, "bench", "-h"); code != 0 {
		t.Errorf("bench -h: exit %d, want 0: %s", code, stderr)
	}
	if code, _, stderr := runInProcess(t, "bench", "-concurrency", "0", "-target", "127.0.0.1:1"); code != 2 || !strings.Contains(stderr, "concurrency") {
		t.Errorf("bench -concurrency 0: exit %d, want 2: %s", code, stderr)
	}
	if code, _, stderr := runInProcess(t, "bench", "-init", pkiDir); code != 0 {
		t.Fatalf("bench -init: exit %d: %s", code, stderr)
	}
	closed := freePort(t) // nobody listens there
	code, _, stderr := runInProcess(t, "bench", "-insecure", "-target", closed, "-dir", pkiDir, "-devices", "2", "-concurrency", "1", "-requests", "3")
	if code != 1 || !strings.Contains(stderr, "every request failed") {
		t.Errorf("a run where every request failed: exit %d, want 1: %s", code, stderr)
	}
}

// TestBenchTCPFlags: tcp-hold without -idle is refused with the reason, and
// a tcp run against a relay that is not there exits 1 like the HTTP modes.
func TestBenchTCPFlags(t *testing.T) {
	t.Parallel()
	pkiDir := filepath.Join(t.TempDir(), "pki")
	if code, _, stderr := runInProcess(t, "bench", "-init", pkiDir); code != 0 {
		t.Fatalf("bench -init: exit %d: %s", code, stderr)
	}
	closed := freePort(t)
	base := []string{"bench", "-insecure", "-target", closed, "-dir", pkiDir, "-devices", "2", "-concurrency", "1"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"hold without -idle", []string{"-mode", "tcp-hold"}, "needs -idle"},
		{"unknown mode", []string{"-mode", "udp"}, "tcp-hold or mqtt"},
		{"nobody relays", []string{"-mode", "tcp", "-requests", "2", "-message-size", "4096"}, "every request failed"},
		{"bad client core PIDs", []string{"-mode", "tcp", "-client-core-pids", "origin"}, "-client-core-pids"},
	}
	for _, tt := range tests {
		code, _, stderr := runInProcess(t, append(append([]string{}, base...), tt.args...)...)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, want 1 with %q: %s", tt.name, code, tt.want, stderr)
		}
	}
}

// TestBenchMQTTFlags: bad -mode mqtt flags are refused with the reason, and
// a run in which no device connected exits 1.
func TestBenchMQTTFlags(t *testing.T) {
	t.Parallel()
	pkiDir := filepath.Join(t.TempDir(), "pki")
	if code, _, stderr := runInProcess(t, "bench", "-init", pkiDir); code != 0 {
		t.Fatalf("bench -init: exit %d: %s", code, stderr)
	}
	closed := freePort(t)
	base := []string{"bench", "-insecure", "-target", closed, "-dir", pkiDir, "-devices", "2", "-mode", "mqtt"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"qos 2", []string{"-qos", "2"}, "-qos 2"},
		{"bad rate", []string{"-rate", "10/min"}, "N/device"},
		{"bad version", []string{"-mqtt-version", "3.1"}, "3.1.1 or 5"},
		{"fractional keep-alive", []string{"-keepalive", "1500ms"}, "whole seconds"},
		{"-idle", []string{"-idle", "10"}, "-hold"},
		{"nobody listens", []string{"-messages", "1"}, "no device connected"},
	}
	for _, tt := range tests {
		code, _, stderr := runInProcess(t, append(append([]string{}, base...), tt.args...)...)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, want 1 with %q: %s", tt.name, code, tt.want, stderr)
		}
	}
}
