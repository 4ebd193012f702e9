package gateway

import (
	"os"
	"time"
)

// crlWatchInterval is how often the CRL files named by the configuration are
// checked for changes. A changed file triggers a full reload, so a new CRL
// takes effect within this interval without a SIGHUP.
const crlWatchInterval = 2 * time.Second

// fileStamp is what the watcher compares: size and modification time.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// watchCRLs reloads the configuration when one of the current snapshot's CRL
// files changes. It returns when stop is closed.
//
// A reload that fails (the main file is being edited, say) is tried again
// when a CRL or the main file changes next, so the new CRL is not lost.
// After a reload, files already watched keep the stamp seen before it: one
// replaced while the reload read it shows as changed at the next tick.
func (s *Server) watchCRLs(stop <-chan struct{}) {
	t := time.NewTicker(crlWatchInterval)
	defer t.Stop()
	seen := map[string]fileStamp{}
	// stamp records the paths' stamps and reports whether a known one
	// changed; with onlyNew it records the unknown paths only.
	stamp := func(paths []string, onlyNew bool) (changed bool) {
		for _, p := range paths {
			old, ok := seen[p]
			if ok && onlyNew {
				continue
			}
			fi, err := os.Stat(p)
			var st fileStamp
			if err == nil {
				st = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
			}
			if ok && old != st {
				changed = true
			}
			seen[p] = st
		}
		return changed
	}
	watched := func(pending bool) []string {
		snap := s.snap.Load()
		paths := snap.crlPaths()
		if pending && snap.cfg.Path != "" {
			paths = append(paths, snap.cfg.Path)
		}
		return paths
	}
	pending := false
	stamp(watched(false), false)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if !stamp(watched(pending), false) {
			continue
		}
		s.log.Info("a watched CRL (or, after a refused reload, the configuration) changed; reloading")
		if err := s.Reload(); err != nil {
			if !pending {
				pending = true
				stamp(watched(true), true) // from now on, a fix to the main file retries too
			}
			continue
		}
		if pending {
			// Forget the main file: watched again from scratch if a later
			// reload is refused.
			delete(seen, s.snap.Load().cfg.Path)
			pending = false
		}
		stamp(watched(false), true)
	}
}

// crlPaths lists the CRL files of the snapshot's configuration.
func (s *snapshot) crlPaths() []string {
	var out []string
	for i := range s.cfg.ClientCAs {
		for j := range s.cfg.ClientCAs[i].CRLs {
			out = append(out, s.cfg.ClientCAs[i].CRLs[j].Path)
		}
	}
	return out
}
