package scheduler

import (
	"testing"
	"time"
)

// fleetNode is a 24 GiB node holding the given models, each 10 GiB; resident ones fill VRAM.
func fleetNode(id string, resident []string, onDisk ...string) Node {
	n := Node{ID: id, Backend: "ollama", Healthy: true, CanLoad: true, Slots: 2, VRAMTotalBytes: 24 * gib, MemoryBandwidthGBs: 936}
	for _, m := range resident {
		n.Models = append(n.Models, NodeModel{Name: m, Resident: true, OnDisk: true, VRAMBytes: 10 * gib, SizeBytes: 9 * gib, LastUsed: t0.Add(-time.Hour)})
		n.VRAMUsedBytes += 10 * gib
	}
	for _, m := range onDisk {
		n.Models = append(n.Models, NodeModel{Name: m, OnDisk: true, VRAMBytes: 10 * gib, SizeBytes: 9 * gib})
	}
	return n
}

// maxLoaded gives n room for many models but a bound of one resident model.
func maxLoaded(n Node) Node {
	n.VRAMTotalBytes, n.MaxLoadedModels = 80*gib, 1
	return n
}

// older makes n's first model its least recently used.
func older(n Node) Node {
	n.Models[0].LastUsed = t0.Add(-2 * time.Hour)
	return n
}

// TestCoalesceBehindLoad: while one node loads a model, the herd policy sends the model's
// requests there (refusing to start a second load), and the baselines, which do not know of
// loads, are unaffected.
func TestCoalesceBehindLoad(t *testing.T) {
	a := fleetNode("a", nil, "x")
	a.Models[0].Loading = true
	a.InFlight = 2 // the request that started the load and one more: its slots are full
	b := fleetNode("b", nil, "x")
	snap := &Snapshot{Now: t0, Nodes: []Node{a, b}}
	req := Request{Model: "x", MaxTokens: 100}
	var d Decision
	mustNew(t, DefaultConfig()).Pick(&req, snap, &d)
	if len(d.Candidates) != 1 || d.Candidates[0].Node != 0 || d.Candidates[0].NeedsLoad {
		t.Fatalf("herd candidates %+v rejections %+v, want only a (loading, no new load)", d.Candidates, d.Rejections)
	}
	if d.Rejections[0].Reason != ReasonLoadingElsewhere {
		t.Fatalf("b refused for %v, want %v", d.Rejections[0].Reason, ReasonLoadingElsewhere)
	}
	mustNew(t, Config{Policy: PolicyLeastInflight}).Pick(&req, snap, &d)
	if len(d.Candidates) != 2 {
		t.Fatalf("least_inflight has %d candidates, want both nodes", len(d.Candidates))
	}
	// Once the model is resident on a, loading elsewhere is allowed again (and scored low).
	snap.Nodes[0].Models[0].Loading, snap.Nodes[0].Models[0].Resident = false, true
	mustNew(t, DefaultConfig()).Pick(&req, snap, &d)
	if len(d.Candidates) != 2 {
		t.Fatalf("with x resident on a, candidates %+v; want both", d.Candidates)
	}
}

// TestLeastHarmfulEviction: a model resident nowhere loads where the eviction it forces hurts
// least: not where it would evict the cluster's only copy of a model, nor a model just used.
func TestLeastHarmfulEviction(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  string
	}{
		{
			name: "keeps the only copy",
			// a would evict y, resident nowhere else; b evicts z, also resident on c.
			// Each node evicts its first model first (least recently used).
			nodes: []Node{older(fleetNode("a", []string{"y", "w"}, "x")), older(fleetNode("b", []string{"z", "w"}, "x")), fleetNode("c", []string{"z", "y2"})},
			want:  "b",
		},
		{
			name: "the bound on resident models evicts whatever memory is free",
			// 80 GiB each, one model at a time (OLLAMA_MAX_LOADED_MODELS=1): a's y is the only copy.
			nodes: []Node{maxLoaded(fleetNode("a", []string{"y"}, "x")), maxLoaded(fleetNode("b", []string{"z"}, "x")),
				maxLoaded(fleetNode("c", []string{"z"}))},
			want: "b",
		},
		{
			name: "free memory beats any eviction",
			nodes: []Node{fleetNode("a", []string{"y", "w"}, "x"), fleetNode("b", []string{"z"}, "x"),
				fleetNode("c", []string{"z", "y", "w"})},
			want: "b",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &Snapshot{Now: t0, Nodes: tc.nodes}
			req := Request{Model: "x", MaxTokens: 100}
			var d Decision
			s := mustNew(t, DefaultConfig())
			s.Pick(&req, snap, &d)
			if got := snap.Nodes[d.Candidates[0].Node].ID; got != tc.want {
				t.Fatalf("loaded on %s, want %s: %+v", got, tc.want, s.Explain(&req, snap).Nodes)
			}
		})
	}
	// A model in use is never evicted: a node whose residents are all busy cannot take the load.
	busy := fleetNode("a", []string{"y", "w"}, "x")
	busy.Models[0].InFlight, busy.Models[1].InFlight = 1, 1
	var d Decision
	req := Request{Model: "x", ModelVRAMBytes: 10 * gib}
	mustNew(t, DefaultConfig()).Pick(&req, &Snapshot{Now: t0, Nodes: []Node{busy}}, &d)
	if len(d.Candidates) != 0 || d.Rejections[0].Reason != ReasonDoesNotFit {
		t.Fatalf("a node whose models are all busy was offered for a load: %+v", d)
	}
}
