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

// TestSwappingNodeWaits: a node loading another model in place of the one it holds is no place
// for a third model's load (the engine would queue it behind the first), nor for the model it
// is evicting, which is no longer resident there in effect.
func TestSwappingNodeWaits(t *testing.T) {
	a := maxLoaded(fleetNode("a", []string{"x"}, "y", "z"))
	a.Models[1].Loading = true // y is loading in place of x
	b := maxLoaded(fleetNode("b", []string{"w"}, "x", "z"))
	snap := &Snapshot{Now: t0, Nodes: []Node{a, b}}
	s := mustNew(t, DefaultConfig())
	var d Decision
	for _, model := range []string{"x", "z"} {
		req := Request{Model: model, MaxTokens: 100}
		s.Pick(&req, snap, &d)
		if got := rejected(snap, &d)["a"]; got != ReasonSwapping {
			t.Fatalf("%s: a refused for %v, want %v: %+v", model, got, ReasonSwapping, s.Explain(&req, snap).Nodes)
		}
		if c, ok := d.Best(); !ok || snap.Nodes[c.Node].ID != "b" || !c.NeedsLoad {
			t.Fatalf("%s: best %+v, want a load on b", model, d.Candidates)
		}
	}
	// y, the model loading on a, waits for that load.
	req := Request{Model: "y", MaxTokens: 100}
	s.Pick(&req, snap, &d)
	if got := order(snap, &d); len(got) != 1 || got[0] != "a" || d.Candidates[0].NeedsLoad {
		t.Fatalf("y: candidates %v, want a (loading)", got)
	}
}

// TestWaitForResidentCopy: a request for a model resident on a busy node waits for it rather
// than load the model where that evicts a model in demand, until the model's backlog in the
// gateway makes the wait cost more than the load.
func TestWaitForResidentCopy(t *testing.T) {
	a := maxLoaded(fleetNode("a", []string{"x"}))
	a.InFlight, a.Models[0].InFlight = 2, 2 // both slots busy
	b := maxLoaded(fleetNode("b", []string{"z"}, "x"))
	b.Models[0].LastUsed = t0
	snap := &Snapshot{Now: t0, Nodes: []Node{a, b}}
	s := mustNew(t, DefaultConfig())
	var d Decision
	req := Request{Model: "x", MaxTokens: 100, Demand: map[string]float64{"x": 1, "z": 0.5}}
	s.Pick(&req, snap, &d)
	if got := order(snap, &d); len(got) != 1 || got[0] != "a" {
		t.Fatalf("candidates %v, want only a (busy, resident)", got)
	}
	if got := rejected(snap, &d)["b"]; got != ReasonWaitCheaper {
		t.Fatalf("b refused for %v, want %v", got, ReasonWaitCheaper)
	}
	// Least inflight knows nothing of loads: b, idle, is its first choice.
	mustNew(t, policy(PolicyLeastInflight)).Pick(&req, snap, &d)
	if got := order(snap, &d); len(got) != 2 || got[0] != "b" {
		t.Fatalf("least_inflight %v, want b first", got)
	}
	// Forty requests for x waiting: a second copy on b is worth its load.
	req.Waiting = 40
	s.Pick(&req, snap, &d)
	if c, ok := d.Best(); !ok || snap.Nodes[c.Node].ID != "b" || !c.NeedsLoad {
		t.Fatalf("with a backlog, candidates %+v rejections %+v; want a load on b first", d.Candidates, d.Rejections)
	}
}

// TestDemandWeighsEvictions: with the gateway's demand rates, a model resident nowhere evicts
// the model asked for least, not the least recently used one.
func TestDemandWeighsEvictions(t *testing.T) {
	hot := maxLoaded(fleetNode("hot", []string{"h"}, "x"))
	cold := maxLoaded(fleetNode("cold", []string{"c"}, "x"))
	warm := maxLoaded(fleetNode("warm", []string{"w"}, "x"))
	hot.Models[0].LastUsed = t0.Add(-time.Minute) // the least recently used
	cold.Models[0].LastUsed, warm.Models[0].LastUsed = t0, t0
	snap := &Snapshot{Now: t0, Nodes: []Node{hot, cold, warm}}
	s := mustNew(t, DefaultConfig())
	req := Request{Model: "x", MaxTokens: 100}
	var d Decision
	s.Pick(&req, snap, &d)
	if c, _ := d.Best(); snap.Nodes[c.Node].ID != "hot" {
		t.Fatalf("without demand, best %s; want hot (least recently used)", snap.Nodes[c.Node].ID)
	}
	req.Demand = map[string]float64{"h": 2, "w": 0.3, "c": 0.01}
	s.Pick(&req, snap, &d)
	if got := order(snap, &d); len(got) != 1 || got[0] != "cold" {
		t.Fatalf("with demand, candidates %v; want only cold: %+v", got, s.Explain(&req, snap).Nodes)
	}
}

// TestSwapWaitsForDrain: a load that must evict a busy model waits for its requests to finish
// (the engine unloads only an idle runner), and the wait model counts that drain.
func TestSwapWaitsForDrain(t *testing.T) {
	idle := maxLoaded(fleetNode("n", []string{"z"}, "x"))
	busy := idle
	busy.Models = append([]NodeModel(nil), idle.Models...)
	busy.InFlight, busy.Models[0].InFlight = 2, 2
	s := mustNew(t, DefaultConfig())
	req := Request{Model: "x", MaxTokens: 100}
	wait := func(n Node) float64 {
		var d Decision
		s.Pick(&req, &Snapshot{Now: t0, Nodes: []Node{n}}, &d)
		if len(d.Candidates) != 1 || !d.Candidates[0].NeedsLoad {
			t.Fatalf("candidates %+v, want one load", d.Candidates)
		}
		return d.Candidates[0].ExpectedWait.Seconds()
	}
	tps, _ := nodeSpeed(&idle, 1, idle.Models[1].SizeBytes)
	// Two requests of 256 tokens on two slots, each slowed by the other.
	drain := 256 * (1 + 0.25) / tps
	if got, want := wait(busy)-wait(idle), drain; got < want*0.999 || got > want*1.001 {
		t.Fatalf("busy node adds %.3fs, want the drain %.3fs", got, want)
	}
}

// TestEvictTheSlowCopy: of a model resident on a fast and a slow node, a load evicts the slow
// copy, which carries the smaller share of the model's requests.
func TestEvictTheSlowCopy(t *testing.T) {
	fast := maxLoaded(fleetNode("fast", []string{"x"}, "y"))
	slow := maxLoaded(fleetNode("slow", []string{"x"}, "y"))
	slow.MemoryBandwidthGBs = 300
	other := maxLoaded(fleetNode("other", []string{"z"}, "y"))
	for _, n := range []*Node{&fast, &slow, &other} {
		n.Models[0].LastUsed = t0
	}
	snap := &Snapshot{Now: t0, Nodes: []Node{fast, slow, other}}
	req := Request{Model: "y", MaxTokens: 100, Demand: map[string]float64{"x": 1, "z": 1}}
	var d Decision
	s := mustNew(t, DefaultConfig())
	s.Pick(&req, snap, &d)
	if c, ok := d.Best(); !ok || snap.Nodes[c.Node].ID != "slow" {
		t.Fatalf("candidates %+v; want slow first: %+v", d.Candidates, s.Explain(&req, snap).Nodes)
	}
}
