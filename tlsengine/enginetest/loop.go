package enginetest

import (
	"sync"
	"sync/atomic"
	"time"
)

// Loop is a fake event loop: one goroutine running tasks one at a time.
// Urgent tasks (AsyncWrite, which gnet queues at high priority) run before
// the others; each kind runs in the order it was posted.
type Loop struct {
	mu     sync.Mutex
	cond   *sync.Cond
	urgent []func()
	tasks  []func()
	stop   bool
	done   chan struct{}
	onLoop atomic.Bool // a task is running (there is one loop goroutine)
	// synced is set by a Sync task and closed by the loop once that task
	// has ended (loop goroutine only): Sync then returns with no task
	// running, unless another was posted meanwhile.
	synced chan struct{}
}

// NewLoop starts a Loop. Stop it with Close or Shutdown.
func NewLoop() *Loop {
	l := &Loop{done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Post queues f behind every task posted before it; false when the loop
// has stopped.
func (l *Loop) Post(f func()) bool { return l.post(false, f) }

// PostUrgent queues f ahead of the tasks posted with Post, behind the
// urgent tasks posted before it; false when the loop has stopped.
func (l *Loop) PostUrgent(f func()) bool { return l.post(true, f) }

func (l *Loop) post(urgent bool, f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop {
		return false
	}
	if urgent {
		l.urgent = append(l.urgent, f)
	} else {
		l.tasks = append(l.tasks, f)
	}
	l.cond.Signal()
	return true
}

func (l *Loop) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		for len(l.urgent) == 0 && len(l.tasks) == 0 && !l.stop {
			l.cond.Wait()
		}
		var f func()
		switch {
		case len(l.urgent) > 0:
			f, l.urgent = l.urgent[0], l.urgent[1:]
		case len(l.tasks) > 0:
			f, l.tasks = l.tasks[0], l.tasks[1:]
		default: // stopped and empty
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		l.onLoop.Store(true)
		f()
		l.onLoop.Store(false)
		if l.synced != nil {
			close(l.synced)
			l.synced = nil
		}
	}
}

// OnLoop reports whether the caller runs inside a loop task (strictly: a
// task is running; the loop has one goroutine).
func (l *Loop) OnLoop() bool { return l.onLoop.Load() }

// Sync waits until every task posted before it has run and ended (OnLoop
// is false from the caller's side when it returns, unless another task was
// posted meanwhile); false on timeout or a stopped loop.
func (l *Loop) Sync(timeout time.Duration) bool {
	ch := make(chan struct{})
	if !l.Post(func() { l.synced = ch }) {
		return false
	}
	return wait(ch, timeout)
}

// Shutdown stops accepting tasks, runs those queued, and waits (at most
// timeout) for the loop goroutine to exit; false if it did not.
func (l *Loop) Shutdown(timeout time.Duration) bool {
	l.shut()
	return wait(l.done, timeout)
}

// Close is Shutdown without a bound: it returns once the loop has run its
// queued tasks and exited. It suits t.Cleanup.
func (l *Loop) Close() {
	l.shut()
	<-l.done
}

func (l *Loop) shut() {
	l.mu.Lock()
	l.stop = true
	l.cond.Signal()
	l.mu.Unlock()
}

func wait(ch <-chan struct{}, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}
