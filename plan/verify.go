package plan

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/herd-llm/herd/loadtest"
)

// SimVerifier verifies an option by a capacity search on a simulated cluster of that size, one
// simulated agent per node, started from the herd binary with the herd policy. The first probe
// is at the workload's rate and decides pass or fail; the search's other probes bracket the
// verified capacity above (or below) it.
type SimVerifier struct {
	// Binary is the herd binary (default: this executable).
	Binary string
	// LogDir keeps the probes' process logs (default: none kept).
	LogDir string
	// Progress receives one line per probe (nil: quiet).
	Progress io.Writer
}

var _ Verifier = (*SimVerifier)(nil)

// Verify implements Verifier.
func (s *SimVerifier) Verify(ctx context.Context, o *Option, w VerifyWorkload) (*Verification, error) {
	var nodes []string
	for _, nc := range o.Nodes {
		for range nc.Count {
			nodes = append(nodes, nc.GPU)
		}
	}
	probe := &loadtest.SimProbe{
		Binary: s.Binary, GPUs: strings.Join(nodes, ","), Policy: "herd", SimSpeed: w.SimSpeed,
		Attainment: w.Attainment, LogDir: s.LogDir, Progress: s.Progress,
		Load: loadtest.Options{
			Model: w.Model, Workload: loadtest.WorkloadSynthetic, Stream: true, Seed: w.Seed,
			PromptTokens: w.PromptTokens, OutputTokens: w.OutputTokens,
			Duration: time.Duration(w.ProbeDuration * float64(time.Second)),
			SLOTTFT:  w.SLO.TTFT, SLOTPOT: w.SLO.TPOT,
		},
	}
	cr, err := loadtest.CapacitySearch(ctx, probe, loadtest.SearchOptions{
		Start: w.RPS, Min: w.RPS / 16, Max: w.RPS * 16, MaxProbes: w.Probes, Tolerance: loadtest.DefaultSearchTolerance,
	})
	if cr == nil {
		return nil, err
	}
	v := &Verification{
		Simulated: true, CapacityRPS: cr.CapacityRPS, Bounded: cr.Bounded, FailRPS: cr.FailRPS, TokS: cr.TokS, TTFT: cr.TTFT, TPOT: cr.TPOT, Probes: cr.Probes,
	}
	v.Pass = cr.CapacityRPS >= w.RPS
	if err != nil {
		return v, err
	}
	return v, nil
}
