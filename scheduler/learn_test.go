package scheduler

import (
	"math"
	"testing"
)

// trueRate is a stream's decode rate on a node whose single-stream speed is tps and whose
// contention is c, with others other streams beside it: the ground truth the tests measure.
func trueRate(tps, c float64, others int) float64 { return tps / (1 + c*float64(others)) }

func near(got, want, rel float64) bool { return math.Abs(got-want) <= rel*math.Abs(want) }

func TestLearnerRecoversSpeedAndContention(t *testing.T) {
	cases := []struct {
		name    string
		tps, c  float64
		samples int
	}{
		{"little contention", 110, 0.1, 40},
		{"prior-like", 80, 0.25, 40},
		{"heavy contention", 40, 0.7, 40},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLearner(LearnerConfig{})
			var sp Speed
			for i := range tc.samples {
				conc := 1 + i%4 // 1..4 requests in flight, as a loaded node sees
				sp = l.Observe("n", "m", trueRate(tc.tps, tc.c, conc-1), float64(conc), 0)
			}
			if !near(sp.DecodeTPS, tc.tps, 0.05) || math.Abs(sp.Contention-tc.c) > 0.05 {
				t.Fatalf("learned %+v, want tps %v contention %v", sp, tc.tps, tc.c)
			}
			if sp.Samples != tc.samples {
				t.Errorf("samples %d, want %d", sp.Samples, tc.samples)
			}
		})
	}
}

func TestLearnerOneConcurrencyKeepsThatLevel(t *testing.T) {
	// Measurements all taken with 4 requests in flight cannot separate speed from contention:
	// the fit must still predict what was measured at that level.
	l := NewLearner(LearnerConfig{})
	var sp Speed
	for range 30 {
		sp = l.Observe("n", "m", 30, 4, 0)
	}
	if got := trueRate(sp.DecodeTPS, sp.Contention, 3); !near(got, 30, 0.02) {
		t.Fatalf("fit %+v predicts %.2f tok/s at 4 in flight, measured 30", sp, got)
	}
	if math.Abs(sp.Contention-DefaultConfig().SlotContention) > 0.02 {
		t.Errorf("contention %v moved from the prior without evidence", sp.Contention)
	}
}

func TestLearnerIgnoresRepeatsAndGarbage(t *testing.T) {
	l := NewLearner(LearnerConfig{})
	first := l.Observe("n", "m", 50, 1, 900)
	for _, tc := range []struct {
		name           string
		tps, conc, pre float64
	}{
		{"heartbeat repeating the same average", 50, 1, 0},
		{"NaN", math.NaN(), 1, 0},
		{"+Inf", math.Inf(1), 2, 0},
		{"negative", -3, 2, 0},
		{"zero", 0, 3, 0},
	} {
		if got := l.Observe("n", "m", tc.tps, tc.conc, tc.pre); got != first {
			t.Errorf("%s: fit changed from %+v to %+v", tc.name, first, got)
		}
	}
	if got := l.Observe("n", "m", 40, math.NaN(), 0); got.Samples != 2 || !validSpeed(got.DecodeTPS) {
		t.Errorf("a bad concurrency should count as 1: %+v", got)
	}
	if first.PrefillTPS != 900 {
		t.Errorf("prefill %v, want 900", first.PrefillTPS)
	}
	l.Forget("n")
	if got := l.Speed("n", "m"); got.Samples != 0 {
		t.Errorf("forgotten node still has %+v", got)
	}
}

// TestLearnerAdaptsToSlowNode is the case the learner exists for: a node whose GPU profile says
// RTX 3090 but which decodes at a T4's speed (a throttled board, a slower backend). Before it has
// measured anything the scheduler trusts the profile and prefers it over an A40; once its
// heartbeats carry what it really does, the scheduler routes to the A40.
func TestLearnerAdaptsToSlowNode(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	unmeasured := func(n Node) Node {
		return with(n, func(n *Node) { n.Models[0].TokensPerSecond = 0 })
	}
	snap := &Snapshot{Now: t0, Nodes: []Node{
		unmeasured(with(gpuNode("slow-3090"))),
		unmeasured(with(gpuNode("a40"), func(n *Node) { n.MemoryBandwidthGBs = 696 })),
	}}
	req := &Request{Model: "llama3.1:8b", Class: ClassInteractive, MaxTokens: 128, PromptTokens: 400, Seed: 7}
	var d Decision
	s.Pick(req, snap, &d)
	if got := order(snap, &d); got[0] != "slow-3090" {
		t.Fatalf("before any measurement the profile should win: order %v", got)
	}
	if ex := s.Explain(req, snap); ex.Nodes[0].TokensPerSecondSource != "bandwidth_estimate" {
		t.Fatalf("prior source %q", ex.Nodes[0].TokensPerSecondSource)
	}

	// Heartbeats: the "3090" really decodes like a T4 (38 tok/s single stream), the A40 as its
	// profile says (85), both with the sim's kind of sharing, which is not the scheduler's
	// prior: aggregate n^0.6, so a stream runs at tps × n^-0.4.
	l := NewLearner(LearnerConfig{})
	for i := range 12 {
		conc := 1 + i%3
		share := math.Pow(float64(conc), -0.4)
		snap.Nodes[0].Models[0].TokensPerSecond = 38 * share
		snap.Nodes[0].Models[0].Concurrency = float64(conc)
		snap.Nodes[1].Models[0].TokensPerSecond = 85 * share
		snap.Nodes[1].Models[0].Concurrency = float64(conc)
		l.Learn(&snap.Nodes[0])
		l.Learn(&snap.Nodes[1])
	}
	slow := snap.Nodes[0].Models[0].Learned
	if !near(slow.DecodeTPS, 38, 0.15) {
		t.Fatalf("learned %+v for the slow node, want about 38 tok/s", slow)
	}
	s.Pick(req, snap, &d)
	if got := order(snap, &d); got[0] != "a40" {
		t.Fatalf("after learning the slow node's speed the A40 should win: order %v", got)
	}
	ex := s.Explain(req, snap)
	if ex.Nodes[0].TokensPerSecondSource != "learned" || !near(ex.Nodes[0].TokensPerSecond, slow.DecodeTPS, 1e-9) {
		t.Errorf("explanation %+v", ex.Nodes[0])
	}
}
