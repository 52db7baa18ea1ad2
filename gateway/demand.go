package gateway

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// demandMeter measures each model's request rate, which the herd policy weighs evictions by
// (scheduler.Request.Demand): evicting a model asked for every few seconds costs its users a
// reload and a wait soon; evicting one asked for every few minutes costs little. The scheduler
// stays a pure function of its inputs: the meter lives here and hands each Pick a read-only map.
//
// Each model's rate is an exponentially decaying count of its requests (time constant
// demandTau), corrected for the meter's own age the way Adam corrects its moments, so the first
// minute reads the rate seen so far rather than a rate rising from zero. The published map is
// rebuilt at most every demandPublishEvery, copy on write, so a Pick never sees it change.
type demandMeter struct {
	mu    sync.Mutex
	start time.Time
	rates map[string]*decaying
	next  time.Time
	pub   atomic.Pointer[map[string]float64]
}

// decaying is one model's decayed request count at its last update.
type decaying struct {
	v    float64
	last time.Time
}

const (
	// demandTau is the time constant of the rates: long enough to tell a model asked for every
	// ten seconds from one asked for every minute, short enough to follow a shift in a few minutes.
	demandTau = time.Minute
	// demandPublishEvery bounds how often the published rates are rebuilt.
	demandPublishEvery = 100 * time.Millisecond
	// demandWarm is the shortest history the rates are taken over.
	demandWarm = 10 * time.Second
	// maxDemandModels bounds the models metered (the names come from the nodes' model lists).
	maxDemandModels = 4096
)

// observe counts a request for model at now and returns the rates to schedule it with (requests
// per second by model, read-only).
func (d *demandMeter) observe(model string, now time.Time) map[string]float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rates == nil {
		d.rates, d.start = map[string]*decaying{}, now
	}
	r := d.rates[model]
	if r == nil && len(d.rates) < maxDemandModels {
		r = &decaying{last: now}
		d.rates[model] = r
	}
	if r != nil {
		r.v = r.v*decay(now.Sub(r.last)) + 1
		r.last = now
	}
	if p := d.pub.Load(); p != nil && now.Before(d.next) {
		return *p
	}
	out := make(map[string]float64, len(d.rates))
	// The bias correction: a meter of age a has seen 1 − e^(−a/τ) of a steady rate's weight.
	seen := 1 - decay(now.Sub(d.start))
	// Younger than demandWarm, a first request would read as a burst: count it over demandWarm.
	seen = max(seen, 1-decay(demandWarm))
	for name, r := range d.rates {
		out[name] = r.v * decay(now.Sub(r.last)) / demandTau.Seconds() / seen
	}
	d.pub.Store(&out)
	d.next = now.Add(demandPublishEvery)
	return out
}

// decay is e^(−dt/demandTau); a negative dt (a clock step back) decays nothing.
func decay(dt time.Duration) float64 {
	if dt <= 0 {
		return 1
	}
	return math.Exp(-dt.Seconds() / demandTau.Seconds())
}
