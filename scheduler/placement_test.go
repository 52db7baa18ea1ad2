package scheduler

import (
	"slices"
	"testing"
	"time"

	"github.com/herd-llm/herd/models"
)

// emptyNode is a healthy node with total GB of GPU memory at bw GB/s and nothing loaded.
func emptyNode(id string, total uint64, bw float64, ms ...NodeModel) Node {
	n := Node{ID: id, Healthy: true, CanLoad: true, Slots: 4, VRAMTotalBytes: total * gib, MemoryBandwidthGBs: bw}
	for _, m := range ms {
		if m.Resident {
			n.VRAMUsedBytes += m.VRAMBytes
		}
		n.Models = append(n.Models, m)
	}
	return n
}

func resident(name string, gb uint64, lastUsed time.Duration, inflight int) NodeModel {
	return NodeModel{Name: name, Resident: true, OnDisk: true, VRAMBytes: gb * gib, InFlight: inflight, LastUsed: t0.Add(-lastUsed)}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name      string
		req       PlacementRequest
		nodes     []Node
		wantNode  string
		wantEvict []string
		wantPull  bool
		wantRes   bool
		refused   map[string]Reason
	}{
		{
			name:     "fastest GPU where it fits",
			req:      PlacementRequest{Model: "m", VRAMBytes: 8 * gib},
			nodes:    []Node{emptyNode("t4", 15, 320), emptyNode("3090", 24, 936), emptyNode("a40", 45, 696)},
			wantNode: "3090", wantPull: true,
		},
		{
			name:     "equal GPUs: most headroom",
			req:      PlacementRequest{Model: "m", VRAMBytes: 8 * gib},
			nodes:    []Node{emptyNode("a", 24, 936, resident("x", 10, time.Minute, 1)), emptyNode("b", 24, 936, resident("y", 4, time.Minute, 1))},
			wantNode: "b", wantPull: true,
		},
		{
			name:     "equal GPUs and room: weights already on disk",
			req:      PlacementRequest{Model: "m", VRAMBytes: 8 * gib},
			nodes:    []Node{emptyNode("a", 24, 936), emptyNode("b", 24, 936, NodeModel{Name: "m", OnDisk: true})},
			wantNode: "b",
		},
		{
			name: "evicts idle models least recently used first, only as many as needed",
			req:  PlacementRequest{Model: "m", VRAMBytes: 12 * gib},
			nodes: []Node{emptyNode("n", 24, 936,
				resident("recent", 6, time.Minute, 0),
				resident("oldest", 6, time.Hour, 0),
				resident("busy", 6, 2*time.Hour, 2),
				resident("older", 4, 30*time.Minute, 0),
			)},
			wantNode: "n", wantEvict: []string{"oldest", "older"}, wantPull: true,
		},
		{
			name:     "never evicts a kept model",
			req:      PlacementRequest{Model: "m", VRAMBytes: 20 * gib, Keep: []string{"pinned"}},
			nodes:    []Node{emptyNode("n", 24, 936, resident("pinned", 10, time.Hour, 0))},
			refused:  map[string]Reason{"n": ReasonDoesNotFit},
			wantNode: "",
		},
		{
			name: "busy models are not evictable: a slower node with room wins",
			req:  PlacementRequest{Model: "m", VRAMBytes: 10 * gib},
			nodes: []Node{
				emptyNode("fast", 24, 936, resident("busy", 20, time.Hour, 1)),
				emptyNode("slow", 15, 320),
			},
			wantNode: "slow", wantPull: true, refused: map[string]Reason{"fast": ReasonDoesNotFit},
		},
		{
			name: "unhealthy, draining, stale, open, excluded and fixed-model nodes are refused",
			req:  PlacementRequest{Model: "m", VRAMBytes: gib, Exclude: []string{"tried"}},
			nodes: []Node{
				with(emptyNode("sick", 80, 2000), func(n *Node) { n.Healthy = false }),
				with(emptyNode("drain", 80, 2000), func(n *Node) { n.Draining = true }),
				with(emptyNode("stale", 80, 2000), func(n *Node) { n.Stale = true }),
				with(emptyNode("open", 80, 2000), func(n *Node) { n.CircuitOpen = true }),
				with(emptyNode("vllm", 80, 2000), func(n *Node) { n.CanLoad = false }),
				emptyNode("tried", 80, 2000),
				emptyNode("ok", 15, 320),
			},
			wantNode: "ok", wantPull: true,
			refused: map[string]Reason{"sick": ReasonUnhealthy, "drain": ReasonDraining, "stale": ReasonStale, "open": ReasonCircuitOpen, "vllm": ReasonCannotLoad, "tried": ReasonExcluded},
		},
		{
			name: "already resident on a healthy node: nothing to load",
			req:  PlacementRequest{Model: "m", VRAMBytes: 8 * gib},
			nodes: []Node{
				emptyNode("empty-fast", 80, 2000),
				emptyNode("has-it", 24, 320, resident("m", 8, time.Minute, 0)),
			},
			wantNode: "has-it", wantRes: true,
		},
		{
			name: "a new replica goes elsewhere",
			req:  PlacementRequest{Model: "m", VRAMBytes: 8 * gib, NewReplica: true},
			nodes: []Node{
				emptyNode("empty-fast", 80, 2000),
				emptyNode("has-it", 24, 320, resident("m", 8, time.Minute, 0)),
			},
			wantNode: "empty-fast", wantPull: true, refused: map[string]Reason{"has-it": ReasonAlreadyResident},
		},
		{
			name: "measured speed beats bandwidth",
			req:  PlacementRequest{Model: "m", VRAMBytes: 8 * gib},
			nodes: []Node{
				emptyNode("paper-fast", 24, 2000),
				emptyNode("measured", 24, 320, NodeModel{Name: "m", OnDisk: true, SizeBytes: 5 * gib, TokensPerSecond: 500}),
			},
			wantNode: "measured",
		},
		{
			name:     "too big for every node",
			req:      PlacementRequest{Model: "m", VRAMBytes: 100 * gib},
			nodes:    []Node{emptyNode("a", 24, 936), emptyNode("b", 45, 696)},
			refused:  map[string]Reason{"a": ReasonDoesNotFit, "b": ReasonDoesNotFit},
			wantNode: "",
		},
	}
	s := mustNew(t, DefaultConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := &Snapshot{Now: t0, Nodes: tt.nodes}
			p := s.Plan(tt.req, snap)
			if p.Node != tt.wantNode || p.OK() != (tt.wantNode != "") {
				t.Fatalf("node %q, want %q (plan %+v)", p.Node, tt.wantNode, p)
			}
			if !p.OK() {
				if p.Reason == "" || p.NodeIndex != -1 {
					t.Fatalf("a failed plan needs a reason and no index: %+v", p)
				}
			} else if snap.Nodes[p.NodeIndex].ID != p.Node {
				t.Fatalf("NodeIndex %d is not %s", p.NodeIndex, p.Node)
			}
			var evicted []string
			for _, e := range p.Evict {
				evicted = append(evicted, e.Model)
			}
			if !slices.Equal(evicted, tt.wantEvict) {
				t.Fatalf("evicts %v, want %v", evicted, tt.wantEvict)
			}
			if p.NeedsPull != tt.wantPull || p.AlreadyResident != tt.wantRes {
				t.Fatalf("pull %v resident %v, want %v %v", p.NeedsPull, p.AlreadyResident, tt.wantPull, tt.wantRes)
			}
			got := map[string]Reason{}
			for _, r := range p.Refused {
				got[r.Node] = r.Reason
			}
			for id, want := range tt.refused {
				if got[id] != want {
					t.Fatalf("node %s refused for %q, want %q (all: %v)", id, got[id], want, got)
				}
			}
			if p.OK() && !p.AlreadyResident && p.FreeAfterBytes > snap.Nodes[p.NodeIndex].VRAMTotalBytes {
				t.Fatalf("free after %d beyond total", p.FreeAfterBytes)
			}
		})
	}
}

func TestPlanEstimatesFromSpec(t *testing.T) {
	spec, ok := models.LookupModel("llama3.1:8b")
	if !ok {
		t.Skip("llama3.1:8b not in the models catalogue")
	}
	s := mustNew(t, DefaultConfig())
	// A 4-slot node needs the KV cache of 4 contexts; a 1-slot node of one.
	four := emptyNode("four", 24, 936)
	one := with(emptyNode("one", 24, 936), func(n *Node) { n.Slots = 1 })
	for _, n := range []Node{four, one} {
		p := s.Plan(PlacementRequest{Model: spec.Name, Spec: &spec, ContextLength: 8192}, &Snapshot{Nodes: []Node{n}})
		want := models.EstimateVRAM(spec, 8192, n.Slots)
		if p.VRAMBytes != want || p.FreeAfterBytes != n.VRAMTotalBytes-want {
			t.Fatalf("%s: planned %d bytes, free after %d; want %d from the models estimate", n.ID, p.VRAMBytes, p.FreeAfterBytes, want)
		}
	}
	// A context too large for the small node's memory with 4 slots is refused there.
	small := emptyNode("small", 8, 320)
	p := s.Plan(PlacementRequest{Model: spec.Name, Spec: &spec, ContextLength: 32768}, &Snapshot{Nodes: []Node{small}})
	if p.OK() {
		t.Fatalf("32k context × 4 slots of an 8B model placed on 8 GiB: %+v", p)
	}
}

func TestReplicas(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	t.Run("brings each model up to its minimum, fastest nodes first", func(t *testing.T) {
		snap := &Snapshot{Now: t0, Nodes: []Node{
			emptyNode("t4", 15, 320),
			emptyNode("3090", 24, 936, resident("chat", 8, time.Minute, 1)),
			emptyNode("a40", 45, 696),
			emptyNode("l4", 22, 300),
		}}
		plans := s.Replicas(map[string]int{"chat": 3, "embed": 1, "none": 0}, snap)
		var got []string
		for _, p := range plans {
			if !p.OK() {
				t.Fatalf("plan failed: %+v", p)
			}
			got = append(got, p.Model+"@"+p.Node)
		}
		// chat is resident on the 3090: two more copies, on the a40 then the t4 (320 GB/s beats
		// the l4's 300). embed's size is unknown, so no node can estimate its speed: they tie and
		// the most free memory wins, the a40's 37 GiB.
		want := []string{"chat@a40", "chat@t4", "embed@a40"}
		if !slices.Equal(got, want) {
			t.Fatalf("plans %v, want %v", got, want)
		}
		if snap.Nodes[0].VRAMUsedBytes != 0 || len(snap.Nodes[0].Models) != 0 {
			t.Fatal("Replicas modified the snapshot")
		}
	})
	t.Run("later plans see earlier ones and keep models at their minimum", func(t *testing.T) {
		snap := &Snapshot{Now: t0, Nodes: []Node{
			emptyNode("only", 24, 936, resident("a", 10, time.Hour, 0), NodeModel{Name: "b", OnDisk: true, VRAMBytes: 10 * gib}, NodeModel{Name: "c", OnDisk: true, VRAMBytes: 10 * gib}),
		}}
		plans := s.Replicas(map[string]int{"a": 1, "b": 1, "c": 1}, snap)
		// b fits beside a (20 of 24 GiB); c does not fit, and evicting a or b would drop them
		// below their minimum.
		if len(plans) != 2 || plans[0].Model != "b" || !plans[0].OK() || len(plans[0].Evict) != 0 {
			t.Fatalf("plans %+v", plans)
		}
		if plans[1].Model != "c" || plans[1].OK() {
			t.Fatalf("c should not fit: %+v", plans[1])
		}
	})
	t.Run("evicts an idle model nobody keeps warm", func(t *testing.T) {
		snap := &Snapshot{Now: t0, Nodes: []Node{
			emptyNode("only", 24, 936, resident("cold", 16, time.Hour, 0), NodeModel{Name: "hot", OnDisk: true, VRAMBytes: 12 * gib}),
		}}
		plans := s.Replicas(map[string]int{"hot": 1}, snap)
		if len(plans) != 1 || !plans[0].OK() || len(plans[0].Evict) != 1 || plans[0].Evict[0].Model != "cold" {
			t.Fatalf("plans %+v", plans)
		}
	})
	t.Run("asks for more replicas than nodes: stops with a reason", func(t *testing.T) {
		snap := &Snapshot{Now: t0, Nodes: []Node{emptyNode("a", 24, 936), emptyNode("b", 24, 936)}}
		plans := s.Replicas(map[string]int{"m": 1000}, snap)
		if len(plans) != 3 || !plans[0].OK() || !plans[1].OK() || plans[2].OK() {
			t.Fatalf("want two placements then one failure, got %+v", plans)
		}
	})
	t.Run("catalogue estimate when no node reports the model", func(t *testing.T) {
		spec, ok := models.LookupModel("llama3.1:8b")
		if !ok {
			t.Skip("not in catalogue")
		}
		snap := &Snapshot{Now: t0, Nodes: []Node{emptyNode("a", 24, 936)}}
		plans := s.Replicas(map[string]int{spec.Name: 1}, snap)
		if len(plans) != 1 || plans[0].VRAMBytes != models.EstimateVRAM(spec, 0, 4) {
			t.Fatalf("plans %+v", plans)
		}
	})
	if s.Replicas(map[string]int{"m": 1}, nil) != nil {
		t.Fatal("nil snapshot")
	}
}
