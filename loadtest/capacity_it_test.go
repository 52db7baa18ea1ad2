package loadtest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestCapacityScenarioTinyProbes runs the capacity scenario end to end on the real herd binary
// with tiny probes: two policies, two probes each, a few simulated seconds per probe. It checks
// the machinery (fresh clusters, the search, the report), not the figures.
func TestCapacityScenarioTinyProbes(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sr, err := RunScenario(ctx, ScenarioCapacity, ScenarioOptions{
		Binary: bin, Policies: []string{"round_robin", "herd"}, SimSpeed: 10,
		Load:   Options{Duration: 8 * time.Second, Stream: true, Seed: 5, Workload: WorkloadChatShort},
		Search: SearchOptions{Start: 1, MaxProbes: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*CapacityReport)
	if !rep.Simulated || len(rep.Policies) != 2 || rep.SimSpeed != 10 || rep.SLO.TTFTMs != 2000 {
		t.Fatalf("report %+v", rep)
	}
	for _, p := range rep.Policies {
		if len(p.Probes) != 2 || p.Probes[0].RateRPS != 1 {
			t.Fatalf("policy %s probes %+v", p.Policy, p.Probes)
		}
		for _, pt := range p.Probes {
			if pt.Requests == 0 || pt.WallS <= 0 {
				t.Errorf("policy %s probe %+v", p.Policy, pt)
			}
		}
		// 1 req/s of chat-short is far below what three simulated GPUs serve.
		if !p.Probes[0].Pass || p.CapacityRPS < 1 || p.TTFT.P50 <= 0 {
			t.Errorf("policy %s: %+v", p.Policy, p)
		}
	}
	if rep.Policies[0].Probes[0].Requests != rep.Policies[1].Probes[0].Requests {
		t.Errorf("the same seed and rate offered %d and %d requests", rep.Policies[0].Probes[0].Requests, rep.Policies[1].Probes[0].Requests)
	}
	var txt, svg bytes.Buffer
	if err := sr.WriteText(&txt); err != nil || !strings.Contains(txt.String(), "SIMULATED") || !strings.Contains(txt.String(), "| herd |") {
		t.Errorf("text %v:\n%s", err, txt.String())
	}
	if err := sr.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
}

// TestBatchMixScenarioTiny runs batch-mix briefly: an idle run and a run with a small batch.
func TestBatchMixScenarioTiny(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sr, err := RunScenario(ctx, ScenarioBatchMix, ScenarioOptions{
		Binary: bin, SimSpeed: 10,
		Load: Options{Duration: 12 * time.Second, RPS: 2, Stream: true, Seed: 5, BatchLines: 300},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*BatchMixReport)
	if !rep.Simulated || rep.Idle.Requests == 0 || rep.WithBatch.Requests == 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Idle.Requests != rep.WithBatch.Requests {
		t.Errorf("the same seed offered %d and %d interactive requests", rep.Idle.Requests, rep.WithBatch.Requests)
	}
	if rep.Idle.BatchTokS != 0 || rep.WithBatch.Batch == nil || rep.WithBatch.Batch.ID == "" {
		t.Fatalf("batch: idle %v, with %+v", rep.Idle.BatchTokS, rep.WithBatch.Batch)
	}
	if rep.WithBatch.BatchLinesDone <= 0 || rep.WithBatch.BatchShare <= 0 || rep.WithBatch.BatchShare >= 1 {
		t.Errorf("the batch did no work in the window: %+v", rep.WithBatch)
	}
	var txt bytes.Buffer
	if err := sr.WriteText(&txt); err != nil || !strings.Contains(txt.String(), "with_batch") {
		t.Errorf("text %v:\n%s", err, txt.String())
	}
}
