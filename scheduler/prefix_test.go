package scheduler

import (
	"testing"
)

// TestPrefixScoring holds the prefix scorer to its rule: the prefill a node's cache saves,
// counted in seconds against the node's wait, wins a request for the node that holds the
// prompt while the saving is worth more than the queue, and a home past the load bound spills.
func TestPrefixScoring(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	prefill := func(tps float64) func(*Node) {
		return func(n *Node) {
			n.Models[0].Learned = Speed{DecodeTPS: 100, Contention: 0.25, PrefillTPS: tps, Samples: 10}
		}
	}
	for _, tc := range []struct {
		name   string
		nodes  []Node
		prefix []PrefixMatch
		prompt int
		want   string
	}{
		{
			name:   "cached prompt beats an idle node",
			nodes:  []Node{with(gpuNode("a"), prefill(1000)), with(gpuNode("b"), prefill(1000), load(1, 0))},
			prefix: []PrefixMatch{{Node: "b", Tokens: 6000}},
			prompt: 6200, want: "b",
		},
		{
			name:   "nothing cached: the idle node",
			nodes:  []Node{with(gpuNode("a"), prefill(1000)), with(gpuNode("b"), prefill(1000), load(1, 0))},
			prompt: 6200, want: "a",
		},
		{
			name:   "a small match does not pay for a busier node",
			nodes:  []Node{with(gpuNode("a"), prefill(1000)), with(gpuNode("b"), prefill(1000), load(3, 0))},
			prefix: []PrefixMatch{{Node: "b", Tokens: 40}},
			prompt: 6200, want: "a",
		},
		{
			name: "a home past the load bound spills",
			nodes: []Node{with(gpuNode("a"), prefill(1000)), with(gpuNode("b"), prefill(1000), load(4, 3)),
				with(gpuNode("c"), prefill(1000))},
			prefix: []PrefixMatch{{Node: "b", Tokens: 6000}},
			prompt: 6200, want: "a|c",
		},
		{
			name:   "the match counts only up to the prompt",
			nodes:  []Node{with(gpuNode("a"), prefill(1000)), with(gpuNode("b"), prefill(1000))},
			prefix: []PrefixMatch{{Node: "a", Tokens: 1 << 30}},
			prompt: 100, want: "a",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &Snapshot{Now: t0, Nodes: tc.nodes}
			req := Request{Model: "llama3.1:8b", PromptTokens: tc.prompt, MaxTokens: 100, Prefix: tc.prefix, Seed: 3}
			var d Decision
			s.Pick(&req, snap, &d)
			got := snap.Nodes[d.Candidates[0].Node].ID
			if !matchAlt(tc.want, got) {
				ex := s.Explain(&req, snap)
				t.Fatalf("picked %s, want %s: %+v", got, tc.want, ex.Nodes)
			}
			for _, c := range d.Candidates {
				if c.PrefixTokens > tc.prompt {
					t.Fatalf("candidate %d: %d prefix tokens of a %d-token prompt", c.Node, c.PrefixTokens, tc.prompt)
				}
			}
		})
	}
}

func matchAlt(want, got string) bool {
	for len(want) > 0 {
		alt := want
		if i := indexByte(want, '|'); i >= 0 {
			alt, want = want[:i], want[i+1:]
		} else {
			want = ""
		}
		if alt == got {
			return true
		}
	}
	return false
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// TestPrefixExplain checks that explain shows each candidate's match and the seconds it saves.
func TestPrefixExplain(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	nodes := []Node{gpuNode("a"), gpuNode("b")}
	nodes[1].Models = append([]NodeModel(nil), nodes[1].Models...)
	nodes[1].Models[0].Learned = Speed{DecodeTPS: 100, Contention: 0.25, PrefillTPS: 2000, Samples: 4}
	req := Request{Model: "llama3.1:8b", PromptTokens: 5000, Prefix: []PrefixMatch{{Node: "b", Tokens: 4000}}}
	ex := s.Explain(&req, &Snapshot{Now: t0, Nodes: nodes})
	b := ex.Nodes[1]
	if b.PrefixTokens != 4000 || b.PrefillSavedSeconds != 2 || b.Scores == nil || b.Scores.Prefix <= 0 {
		t.Fatalf("explain of b = %+v (scores %+v), want 4000 tokens saving 2 s and a prefix score", b, b.Scores)
	}
	if a := ex.Nodes[0]; a.PrefixTokens != 0 || a.Scores.Prefix != 0 {
		t.Fatalf("explain of a = %+v, want no prefix", a)
	}
	if ex.Order[0] != "b" {
		t.Fatalf("order %v, want b first", ex.Order)
	}
}

func TestOverLoadBound(t *testing.T) {
	for _, tc := range []struct {
		load, slots, total, totalSlots int
		factor                         float64
		want                           bool
	}{
		{0, 4, 0, 12, 1.25, false},  // idle: never
		{3, 4, 3, 12, 1.25, false},  // a free slot: never
		{4, 4, 4, 12, 1.25, true},   // full while the others idle: 5 > 1.25 × 5/3
		{4, 4, 12, 12, 1.25, false}, // everyone as busy: 5 ≤ 1.25 × 13/3
		{6, 4, 12, 12, 1.25, true},  // 7 > 5.4
		{6, 4, 12, 12, 2, false},    // 7 ≤ 8.7
		{2, 0, 2, 2, 1.25, true},    // no slots reported counts as one: 3 > 1.25 × 1.5
	} {
		if got := overLoadBound(tc.load, tc.slots, tc.total, tc.totalSlots, tc.factor); got != tc.want {
			t.Errorf("overLoadBound(%d, %d, %d, %d, %v) = %v, want %v", tc.load, tc.slots, tc.total, tc.totalSlots, tc.factor, got, tc.want)
		}
	}
}
