package registry

import (
	"math"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// TestHeartbeatsTeachTheScheduler feeds the registry heartbeats from two nodes: one whose GPU
// reports itself an RTX 3090 but decodes at a T4's speed, and an A40 that runs as its profile
// says. Before any measurement the 3090's profile wins the schedule; after a few heartbeats
// carrying measured speeds and concurrencies, the learned fit in the snapshot sends the request
// to the A40.
func TestHeartbeatsTeachTheScheduler(t *testing.T) {
	r, _ := newTestRegistry(t)
	node := func(id, gpu string, tps, conc float64) agentapi.Heartbeat {
		hb := beat(id)
		hb.GPUs[0].Name = gpu
		hb.GPUs[0].MemoryTotalBytes = 24 * gib
		hb.Models = []agentapi.Model{{Name: "llama3.1:8b", Resident: true, OnDisk: true, SizeBytes: 4_920_000_000,
			VRAMBytes: 7 * gib, TokensPerSecond: tps, Concurrency: conc}}
		return hb
	}
	s, err := scheduler.New(scheduler.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	req := &scheduler.Request{Model: "llama3.1:8b", Class: scheduler.ClassInteractive, MaxTokens: 128, Seed: 3}
	first := func() string {
		var d scheduler.Decision
		snap := r.Snapshot()
		s.Pick(req, snap, &d)
		b, ok := d.Best()
		if !ok {
			t.Fatalf("no candidate: %+v", d.Rejections)
		}
		return snap.Nodes[b.Node].ID
	}
	r.Observe(node("slow", "NVIDIA GeForce RTX 3090", 0, 0))
	r.Observe(node("a40", "NVIDIA A40", 0, 0))
	if got := first(); got != "slow" {
		t.Fatalf("unmeasured: picked %s, want the 3090 its profile makes fastest", got)
	}
	for i := range 10 {
		conc := float64(1 + i%3)
		share := math.Pow(conc, -0.4) // the sim's sharing: aggregate n^0.6
		r.Observe(node("slow", "NVIDIA GeForce RTX 3090", 38*share, conc))
		r.Observe(node("a40", "NVIDIA A40", 85*share, conc))
	}
	learned := snapNode(t, r, "slow").Models[0].Learned
	if learned.Samples != 10 || math.Abs(learned.DecodeTPS-38) > 0.15*38 {
		t.Fatalf("learned %+v for the slow node, want about 38 tok/s from 10 samples", learned)
	}
	if got := first(); got != "a40" {
		t.Fatalf("after learning: picked %s, want a40", got)
	}
}
