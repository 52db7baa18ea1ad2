package sim

import (
	"context"
	"github.com/herd-llm/herd/internal/logbuf"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

var slotLine = regexp.MustCompile(`msg="loading cache slot" id=(\d+) cache=(\d+) prompt=(\d+) used=(\d+) remaining=(\d+)`)

// slotLines returns the (id, used, remaining) of each "loading cache slot" line.
func slotLines(log string) [][3]int {
	var out [][3]int
	for _, m := range slotLine.FindAllStringSubmatch(log, -1) {
		id, _ := strconv.Atoi(m[1])
		used, _ := strconv.Atoi(m[4])
		rem, _ := strconv.Atoi(m[5])
		out = append(out, [3]int{id, used, rem})
	}
	return out
}

// Ollama's slot choice: the free slot with the longest common prefix, the first on a tie; a busy
// slot never.
func TestPickSlot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		slots  []cacheSlot
		prompt string
		want   int
		common int
	}{
		{"all empty: the first", []cacheSlot{{}, {}, {}}, "abc", 0, 0},
		{"longest wins", []cacheSlot{{prompt: "ab"}, {prompt: "abcd"}, {prompt: "x"}}, "abcdef", 1, 4},
		{"an empty slot never beats a shared token", []cacheSlot{{prompt: "a-other"}, {}}, "abc", 0, 1},
		{"busy slots are skipped", []cacheSlot{{prompt: "abc", inUse: true}, {prompt: "zz"}}, "abc", 1, 0},
		{"all busy", []cacheSlot{{inUse: true}}, "abc", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, c := pickSlotLocked(tc.slots, tc.prompt)
			if i != tc.want || c != tc.common {
				t.Errorf("pick = %d (common %d), want %d (%d)", i, c, tc.want, tc.common)
			}
		})
	}
}

// The Ollama engine keeps about the last prompt per slot: under sequential load every request
// runs in slot 0 (its template prefix always matches), so a prompt is a hit only until another
// one runs; usage never reports cached tokens; the engine log says what was reused.
func TestOllamaEngineSlotCache(t *testing.T) {
	clk := newAutoClock()
	var log logbuf.Buffer
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk, Engine: EngineOllama, EngineLog: &log,
		Models: []string{"llama3.1:8b"}, Preload: []string{"llama3.1:8b"}})
	a := strings.Repeat("You are a careful assistant. ", 100)
	b := strings.Repeat("Answer in verse, briefly. ", 100)
	timed := func(system string) time.Duration {
		t.Helper()
		body := map[string]any{"model": "llama3.1:8b", "max_tokens": 1, "messages": []map[string]any{
			{"role": "system", "content": system}, {"role": "user", "content": "What is a GPU?"}}}
		t0 := clk.Now()
		w := call(context.Background(), n, agentapi.PathChatCompletions, body)
		if w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if strings.Contains(w.Body.String(), "cached_tokens") {
			t.Errorf("Ollama engine reported cached tokens: %s", w.Body)
		}
		return clk.Now().Sub(t0)
	}
	coldA := timed(a)
	warmA := timed(a)
	timed(b)
	againA := timed(a)
	lines := slotLines(log.String())
	if len(lines) != 4 {
		t.Fatalf("%d slot lines, want 4:\n%s", len(lines), log.String())
	}
	for i, l := range lines {
		if l[0] != 0 {
			t.Errorf("request %d ran in slot %d, want slot 0 (sequential load)", i, l[0])
		}
	}
	if lines[0][1] != 0 || lines[1][2] != 1 {
		t.Errorf("cold used %d; repeat remaining %d, want 0 and 1", lines[0][1], lines[1][2])
	}
	if lines[3][1] > 10 { // only the template's first tokens are shared with b
		t.Errorf("a after b reused %d tokens, want the template prefix only", lines[3][1])
	}
	if !(warmA < coldA/10) || againA < coldA*9/10 {
		t.Errorf("cold %v, warm %v, after another prompt %v", coldA, warmA, againA)
	}
}

// Two overlapping requests take two slots; each then hits in its own slot.
func TestOllamaEngineConcurrentSlots(t *testing.T) {
	clk := newManualClock()
	var log logbuf.Buffer
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: clk, Engine: EngineOllama, EngineLog: &log,
		SlotsPerGPU: 2, Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	prompts := []string{strings.Repeat("first conversation ", 60), strings.Repeat("second talk ", 90)}
	round := func() {
		var wg sync.WaitGroup
		done := make(chan struct{})
		for _, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if w := call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", p, map[string]any{"max_tokens": 4})); w.Code != 200 {
					t.Errorf("status %d", w.Code)
				}
			}()
		}
		eventually(t, "both requests running", func() bool { a, _ := n.InFlight(); return a == 2 })
		go func() { wg.Wait(); close(done) }()
		drive(t, clk, done)
	}
	round()
	round()
	lines := slotLines(log.String())
	if len(lines) != 4 {
		t.Fatalf("%d slot lines:\n%s", len(lines), log.String())
	}
	if lines[0][0] == lines[1][0] {
		t.Errorf("overlapping requests shared slot %d", lines[0][0])
	}
	for _, l := range lines[2:] {
		if l[2] != 1 {
			t.Errorf("second round: slot %d evaluated %d tokens, want 1 (its own prompt cached)", l[0], l[2])
		}
	}
}

// OLLAMA_MAX_LOADED_MODELS=1: a second model waits for the first to go idle, then replaces it;
// loads take weights ÷ disk + weights ÷ the GPU's host link + the runner's start.
func TestOllamaEngineMaxLoadedModels(t *testing.T) {
	clk := newAutoClock()
	var log logbuf.Buffer
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40")}, Clock: clk, Engine: EngineOllama, EngineLog: &log,
		MaxLoadedModels: 1, Models: []string{"llama3.2:1b", "qwen2.5:7b"}})
	for i, m := range []string{"llama3.2:1b", "qwen2.5:7b", "qwen2.5:7b", "llama3.2:1b"} {
		t0 := clk.Now()
		if w := call(context.Background(), n, agentapi.PathChatCompletions, chatBody(m, "hi", map[string]any{"max_tokens": 1})); w.Code != 200 {
			t.Fatalf("request %d (%s): status %d: %s", i, m, w.Code, w.Body)
		}
		resident := 0
		for _, info := range mustModels(t, n) {
			if info.Resident {
				resident++
			}
		}
		if resident != 1 {
			t.Errorf("after request %d: %d models resident, want 1", i, resident)
		}
		if i == 1 {
			s := spec(t, "qwen2.5:7b")
			want := float64(s.WeightsBytes)/2e9 + float64(s.WeightsBytes)/models.PCIeBytesPerSecond(gpu(t, "a40")) + 1
			if got := clk.Now().Sub(t0).Seconds(); got < want || got > want+0.5 {
				t.Errorf("cold qwen2.5:7b request took %.2fs, want the load's %.2fs and a little", got, want)
			}
		}
	}
	if loads := strings.Count(log.String(), `msg="loaded runners"`); loads != 3 {
		t.Errorf("%d loads, want 3:\n%s", loads, log.String())
	}
}

// A busy model is not evicted under it: the waiting load starts when its request ends.
func TestOllamaEngineWaitsForBusyModel(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: clk, Engine: EngineOllama,
		MaxLoadedModels: 1, Models: []string{"llama3.2:1b", "llama3.2:3b"}, Preload: []string{"llama3.2:1b"}})
	codes := make(chan int, 2)
	go func() {
		codes <- call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "hi", map[string]any{"max_tokens": 50})).Code
	}()
	eventually(t, "first request running", func() bool { a, _ := n.InFlight(); return a == 1 })
	go func() {
		codes <- call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:3b", "hi", map[string]any{"max_tokens": 1})).Code
	}()
	eventually(t, "second request waiting", func() bool { a, _ := n.InFlight(); return a == 2 })
	done := make(chan struct{})
	go func() {
		for range 2 {
			if c := <-codes; c != 200 {
				t.Errorf("status %d, want 200 (a load waits for a busy model)", c)
			}
		}
		close(done)
	}()
	drive(t, clk, done)
}

func mustModels(t *testing.T, n *Node) []agentapi.Model {
	t.Helper()
	ms, err := n.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestEngineConfig(t *testing.T) {
	if _, err := New(Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Engine: "tgi"}); err == nil {
		t.Error("unknown engine accepted")
	}
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4"), gpu(t, "t4")}, Engine: EngineOllama})
	if n.maxLoaded != 6 || n.Engine() != EngineOllama {
		t.Errorf("max loaded %d (want 3 × 2 GPUs), engine %q", n.maxLoaded, n.Engine())
	}
	if d := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}}); d.Engine() != EngineVLLM || d.maxLoaded != 0 {
		t.Errorf("default engine %q, max loaded %d", d.Engine(), d.maxLoaded)
	}
}
