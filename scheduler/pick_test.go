package scheduler

import (
	"math"
	"math/bits"
	"slices"
	"testing"
	"time"
)

func TestFilters(t *testing.T) {
	base := gpuNode("n")
	tests := []struct {
		name string
		node Node
		req  Request
		cfg  func(*Config)
		want Reason
	}{
		{name: "eligible", node: base, want: ReasonNone},
		{name: "stale", node: with(base, func(n *Node) { n.Stale = true }), want: ReasonStale},
		{name: "draining", node: with(base, func(n *Node) { n.Draining = true }), want: ReasonDraining},
		{name: "unhealthy GPU", node: with(base, func(n *Node) { n.Healthy = false; n.UnhealthyReason = "ECC uncorrectable" }), want: ReasonUnhealthy},
		{name: "circuit open", node: with(base, func(n *Node) { n.CircuitOpen = true }), want: ReasonCircuitOpen},
		{name: "excluded after a failed try", node: base, req: Request{Exclude: []string{"other", "n"}}, want: ReasonExcluded},
		{name: "model unknown to node", node: base, req: Request{Model: "qwen2.5:7b"}, want: ReasonModelUnavailable},
		{name: "model listed but neither resident nor on disk", node: with(base, func(n *Node) { n.Models[0].Resident, n.Models[0].OnDisk = false, false }), want: ReasonModelUnavailable},
		{name: "not resident, backend cannot load", node: with(base, notResident, func(n *Node) { n.CanLoad = false }), want: ReasonCannotLoad},
		{name: "not resident, fits in free VRAM", node: with(base, notResident), want: ReasonNone},
		{
			name: "not resident, does not fit even after evicting idle models",
			node: with(base, notResident, func(n *Node) {
				n.VRAMUsedBytes = 20 * gib
				n.Models = append(n.Models, NodeModel{Name: "busy", Resident: true, VRAMBytes: 20 * gib, InFlight: 1})
			}),
			want: ReasonDoesNotFit,
		},
		{
			name: "not resident, fits once an idle model is evicted",
			node: with(base, notResident, func(n *Node) {
				n.VRAMUsedBytes = 20 * gib
				n.Models = append(n.Models, NodeModel{Name: "idle", Resident: true, VRAMBytes: 20 * gib})
			}),
			want: ReasonNone,
		},
		{
			name: "not resident, size from the request when the node reports none",
			node: with(base, notResident, func(n *Node) { n.Models[0].VRAMBytes, n.Models[0].SizeBytes = 0, 0 }),
			req:  Request{ModelVRAMBytes: 30 * gib},
			want: ReasonDoesNotFit,
		},
		{
			name: "no GPU telemetry: fit unknown, not refused",
			node: with(base, notResident, func(n *Node) { n.VRAMTotalBytes, n.VRAMUsedBytes = 0, 0 }),
			req:  Request{ModelVRAMBytes: 30 * gib},
			want: ReasonNone,
		},
		{name: "batch, free slot", node: with(base, load(3, 0)), req: Request{Class: ClassBatch}, want: ReasonNone},
		{name: "batch, no free slot", node: with(base, load(4, 0)), req: Request{Class: ClassBatch}, want: ReasonNoFreeSlotForBatch},
		{name: "batch, slots taken by the queue", node: with(base, load(2, 2)), req: Request{Class: ClassBatch}, want: ReasonNoFreeSlotForBatch},
		{name: "interactive not refused for busy slots under the queue bound", node: with(base, load(4, 9)), cfg: func(c *Config) { c.MaxQueuePerNode = 10 }, req: Request{Class: ClassInteractive}, want: ReasonNone},
		{name: "default queue bound is the node's slots: not reached", node: with(base, load(4, 3)), want: ReasonNone},
		{name: "default queue bound is the node's slots: reached", node: with(base, load(4, 4)), want: ReasonQueueFull},
		{name: "node queue bound tighter than the default", node: with(base, load(4, 2), func(n *Node) { n.MaxQueue = 2 }), want: ReasonQueueFull},
		{name: "node queue bound reached", node: with(base, load(4, 8), func(n *Node) { n.MaxQueue = 8 }), cfg: func(c *Config) { c.MaxQueuePerNode = 16 }, want: ReasonQueueFull},
		{name: "node queue bound not reached", node: with(base, load(4, 7), func(n *Node) { n.MaxQueue = 8 }), cfg: func(c *Config) { c.MaxQueuePerNode = 16 }, want: ReasonNone},
		{name: "config queue bound tighter than node's", node: with(base, load(4, 5), func(n *Node) { n.MaxQueue = 8 }), cfg: func(c *Config) { c.MaxQueuePerNode = 5 }, want: ReasonQueueFull},
		{name: "config queue bound alone", node: with(base, load(4, 5)), cfg: func(c *Config) { c.MaxQueuePerNode = 5 }, want: ReasonQueueFull},
		{name: "queue bound with a free slot is not full", node: with(base, load(3, 5)), cfg: func(c *Config) { c.MaxQueuePerNode = 5 }, want: ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := mustNew(t, cfg)
			req := tt.req
			if req.Model == "" {
				req.Model = "llama3.1:8b"
			}
			snap := &Snapshot{Now: t0, Nodes: []Node{tt.node}}
			var d Decision
			s.Pick(&req, snap, &d)
			if tt.want == ReasonNone {
				if len(d.Candidates) != 1 || len(d.Rejections) != 0 {
					t.Fatalf("want eligible, got candidates %v rejections %v", d.Candidates, d.Rejections)
				}
				return
			}
			if len(d.Candidates) != 0 || len(d.Rejections) != 1 || d.Rejections[0].Reason != tt.want {
				t.Fatalf("want rejection %q, got candidates %v rejections %v", tt.want, d.Candidates, d.Rejections)
			}
		})
	}
}

func TestHerdOrders(t *testing.T) {
	n := gpuNode
	tests := []struct {
		name  string
		cfg   func(*Config)
		nodes []Node
		req   Request
		want  []string // best first
	}{
		{
			name:  "faster GPU wins at equal load",
			nodes: []Node{with(n("t4"), speed(38)), with(n("3090"), speed(112)), with(n("a40"), speed(85))},
			want:  []string{"3090", "a40", "t4"},
		},
		{
			name:  "resident beats a load on an idle node",
			nodes: []Node{with(n("cold"), notResident), with(n("warm"), load(2, 0))},
			want:  []string{"warm", "cold"},
		},
		{
			name:  "badly overloaded resident node loses to a load",
			cfg:   func(c *Config) { c.MaxQueuePerNode = 32 }, // a queue the default bound refuses
			nodes: []Node{with(n("cold"), notResident), with(n("warm"), load(4, 20))},
			want:  []string{"cold", "warm"},
		},
		{
			name:  "queued node loses to one with free slots",
			nodes: []Node{with(n("queued"), load(4, 3)), with(n("free"), load(1, 0))},
			want:  []string{"free", "queued"},
		},
		{
			name:  "fast node keeps winning while it has a free slot",
			nodes: []Node{with(n("t4"), speed(38)), with(n("3090"), speed(112), load(3, 0))},
			want:  []string{"3090", "t4"},
		},
		{
			// Its own wait would be shorter on the 3090 (6.0s against 6.7s), but queueing there
			// would also delay what queues behind it: queue aversion sends it to the idle T4.
			name:  "a queue on the fast node spills work to an idle slow one",
			nodes: []Node{with(n("t4"), speed(38)), with(n("3090"), speed(112), load(4, 1))},
			want:  []string{"t4", "3090"},
		},
		{
			name:  "greedy without queue aversion",
			cfg:   func(c *Config) { c.QueueAversion = 1 },
			nodes: []Node{with(n("t4"), speed(38)), with(n("3090"), speed(112), load(4, 1))},
			want:  []string{"3090", "t4"},
		},
		{
			name:  "throttled GPU loses a tie",
			nodes: []Node{with(n("hot"), func(n *Node) { n.Throttled = true }), n("cool")},
			want:  []string{"cool", "hot"},
		},
		{
			name:  "busier GPU loses a tie",
			nodes: []Node{with(n("busy"), func(n *Node) { n.Utilization = 0.9 }), with(n("idle"), func(n *Node) { n.Utilization = 0.1 })},
			want:  []string{"idle", "busy"},
		},
		{
			name:  "more VRAM headroom wins a tie",
			nodes: []Node{with(n("full"), func(n *Node) { n.VRAMUsedBytes = 22 * gib }), n("roomy")},
			want:  []string{"roomy", "full"},
		},
		{
			name: "unmeasured node estimated from its bandwidth",
			nodes: []Node{
				with(n("t4"), speed(0), func(n *Node) { n.MemoryBandwidthGBs = 320 }),
				with(n("3090"), speed(0), func(n *Node) { n.MemoryBandwidthGBs = 936 }),
			},
			want: []string{"3090", "t4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := mustNew(t, cfg)
			req := tt.req
			req.Model = "llama3.1:8b"
			snap := &Snapshot{Now: t0, Nodes: tt.nodes}
			// Whatever the seed, the order is decided by the scores.
			for seed := range uint64(20) {
				req.Seed = seed
				var d Decision
				s.Pick(&req, snap, &d)
				if got := order(snap, &d); !slices.Equal(got, tt.want) {
					t.Fatalf("seed %d: order %v, want %v\n%+v", seed, got, tt.want, s.Explain(&req, snap))
				}
			}
		})
	}
}

func TestAffinity(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	var nodes []Node
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		nodes = append(nodes, gpuNode(id))
	}
	snap := &Snapshot{Now: t0, Nodes: nodes}
	counts := map[string]int{}
	for prefix := uint64(1); prefix <= 500; prefix++ {
		var first string
		for seed := range uint64(5) {
			req := Request{Model: "llama3.1:8b", PrefixHash: prefix, Seed: seed, Seq: seed * 7}
			var d Decision
			s.Pick(&req, snap, &d)
			got := snap.Nodes[d.Candidates[0].Node].ID
			if seed == 0 {
				first = got
				counts[got]++
			} else if got != first {
				t.Fatalf("prefix %d went to %s then %s: a conversation must stay on its node", prefix, first, got)
			}
		}
		// Drop the conversation's node: it must move, and only conversations of that node move.
		var without []Node
		for _, n := range nodes {
			if n.ID != first {
				without = append(without, n)
			}
		}
		req := Request{Model: "llama3.1:8b", PrefixHash: prefix}
		var d Decision
		s.Pick(&req, &Snapshot{Nodes: without}, &d)
		if len(d.Candidates) != 4 {
			t.Fatal("want 4 candidates")
		}
	}
	for id, c := range counts {
		// 500 prefixes over 5 nodes: 100 each expected; rendezvous hashing spreads them evenly.
		if c < 60 || c > 140 {
			t.Errorf("node %s got %d of 500 conversations: affinity is not spread", id, c)
		}
	}
	// Rendezvous: removing a node moves only that node's conversations.
	moved := 0
	for prefix := uint64(1); prefix <= 500; prefix++ {
		req := Request{Model: "llama3.1:8b", PrefixHash: prefix}
		var all, less Decision
		s.Pick(&req, snap, &all)
		s.Pick(&req, &Snapshot{Nodes: nodes[1:]}, &less)
		before := snap.Nodes[all.Candidates[0].Node].ID
		after := nodes[1:][less.Candidates[0].Node].ID
		if before != after {
			if before != "a" {
				t.Fatalf("prefix %d moved from %s to %s though only a left", prefix, before, after)
			}
			moved++
		}
	}
	if moved != counts["a"] {
		t.Fatalf("moved %d conversations, want a's %d", moved, counts["a"])
	}
	// Affinity does not hold a conversation on a node far slower than another.
	slow := []Node{with(gpuNode("a"), speed(30)), with(gpuNode("b"), speed(120))}
	for prefix := uint64(1); prefix <= 50; prefix++ {
		req := Request{Model: "llama3.1:8b", PrefixHash: prefix}
		var d Decision
		s.Pick(&req, &Snapshot{Nodes: slow}, &d)
		if got := slow[d.Candidates[0].Node].ID; got != "b" {
			t.Fatalf("prefix %d stuck to a node four times slower", prefix)
		}
	}
}

// TestAffinityWeightedByCapacity checks that conversations make their home on nodes in
// proportion to the work each node can take (its GPU's bandwidth), not one in three each, and
// that the home does not follow the measured speed, which swings with the node's load.
func TestAffinityWeightedByCapacity(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	bw := func(gbs float64) func(*Node) { return func(n *Node) { n.MemoryBandwidthGBs = gbs } }
	nodes := []Node{with(gpuNode("t4"), bw(320)), with(gpuNode("a40"), bw(696)), with(gpuNode("3090"), bw(936))}
	// The same nodes with measured speeds that say the opposite: homes must not move.
	swung := []Node{with(nodes[0], speed(200)), with(nodes[1], speed(20)), with(nodes[2], speed(10))}
	home := func(snap *Snapshot, prefix uint64) string {
		req := Request{Model: "llama3.1:8b", PrefixHash: prefix}
		var d Decision
		s.Pick(&req, snap, &d)
		for _, c := range d.Candidates {
			if d.evals[c.Node].scores.Affinity == 1 {
				return snap.Nodes[c.Node].ID
			}
		}
		t.Fatalf("prefix %d: no node has affinity", prefix)
		return ""
	}
	counts := map[string]int{}
	const n = 3000
	for prefix := uint64(1); prefix <= n; prefix++ {
		h := home(&Snapshot{Nodes: nodes}, prefix)
		counts[h]++
		if h2 := home(&Snapshot{Nodes: swung}, prefix); h2 != h {
			t.Fatalf("prefix %d: home %s moved to %s when measured speeds changed", prefix, h, h2)
		}
	}
	total := 320.0 + 696 + 936
	for _, c := range []struct {
		id string
		bw float64
	}{{"t4", 320}, {"a40", 696}, {"3090", 936}} {
		want := n * c.bw / total
		if got := float64(counts[c.id]); math.Abs(got-want) > 0.15*want {
			t.Errorf("node %s is home to %v of %d conversations, want about %.0f (its share of bandwidth)", c.id, got, n, want)
		}
	}
}

func TestBaselinePolicies(t *testing.T) {
	nodes := []Node{
		with(gpuNode("a"), load(3, 0)),
		with(gpuNode("b"), load(0, 0), func(n *Node) { n.Draining = true }),
		with(gpuNode("c"), load(1, 0)),
		with(gpuNode("d"), load(2, 2)),
		with(gpuNode("e"), load(1, 0)),
	}
	snap := &Snapshot{Now: t0, Nodes: nodes}
	t.Run("least_inflight", func(t *testing.T) {
		s := mustNew(t, policy(PolicyLeastInflight))
		seen := map[string]bool{}
		for seed := range uint64(64) {
			req := Request{Model: "llama3.1:8b", Seed: seed}
			var d Decision
			s.Pick(&req, snap, &d)
			got := order(snap, &d)
			if !slices.Equal(got[2:], []string{"a", "d"}) {
				t.Fatalf("order %v: want c and e (1 each) before a (3) before d (4)", got)
			}
			seen[got[0]] = true
		}
		if !seen["c"] || !seen["e"] {
			t.Fatalf("the tie between c and e always broke the same way: %v", seen)
		}
	})
	t.Run("round_robin", func(t *testing.T) {
		s := mustNew(t, policy(PolicyRoundRobin))
		want := [][]string{{"a", "c", "d", "e"}, {"c", "d", "e", "a"}, {"d", "e", "a", "c"}, {"e", "a", "c", "d"}, {"a", "c", "d", "e"}}
		for seq, w := range want {
			req := Request{Model: "llama3.1:8b", Seq: uint64(seq), Seed: 99}
			var d Decision
			s.Pick(&req, snap, &d)
			if got := order(snap, &d); !slices.Equal(got, w) {
				t.Fatalf("seq %d: %v, want %v", seq, got, w)
			}
			if rejected(snap, &d)["b"] != ReasonDraining {
				t.Fatal("round robin must filter like the others")
			}
		}
	})
}

func TestExpectedWait(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	tests := []struct {
		name string
		node Node
		req  Request
		want float64 // seconds
	}{
		// 256 default tokens at 100 tok/s.
		{name: "idle", node: gpuNode("n"), want: 2.56},
		{name: "max tokens and prompt", node: gpuNode("n"), req: Request{MaxTokens: 100, PromptTokens: 2000}, want: 2},
		// Two other busy slots slow the stream by 1 + 0.25×2.
		{name: "two busy slots", node: with(gpuNode("n"), load(2, 0)), want: 2.56 * 1.5},
		// All 4 slots busy and 2 queued: 3 requests drain at 4×100/1.75 tok/s, then 256 at 100/1.75.
		{name: "queued", node: with(gpuNode("n"), load(4, 2)), want: 3*256/(400/1.75) + 256*1.75/100},
		// Load 5 GiB at 2 GB/s and start the runner (1 s) first.
		{name: "not resident", node: with(gpuNode("n"), notResident), want: 2.56 + 5*gib/2e9 + 1},
		// Unmeasured: the node's other model does 200 tok/s on 2.5 GiB, so 5 GiB runs at 100.
		{name: "node estimate", node: with(gpuNode("n"), speed(0), func(n *Node) {
			n.Models = append(n.Models, NodeModel{Name: "small", Resident: true, SizeBytes: gib * 5 / 2, TokensPerSecond: 200})
		}), want: 2.56},
		// Unmeasured, no other model: 936 GB/s × 0.6 ÷ 5 GiB.
		{name: "bandwidth estimate", node: with(gpuNode("n"), speed(0)), want: 256 / (936e9 * 0.6 / (5 * gib))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Model = "llama3.1:8b"
			var d Decision
			s.Pick(&req, &Snapshot{Nodes: []Node{tt.node}}, &d)
			got := d.Candidates[0].ExpectedWait.Seconds()
			if math.Abs(got-tt.want) > 1e-6*tt.want {
				t.Fatalf("expected wait %.6fs, want %.6fs", got, tt.want)
			}
		})
	}
	t.Run("cluster median for an unmeasured node with nothing to go on", func(t *testing.T) {
		nodes := []Node{
			with(gpuNode("x"), speed(0), func(n *Node) { n.MemoryBandwidthGBs = 0 }),
			with(gpuNode("a"), speed(50)), with(gpuNode("b"), speed(80)), with(gpuNode("c"), speed(200)),
			with(gpuNode("stale"), speed(1000), func(n *Node) { n.Stale = true }),
		}
		ex := s.Explain(&Request{Model: "llama3.1:8b"}, &Snapshot{Nodes: nodes})
		if x := ex.Nodes[0]; x.TokensPerSecond != 80 || x.TokensPerSecondSource != "cluster_median" {
			t.Fatalf("got %v tok/s from %s, want the median 80 of the fresh nodes", x.TokensPerSecond, x.TokensPerSecondSource)
		}
	})
	t.Run("default when nobody measured", func(t *testing.T) {
		ex := s.Explain(&Request{Model: "llama3.1:8b"}, &Snapshot{Nodes: []Node{with(gpuNode("x"), speed(0), func(n *Node) { n.MemoryBandwidthGBs = 0 })}})
		if x := ex.Nodes[0]; x.TokensPerSecond != 20 || x.TokensPerSecondSource != "default" {
			t.Fatalf("got %v tok/s from %s", x.TokensPerSecond, x.TokensPerSecondSource)
		}
	})
	t.Run("saturates instead of overflowing", func(t *testing.T) {
		var d Decision
		s.Pick(&Request{Model: "llama3.1:8b"}, &Snapshot{Nodes: []Node{with(gpuNode("n"), speed(1e-300))}}, &d)
		if d.Candidates[0].ExpectedWait != time.Duration(math.MaxInt64) {
			t.Fatalf("got %v", d.Candidates[0].ExpectedWait)
		}
	})
}

func TestPickEdgeCases(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	var d Decision
	d.Candidates = append(d.Candidates, Candidate{Node: 7})
	s.Pick(nil, &Snapshot{Nodes: []Node{gpuNode("a")}}, &d)
	if len(d.Candidates) != 0 {
		t.Fatal("nil request must give an empty decision")
	}
	s.Pick(&Request{Model: "llama3.1:8b"}, nil, &d)
	if _, ok := d.Best(); ok {
		t.Fatal("nil snapshot must give no candidate")
	}
	s.Pick(&Request{Model: "llama3.1:8b"}, &Snapshot{}, &d)
	if len(d.Candidates)+len(d.Rejections) != 0 || d.Policy != PolicyHerd {
		t.Fatalf("empty snapshot: %+v", d)
	}
	// Garbage telemetry cannot produce NaN scores.
	bad := with(gpuNode("bad"), func(n *Node) {
		n.Utilization = math.NaN()
		n.Models[0].TokensPerSecond = math.Inf(1)
		n.VRAMUsedBytes = 100 * gib
		n.InFlight, n.Queued = -3, -1
	})
	s.Pick(&Request{Model: "llama3.1:8b"}, &Snapshot{Nodes: []Node{bad, gpuNode("ok")}}, &d)
	for _, c := range d.Candidates {
		if math.IsNaN(c.Score) || c.Score < 0 || c.Score > 1 {
			t.Fatalf("score %v out of [0,1]", c.Score)
		}
	}
}

func TestReasonText(t *testing.T) {
	for r := ReasonNone; r <= ReasonAlreadyResident; r++ {
		if r != ReasonNone && (r.String() == "" || r.String() == "unknown" || r.Code() == "unknown") {
			t.Errorf("reason %d has no text", r)
		}
		b, _ := r.MarshalText()
		var back Reason
		if err := back.UnmarshalText(b); err != nil || back != r {
			t.Errorf("reason %d does not round-trip through %q", r, b)
		}
	}
	if Reason(200).String() != "unknown" || Reason(200).Code() != "unknown" {
		t.Error("out of range reason")
	}
	var r Reason
	if err := r.UnmarshalText([]byte("nonsense")); err == nil {
		t.Error("unknown code accepted")
	}
}

func TestHashID(t *testing.T) {
	ids := []string{"", "a", "a\x00", "b", "gpu-node-001", "gpu-node-002", "gpu-node-0010", "gpu-node-001 ", "3090-1", "3090-2", "a-much-longer-node-name.rack4.lan"}
	seen := map[uint64]string{}
	for _, id := range ids {
		h := hashID(id)
		if other, dup := seen[h]; dup {
			t.Fatalf("%q and %q hash alike", id, other)
		}
		seen[h] = id
		if hashID(id) != h {
			t.Fatal("not deterministic")
		}
	}
	// Every input bit reaches every output bit: flipping one bit of an ID flips about half.
	base := []byte("gpu-node-042.lan")
	for i := range len(base) * 8 {
		b := append([]byte(nil), base...)
		b[i/8] ^= 1 << (i % 8)
		if d := bits.OnesCount64(hashID(string(b)) ^ hashID(string(base))); d < 12 || d > 52 {
			t.Fatalf("flipping bit %d changed %d of 64 hash bits", i, d)
		}
	}
}
