package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runner is the state of one Run shared by its workers.
type runner struct {
	o       Options
	tlsConf *tls.Config

	measuring atomic.Bool  // set when the warm-up ends
	stop      atomic.Bool  // set when a bound is reached or ctx ends
	issued    atomic.Int64 // measured requests started (for Options.Requests)
	okCount   atomic.Int64 // for the progress line
	errCount  atomic.Int64
}

// Run simulates the fleet against o.Target and reports the measured phase.
// It returns when Duration has passed or Requests have been made (after the
// warm-up), or when ctx ends (with what was measured until then); requests
// in flight at the end get at most Timeout to finish. Errors of requests are
// counted in the Result; Run's error is for a run that could not start:
// bad options, a server PID that cannot be read, or no session cookie in
// cookie mode.
func Run(ctx context.Context, opts Options) (*Result, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{o: o, tlsConf: clientConfig(o)}
	if _, err := procsCPU(o.PIDs); err != nil {
		return nil, err
	}
	if _, err := procsCPU(o.ClientCorePIDs); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	workers := make([]*worker, o.Concurrency)
	cookies := map[int]string{} // by device index
	for i := range workers {
		w := &worker{r: r, id: i, hist: newHistogram(), errs: map[string]int64{}}
		if o.Mode == ModeTCP {
			w.initTCP()
		}
		extra := ""
		if o.Mode == ModeCookie {
			d := i % len(o.Devices)
			if cookies[d] == "" {
				ck, err := r.getCookie(ctx, &o.Devices[d])
				if err != nil {
					return nil, err
				}
				cookies[d] = ck
			}
			extra = "Cookie: " + cookies[d] + "\r\n"
		}
		w.req = requestBytes(o, extra)
		workers[i] = w
	}

	var (
		cpu0   time.Duration
		cpuErr error
		self0  time.Duration
		core0  time.Duration
		coreEr error
		t0     time.Time
	)
	begin := func() { // the measured phase starts
		cpu0, cpuErr = procsCPU(o.PIDs)
		core0, coreEr = procsCPU(o.ClientCorePIDs)
		self0 = selfCPU()
		t0 = time.Now()
		r.measuring.Store(true)
	}
	started := time.Now()
	if o.Warmup == 0 {
		begin()
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { r.work(ctx, w) })
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	stopProgress := r.progress(started)
	defer stopProgress()

	if o.Warmup > 0 {
		select {
		case <-time.After(o.Warmup):
		case <-ctx.Done():
		case <-allDone:
		}
		begin()
	}
	warmup := t0.Sub(started)

	timer := time.NewTimer(o.Duration)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	case <-allDone:
	}
	r.stop.Store(true)
	<-allDone // each in-flight request ends within Timeout
	elapsed := time.Since(t0)
	self1 := selfCPU()
	cpu1, err := procsCPU(o.PIDs)
	if cpuErr == nil {
		cpuErr = err
	}
	core1, err := procsCPU(o.ClientCorePIDs)
	if coreEr == nil {
		coreEr = err
	}
	stopProgress()

	res := r.result(workers, elapsed)
	res.WarmupS = warmup.Seconds()
	res.Started = t0.UTC()
	res.ClientCPUS = (self1 - self0).Seconds()
	if res.Requests > 0 {
		res.ClientCPUPerReqUS = float64((self1 - self0).Microseconds()) / float64(res.Requests)
	}
	if len(o.ClientCorePIDs) > 0 {
		if coreEr != nil {
			return res, fmt.Errorf("bench: CPU of the client core's other processes: %w", coreEr)
		}
		s := res.ClientCPUS + (core1 - core0).Seconds()
		res.ClientCorePIDs = o.ClientCorePIDs
		res.ClientCoreCPUS = &s
	}
	if len(o.PIDs) > 0 {
		if cpuErr != nil {
			return res, fmt.Errorf("bench: server CPU: %w", cpuErr)
		}
		s := (cpu1 - cpu0).Seconds()
		res.ServerCPUS = &s
		if res.Requests > 0 {
			per := s * 1e6 / float64(res.Requests)
			res.ServerCPUPerReqUS = &per
		}
		if res.TCP != nil {
			res.TCP.serverCPU(s)
		}
	}
	return res, nil
}

// work is one worker's loop: requests until a bound is reached.
func (r *runner) work(ctx context.Context, w *worker) {
	defer w.drop()
	for !r.stop.Load() && ctx.Err() == nil {
		measuring := r.measuring.Load()
		w.measuring = measuring
		if measuring && r.o.Requests > 0 && r.issued.Add(1) > r.o.Requests {
			return
		}
		start := time.Now()
		var kind errKind
		if r.o.Mode == ModeTCP {
			// A message's latency starts after its connection is up.
			kind, start = w.doTCP(ctx, start)
		} else {
			kind = w.do(ctx)
		}
		lat := time.Since(start)
		if kind == "" {
			r.okCount.Add(1)
		} else {
			r.errCount.Add(1)
		}
		if !measuring {
			continue
		}
		if kind != "" {
			if ctx.Err() != nil {
				return // cut short by the caller: not the server's failure
			}
			w.errs[kind]++
			continue
		}
		w.ok++
		_ = w.hist.RecordValue(max(lat.Microseconds(), 1))
	}
}

// result merges the workers' records.
func (r *runner) result(workers []*worker, elapsed time.Duration) *Result {
	o := r.o
	res := &Result{
		Label: o.Label, Target: o.Target, SNI: o.SNI, Host: o.Host, Mode: o.Mode,
		TLS: versionName(o.TLSVersion), Group: groupName(o.Group), Path: o.Path, BodySize: o.BodySize,
		Concurrency: o.Concurrency, Devices: len(o.Devices), Errors: map[string]int64{},
		DurationS: elapsed.Seconds(), ServerPIDs: o.PIDs,
	}
	h := newHistogram()
	for _, w := range workers {
		h.Merge(w.hist)
		res.Requests += w.ok
		res.Handshakes += w.handshakes
		for k, n := range w.errs {
			res.Errors[k] += n
			res.ErrorTotal += n
		}
	}
	if elapsed > 0 {
		res.Throughput = float64(res.Requests) / elapsed.Seconds()
	}
	res.Latency = latencyOf(h)
	if o.Mode == ModeTCP {
		res.TCP = tcpStats(o, workers, elapsed, res.Requests)
	}
	return res
}

// progress starts the live progress line when o.Progress is set and
// returns the function that ends it (safe to call more than once).
func (r *runner) progress(start time.Time) func() {
	if r.o.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var lastOK int64
		last := time.Now()
		for {
			select {
			case <-done:
				fmt.Fprint(r.o.Progress, "\r\033[K")
				return
			case now := <-tick.C:
				ok := r.okCount.Load()
				rate := float64(ok-lastOK) / now.Sub(last).Seconds()
				lastOK, last = ok, now
				phase := "warm-up"
				if r.measuring.Load() {
					phase = "measuring"
				}
				fmt.Fprintf(r.o.Progress, "\r\033[K%-9s %6.1fs  %8d ok  %8.0f req/s  %d errors",
					phase, now.Sub(start).Seconds(), ok, rate, r.errCount.Load())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done); <-finished })
	}
}
