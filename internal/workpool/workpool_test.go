package workpool

import (
	"sync"
	"testing"
	"time"
)

// TestReuse: a task given while a worker idles runs on that worker. The
// test hands each task over the way Go does once the worker waits (a send
// that only an idle worker can take), so it needs no sleeps.
func TestReuse(t *testing.T) {
	p := New(time.Minute)
	ran := make(chan struct{})
	p.Go(func() { ran <- struct{}{} })
	<-ran
	for range 5 {
		deadline := time.Now().Add(10 * time.Second)
		for sent := false; !sent; {
			select {
			case p.tasks <- func() { ran <- struct{}{} }:
				sent = true
			default:
				if time.Now().After(deadline) {
					t.Fatal("the worker never came back for another task")
				}
				time.Sleep(time.Millisecond)
			}
		}
		<-ran
	}
	if got := p.Workers(); got != 1 {
		t.Fatalf("%d workers for tasks run one after the other, want 1", got)
	}
}

// TestConcurrent: tasks never wait for each other; every one runs.
func TestConcurrent(t *testing.T) {
	p := New(time.Minute)
	const n = 50
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	var finished sync.WaitGroup
	finished.Add(n)
	for range n {
		p.Go(func() {
			started.Done()
			release.Wait()
			finished.Done()
		})
	}
	started.Wait() // all n run at once: none waited behind a blocked one
	if got := p.Workers(); got != n {
		t.Errorf("%d workers for %d blocked tasks", got, n)
	}
	release.Done()
	finished.Wait()
}

// TestIdleExit: idle workers exit after the pool's idle time.
func TestIdleExit(t *testing.T) {
	p := New(20 * time.Millisecond)
	var wg sync.WaitGroup
	wg.Add(3)
	for range 3 {
		p.Go(func() { time.Sleep(10 * time.Millisecond); wg.Done() })
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for p.Workers() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still live after their idle time", p.Workers())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
