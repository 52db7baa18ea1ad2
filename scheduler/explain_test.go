package scheduler

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/herd-llm/herd/internal/golden"
)

// explainSnapshot is a small heterogeneous cluster with one node refused for each common reason.
func explainSnapshot() *Snapshot {
	return &Snapshot{Now: t0, Nodes: []Node{
		with(gpuNode("t4-1"), speed(38), load(1, 0), func(n *Node) { n.MemoryBandwidthGBs = 320; n.VRAMTotalBytes = 15 * gib; n.Utilization = 0.4 }),
		with(gpuNode("3090-1"), speed(112), load(4, 2), func(n *Node) { n.Utilization = 0.97 }),
		with(gpuNode("a40-1"), speed(0), notResident, func(n *Node) { n.MemoryBandwidthGBs = 696; n.VRAMTotalBytes = 45 * gib }),
		with(gpuNode("3090-2"), speed(108), func(n *Node) { n.Throttled = true; n.Utilization = 0.2 }),
		with(gpuNode("3090-3"), func(n *Node) { n.Draining = true }),
		with(gpuNode("a40-2"), func(n *Node) { n.Healthy = false; n.UnhealthyReason = "XID 79: fell off the bus" }),
		with(gpuNode("vllm-1"), notResident, func(n *Node) { n.CanLoad = false }),
	}}
}

func TestExplainGolden(t *testing.T) {
	for _, p := range policies {
		t.Run(p, func(t *testing.T) {
			s := mustNew(t, policy(p))
			req := &Request{Model: "llama3.1:8b", Class: ClassInteractive, PromptTokens: 1200, MaxTokens: 400, PrefixHash: 42, Seq: 7, Seed: 1234}
			ex := s.Explain(req, explainSnapshot())
			got, err := json.MarshalIndent(ex, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden.Check(t, "testdata/explain_"+p+".golden.json", got)
			// The explanation's order is Pick's order.
			var d Decision
			s.Pick(req, explainSnapshot(), &d)
			for i, c := range d.Candidates[:d.Ranked] {
				if ex.Order[i] != explainSnapshot().Nodes[c.Node].ID {
					t.Fatalf("explain order %v disagrees with pick at %d", ex.Order, i)
				}
			}
		})
	}
}

func TestExplainEmpty(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	b, err := json.Marshal(s.Explain(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	// Empty lists, not null, so a dashboard can iterate without checks.
	if !bytes.Contains(b, []byte(`"order":[]`)) || !bytes.Contains(b, []byte(`"nodes":[]`)) {
		t.Fatalf("got %s", b)
	}
}
