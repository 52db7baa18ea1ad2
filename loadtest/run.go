package loadtest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Run sends the workload o describes to o.Target and returns what it measured. Requests are sent
// for o.Duration (open loop: at Poisson arrival times; closed loop: by o.Concurrency workers),
// then the run waits up to o.DrainTimeout for the ones still running. When ctx is cancelled the
// run stops early and returns the report of what it measured together with ctx's error. Failed
// requests are results, not errors: Run's error is for a run that could not start or was cut short.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	var arrivals []time.Duration
	if o.mode() == ModeOpenLoop && o.Workload != WorkloadMultiTurn {
		from, to := o.RPS, o.RPS
		if o.ramped() {
			from, to = o.RampFrom, o.RampTo
		}
		var err error
		if arrivals, err = Arrivals(o.Seed, from, to, o.Duration); err != nil {
			return nil, err
		}
	}
	client := o.Client
	if client == nil {
		conns := o.Concurrency
		if conns == 0 {
			conns = min(o.MaxInFlight, 1024)
		}
		client = NewHTTPClient(conns)
		defer client.CloseIdleConnections()
	}
	r := &runner{
		o:   o,
		gen: newGenerator(o),
		c: &caller{
			client:  client,
			url:     baseURL(o.Target) + "/v1/chat/completions",
			apiKey:  o.APIKey,
			timeout: o.RequestTimeout,
		},
	}
	return r.run(ctx, arrivals)
}

// runner holds one run's state.
type runner struct {
	o   Options
	gen *generator
	c   *caller

	sent, done, failed atomic.Int64

	mu     sync.Mutex
	events []EventMark
}

func (r *runner) run(ctx context.Context, arrivals []time.Duration) (*Report, error) {
	o := r.o
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	epoch := time.Now()
	r.c.epoch = epoch

	stopAux := make(chan struct{}) // ends progress and pending events
	var aux sync.WaitGroup
	if o.Progress != nil {
		aux.Add(1)
		go func() { defer aux.Done(); r.progress(o.Progress, epoch, stopAux) }()
	}
	for _, ev := range o.Events {
		aux.Add(1)
		go func() { defer aux.Done(); r.fire(ev, epoch, stopAux) }()
	}
	interactiveDone := make(chan struct{})
	var batchRep *BatchReport
	var batchWG sync.WaitGroup
	if o.Workload == WorkloadMixed {
		batchWG.Add(1)
		go func() {
			defer batchWG.Done()
			batchRep = r.runBatch(ctx, epoch, interactiveDone)
		}()
	}

	var samples []Sample
	var collect func() []Sample
	var wg sync.WaitGroup
	if o.Workload == WorkloadMultiTurn {
		collect = r.sessions(ctx, runCtx, epoch, &wg)
	} else if o.mode() == ModeOpenLoop {
		samples = make([]Sample, len(arrivals))
		n := r.openLoop(ctx, runCtx, arrivals, samples, epoch, &wg)
		collect = func() []Sample { return samples[:n] }
	} else {
		collect = r.closedLoop(ctx, runCtx, epoch, &wg)
	}

	// Drain: wait for outstanding requests until Duration + DrainTimeout, then cancel them.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	drain := time.NewTimer(time.Until(epoch.Add(o.Duration + o.DrainTimeout)))
	select {
	case <-finished:
	case <-drain.C:
		cancelRun()
		<-finished
	case <-ctx.Done():
		cancelRun()
		<-finished
	}
	drain.Stop()
	close(interactiveDone)
	close(stopAux)
	aux.Wait()
	batchWG.Wait()

	all := collect()
	sort.Slice(all, func(i, j int) bool { return all[i].Index < all[j].Index })
	if o.WarmUp > 0 { // the warm-up's requests are left out; the measured window starts after it
		all = slices.DeleteFunc(all, func(s Sample) bool { return s.Start < o.WarmUp })
	}
	var elapsed time.Duration
	for i := range all {
		elapsed = max(elapsed, all[i].Start+all[i].Latency-o.WarmUp)
	}
	rep := summarize(all, elapsed, o)
	switch {
	case o.Workload == WorkloadMultiTurn: // sent after the warm-up, per second of the window
		rep.OfferedRPS = float64(len(all)) / (o.Duration - o.WarmUp).Seconds()
		rep.Users = o.Users
	case o.mode() == ModeOpenLoop:
		n := len(arrivals)
		if o.WarmUp > 0 {
			n = len(arrivals) - sort.Search(len(arrivals), func(i int) bool { return arrivals[i] >= o.WarmUp })
		}
		rep.OfferedRPS = float64(n) / (o.Duration - o.WarmUp).Seconds()
	}
	rep.WarmUpS = o.WarmUp.Seconds()
	r.mu.Lock()
	rep.Events = append(rep.Events, r.events...)
	r.mu.Unlock()
	sort.Slice(rep.Events, func(i, j int) bool { return rep.Events[i].AtS < rep.Events[j].AtS })
	rep.Batch = batchRep
	rep.samples = all
	return rep, ctx.Err()
}

// openLoop sends one request per arrival, never waiting for the server, and returns how many
// arrivals it reached before ctx ended.
func (r *runner) openLoop(ctx, runCtx context.Context, arrivals []time.Duration, samples []Sample, epoch time.Time, wg *sync.WaitGroup) int {
	inflight := make(chan struct{}, r.o.MaxInFlight)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i, at := range arrivals {
		if d := time.Until(epoch.Add(at)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return i
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return i
		}
		r.sent.Add(1)
		select {
		case inflight <- struct{}{}:
		default:
			samples[i] = Sample{Index: uint64(i), Start: at, Streamed: r.o.Stream, Err: ErrDropped,
				ErrMsg: fmt.Sprintf("not sent: %d requests already outstanding", r.o.MaxInFlight)}
			r.done.Add(1)
			r.failed.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			s := r.c.do(runCtx, uint64(i), r.gen.body(uint64(i)), r.o.Stream)
			samples[i] = s
			r.count(&s)
		}()
	}
	return len(arrivals)
}

// closedLoop starts the workers and returns a function that collects their samples once they
// have all returned.
func (r *runner) closedLoop(ctx, runCtx context.Context, epoch time.Time, wg *sync.WaitGroup) func() []Sample {
	deadline := epoch.Add(r.o.Duration)
	per := make([][]Sample, r.o.Concurrency)
	var next atomic.Uint64
	for w := range per {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := next.Add(1) - 1
				r.sent.Add(1)
				s := r.c.do(runCtx, i, r.gen.body(i), r.o.Stream)
				per[w] = append(per[w], s)
				r.count(&s)
			}
		}()
	}
	return func() []Sample {
		var all []Sample
		for _, p := range per {
			all = append(all, p...)
		}
		return all
	}
}

func (r *runner) count(s *Sample) {
	r.done.Add(1)
	if !s.OK() {
		r.failed.Add(1)
	}
}

// progress writes one line a second until stop.
func (r *runner) progress(w io.Writer, epoch time.Time, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastT := int64(0), epoch
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			done := r.done.Load()
			rate := float64(done-last) / now.Sub(lastT).Seconds()
			last, lastT = done, now
			sent := r.sent.Load()
			label := ""
			if r.o.Label != "" {
				label = r.o.Label + " "
			}
			fmt.Fprintf(w, "%s%5.0fs  sent %d  done %d  errors %d  in-flight %d  %.1f req/s\n",
				label, now.Sub(epoch).Seconds(), sent, done, r.failed.Load(), sent-done, rate)
		}
	}
}

// fire performs ev at its offset unless stop comes first.
func (r *runner) fire(ev Event, epoch time.Time, stop <-chan struct{}) {
	t := time.NewTimer(time.Until(epoch.Add(ev.At)))
	defer t.Stop()
	select {
	case <-stop:
		return
	case <-t.C:
	}
	at := time.Since(epoch)
	m := EventMark{Name: ev.Name, AtS: at.Seconds()}
	if ev.Do != nil {
		if err := ev.Do(); err != nil {
			m.Error = err.Error()
		}
	}
	r.mu.Lock()
	r.events = append(r.events, m)
	r.mu.Unlock()
}
