package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// refCHWBL is KubeAI's walk written out plainly, as its description says: every node's
// replication points on one sorted ring, a walk from the key's position over every point, the
// first node whose load passes the bound, else the first node met.
func refCHWBL(ids []string, loads []int, key uint64, replication int, factor float64) string {
	type point struct {
		h    uint64
		node int
	}
	var ring []point
	for i, id := range ids {
		for r := range replication {
			ring = append(ring, point{xxhash.Sum64String(id + strconv.Itoa(r)), i})
		}
	}
	slices.SortFunc(ring, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return 0
	})
	start := slices.IndexFunc(ring, func(p point) bool { return p.h >= key })
	if start < 0 {
		start = 0
	}
	total := 0
	for _, l := range loads {
		total += l
	}
	first := -1
	for n := range ring {
		p := ring[(start+n)%len(ring)]
		if first < 0 {
			first = p.node
		}
		if total == 0 || float64(loads[p.node])+1 <= float64(total+1)/float64(len(ids))*factor {
			return ids[p.node]
		}
	}
	return ids[first]
}

// TestCHWBLMatchesKubeAIWalk compares the policy's first choice with the plain walk over random
// loads and keys, so the shortcut (each node's nearest point) cannot drift from the algorithm.
func TestCHWBLMatchesKubeAIWalk(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Policy = PolicyCHWBL
	cfg.CHWBLReplication = 16 // a small ring keeps the reference walk quick; 256 is tested below
	s := mustNew(t, cfg)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 2000 {
		n := 2 + rng.IntN(5)
		ids := make([]string, n)
		loads := make([]int, n)
		nodes := make([]Node, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("node-%d-", rng.IntN(100)) // "-": IDs that run into replica numbers would share points
			for slices.Contains(ids[:i], ids[i]) {
				ids[i] += "x"
			}
			loads[i] = rng.IntN(4)
			if trial%3 == 0 {
				loads[i] = 0
			}
			nodes[i] = with(gpuNode(ids[i]), load(loads[i], 0))
			nodes[i].Slots = 8
		}
		key := CHWBLKey([]byte(fmt.Sprintf("user %d asks", rng.IntN(1000))))
		req := Request{Model: "llama3.1:8b", RoutingKey: key, Seed: uint64(trial)}
		var d Decision
		snap := &Snapshot{Now: t0, Nodes: nodes}
		s.Pick(&req, snap, &d)
		got := snap.Nodes[d.Candidates[0].Node].ID
		want := refCHWBL(ids, loads, key, cfg.CHWBLReplication, cfg.CHWBLLoadFactor)
		if got != want {
			t.Fatalf("trial %d: ids %v loads %v: chwbl chose %s, KubeAI's walk %s", trial, ids, loads, got, want)
		}
	}
}

// TestCHWBLGolden pins the hash and the ring: a change to either moves every user's home.
func TestCHWBLGolden(t *testing.T) {
	if got := CHWBLKey(nil); got != 0xef46db3751d8e999 {
		t.Fatalf("XXH64 of the empty key = %#x, want 0xef46db3751d8e999", got)
	}
	s := mustNew(t, Config{Policy: PolicyCHWBL})
	nodes := []Node{gpuNode("t4-1"), gpuNode("a40-1"), gpuNode("3090-1")}
	homes := map[string]string{}
	for _, k := range []string{"", "Hello", "Summarise this contract for me", "Translate to French: the cat"} {
		req := Request{Model: "llama3.1:8b", RoutingKey: CHWBLKey([]byte(k))}
		var d Decision
		s.Pick(&req, &Snapshot{Nodes: nodes}, &d)
		homes[k] = nodes[d.Candidates[0].Node].ID
		if want := refCHWBL([]string{"t4-1", "a40-1", "3090-1"}, []int{0, 0, 0}, req.RoutingKey, 256, 1.25); homes[k] != want {
			t.Errorf("key %q: %s, KubeAI's walk %s", k, homes[k], want)
		}
	}
	want := map[string]string{"": "3090-1", "Hello": "t4-1", "Summarise this contract for me": "3090-1", "Translate to French: the cat": "t4-1"}
	for k, w := range want {
		if homes[k] != w {
			t.Errorf("key %q homed on %s, golden %s", k, homes[k], w)
		}
	}
	// A loaded home sends the key on along the ring.
	busy := []Node{with(nodes[0], load(0, 0)), with(nodes[1], load(0, 0)), with(nodes[2], load(0, 0))}
	home := slices.IndexFunc(busy, func(n Node) bool { return n.ID == homes["Hello"] })
	busy[home].InFlight = 3
	req := Request{Model: "llama3.1:8b", RoutingKey: CHWBLKey([]byte("Hello"))}
	var d Decision
	s.Pick(&req, &Snapshot{Nodes: busy}, &d)
	if got := busy[d.Candidates[0].Node].ID; got == homes["Hello"] {
		t.Fatalf("the home with 3 of 3 requests in flight kept the key (bound 1.25 × 4/3)")
	}
}
