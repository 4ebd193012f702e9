// Package workpool runs short tasks on reusable goroutines.
//
// A TLS handshake and a request both run deep call chains (crypto/tls,
// ECDSA, the origin client) that grow a new goroutine's stack several times,
// each growth a copy; on the no-duration path, where every request is a new
// connection, that copying was about 5% of the CPU. A worker that has served
// one task keeps its grown stack for the next (until a garbage collection
// finds it idle and shrinks it; under load that is rare next to the growth
// of a new goroutine for every connection).
package workpool

import (
	"sync/atomic"
	"time"
)

// Pool hands tasks to idle workers, starting a new worker when none is idle.
// It never queues: Go either gives the task to a waiting worker or starts
// one, so a task never waits behind another. Workers idle for longer than
// the pool's idle time exit, so a burst leaves no goroutines behind.
type Pool struct {
	tasks chan func()
	idle  time.Duration
	live  atomic.Int64
}

// New returns a pool whose workers exit after idle without a task.
func New(idle time.Duration) *Pool {
	return &Pool{tasks: make(chan func()), idle: idle}
}

// Go runs f on a worker.
func (p *Pool) Go(f func()) {
	select {
	case p.tasks <- f:
	default:
		p.live.Add(1)
		go p.work(f)
	}
}

// Workers is the number of live workers, busy or idle.
func (p *Pool) Workers() int { return int(p.live.Load()) }

func (p *Pool) work(f func()) {
	defer p.live.Add(-1)
	timer := time.NewTimer(p.idle)
	defer timer.Stop()
	for {
		f()
		f = nil             // an idle worker must not keep the last task's connection alive
		timer.Reset(p.idle) // since Go 1.23, Reset also drops a tick that fired during f
		select {
		case f = <-p.tasks:
		case <-timer.C:
			return
		}
	}
}
