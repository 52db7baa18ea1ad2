package loadtest

import (
	"math"
	"slices"
	"time"
)

// Dist summarises a distribution of durations, in milliseconds.
type Dist struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the nearest-rank method: the
// smallest sample with at least p% of the samples at or below it. It is exact (no interpolation,
// no sketch) and always one of the samples; 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// distOf sorts d in place and summarises it.
func distOf(d []time.Duration) Dist {
	if len(d) == 0 {
		return Dist{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return Dist{
		N:    len(d),
		Mean: ms(sum / time.Duration(len(d))),
		P50:  ms(Percentile(d, 50)),
		P90:  ms(Percentile(d, 90)),
		P99:  ms(Percentile(d, 99)),
		Max:  ms(d[len(d)-1]),
	}
}

// ms converts to milliseconds rounded to the microsecond, so reports do not print noise digits.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// round3 rounds to three decimals for the same reason.
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// summarize turns samples into a report. elapsed is the wall time the rates are divided by.
func summarize(samples []Sample, elapsed time.Duration, o Options) *Report {
	o = o.withDefaults()
	rep := &Report{
		Label: o.Label, Simulated: o.Simulated, Target: o.Target, Model: o.Model,
		Workload: string(o.Workload), Mode: o.mode(), Stream: o.Stream,
		Concurrency: o.Concurrency, Seed: o.Seed,
		SLO:       SLO{TTFTMs: ms(o.SLOTTFT), TPOTMs: ms(o.SLOTPOT)},
		DurationS: round3(elapsed.Seconds()),
		Errors:    map[string]int{},
		Nodes:     map[string]int{},
	}
	if o.mode() == ModeOpenLoop {
		if o.ramped() {
			rep.RampFrom, rep.RampTo = o.RampFrom, o.RampTo
		} else {
			rep.RPS = o.RPS
		}
	}
	var ttft, tpot, itl, e2e []time.Duration
	outTokens, inTokens, good := 0, 0, 0
	for i := range samples {
		s := &samples[i]
		rep.Sent++
		if s.Node != "" {
			rep.Nodes[s.Node]++
		}
		if !s.OK() {
			rep.Failed++
			rep.Errors[string(s.Err)]++
			if len(rep.ErrorSamples) < 5 && s.ErrMsg != "" && !slices.Contains(rep.ErrorSamples, s.ErrMsg) {
				rep.ErrorSamples = append(rep.ErrorSamples, s.ErrMsg)
			}
			continue
		}
		rep.Succeeded++
		outTokens += s.OutputTokens
		inTokens += s.PromptTokens
		e2e = append(e2e, s.Latency)
		ttft = append(ttft, s.TTFT)
		if tp := s.TPOT(); tp > 0 {
			tpot = append(tpot, tp)
		}
		itl = append(itl, s.ITL...)
		if (o.SLOTTFT == 0 || s.TTFT <= o.SLOTTFT) && (o.SLOTPOT == 0 || s.TPOT() <= o.SLOTPOT) {
			good++
		}
	}
	rep.TTFT, rep.TPOT, rep.ITL, rep.E2E = distOf(ttft), distOf(tpot), distOf(itl), distOf(e2e)
	rep.OutputTokens, rep.PromptTokens = outTokens, inTokens
	if sec := elapsed.Seconds(); sec > 0 {
		rep.ThroughputRPS = round3(float64(rep.Succeeded) / sec)
		rep.OutputTokS = round3(float64(outTokens) / sec)
		rep.GoodputRPS = round3(float64(good) / sec)
	}
	rep.GoodRequests = good
	return rep
}
