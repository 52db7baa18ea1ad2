package prefixcache

import (
	"sync"

	"github.com/herd-llm/herd/scheduler"
)

// Engine is how a node's inference engine keeps prompts, as the Index models it.
type Engine uint8

const (
	// EngineOllama is Ollama's llama runner (0.17.4, runner/llamarunner/cache.go): every loaded
	// model has one cache per parallel slot (OLLAMA_NUM_PARALLEL, the node's Slots), each holding
	// the last prompt that slot ran; a request takes the free slot whose prompt shares the
	// longest prefix with its own, the first slot on a tie. Under sequential load that is slot 0
	// every time, so a node holds about its last prompt per model; concurrent requests use the
	// other slots.
	EngineOllama Engine = iota
	// EngineLlamaCpp is llama.cpp's server: slots as Ollama's, except that a request whose
	// prompt is not similar enough to any slot's (--slot-prompt-similarity, 0.5) takes the least
	// recently used free slot, whose old prompt goes to a host-RAM prompt cache (--cache-ram)
	// from which a later request can restore it.
	EngineLlamaCpp
	// EngineVLLM is vLLM with automatic prefix caching: one pool of KV blocks shared by every
	// request, least recently used first out.
	EngineVLLM
)

var engineNames = [...]string{EngineOllama: "ollama", EngineLlamaCpp: "llama.cpp", EngineVLLM: "vllm"}

// String is the engine's name.
func (e Engine) String() string {
	if int(e) < len(engineNames) {
		return engineNames[e]
	}
	return "unknown"
}

// EngineFor is the engine of a node: the one its agent names (engine: "ollama", "llama.cpp",
// "vllm"), else the one its backend implies: Ollama for "ollama", vLLM for an OpenAI-compatible
// server or a simulated node (the simulator's default engine).
func EngineFor(backend, engine string) Engine {
	switch engine {
	case "ollama":
		return EngineOllama
	case "llama.cpp", "llamacpp", "llama-cpp":
		return EngineLlamaCpp
	case "vllm":
		return EngineVLLM
	}
	if backend == "ollama" {
		return EngineOllama
	}
	return EngineVLLM
}

// Config sizes the caches the Index models where the engines do not report their size.
type Config struct {
	// VLLMTokens is the block pool of a vLLM-like node, in tokens. Default 131072 (about 16 GiB of
	// an 8B model's KV cache at 16 bit).
	VLLMTokens int `yaml:"vllm_tokens" json:"vllm_tokens"`
	// LlamaCppRAMTokens is a llama.cpp server's host-RAM prompt cache, in tokens. Default 65536
	// (its --cache-ram default, 8 GiB, of an 8B model's KV at 16 bit).
	LlamaCppRAMTokens int `yaml:"llama_cpp_ram_tokens" json:"llama_cpp_ram_tokens"`
	// SlotSimilarity is llama.cpp's --slot-prompt-similarity. Default 0.5.
	SlotSimilarity float64 `yaml:"slot_similarity" json:"slot_similarity"`
}

func (c Config) withDefaults() Config {
	if c.VLLMTokens <= 0 {
		c.VLLMTokens = 131072
	}
	if c.LlamaCppRAMTokens <= 0 {
		c.LlamaCppRAMTokens = 65536
	}
	if !(c.SlotSimilarity > 0 && c.SlotSimilarity <= 1) {
		c.SlotSimilarity = 0.5
	}
	return c
}

// Index models every node's prompt caches. It is safe for concurrent use.
type Index struct {
	cfg    Config
	mu     sync.Mutex
	caches map[key]*cache
	gen    uint64
}

type key struct{ node, model string }

// cache is one model's prompt cache on one node.
type cache struct {
	engine Engine
	gen    uint64 // tells a Ticket whether the cache it started in still exists
	tick   uint64 // a clock of Starts, for least recently used
	slots  []slot
	ram    []saved // llama.cpp's host-RAM prompts
	ramTok int
	pool   blockLRU // vLLM's blocks
}

type slot struct {
	links []Link
	busy  int
	used  uint64
}

type saved struct {
	links []Link
	used  uint64
}

// New returns an empty Index.
func New(cfg Config) *Index {
	return &Index{cfg: cfg.withDefaults(), caches: map[key]*cache{}}
}

// Ticket is a request started on a node, for End.
type Ticket struct {
	k    key
	gen  uint64
	slot int // -1: no slot (vLLM)
}

// common is the number of leading links a and b share.
func common(a, b []Link) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i].Hash != b[i].Hash {
			return i
		}
	}
	return n
}

// tokensAt is the tokens the first n links of links cover.
func tokensAt(links []Link, n int) int {
	if n == 0 {
		return 0
	}
	return int(links[n-1].Tokens)
}

// Match appends to dst, for every node of snap where model is resident and its cache holds a
// prefix of links, the tokens that prefix covers. A model a node no longer reports resident has
// lost its cache, which Match forgets.
func (x *Index) Match(snap *scheduler.Snapshot, model string, links []Link, dst []scheduler.PrefixMatch) []scheduler.PrefixMatch {
	if snap == nil {
		return dst
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		resident := false
		for j := range n.Models {
			if n.Models[j].Name == model {
				// A model still loading keeps what the requests that wait for it will leave.
				resident = n.Models[j].Resident || n.Models[j].Loading
				break
			}
		}
		k := key{n.ID, model}
		c := x.caches[k]
		if c == nil {
			continue
		}
		if !resident {
			delete(x.caches, k)
			continue
		}
		if len(links) == 0 {
			continue
		}
		if t := x.matchLocked(c, links); t > 0 {
			dst = append(dst, scheduler.PrefixMatch{Node: n.ID, Tokens: t})
		}
	}
	return dst
}

// matchLocked is how many tokens of links c holds for a request that starts now.
func (x *Index) matchLocked(c *cache, links []Link) int {
	switch c.engine {
	case EngineVLLM:
		return tokensAt(links, c.pool.prefix(links))
	}
	// A request runs in a free slot; when every slot is busy it waits for one, which could be any.
	free := false
	for i := range c.slots {
		free = free || c.slots[i].busy == 0
	}
	best := 0
	for i := range c.slots {
		if s := &c.slots[i]; s.busy == 0 || !free {
			best = max(best, common(s.links, links))
		}
	}
	if c.engine == EngineLlamaCpp {
		for i := range c.ram {
			best = max(best, common(c.ram[i].links, links))
		}
	}
	return tokensAt(links, best)
}

// Start records that a request for model with prompt links went to node, and returns the
// Ticket to End when the node has finished it.
func (x *Index) Start(node *scheduler.Node, model string, links []Link) Ticket {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := key{node.ID, model}
	c := x.caches[k]
	engine := EngineFor(node.Backend, node.Engine)
	if c == nil || c.engine != engine {
		x.gen++
		c = &cache{engine: engine, gen: x.gen}
		x.caches[k] = c
	}
	c.tick++
	t := Ticket{k: k, gen: c.gen, slot: -1}
	if engine == EngineVLLM {
		c.pool.add(links, x.cfg.VLLMTokens)
		return t
	}
	if n := max(node.Slots, 1); len(c.slots) != n {
		c.slots = append(c.slots[:0:0], make([]slot, n)...)
	}
	i := x.pickSlotLocked(c, links)
	s := &c.slots[i]
	if engine == EngineLlamaCpp && common(s.links, links) < len(s.links) {
		x.saveLocked(c, s.links, s.used)
	}
	s.links = append(s.links[:0], links...)
	s.busy++
	s.used = c.tick
	t.slot = i
	return t
}

// pickSlotLocked chooses the slot a request runs in, as the engine does.
func (x *Index) pickSlotLocked(c *cache, links []Link) int {
	best, longest := -1, -1
	lru := -1
	for i := range c.slots {
		s := &c.slots[i]
		if s.busy > 0 {
			continue
		}
		if n := common(s.links, links); n > longest {
			best, longest = i, n
		}
		if lru < 0 || s.used < c.slots[lru].used {
			lru = i
		}
	}
	if best < 0 {
		// Every slot busy: the request waits for one; the one holding most of its prompt is the
		// likeliest to serve it.
		for i := range c.slots {
			if n := common(c.slots[i].links, links); n > longest {
				best, longest = i, n
			}
		}
		return best
	}
	if c.engine == EngineLlamaCpp {
		// llama.cpp: the most similar slot if similar enough, else the least recently used.
		if len(links) == 0 || float64(longest)/float64(len(links)) < x.cfg.SlotSimilarity {
			return lru
		}
	}
	return best
}

// saveLocked keeps an evicted slot prompt in llama.cpp's host-RAM cache, least recently used
// out first beyond its size.
func (x *Index) saveLocked(c *cache, links []Link, used uint64) {
	if len(links) == 0 {
		return
	}
	tok := tokensAt(links, len(links))
	c.ram = append(c.ram, saved{links: append([]Link(nil), links...), used: used})
	c.ramTok += tok
	for c.ramTok > x.cfg.LlamaCppRAMTokens && len(c.ram) > 0 {
		old := 0
		for i := range c.ram {
			if c.ram[i].used < c.ram[old].used {
				old = i
			}
		}
		c.ramTok -= tokensAt(c.ram[old].links, len(c.ram[old].links))
		c.ram = append(c.ram[:old], c.ram[old+1:]...)
	}
}

// End records that the request of t has finished on its node.
func (x *Index) End(t Ticket) {
	if t.slot < 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.caches[t.k]
	if c == nil || c.gen != t.gen || t.slot >= len(c.slots) {
		return
	}
	if s := &c.slots[t.slot]; s.busy > 0 {
		s.busy--
	}
}

// Forget drops everything known about node (it restarted or left).
func (x *Index) Forget(node string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for k := range x.caches {
		if k.node == node {
			delete(x.caches, k)
		}
	}
}
