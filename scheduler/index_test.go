package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestIndexByModel(t *testing.T) {
	nodes := []Node{
		{ID: "a", Models: []NodeModel{{Name: "x"}, {Name: "y"}}},
		{ID: "b", Models: []NodeModel{{Name: "y"}, {Name: "y"}}},
		{ID: "c"},
		{ID: "d", Models: []NodeModel{{Name: "x"}}},
	}
	idx := IndexByModel(nodes)
	for model, want := range map[string][]ModelRef{"x": {{0, 0}, {3, 0}}, "y": {{0, 1}, {1, 0}}, "z": nil} {
		if got := idx[model]; !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", model, got, want)
		}
	}
}

// TestIndexedPickMatchesFullScan holds that the index only saves work: over random snapshots
// and every policy, an indexed snapshot ranks the same candidates with the same scores as a scan
// of every node, and its rejections plus the unlisted count cover the same nodes.
func TestIndexedPickMatchesFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 1024)
	for _, p := range policies {
		s := mustNew(t, policy(p))
		for range 300 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			req, snap := snapshotFromBytes(buf)
			indexed := &Snapshot{Now: snap.Now, Nodes: snap.Nodes, ByModel: IndexByModel(snap.Nodes)}
			var full, idx Decision
			s.Pick(req, snap, &full)
			s.Pick(req, indexed, &idx)
			if !slices.Equal(full.Candidates, idx.Candidates) {
				t.Fatalf("%s: candidates differ:\nfull    %+v\nindexed %+v", p, full.Candidates, idx.Candidates)
			}
			// A node that does not list the model may be refused first for another reason
			// (stale, draining) in a full scan; the index skips it either way.
			unavailable := 0
			for _, r := range full.Rejections {
				if findModel(&snap.Nodes[r.Node], req.Model) < 0 {
					unavailable++
				}
			}
			if len(idx.Rejections)+idx.Unlisted != len(full.Rejections) || idx.Unlisted != unavailable {
				t.Fatalf("%s: %d rejections + %d unlisted, want %d rejections of which %d unlisted",
					p, len(idx.Rejections), idx.Unlisted, len(full.Rejections), unavailable)
			}
			ex := s.Explain(req, indexed)
			exFull := s.Explain(req, snap)
			for i := range ex.Nodes {
				if ex.Nodes[i].Reason != exFull.Nodes[i].Reason {
					t.Fatalf("%s: explain of node %d: %q, full scan %q", p, i, ex.Nodes[i].Reason, exFull.Nodes[i].Reason)
				}
			}
		}
	}
}

// fleetSnapshot is the scale scenario's fleet: n nodes, each holding 10 of 200 models, three of
// them resident.
func fleetSnapshot(n int, indexed bool) *Snapshot {
	rng := rand.New(rand.NewPCG(1, 1))
	z := rand.NewZipf(rng, 1.1, 1, 199)
	snap := &Snapshot{Now: t0, Nodes: make([]Node, n)}
	for i := range snap.Nodes {
		node := Node{ID: fmt.Sprintf("fleet-%04d", i), Healthy: true, CanLoad: false, Slots: 4, InFlight: i % 3,
			VRAMTotalBytes: 384 * gib, VRAMUsedBytes: 100 * gib, MemoryBandwidthGBs: 696}
		seen := map[uint64]bool{}
		for len(node.Models) < 10 {
			m := z.Uint64()
			if len(seen) > 100 {
				m = rng.Uint64N(200)
			}
			if seen[m] {
				continue
			}
			seen[m] = true
			node.Models = append(node.Models, NodeModel{Name: fmt.Sprintf("fleet-model-%03d", m), OnDisk: true,
				Resident: len(node.Models) < 3, VRAMBytes: 6 * gib, TokensPerSecond: 60})
		}
		snap.Nodes[i] = node
	}
	if indexed {
		snap.ByModel = IndexByModel(snap.Nodes)
	}
	return snap
}

// BenchmarkPickFleet measures Pick on the scale scenario's fleet shape, with and without the
// model index. Target at 1,000 nodes: p99 under 50 µs in the scale scenario.
func BenchmarkPickFleet(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, indexed := range []bool{false, true} {
			b.Run(fmt.Sprintf("nodes=%d/indexed=%v", n, indexed), func(b *testing.B) {
				s := mustNew(b, policy(PolicyHerd))
				snap := fleetSnapshot(n, indexed)
				var d Decision
				seq := uint64(0)
				b.ReportAllocs()
				cpu0 := processCPUTime()
				for b.Loop() {
					req := Request{Model: "fleet-model-001", Class: ClassInteractive, PromptTokens: 200, MaxTokens: 100, Seq: seq}
					s.Pick(&req, snap, &d)
					seq++
				}
				// CPU time as well as wall time: on a shared machine the wall time also counts
				// the waits for a core.
				if cpu := processCPUTime() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}

// TestPickRanksTheBestOfAFleet checks Pick's bounded ranking against the full one on fleets with
// hundreds of candidates, under every policy and 20 seeds: the ranked candidates are exactly the
// first RankedCandidates of the full order (the same seeded tie-breaks), the others are every
// remaining eligible node in snapshot order, and the refusals are the same.
func TestPickRanksTheBestOfAFleet(t *testing.T) {
	snaps := map[string]*Snapshot{"fleet": fleetSnapshot(1000, false), "fleet-indexed": fleetSnapshot(1000, true), "bench": benchSnapshot(512)}
	for _, p := range policies {
		s := mustNew(t, policy(p))
		for name, snap := range snaps {
			model := "fleet-model-001"
			if name == "bench" {
				model = "llama3.1:8b"
			}
			var d, full Decision
			for seq := range uint64(20) {
				req := Request{Model: model, Class: ClassInteractive, PromptTokens: 200, MaxTokens: 100,
					PrefixHash: seq % 3, Seq: seq, Seed: seq * 0x9e3779b97f4a7c15}
				s.Pick(&req, snap, &d)
				s.pick(&req, snap, &full, math.MaxInt)
				if len(full.Candidates) <= RankedCandidates {
					t.Fatalf("%s/%s: only %d candidates: the fleet does not exercise the bound", p, name, len(full.Candidates))
				}
				if snap.ByModel == nil { // checkDecision wants every node accounted for
					checkDecision(t, s, &req, snap, &d)
				}
				if d.Ranked != RankedCandidates || full.Ranked != len(full.Candidates) {
					t.Fatalf("%s/%s: ranked %d (full %d of %d)", p, name, d.Ranked, full.Ranked, len(full.Candidates))
				}
				if !slices.Equal(d.Candidates[:d.Ranked], full.Candidates[:d.Ranked]) {
					t.Fatalf("%s/%s seq %d: ranked candidates differ from the full order's first %d:\n got %v\nwant %v",
						p, name, seq, d.Ranked, d.Candidates[:d.Ranked], full.Candidates[:d.Ranked])
				}
				rest := slices.Clone(full.Candidates[d.Ranked:])
				slices.SortFunc(rest, func(a, b Candidate) int { return a.Node - b.Node })
				if !slices.Equal(d.Candidates[d.Ranked:], rest) {
					t.Fatalf("%s/%s seq %d: the unranked candidates are not the rest in snapshot order", p, name, seq)
				}
				if !slices.Equal(d.Rejections, full.Rejections) || d.Unlisted != full.Unlisted {
					t.Fatalf("%s/%s seq %d: refusals differ", p, name, seq)
				}
			}
		}
	}
}
