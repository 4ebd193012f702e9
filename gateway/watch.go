package gateway

import (
	"os"
	"syscall"
	"time"
)

// crlWatchInterval is how often the CRL files named by the configuration are
// checked for changes. A changed file triggers a full reload, so a new CRL
// takes effect within this interval without a SIGHUP.
const crlWatchInterval = 2 * time.Second

// fileStamp is what the watcher compares: size, modification time and the
// file's identity (device and inode), so that a file replaced by rename is
// a change even when the new one has the old one's size and modification
// time (cp -p, rsync -t, tar).
type fileStamp struct {
	size     int64
	modTime  time.Time
	dev, ino uint64
}

// crlWatcher reloads the configuration when one of the current snapshot's
// CRL files or [[lists]] files changes, and closes the relayed connections
// whose CRL went stale under crl_stale = "reject" since its last look.
//
// A reload that fails (the main file is being edited, say) is tried again
// when a CRL or the main file changes next, so the new CRL is not lost.
// After a reload, files already watched keep the stamp seen before it: one
// replaced while the reload read it shows as changed at the next tick.
type crlWatcher struct {
	s    *Server
	seen map[string]fileStamp
	// pending: a reload was refused; the main file is watched too until
	// one succeeds.
	pending bool
	// looked is the gateway's time at the last look for stale lists.
	looked time.Time
}

// newCRLWatcher records the files' stamps now, before the server serves: a
// CRL replaced right after start is a change, not the baseline.
func (s *Server) newCRLWatcher() *crlWatcher {
	w := &crlWatcher{s: s, seen: map[string]fileStamp{}, looked: s.now()}
	w.stamp(w.watched(), false)
	return w
}

// run checks the files every crlWatchInterval until stop is closed.
func (w *crlWatcher) run(stop <-chan struct{}) { every(crlWatchInterval, stop, w.check) }

// check reloads when a watched file changed since it was last looked at.
func (w *crlWatcher) check() {
	w.cutStale()
	if !w.stamp(w.watched(), false) {
		return
	}
	w.s.log.Info("a watched CRL or list file (or, after a refused reload, the configuration) changed; reloading")
	// The main file's stamp from before the reload reads it: should the
	// reload be refused, a fix saved since then (while the refusal was
	// logged, say) shows as a change at the next tick instead of becoming
	// the baseline.
	mainPath, mainStamp := "", fileStamp{}
	if !w.pending {
		mainPath = w.s.snap.Load().cfg.Path
		mainStamp = statStamp(mainPath)
	}
	if err := w.s.Reload(); err != nil {
		if !w.pending {
			w.pending = true
			if mainPath != "" {
				w.seen[mainPath] = mainStamp
			}
			w.stamp(w.watched(), true) // from now on, a fix to the main file retries too
		}
		return
	}
	if w.pending {
		// Forget the main file: watched again from scratch if a later
		// reload is refused.
		delete(w.seen, w.s.snap.Load().cfg.Path)
		w.pending = false
	}
	w.stamp(w.watched(), true)
}

// cutStale closes the relayed connections whose revocation status became
// unknown since the last look: a list they depend on passed its nextUpdate
// under crl_stale = "reject". An HTTP connection is refused on its next
// request; a tcp or mqtt relay, which has no next request, is closed here,
// at most crlWatchInterval late. (A reload checks them at once.)
func (w *crlWatcher) cutStale() {
	now := w.s.now()
	rev := w.s.snap.Load().revocation
	if rev.StaleBetween(w.looked, now) {
		if n := w.s.relays.recheck(rev, now); n > 0 {
			w.s.log.Info("closing tcp connections whose CRL is past its nextUpdate (crl_stale = \"reject\")", "connections", n)
		}
	}
	w.looked = now
}

// watched lists the files to watch: the CRLs, the list files, and the main
// file while a refused reload is pending.
func (w *crlWatcher) watched() []string {
	snap := w.s.snap.Load()
	paths := append(snap.crlPaths(), snap.listPaths()...)
	if w.pending && snap.cfg.Path != "" {
		paths = append(paths, snap.cfg.Path)
	}
	return paths
}

// stamp records the paths' stamps and reports whether a known one changed;
// with onlyNew it records the unknown paths only.
func (w *crlWatcher) stamp(paths []string, onlyNew bool) (changed bool) {
	for _, p := range paths {
		old, ok := w.seen[p]
		if ok && onlyNew {
			continue
		}
		st := statStamp(p)
		if ok && old != st {
			changed = true
		}
		w.seen[p] = st
	}
	return changed
}

// statStamp is the file's stamp now; the zero stamp when it cannot be read.
func statStamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{size: fi.Size(), modTime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st
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
