package prefixcache

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herd-llm/herd/scheduler"
)

// chain hashes messages as the gateway's body scan does: each message's bytes, then its end.
func chain(msgs ...string) []Link {
	var c Chainer
	c.Reset(nil)
	for _, m := range msgs {
		c.Write([]byte(m))
		c.EndMessage()
	}
	return append([]Link(nil), c.Links()...)
}

// TestChainGolden pins the chain: a change to the hash or the cut points changes every node's
// matches after an upgrade, so it must be deliberate.
func TestChainGolden(t *testing.T) {
	sys := strings.Repeat("You are a careful contract lawyer. ", 40) // 1400 bytes: two links
	got := chain(sys, "hello")
	want := []Link{{0x70883b6f3161ae81, 256}, {0x92d95f3658959ff7, 350}, {0xf21f83f516cbea1c, 351}}
	if len(got) != len(want) {
		t.Fatalf("links %v, want 3 (a block boundary, the system prompt's end, the user message's end)", got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("link %d = {%#x, %d}, golden {%#x, %d}", i, got[i].Hash, got[i].Tokens, want[i].Hash, want[i].Tokens)
		}
	}
	for _, tc := range []struct {
		name   string
		a, b   []Link
		shared int
	}{
		{"same system prompt, other users", chain(sys, "hello"), chain(sys, "what is a tort?"), 2},
		{"a conversation grows", chain(sys, "hello"), chain(sys, "hello", "Hi! How can I help?", "next"), 3},
		{"message boundaries count", chain("ab", "c"), chain("a", "bc"), 0},
		{"another system prompt", chain(sys, "hello"), chain("Be brief.", "hello"), 0},
		{"a change early breaks the rest", chain("x"+sys, "hello"), chain(sys, "hello"), 0},
	} {
		if n := common(tc.a, tc.b); n != tc.shared {
			t.Errorf("%s: %d links shared, want %d", tc.name, n, tc.shared)
		}
	}
	// Writing in pieces gives the same chain as writing at once.
	var c Chainer
	c.Reset(nil)
	for _, piece := range strings.SplitAfter(sys, ".") {
		c.Write([]byte(piece))
	}
	c.EndMessage()
	c.Write([]byte("hello"))
	c.EndMessage()
	if common(c.Links(), got) != len(got) || len(c.Links()) != len(got) {
		t.Fatalf("piecewise chain %v differs from %v", c.Links(), got)
	}
	// The chain stops at MaxLinks.
	long := chain(strings.Repeat("y", BlockBytes*(MaxLinks+10)))
	if len(long) != MaxLinks {
		t.Fatalf("a huge message gave %d links, want the cap %d", len(long), MaxLinks)
	}
}

func node(id, backend string, slots int, resident bool) scheduler.Node {
	return scheduler.Node{ID: id, Backend: backend, Slots: slots,
		Models: []scheduler.NodeModel{{Name: "m", Resident: resident, OnDisk: true}}}
}

func matches(x *Index, snap *scheduler.Snapshot, links []Link) map[string]int {
	out := map[string]int{}
	for _, m := range x.Match(snap, "m", links, nil) {
		out[m.Node] = m.Tokens
	}
	return out
}

func TestIndexEngines(t *testing.T) {
	sysA := strings.Repeat("preset A system prompt. ", 100)
	sysB := strings.Repeat("preset B system prompt! ", 100)
	a1, a2 := chain(sysA, "user 1"), chain(sysA, "user 2")
	b1 := chain(sysB, "user 3")
	aTokens := int(a1[common(a1, a2)-1].Tokens)

	t.Run("ollama sequential keeps the last prompt", func(t *testing.T) {
		x := New(Config{})
		n := node("o", "ollama", 2, true)
		snap := &scheduler.Snapshot{Nodes: []scheduler.Node{n}}
		x.End(x.Start(&n, "m", a1))
		if got := matches(x, snap, a2)["o"]; got != aTokens {
			t.Fatalf("after a1, a2 matches %d tokens, want the shared system prompt's %d", got, aTokens)
		}
		x.End(x.Start(&n, "m", b1)) // sequential: slot 0 again, a1 is gone
		if got := matches(x, snap, a2)["o"]; got != 0 {
			t.Fatalf("after b1 ran sequentially, a2 matches %d tokens: Ollama keeps one prompt under sequential load", got)
		}
	})
	t.Run("ollama concurrent uses the other slot", func(t *testing.T) {
		x := New(Config{})
		n := node("o", "ollama", 2, true)
		snap := &scheduler.Snapshot{Nodes: []scheduler.Node{n}}
		ta := x.Start(&n, "m", a1)
		tb := x.Start(&n, "m", b1) // slot 0 busy: slot 1
		x.End(ta)
		x.End(tb)
		if got := matches(x, snap, a2)["o"]; got != aTokens {
			t.Fatalf("a2 matches %d, want %d: both prompts are held after concurrent runs", got, aTokens)
		}
		if got := matches(x, snap, chain(sysB, "user 9"))["o"]; got == 0 {
			t.Fatal("preset B lost though it ran in the second slot")
		}
	})
	t.Run("llama.cpp keeps replaced prompts in RAM", func(t *testing.T) {
		x := New(Config{})
		n := node("l", "openai", 1, true)
		n.Engine = "llama.cpp"
		snap := &scheduler.Snapshot{Nodes: []scheduler.Node{n}}
		x.End(x.Start(&n, "m", a1))
		x.End(x.Start(&n, "m", b1))
		if got := matches(x, snap, a2)["l"]; got != aTokens {
			t.Fatalf("a2 matches %d, want %d from the host-RAM cache", got, aTokens)
		}
		small := New(Config{LlamaCppRAMTokens: 10})
		small.End(small.Start(&n, "m", a1))
		small.End(small.Start(&n, "m", b1))
		if got := matches(small, snap, a2)["l"]; got != 0 {
			t.Fatalf("a2 matches %d with a RAM cache too small to keep it", got)
		}
	})
	t.Run("vllm block LRU", func(t *testing.T) {
		x := New(Config{VLLMTokens: 1500})
		n := node("v", "openai", 8, true)
		snap := &scheduler.Snapshot{Nodes: []scheduler.Node{n}}
		x.End(x.Start(&n, "m", a1))
		x.End(x.Start(&n, "m", b1))
		if got := matches(x, snap, a2)["v"]; got != aTokens {
			t.Fatalf("a2 matches %d, want %d: the pool holds both presets", got, aTokens)
		}
		for i := range 5 {
			x.End(x.Start(&n, "m", chain(fmt.Sprintf("%d", i)+sysB, "x")))
		}
		if got := matches(x, snap, a2)["v"]; got != 0 {
			t.Fatalf("a2 matches %d after the pool turned over", got)
		}
	})
	t.Run("an unloaded model lost its cache", func(t *testing.T) {
		x := New(Config{})
		n := node("o", "ollama", 1, true)
		x.End(x.Start(&n, "m", a1))
		gone := &scheduler.Snapshot{Nodes: []scheduler.Node{node("o", "ollama", 1, false)}}
		if got := matches(x, gone, a2)["o"]; got != 0 {
			t.Fatalf("matched %d on a node where the model is not resident", got)
		}
		back := &scheduler.Snapshot{Nodes: []scheduler.Node{n}}
		if got := matches(x, back, a2)["o"]; got != 0 {
			t.Fatalf("matched %d after a reload: the cache must have been forgotten", got)
		}
	})
}

func TestBlockLRU(t *testing.T) {
	var p blockLRU
	links := func(base uint64, n int) []Link {
		var l []Link
		for i := range n {
			l = append(l, Link{Hash: base + uint64(i), Tokens: int32(10 * (i + 1))})
		}
		return l
	}
	p.add(links(100, 5), 100) // 50 tokens
	p.add(links(200, 5), 100) // 100 tokens
	if p.prefix(links(100, 5)) != 5 || p.prefix(links(200, 5)) != 5 {
		t.Fatal("both prompts fit and must be held")
	}
	p.add(links(300, 3), 100) // 130: the least recent (100's tail first) go
	if got := p.prefix(links(300, 3)); got != 3 {
		t.Fatalf("the newest prompt holds %d of 3 links", got)
	}
	if p.tokens > 100 {
		t.Fatalf("pool holds %d tokens past its 100", p.tokens)
	}
	if got := p.prefix(links(100, 5)); got >= 5 {
		t.Fatalf("the oldest prompt still whole (%d links) past capacity", got)
	}
	// Reuse allocates no new entries.
	n := len(p.e)
	for range 10 {
		p.add(links(400, 3), 100)
	}
	if len(p.e) > n+3 {
		t.Fatalf("entries grew from %d to %d on re-adding one prompt", n, len(p.e))
	}
}
