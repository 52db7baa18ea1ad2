package scheduler

import (
	"fmt"
	"testing"
	"time"
)

// benchSnapshot is a cluster of n nodes of three GPU kinds with three models each, varied load,
// and one node in sixteen filtered out, like a busy rack.
func benchSnapshot(n int) *Snapshot {
	kinds := []struct {
		bw, tps float64
		vram    uint64
	}{{320, 38, 15 * gib}, {696, 85, 45 * gib}, {936, 112, 24 * gib}}
	snap := &Snapshot{Now: t0, Nodes: make([]Node, n)}
	for i := range snap.Nodes {
		k := kinds[i%3]
		snap.Nodes[i] = Node{
			ID: fmt.Sprintf("gpu-node-%03d", i), Healthy: true, CanLoad: true, Draining: i%16 == 5,
			Slots: 4, InFlight: i % 5, Queued: i % 3, MaxQueue: 32,
			VRAMTotalBytes: k.vram, VRAMUsedBytes: k.vram / 2, Utilization: float64(i%10) / 10,
			Throttled: i%7 == 0, MemoryBandwidthGBs: k.bw,
			Models: []NodeModel{
				{Name: "qwen2.5:7b", Resident: i%2 == 0, OnDisk: true, VRAMBytes: 6 * gib, SizeBytes: 5 * gib, TokensPerSecond: k.tps * 1.05, LastUsed: t0.Add(-time.Minute)},
				{Name: "llama3.1:8b", Resident: i%3 != 1, OnDisk: true, VRAMBytes: 7 * gib, SizeBytes: 5 * gib, TokensPerSecond: k.tps, LastUsed: t0},
				{Name: "mistral:7b", OnDisk: i%4 == 0, VRAMBytes: 6 * gib, SizeBytes: 4 * gib},
			},
		}
		if i%5 == 0 {
			snap.Nodes[i].Models[1].TokensPerSecond = 0 // unmeasured: exercises the estimates
		}
	}
	return snap
}

func benchRequest(seq uint64) Request {
	return Request{Model: "llama3.1:8b", Class: ClassInteractive, PromptTokens: 900, MaxTokens: 300,
		PrefixHash: 0xfeedface + seq%17, Seq: seq, Seed: seq * 2654435761}
}

// BenchmarkPick measures one decision at 8, 64 and 512 nodes under each policy, reusing the
// Decision as the gateway does. Target at 64 nodes: under 5 µs and 0 allocations.
func BenchmarkPick(b *testing.B) {
	for _, p := range policies {
		for _, n := range []int{8, 64, 512} {
			b.Run(fmt.Sprintf("policy=%s/nodes=%d", p, n), func(b *testing.B) {
				s := mustNew(b, policy(p))
				snap := benchSnapshot(n)
				var d Decision
				warm := benchRequest(0)
				s.Pick(&warm, snap, &d) // grow d's slices once, as a long-lived gateway worker has
				b.ReportAllocs()
				seq := uint64(0)
				cpu0 := processCPUTime()
				for b.Loop() {
					req := benchRequest(seq)
					s.Pick(&req, snap, &d)
					seq++
				}
				if cpu := processCPUTime() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
				}
				if len(d.Candidates) == 0 {
					b.Fatal("no candidates")
				}
			})
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, p := range policies {
		s := mustNew(t, policy(p))
		snap := benchSnapshot(64)
		var d Decision
		seq := uint64(0)
		allocs := testing.AllocsPerRun(200, func() {
			req := benchRequest(seq)
			s.Pick(&req, snap, &d)
			seq++
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per Pick at 64 nodes, want 0", p, allocs)
		}
	}
}
