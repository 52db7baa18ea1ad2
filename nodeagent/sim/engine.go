package sim

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Engines the node can behave like. The engine decides how prompts are cached, what usage
// reports, and how models are evicted; the GPU physics are the same for both.
const (
	// EngineOllama behaves like Ollama 0.17.4's llama runner (and llama.cpp's server, which keeps
	// prompts the same way): every loaded model has one prompt cache per parallel slot, each
	// holding the last prompt that slot served; a request takes the free slot whose cached prompt
	// shares the longest prefix with its own (an empty slot never beats one that shares a token),
	// so a hit needs that very slot to be free and still hold the prompt. Usage carries no
	// cached_tokens (Ollama's OpenAI endpoints report prompt_tokens only). At most
	// MaxLoadedModels models are resident; a model that needs room waits for a busy one to go idle
	// rather than failing.
	EngineOllama = "ollama"
	// EngineVLLM behaves like vLLM with prefix caching: a node-wide pool of hashed KV blocks,
	// least recently used first out, shared by every request; usage reports
	// prompt_tokens_details.cached_tokens (vLLM with --enable-prompt-tokens-details). A model that
	// cannot fit beside busy ones fails with 503.
	EngineVLLM = "vllm"
)

// Engines lists the engines Config.Engine accepts.
func Engines() []string { return []string{EngineOllama, EngineVLLM} }

// defaultModelsPerGPU is Ollama's automatic OLLAMA_MAX_LOADED_MODELS: 3 × the GPUs
// (server/sched.go, defaultModelsPerGPU, Ollama 0.17.4).
const defaultModelsPerGPU = 3

// cacheSlot is one of a loaded model's parallel slots in the Ollama engine, with the prompt its
// KV cache holds (runner/llamarunner/cache.go's InputCacheSlot: Inputs, InUse).
type cacheSlot struct {
	prompt string
	inUse  bool
}

// pickSlotLocked chooses the slot a prompt runs in, as Ollama's findLongestCacheSlot does: the
// free slot with the longest common prefix, the first such slot on a tie. It returns the slot's
// index and the shared prefix in bytes; -1 when every slot is busy (the node's slot count keeps
// that from happening, but a model loaded with fewer slots than the node has could).
func pickSlotLocked(slots []cacheSlot, prompt string) (int, int) {
	best, longest := -1, -1
	for i := range slots {
		if slots[i].inUse {
			continue
		}
		if c := commonPrefix(slots[i].prompt, prompt); c > longest {
			best, longest = i, c
		}
	}
	return best, max(longest, 0)
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// engineLog writes one line per prefill and per model load in the text format of Ollama's own
// log under OLLAMA_DEBUG=1 (log/slog's text handler), so that one parser counts the prefill a
// real Ollama did and the prefill a simulated node did:
//
//	time=... level=DEBUG source=cache.go:102 msg="loading cache slot" id=0 cache=812 prompt=827 used=812 remaining=15
//	time=... level=INFO source=server.go:1388 msg="llama runner started in 3.21 seconds"
//	time=... level=INFO source=sched.go:566 msg="loaded runners" count=1
//
// The vLLM engine writes "prefix cache" lines with the same prompt, used and remaining fields.
// Times are the node's clock (wall time unless a test clock is set); tokens are the simulated
// counts; durations of loads are simulated seconds.
type engineLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *engineLog) printf(now time.Time, level, source, msg, format string, args ...any) {
	if l == nil || l.w == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "time=%s level=%s source=%s msg=%q", now.Format(time.RFC3339Nano), level, source, msg)
	if format != "" {
		b.WriteByte(' ')
		fmt.Fprintf(&b, format, args...)
	}
	b.WriteByte('\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, b.String())
}
