package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// byteReader hands out bytes of a fuzz input, then zeros.
type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) next() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}

func (r *byteReader) bit() bool { return r.next()&1 == 1 }

var modelNames = []string{"llama3.1:8b", "qwen2.5:7b", "mistral:7b"}

// snapshotFromBytes builds a request and a snapshot of up to 32 nodes from b, with every field
// the filters and scorers read drawn from it, so random inputs reach every branch.
func snapshotFromBytes(b []byte) (*Request, *Snapshot) {
	r := &byteReader{b: b}
	req := &Request{
		Model:          modelNames[int(r.next())%len(modelNames)],
		MaxTokens:      int(r.next()) * 8,
		PromptTokens:   int(r.next()) * 32,
		PrefixHash:     uint64(r.next()) * 0x9e3779b97f4a7c15,
		ModelVRAMBytes: uint64(r.next()) * gib / 8,
		Seq:            uint64(r.next()),
		Seed:           uint64(r.next())<<8 | uint64(r.next()),
	}
	if r.bit() {
		req.Class = ClassBatch
	}
	n := int(r.next()) % 33
	snap := &Snapshot{Now: t0, Nodes: make([]Node, n)}
	for i := range snap.Nodes {
		flags := r.next()
		node := Node{
			ID:                 fmt.Sprintf("node-%02d", i),
			Stale:              flags&0x07 == 1,
			Draining:           flags&0x07 == 2,
			Healthy:            flags&0x07 != 3,
			CircuitOpen:        flags&0x07 == 4,
			CanLoad:            flags&0x08 == 0,
			Throttled:          flags&0x10 != 0,
			Slots:              int(r.next() % 9),
			InFlight:           int(r.next() % 12),
			Queued:             int(r.next() % 12),
			MaxQueue:           int(r.next() % 8),
			VRAMTotalBytes:     uint64(r.next()%49) * gib,
			VRAMUsedBytes:      uint64(r.next()%49) * gib,
			Utilization:        float64(r.next()) / 200,
			MemoryBandwidthGBs: float64(r.next()) * 4,
		}
		if flags&0x20 != 0 {
			req.Exclude = append(req.Exclude, node.ID)
		}
		for _, name := range modelNames {
			mf := r.next()
			if mf&0x01 == 0 {
				continue
			}
			node.Models = append(node.Models, NodeModel{
				Name:            name,
				Resident:        mf&0x02 != 0,
				OnDisk:          mf&0x04 != 0,
				VRAMBytes:       uint64(r.next()%24) * gib,
				SizeBytes:       uint64(r.next()%16) * gib,
				TokensPerSecond: float64(r.next()) - 40, // negatives and zeros: unmeasured
				InFlight:        int(mf>>4) % 3,
				LastUsed:        t0.Add(-time.Duration(r.next()) * time.Minute),
			})
		}
		snap.Nodes[i] = node
	}
	return req, snap
}

// checkDecision checks the invariants of any decision on any snapshot.
func checkDecision(t testing.TB, s *Scheduler, req *Request, snap *Snapshot, d *Decision) {
	t.Helper()
	seen := make([]int, len(snap.Nodes))
	for _, r := range d.Rejections {
		seen[r.Node]++
		if r.Reason == ReasonNone {
			t.Fatalf("rejection of %s without a reason", snap.Nodes[r.Node].ID)
		}
	}
	for i, c := range d.Candidates {
		seen[c.Node]++
		n := &snap.Nodes[c.Node]
		// Eligibility, checked from the node's fields, not through the scheduler's filter.
		if n.Stale || n.Draining || !n.Healthy || n.CircuitOpen || slices.Contains(req.Exclude, n.ID) {
			t.Fatalf("candidate %s is stale, draining, unhealthy, open or excluded: %+v", n.ID, n)
		}
		mi := slices.IndexFunc(n.Models, func(m NodeModel) bool { return m.Name == req.Model })
		if mi < 0 {
			t.Fatalf("candidate %s does not have %s", n.ID, req.Model)
		}
		m := n.Models[mi]
		if !m.Resident && (!m.OnDisk || !n.CanLoad) {
			t.Fatalf("candidate %s cannot load %s", n.ID, req.Model)
		}
		if c.NeedsLoad != !m.Resident {
			t.Fatalf("candidate %s NeedsLoad %v with resident %v", n.ID, c.NeedsLoad, m.Resident)
		}
		if req.Class == ClassBatch && n.InFlight+n.Queued >= max(n.Slots, 1) {
			t.Fatalf("batch request placed on %s with no free slot", n.ID)
		}
		if math.IsNaN(c.Score) || c.Score < 0 || c.Score > 1 {
			t.Fatalf("candidate %s score %v outside [0,1]", n.ID, c.Score)
		}
		if c.ExpectedWait <= 0 {
			t.Fatalf("candidate %s expected wait %v", n.ID, c.ExpectedWait)
		}
		if i > 0 && i < d.Ranked && d.Candidates[i-1].Score < c.Score {
			t.Fatalf("ranked candidates not sorted by score: %v", d.Candidates)
		}
		if i >= d.Ranked && c.Score > d.Candidates[d.Ranked-1].Score {
			t.Fatalf("unranked candidate %s scores above the last ranked one: %v", n.ID, d.Candidates)
		}
		if i > d.Ranked && d.Candidates[i-1].Node > c.Node {
			t.Fatalf("unranked candidates not in snapshot order: %v", d.Candidates)
		}
	}
	if want := min(len(d.Candidates), RankedCandidates); d.Ranked != want {
		t.Fatalf("%d of %d candidates ranked, want %d", d.Ranked, len(d.Candidates), want)
	}
	for i, k := range seen {
		if k != 1 {
			t.Fatalf("node %d appears %d times among candidates and rejections", i, k)
		}
	}
	// Replay: the same request, snapshot and seed give the same decision, from a fresh
	// scheduler and a fresh Decision.
	again := mustNew(t, s.Config())
	var d2 Decision
	again.Pick(req, snap, &d2)
	if !slices.Equal(d.Candidates, d2.Candidates) || !slices.Equal(d.Rejections, d2.Rejections) {
		t.Fatalf("replay differs:\n%v\n%v", d.Candidates, d2.Candidates)
	}
}

var policies = []string{PolicyHerd, PolicyRoundRobin, PolicyLeastInflight, PolicyCHWBL}

func TestPropertyInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1024)
	for _, p := range policies {
		s := mustNew(t, policy(p))
		var d Decision // reused on purpose: stale scratch must not leak into a decision
		for range 400 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			req, snap := snapshotFromBytes(buf)
			s.Pick(req, snap, &d)
			checkDecision(t, s, req, snap, &d)
		}
	}
}

func TestPropertyOrderIndependent(t *testing.T) {
	// Herd and least_inflight decide on node facts alone: listing the nodes in another order
	// gives the same ranking of node IDs.
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1024)
	for _, p := range []string{PolicyHerd, PolicyLeastInflight} {
		s := mustNew(t, policy(p))
		for range 200 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			req, snap := snapshotFromBytes(buf)
			var d1, d2 Decision
			s.Pick(req, snap, &d1)
			shuffled := &Snapshot{Now: snap.Now, Nodes: slices.Clone(snap.Nodes)}
			rng.Shuffle(len(shuffled.Nodes), func(i, j int) {
				shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i]
			})
			s.Pick(req, shuffled, &d2)
			if a, b := order(snap, &d1), order(shuffled, &d2); !slices.Equal(a, b) {
				t.Fatalf("%s: order depends on snapshot order:\n%v\n%v", p, a, b)
			}
		}
	}
}

func TestPropertyRoundRobinFair(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := mustNew(t, policy(PolicyRoundRobin))
	for range 100 {
		k := 1 + rng.IntN(20)
		var nodes []Node
		for i := range k + rng.IntN(5) {
			n := with(gpuNode(fmt.Sprintf("n%d", i)), load(rng.IntN(6), rng.IntN(3)))
			if i >= k {
				n.Draining = true // not eligible: must not count
			}
			nodes = append(nodes, n)
		}
		rng.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
		snap := &Snapshot{Nodes: nodes}
		// Over any k consecutive requests each eligible node is tried first exactly once, and
		// at each ranked position exactly once (Pick ranks the best RankedCandidates).
		start := rng.Uint64() >> 1
		atPos := make([]map[string]int, k)
		for i := range atPos {
			atPos[i] = map[string]int{}
		}
		for seq := start; seq < start+uint64(k); seq++ {
			req := Request{Model: "llama3.1:8b", Seq: seq, Seed: rng.Uint64()}
			var d Decision
			s.Pick(&req, snap, &d)
			if len(d.Candidates) != k {
				t.Fatalf("%d candidates, want %d", len(d.Candidates), k)
			}
			for pos, id := range order(snap, &d) {
				atPos[pos][id]++
			}
		}
		for pos, m := range atPos[:min(k, RankedCandidates)] {
			if len(m) != k {
				t.Fatalf("position %d: %d distinct nodes over %d requests, want each once: %v", pos, len(m), k, m)
			}
		}
	}
}

func TestPropertySeedShuffles(t *testing.T) {
	// Identical nodes tie; the seed decides, each node wins about equally often, and the same
	// seed always picks the same node.
	s := mustNew(t, DefaultConfig())
	var nodes []Node
	for i := range 4 {
		nodes = append(nodes, gpuNode(fmt.Sprintf("n%d", i)))
	}
	snap := &Snapshot{Nodes: nodes}
	wins := map[string]int{}
	for seed := range uint64(4000) {
		req := Request{Model: "llama3.1:8b", Seed: seed}
		var d1, d2 Decision
		s.Pick(&req, snap, &d1)
		s.Pick(&req, snap, &d2)
		if d1.Candidates[0].Node != d2.Candidates[0].Node {
			t.Fatal("same seed, different pick")
		}
		wins[nodes[d1.Candidates[0].Node].ID]++
	}
	for id, w := range wins {
		if w < 850 || w > 1150 {
			t.Errorf("%s won %d of 4000 ties, want about 1000", id, w)
		}
	}
}

func TestReplayFromJSON(t *testing.T) {
	// A decision logged as (request, snapshot) reproduces exactly after a JSON round trip, the
	// way an operator would replay it from a log.
	rng := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 1024)
	for _, p := range policies {
		s := mustNew(t, policy(p))
		for range 50 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			req, snap := snapshotFromBytes(buf)
			var d1, d2 Decision
			s.Pick(req, snap, &d1)
			req2, snap2 := roundTrip(t, req), roundTrip(t, snap)
			s.Pick(req2, snap2, &d2)
			if !slices.Equal(d1.Candidates, d2.Candidates) || !slices.Equal(d1.Rejections, d2.Rejections) {
				t.Fatalf("%s: replay after JSON differs", p)
			}
		}
	}
}
