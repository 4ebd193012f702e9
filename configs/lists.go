package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// maxListBytes bounds one list file: a million fingerprints take 65 MB.
const maxListBytes = 256 << 20

// List is one [[lists]] entry, loaded: the set the `list` selector looks
// device values up in. The gateway hands the newest lists to every policy
// evaluation, so a reload that changes a list reaches open connections.
type List struct {
	// List holds the name, the kind and the values.
	*policy.List
	// File is the file as written in the entry ("" for inline values).
	File string
	// Path is File resolved against Config.Dir: what the gateway's file
	// watch follows ("" for inline values).
	Path string
}

// ListsSet returns the configuration's lists as one policy.ListSet.
func (c *Config) ListsSet() *policy.ListSet {
	ls := make([]*policy.List, len(c.Lists))
	for i := range c.Lists {
		ls[i] = c.Lists[i].List
	}
	return policy.NewListSet(ls...)
}

// lists loads the [[lists]] entries into cfg.Lists and records their kinds
// in the loader's environment for the `list` selector.
func (l *loader) lists(fls []fileList, cfg *Config) {
	for i := range fls {
		fl, path := &fls[i], indexPath("lists", i)
		key := func(k string) string { return joinKey(path, k) }
		ok := true
		if fl.Name == "" {
			l.errorf(key("name"), "required: the list's name, used as { list = \"NAME\" }")
			ok = false
		} else if _, dup := l.env.Lists[fl.Name]; dup {
			l.errorf(key("name"), "%q is also the name of another list", fl.Name)
			ok = false
		}
		kind, err := policy.ParseListKind(fl.Kind)
		if fl.Kind == "" {
			l.errorf(key("kind"), "required: common_name, fingerprint, serial, san_uri or ip")
			ok = false
		} else if err != nil {
			l.errorf(key("kind"), "%s", strings.TrimPrefix(err.Error(), "policy: "))
			ok = false
		}
		if fl.Name != "" && kind != 0 {
			l.env.Lists[fl.Name] = kind // selectors naming it resolve, even if its values are bad
		}
		switch {
		case fl.File != nil && fl.Values != nil:
			l.errorf(path, "file and values are exclusive: keep one")
			ok = false
		case fl.File == nil && fl.Values == nil:
			l.errorf(path, "needs file (one value per line) or values = [...]")
			ok = false
		case fl.File != nil && *fl.File == "":
			l.errorf(key("file"), "empty file name")
			ok = false
		}
		if !ok {
			continue
		}
		entry := List{}
		if fl.File != nil {
			data, read := l.readFileMax(key("file"), *fl.File, maxListBytes)
			if !read {
				continue
			}
			list, err := policy.ParseList(fl.Name, kind, data)
			if le := (*policy.ListLineError)(nil); errors.As(err, &le) {
				// file:line, so that an operator goes straight to the value.
				l.errorf(key("file"), "%s:%d: %v", *fl.File, le.Line, le.Err)
				continue
			} else if err != nil {
				l.errorf(key("file"), "%s: %v", *fl.File, err)
				continue
			}
			entry = List{List: list, File: *fl.File, Path: l.resolve(*fl.File)}
		} else {
			b := policy.NewListBuilder(fl.Name, kind, len(fl.Values))
			bad := false
			for j, v := range fl.Values {
				if err := b.Add(strings.TrimSpace(v)); err != nil {
					l.errorf(indexPath(key("values"), j), "%v", err)
					bad = true
				}
			}
			if bad {
				continue
			}
			entry = List{List: b.Build()}
		}
		if entry.Len() == 0 {
			l.warnf(path, "list %q is empty", fl.Name)
		}
		cfg.Lists = append(cfg.Lists, entry)
	}
}

// serviceTokens checks the [[service_tokens]] entries into
// cfg.ServiceTokens and records their names for the service_token selector.
func (l *loader) serviceTokens(fts []fileServiceToken, cfg *Config) {
	ids := map[string]int{}
	for i := range fts {
		ft, path := &fts[i], indexPath("service_tokens", i)
		key := func(k string) string { return joinKey(path, k) }
		ok := true
		if ft.Name == "" {
			l.errorf(key("name"), "required: the token's name, used as { service_token = \"NAME\" }")
			ok = false
		} else if l.env.ServiceTokens[ft.Name] {
			l.errorf(key("name"), "%q is also the name of another service token", ft.Name)
			ok = false
		} else {
			l.env.ServiceTokens[ft.Name] = true
		}
		if ft.ClientID == "" {
			l.errorf(key("client_id"), "required: the value devices send in CF-Access-Client-Id (`fleetgate token service` makes one)")
			ok = false
		} else if !headerSafe(ft.ClientID) {
			l.errorf(key("client_id"), "must be printable ASCII without spaces (it travels in an HTTP header)")
			ok = false
		} else if j, dup := ids[ft.ClientID]; dup {
			l.errorf(key("client_id"), "also the client_id of service_tokens[%d]", j)
			ok = false
		} else {
			ids[ft.ClientID] = i
			if !strings.HasSuffix(ft.ClientID, ".access") {
				l.warnf(key("client_id"), "does not end in \".access\": the token minted for the origin carries the client id as common_name, where an id such as a device's CN would be taken for that device (`fleetgate token service` makes ids ending in \".access\")")
			}
		}
		var sum [sha256.Size]byte
		if h := strings.ToLower(ft.ClientSecretSHA256); ft.ClientSecretSHA256 == "" {
			l.errorf(key("client_secret_sha256"), "required: the hex SHA-256 of the client secret (never the secret itself)")
			ok = false
		} else if n, err := hex.Decode(sum[:], []byte(h)); err != nil || n != len(sum) || len(h) != 2*len(sum) {
			l.errorf(key("client_secret_sha256"), "not 64 hex digits (the SHA-256 of the client secret)")
			ok = false
		}
		tok := policy.ServiceToken{Name: ft.Name, ClientID: ft.ClientID, SecretSHA256: sum}
		if ft.Expires != nil {
			tok.Expires = time.Time(*ft.Expires)
			if !tok.Expires.After(l.now) {
				l.warnf(key("expires"), "service token %q expired at %s: every request presenting it is refused", ft.Name, tok.Expires.UTC().Format(time.RFC3339))
			}
		}
		if ok {
			cfg.ServiceTokens = append(cfg.ServiceTokens, tok)
		}
	}
}

// headerSafe reports whether s may travel as an HTTP header value as is.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// clientCAEnv records, for the client_ca selector, the fingerprints of the
// certificates of each loaded [[client_cas]] entry; an entry that failed to
// load is known by name (its own error explains it) and matches nothing.
func (l *loader) clientCAEnv(fcs []fileClientCA, cfg *Config) {
	for i := range fcs {
		if fcs[i].Name != "" {
			l.env.ClientCAs[fcs[i].Name] = nil
		}
	}
	for i := range cfg.ClientCAs {
		ca := &cfg.ClientCAs[i]
		var sums [][32]byte
		for _, c := range ca.Roots {
			sums = append(sums, sha256.Sum256(c.Raw))
		}
		for _, c := range ca.Intermediates {
			sums = append(sums, sha256.Sum256(c.Raw))
		}
		l.env.ClientCAs[ca.Name] = sums
		l.caHosts[ca.Name] = ca.Hostnames
	}
	l.sharedClientCAs(fcs, cfg)
}

// sharedClientCAs warns about two [[client_cas]] entries that hold the same
// certificate: a device whose chain goes through it matches client_ca of
// both when no more specific certificate of one of them is on its path, and
// a session token, which records only the root, matches neither when the
// shared certificate is its root.
func (l *loader) sharedClientCAs(fcs []fileClientCA, cfg *Config) {
	owner := map[[32]byte]string{}
	warned := map[[2]string]bool{}
	for i := range cfg.ClientCAs {
		ca := &cfg.ClientCAs[i]
		for _, sum := range l.env.ClientCAs[ca.Name] {
			first, dup := owner[sum]
			if !dup {
				owner[sum] = ca.Name
				continue
			}
			if first == ca.Name || warned[[2]string{first, ca.Name}] {
				continue
			}
			warned[[2]string{first, ca.Name}] = true
			path := "client_cas"
			for j := range fcs {
				if fcs[j].Name == ca.Name {
					path = indexPath("client_cas", j)
				}
			}
			l.warnf(path, "client CA %q shares a certificate with %q: client_ca names the entry of the most specific certificate on a device's path; on a session cookie a shared root decides neither", ca.Name, first)
		}
	}
}
