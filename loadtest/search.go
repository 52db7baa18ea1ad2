package loadtest

import (
	"context"
	"fmt"
	"math"
)

// SearchOptions bounds a capacity search (SearchCapacity).
type SearchOptions struct {
	// Start is the first rate probed, in requests/s (> 0).
	Start float64
	// Min and Max bound the bracket: the search never probes below Min nor above Max
	// (defaults Start ÷ 64 and Start × 64).
	Min, Max float64
	// MaxProbes bounds the number of probes, bracketing and bisection together (default 8).
	MaxProbes int
	// Tolerance ends the bisection once (fail − pass) ÷ fail ≤ Tolerance (default 0.1).
	Tolerance float64
}

// Default search bounds.
const (
	DefaultSearchProbes    = 8
	DefaultSearchTolerance = 0.1
)

func (o SearchOptions) withDefaults() (SearchOptions, error) {
	if !(o.Start > 0) || math.IsInf(o.Start, 0) {
		return o, fmt.Errorf("%w: capacity search needs a positive, finite start rate, got %v", ErrBadOptions, o.Start)
	}
	if o.Min <= 0 {
		o.Min = o.Start / 64
	}
	if o.Max <= 0 {
		o.Max = o.Start * 64
	}
	if o.Min > o.Start || o.Max < o.Start {
		return o, fmt.Errorf("%w: capacity search start %g outside [%g, %g]", ErrBadOptions, o.Start, o.Min, o.Max)
	}
	if o.MaxProbes <= 0 {
		o.MaxProbes = DefaultSearchProbes
	}
	if o.Tolerance <= 0 {
		o.Tolerance = DefaultSearchTolerance
	}
	return o, nil
}

// Probe is the outcome of one probe: did the system meet its SLO target at that rate.
type Probe struct {
	// RateRPS is the rate probed.
	RateRPS float64 `json:"rate_rps"`
	// Pass is true when the target was met.
	Pass bool `json:"pass"`
	// Attainment is the fraction of requests that met the SLO.
	Attainment float64 `json:"attainment"`
}

// ProbeFunc runs one probe at rate requests/s. An error ends the search (a probe that merely
// fails the SLO is a result, Pass false, not an error).
type ProbeFunc func(ctx context.Context, rate float64) (Probe, error)

// SearchResult is what a capacity search found.
type SearchResult struct {
	// CapacityRPS is the highest rate that passed; 0 when none did.
	CapacityRPS float64 `json:"capacity_rps"`
	// FailRPS is the lowest rate that failed above CapacityRPS; 0 when none did (the capacity is
	// then a lower bound: Max or the probe budget was reached first).
	FailRPS float64 `json:"fail_rps,omitempty"`
	// Best indexes Probes: the probe at CapacityRPS (-1: none passed).
	Best int `json:"best"`
	// Probes lists every probe in the order run.
	Probes []Probe `json:"probes"`
}

// Bounded reports whether a failing rate was found above the capacity, so the capacity is known
// to within the bracket and not only a lower bound.
func (r SearchResult) Bounded() bool { return r.FailRPS > 0 }

// SearchCapacity finds the highest rate at which probe passes, assuming passing is monotone in
// the rate (it is, up to noise, for an open-loop load against a fixed cluster). It brackets first,
// doubling the rate from Start while probes pass (or halving it while they fail), then bisects
// the bracket until its relative width is within Tolerance, never running more than MaxProbes
// probes. It returns what it found so far together with ctx's or a probe's error.
func SearchCapacity(ctx context.Context, o SearchOptions, probe ProbeFunc) (SearchResult, error) {
	res := SearchResult{Best: -1}
	o, err := o.withDefaults()
	if err != nil {
		return res, err
	}
	lo, hi := 0.0, 0.0 // highest pass, lowest fail (0: none yet)
	run := func(rate float64) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		p, err := probe(ctx, rate)
		if err != nil {
			return false, err
		}
		p.RateRPS = rate
		res.Probes = append(res.Probes, p)
		if p.Pass && rate > lo {
			lo, res.Best = rate, len(res.Probes)-1
		}
		if !p.Pass && (hi == 0 || rate < hi) {
			hi = rate
		}
		return p.Pass, nil
	}
	finish := func(err error) (SearchResult, error) {
		res.CapacityRPS = lo
		if hi > lo {
			res.FailRPS = hi
		}
		return res, err
	}
	// Bracket.
	rate := o.Start
	pass, err := run(rate)
	if err != nil {
		return finish(err)
	}
	for len(res.Probes) < o.MaxProbes {
		if pass {
			if hi > 0 || rate >= o.Max {
				break
			}
			rate = min(rate*2, o.Max)
		} else {
			if lo > 0 || rate <= o.Min {
				break
			}
			rate = max(rate/2, o.Min)
		}
		if pass, err = run(rate); err != nil {
			return finish(err)
		}
	}
	// Bisect.
	for len(res.Probes) < o.MaxProbes && lo > 0 && hi > lo && (hi-lo)/hi > o.Tolerance {
		if _, err := run((lo + hi) / 2); err != nil {
			return finish(err)
		}
	}
	return finish(nil)
}
