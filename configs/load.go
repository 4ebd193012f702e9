package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// maxConfigBytes bounds the configuration file itself.
const maxConfigBytes = 16 << 20

// Options changes how a file is loaded. The zero value is what `fleetgate
// serve` and `fleetgate check` use.
type Options struct {
	// AllowEphemeralKey lets a file without [tokens].signing_key_file load:
	// the Config then has Tokens.EphemeralKey set and no SigningKey, and a
	// warning says so. Without it, a missing signing_key_file is an error,
	// because tokens signed with a key generated at start stop verifying at
	// the next restart (and differ between gateways behind one name).
	AllowEphemeralKey bool
	// Now is the time certificate expiry is checked against; zero means
	// time.Now().
	Now time.Time
}

// Load reads and validates the configuration file at path with the default
// Options. Relative file names inside it resolve against path's folder.
// Problems in the file come back as an *Errors holding every one of them.
func Load(path string) (*Config, error) { return Options{}.Load(path) }

// Parse validates data as the configuration file called name (used in
// messages only) with the default Options. Relative file names inside it
// resolve against baseDir ("" is the working directory). Problems come back
// as an *Errors.
func Parse(name string, data []byte, baseDir string) (*Config, error) {
	return Options{}.Parse(name, data, baseDir)
}

// Load is the package-level Load with these options.
func (o Options) Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("configs: read %s: %w", path, err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("configs: %s is larger than %d MiB", path, maxConfigBytes>>20)
	}
	return o.Parse(path, data, filepath.Dir(path))
}

// Parse is the package-level Parse with these options.
func (o Options) Parse(name string, data []byte, baseDir string) (*Config, error) {
	l := &loader{report: newReport(name, scanPositions(data)), dir: baseDir, now: o.Now, opts: o,
		associated: map[string]bool{}, domains: map[string]int{}, caHosts: map[string][]string{}, idps: map[string]int{},
		env: policy.Env{ClientCAs: map[string][][32]byte{}, Lists: map[string]policy.ListKind{}, ServiceTokens: map[string]bool{}}}
	if l.now.IsZero() {
		l.now = time.Now()
	}
	if pos := l.pos; pos.crowded {
		l.errs = append(l.errs, Problem{File: name, Line: pos.crowdedLine, Path: pos.crowdedTable,
			Msg: fmt.Sprintf("more than %d keys in one table", maxTableKeys)})
		return nil, l.result()
	}
	fc := l.decodeDocument(data)
	if fc == nil { // not TOML: decodeDocument recorded why
		return nil, l.result()
	}
	sum := sha256.Sum256(data)
	cfg := &Config{Path: name, Dir: baseDir, Hash: hex.EncodeToString(sum[:])}
	l.gateway(&fc.Gateway, &cfg.Gateway)
	l.tokens(&fc.Tokens, &cfg.Tokens)
	l.clientCAs(fc.ClientCAs, cfg)
	l.revocation(&fc.Revocation, &cfg.Revocation)
	l.clientCAEnv(fc.ClientCAs, cfg)
	l.lists(fc.Lists, cfg)
	l.serviceTokens(fc.ServiceTokens, cfg)
	l.identityProviders(fc.IdentityProviders, cfg)
	l.applications(fc.Applications, cfg)
	l.defaultSite(cfg)
	if errs := l.result(); errs != nil {
		return nil, errs
	}
	cfg.Warnings = l.warns
	return cfg, nil
}

// loader carries one load: the report of problems, the folder relative
// names resolve against, and the time expiry is checked against.
type loader struct {
	*report
	dir  string
	now  time.Time
	opts Options
	// associated holds every valid associated hostname, even of a CA that
	// failed to load, so that a broken CA is not reported a second time as
	// "no client CA" on its applications.
	associated map[string]bool
	// domains maps each valid application domain to its index.
	domains map[string]int
	// env is what selectors resolve names in: client CAs, lists, service
	// tokens; NoHTTP is set per application.
	env policy.Env
	// caHosts maps each loaded client CA's name to its associated hostnames.
	caHosts map[string][]string
	// idps maps each [[identity_providers]] name to its index.
	idps map[string]int
}
