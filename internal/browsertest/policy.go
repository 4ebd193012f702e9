package browsertest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
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
	// removes it when the test ends. It needs write access there (root);
	// Start skips the test without it. While the file exists every
	// chromium on the machine reads it, and two such files with the same
	// policy do not merge: one wins. So tests that use it must not run in
	// parallel with each other.
	ManagedPolicy
)

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
// dialog, to the URLs that match patterns ("*" when there are none).
func autoSelect(tb testing.TB, via AutoSelectVia, dataDir string, cert *tls.Certificate, patterns []string) error {
	if len(patterns) == 0 {
		patterns = []string{"*"}
	}
	filter, err := filterFor(cert)
	if err != nil {
		return err
	}
	switch via {
	case ProfilePreferences:
		return writePreferences(dataDir, filter, patterns)
	case ManagedPolicy:
		return writeManagedPolicy(tb, filter, patterns)
	}
	return fmt.Errorf("browsertest: unknown AutoSelectVia %d", int(via))
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
// and removes it when the test ends; it skips the test when the folder is
// not writable.
func writeManagedPolicy(tb testing.TB, filter selectFilter, patterns []string) error {
	// The policy's value is a list of JSON strings, each one rule.
	var rules []string
	for _, p := range patterns {
		b, err := json.Marshal(autoSelectRule{Pattern: p, Filter: filter})
		if err != nil {
			return fmt.Errorf("browsertest: policy: %w", err)
		}
		rules = append(rules, string(b))
	}
	data, err := json.MarshalIndent(map[string][]string{"AutoSelectCertificateForUrls": rules}, "", "  ")
	if err != nil {
		return fmt.Errorf("browsertest: policy: %w", err)
	}
	if err := os.MkdirAll(ManagedPolicyDir, 0o755); err != nil {
		tb.Skipf("browsertest: the managed policy needs write access to %s (run as root): %v", ManagedPolicyDir, err)
	}
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return fmt.Errorf("browsertest: %w", err)
	}
	path := filepath.Join(ManagedPolicyDir, "browsertest-"+hex.EncodeToString(suffix)+".json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Skipf("browsertest: the managed policy needs write access to %s (run as root): %v", ManagedPolicyDir, err)
	}
	tb.Cleanup(func() {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			tb.Errorf("browsertest: remove the policy %s: %v", path, err)
		}
	})
	return nil
}
