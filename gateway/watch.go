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
func (s *Server) watchCRLs(stop <-chan struct{}) {
	t := time.NewTicker(crlWatchInterval)
	defer t.Stop()
	seen := map[string]fileStamp{}
	stamp := func(paths []string) (changed bool) {
		for _, p := range paths {
			fi, err := os.Stat(p)
			var st fileStamp
			if err == nil {
				st = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
			}
			if old, ok := seen[p]; ok && old != st {
				changed = true
			}
			seen[p] = st
		}
		return changed
	}
	stamp(s.snap.Load().crlPaths())
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if stamp(s.snap.Load().crlPaths()) {
			s.log.Info("a CRL file changed; reloading")
			if err := s.Reload(); err == nil {
				stamp(s.snap.Load().crlPaths())
			}
		}
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
