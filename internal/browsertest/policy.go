package browsertest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// ManagedPolicyDir is where Debian's chromium reads the mandatory policies
// of the machine: every *.json file in it.
const ManagedPolicyDir = "/etc/chromium/policies/managed"

// AutoSelectVia says where the certificate auto-selection rules are
// written.
type AutoSelectVia int

const (
	// ProfilePreferences writes the rules into the new profile's
	// Default/Preferences as the content setting auto_select_certificate:
	// the very setting that the AutoSelectCertificateForUrls policy fills.
	// It belongs to this browser alone and needs no root.
	ProfilePreferences AutoSelectVia = iota
	// ManagedPolicy writes the AutoSelectCertificateForUrls policy into a
	// file of its own in ManagedPolicyDir, as an operator would, and
	// removes it when the test ends. It needs write access there (root,
	// see ManagedPolicyUsable); Start skips the test without it. While the
	// file exists every chromium on the machine reads it, and two such
	// files with the same policy do not merge: one wins. So Start
	// serialises the browsers that use it, across test processes too: it
	// holds an exclusive lock (flock on managedLock) from before the file
	// is written until after it is removed, and a second one waits. Under
	// the lock it also removes the files a test process killed before its
	// cleanup left behind. A test has one such browser at a time (a
	// second one would wait for the first's test to end).
	ManagedPolicy
)

// managedLock is the file whose flock serialises the browsers that use
// ManagedPolicy, whichever test process runs them. It is beside
// ManagedPolicyDir, not in it: chromium reads every file there.
var managedLock = filepath.Join(filepath.Dir(ManagedPolicyDir), ".browsertest-managed.lock")

// managedLockWait bounds how long Start waits for another test's
// ManagedPolicy browser to end.
const managedLockWait = 5 * time.Minute

// ManagedPolicyUsable returns nil when this process can use ManagedPolicy:
// it runs as root and can create files in ManagedPolicyDir; otherwise an
// error that says why not, so that a test can fall back to
// ProfilePreferences instead of being skipped.
func ManagedPolicyUsable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("browsertest: the managed policy needs root (running as uid %d)", os.Geteuid())
	}
	if err := os.MkdirAll(ManagedPolicyDir, 0o755); err != nil {
		return fmt.Errorf("browsertest: the managed policy folder: %w", err)
	}
	f, err := os.CreateTemp(ManagedPolicyDir, ".browsertest-probe-*")
	if err != nil {
		return fmt.Errorf("browsertest: the managed policy folder is not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// lockFile takes an exclusive flock on path (created if need be), waiting
// at most wait, and returns its release. The lock is per open file, so it
// excludes other files opened in the same process as well as other
// processes, and the kernel drops it when a process dies.
func lockFile(path string, wait time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("browsertest: lock %s: %w", path, err)
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("browsertest: lock %s (another test's browser with a managed policy?): %w", path, err)
		}
	}
}

// removeStalePolicies removes the policy files of this package in
// ManagedPolicyDir; the caller holds the lock, so none belongs to a live
// browser: they are what a test process killed before its cleanup (a
// timeout's panic, SIGKILL) left behind.
func removeStalePolicies(tb testing.TB) error {
	stale, err := filepath.Glob(filepath.Join(ManagedPolicyDir, policyFilePrefix+"*.json"))
	if err != nil {
		return fmt.Errorf("browsertest: %w", err)
	}
	for _, path := range stale {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("browsertest: remove the stale policy %s: %w", path, err)
		}
		tb.Logf("browsertest: removed the stale policy %s (left by a test that did not end cleanly)", path)
	}
	return nil
}

// clearStalePolicies removes, when no browser with a managed policy runs
// (the lock is free at once), the policy files such a browser's test left
// behind when it was killed, so that they cannot steer this browser's
// certificate choice. Best effort: without root there is nothing it can
// (or needs to) do.
func clearStalePolicies(tb testing.TB) {
	if os.Geteuid() != 0 {
		return
	}
	unlock, err := lockFile(managedLock, 0)
	if err != nil {
		return // busy (a live browser owns its file) or no policy folder
	}
	defer unlock()
	if err := removeStalePolicies(tb); err != nil {
		tb.Logf("%v", err)
	}
}

// policyFilePrefix names the policy files this package writes.
const policyFilePrefix = "browsertest-"

// String names the mechanism, for logs.
func (v AutoSelectVia) String() string {
	switch v {
	case ProfilePreferences:
		return "profile preferences"
	case ManagedPolicy:
		return "managed policy"
	}
	return fmt.Sprintf("AutoSelectVia(%d)", int(v))
}

// autoSelectRule is one entry of the AutoSelectCertificateForUrls policy:
// a URL pattern and a filter on the certificate's issuer or subject.
type autoSelectRule struct {
	Pattern string       `json:"pattern"`
	Filter  selectFilter `json:"filter"`
}

// selectFilter matches certificates by their issuer's common name; empty,
// it matches every certificate.
type selectFilter struct {
	Issuer *nameFilter `json:"ISSUER,omitempty"`
}

type nameFilter struct {
	CN string `json:"CN"`
}

// filterFor returns the filter that picks cert: its issuer's common name,
// so that only certificates from the test's CA are presented.
func filterFor(cert *tls.Certificate) (selectFilter, error) {
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return selectFilter{}, fmt.Errorf("browsertest: client certificate: %w", err)
		}
	}
	if cn := leaf.Issuer.CommonName; cn != "" {
		return selectFilter{Issuer: &nameFilter{CN: cn}}, nil
	}
	return selectFilter{}, nil
}

// autoSelect writes the rules that make chromium present cert, without a
// dialog, to the URLs that match patterns ("*" when there are none). It
// returns the managed policy file written ("" with ProfilePreferences).
func autoSelect(tb testing.TB, via AutoSelectVia, dataDir string, cert *tls.Certificate, patterns []string) (string, error) {
	if len(patterns) == 0 {
		patterns = []string{"*"}
	}
	filter, err := filterFor(cert)
	if err != nil {
		return "", err
	}
	switch via {
	case ProfilePreferences:
		return "", writePreferences(dataDir, filter, patterns)
	case ManagedPolicy:
		return writeManagedPolicy(tb, filter, patterns)
	}
	return "", fmt.Errorf("browsertest: unknown AutoSelectVia %d", int(via))
}

// writePreferences writes a profile's Default/Preferences with one
// auto_select_certificate exception per pattern. The key of an exception is
// "primary pattern,secondary pattern"; the value is what the policy stores:
// {"filters": [filter]}.
func writePreferences(dataDir string, filter selectFilter, patterns []string) error {
	type setting struct {
		Filters []selectFilter `json:"filters"`
	}
	type exception struct {
		Setting setting `json:"setting"`
	}
	exceptions := map[string]exception{}
	for _, p := range patterns {
		exceptions[p+",*"] = exception{Setting: setting{Filters: []selectFilter{filter}}}
	}
	prefs := map[string]any{
		"profile": map[string]any{
			"content_settings": map[string]any{
				"exceptions": map[string]any{"auto_select_certificate": exceptions},
			},
		},
	}
	data, err := json.Marshal(prefs)
	if err != nil {
		return fmt.Errorf("browsertest: preferences: %w", err)
	}
	dir := filepath.Join(dataDir, "Default")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("browsertest: preferences: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Preferences"), data, 0o600); err != nil {
		return fmt.Errorf("browsertest: preferences: %w", err)
	}
	return nil
}

// writeManagedPolicy writes the policy into a new file in ManagedPolicyDir
// and removes it when the test ends, holding the lock (managedLock) from
// before the write until after the removal; it returns the file's path.
// It skips the test when the folder is not writable.
func writeManagedPolicy(tb testing.TB, filter selectFilter, patterns []string) (string, error) {
	// The policy's value is a list of JSON strings, each one rule.
	var rules []string
	for _, p := range patterns {
		b, err := json.Marshal(autoSelectRule{Pattern: p, Filter: filter})
		if err != nil {
			return "", fmt.Errorf("browsertest: policy: %w", err)
		}
		rules = append(rules, string(b))
	}
	data, err := json.MarshalIndent(map[string][]string{"AutoSelectCertificateForUrls": rules}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("browsertest: policy: %w", err)
	}
	if err := os.MkdirAll(ManagedPolicyDir, 0o755); err != nil {
		tb.Skipf("browsertest: the managed policy needs write access to %s (run as root): %v", ManagedPolicyDir, err)
	}
	unlock, err := lockFile(managedLock, managedLockWait)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			tb.Skipf("browsertest: the managed policy needs write access to %s (run as root): %v", ManagedPolicyDir, err)
		}
		return "", err
	}
	tb.Cleanup(unlock) // runs last: after the removal below
	if err := removeStalePolicies(tb); err != nil {
		return "", err
	}
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("browsertest: %w", err)
	}
	path := filepath.Join(ManagedPolicyDir, policyFilePrefix+hex.EncodeToString(suffix)+".json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Skipf("browsertest: the managed policy needs write access to %s (run as root): %v", ManagedPolicyDir, err)
	}
	tb.Cleanup(func() {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			tb.Errorf("browsertest: remove the policy %s: %v", path, err)
		}
	})
	return path, nil
}
