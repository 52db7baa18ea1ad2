package sim

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func TestNewValidates(t *testing.T) {
	a40 := gpu(t, "a40")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no GPUs", Config{}, "at least one GPU"},
		{"empty profile", Config{GPUs: []models.GPUProfile{{Key: "x"}}}, "lacks VRAM"},
		{"unknown model", Config{GPUs: []models.GPUProfile{a40}, Models: []string{"gpt-5"}}, "not in the model catalogue"},
		{"negative speed", Config{GPUs: []models.GPUProfile{a40}, SpeedFactor: -1}, "SpeedFactor"},
		{"NaN speed", Config{GPUs: []models.GPUProfile{a40}, SpeedFactor: math.NaN()}, "SpeedFactor"},
		{"negative slots", Config{GPUs: []models.GPUProfile{a40}, SlotsPerGPU: -1}, "SlotsPerGPU"},
		{"preload too big", Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Preload: []string{"llama3.1:70b"}}, "does not fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	n := newNode(t, Config{GPUs: []models.GPUProfile{a40, a40}})
	if n.Slots() != 2*DefaultSlotsPerGPU || n.Kind() != agentapi.BackendSim || !n.Simulated() || n.SpeedFactor() != 1 {
		t.Errorf("defaults: slots %d kind %s", n.Slots(), n.Kind())
	}
	ms, _ := n.Models(context.Background())
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
		if m.Resident || !m.OnDisk {
			t.Errorf("%s: resident %v on disk %v", m.Name, m.Resident, m.OnDisk)
		}
	}
	want := DefaultModels()
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("default models %v, want %v", names, want)
	}
}

// With one slot, requests queue in arrival order; a queued request that gives up leaves the queue.
func TestQueueFIFO(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, SlotsPerGPU: 1, Clock: clk,
		Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	if n.Slots() != 1 {
		t.Fatalf("slots %d", n.Slots())
	}
	var mu sync.Mutex
	var order []string
	start := func(ctx context.Context, name string) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", name, map[string]any{"max_tokens": 3}))
			if w.Code == http.StatusOK && w.Body.Len() > 0 {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
			}
		}()
		return done
	}
	doneA := start(context.Background(), "A")
	eventually(t, "A holds the slot", func() bool { in, _ := n.InFlight(); return in == 1 })
	doneB := start(context.Background(), "B")
	eventually(t, "B queued", func() bool { _, q := n.InFlight(); return q == 1 })
	ctxX, cancelX := context.WithCancel(context.Background())
	doneX := start(ctxX, "X")
	eventually(t, "X queued", func() bool { _, q := n.InFlight(); return q == 2 })
	doneC := start(context.Background(), "C")
	eventually(t, "C queued", func() bool { _, q := n.InFlight(); return q == 3 })
	cancelX()
	<-doneX
	if in, q := n.InFlight(); in != 1 || q != 2 {
		t.Fatalf("after X gave up: in flight %d queued %d", in, q)
	}
	all := make(chan struct{})
	go func() { <-doneA; <-doneB; <-doneC; close(all) }()
	drive(t, clk, all)
	if !slices.Equal(order, []string{"A", "B", "C"}) {
		t.Errorf("served in order %v", order)
	}
	if in, q := n.InFlight(); in != 0 || q != 0 {
		t.Errorf("at the end: in flight %d queued %d", in, q)
	}
}

// Several slots serve at once: the requests overlap and each decodes slower than alone, while
// together they make more tokens per second (batching).
func TestSlotsShareThroughput(t *testing.T) {
	for _, tc := range []struct {
		n        int
		wantGain float64
	}{{1, 1}, {2, math.Pow(2, 0.6)}, {4, math.Pow(4, 0.6)}, {64, maxBatchGain}} {
		if got := batchGain(tc.n); math.Abs(got-tc.wantGain) > 1e-9 {
			t.Errorf("batchGain(%d) = %v, want %v", tc.n, got, tc.wantGain)
		}
	}
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40")}, Clock: clk, Models: []string{"llama3.1:8b"}, Preload: []string{"llama3.1:8b"}})
	const tokens = 200
	elapsed := func(parallel int) time.Duration {
		t0 := clk.Now()
		var wg sync.WaitGroup
		done := make(chan struct{})
		for range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", "go", map[string]any{"max_tokens": tokens}))
				if w.Code != http.StatusOK {
					t.Errorf("status %d", w.Code)
				}
			}()
		}
		// All must be running before time moves, or the first would decode alone for a while.
		eventually(t, "all decoding", func() bool { return clk.Pending() == parallel })
		go func() { wg.Wait(); close(done) }()
		drive(t, clk, done)
		return clk.Now().Sub(t0)
	}
	one := elapsed(1)
	// The node reports the concurrency its speed was measured at, for the gateway's learner.
	if m, _ := modelInfo(t, n, "llama3.1:8b"); m.Concurrency != 1 {
		t.Errorf("one request alone measured at concurrency %v", m.Concurrency)
	}
	four := elapsed(4)
	if m, _ := modelInfo(t, n, "llama3.1:8b"); !(m.Concurrency > 2.5 && m.Concurrency < 4) {
		t.Errorf("after four requests decoding together, concurrency EWMA %v, want between 2.5 and 4", m.Concurrency)
	}
	single := models.DecodeTokensPerSecond(gpu(t, "a40"), spec(t, "llama3.1:8b"))
	if want := time.Duration(tokens / single * float64(time.Second)); math.Abs(float64(one-want)) > 0.05*float64(want) {
		t.Errorf("one request: %v, want ≈ %v", one, want)
	}
	// Four at once: each at gain(4)/4 of the single speed, so the batch takes 4/gain(4) as long.
	ratio := float64(four) / float64(one)
	if want := 4 / batchGain(4); math.Abs(ratio-want) > 0.1*want {
		t.Errorf("4 parallel took %.2f× one request, want ≈ %.2f×", ratio, want)
	}
}

func TestLoadOnDemandTakesLoadTime(t *testing.T) {
	clk := newAutoClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40")}, Clock: clk, Models: []string{"qwen2.5:14b"}})
	before := gpuSamples(t, n)[0].MemoryUsedBytes
	t0 := clk.Now()
	w := call(context.Background(), n, agentapi.PathChatCompletions, chatBody("qwen2.5:14b", "hi", map[string]any{"max_tokens": 1}))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	s := spec(t, "qwen2.5:14b")
	load := time.Duration((float64(s.WeightsBytes)/2e9 + 1) * float64(time.Second))
	if took := clk.Now().Sub(t0); took < load || took > load+2*time.Second {
		t.Errorf("first request took %v, want load time %v plus a little", took, load)
	}
	m, _ := modelInfo(t, n, "qwen2.5:14b")
	if !m.Resident {
		t.Error("model not resident after a request")
	}
	after := gpuSamples(t, n)[0].MemoryUsedBytes
	if after-before != models.EstimateVRAM(s, models.DefaultContextLength, DefaultSlotsPerGPU) || m.VRAMBytes != after-before {
		t.Errorf("memory used rose by %d, model reports %d", after-before, m.VRAMBytes)
	}
	// Resident now: the next request pays no load time.
	t1 := clk.Now()
	call(context.Background(), n, agentapi.PathChatCompletions, chatBody("qwen2.5:14b", "hi", map[string]any{"max_tokens": 1}))
	if took := clk.Now().Sub(t1); took >= load {
		t.Errorf("second request took %v", took)
	}
}

// SpeedFactor divides simulated time, and the node says so in its GPU names.
func TestSpeedFactor(t *testing.T) {
	run := func(speed float64) (time.Duration, *Node) {
		clk := newAutoClock()
		n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk, SpeedFactor: speed, Models: []string{"llama3.2:3b"}})
		t0 := clk.Now()
		w := call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:3b", strings.Repeat("x", 2000), map[string]any{"max_tokens": 50}))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		return clk.Now().Sub(t0), n
	}
	slow, n1 := run(1)
	fast, n10 := run(10)
	if r := float64(slow) / float64(fast); math.Abs(r-10) > 0.5 {
		t.Errorf("speed 10 ran %.2f× faster", r)
	}
	if name := gpuSamples(t, n1)[0].Name; name != "Tesla T4" {
		t.Errorf("speed 1 GPU name %q", name)
	}
	if name := gpuSamples(t, n10)[0].Name; name != "Tesla T4 (simulated x10)" {
		t.Errorf("speed 10 GPU name %q", name)
	}
	m1, _ := modelInfo(t, n1, "llama3.2:3b")
	m10, _ := modelInfo(t, n10, "llama3.2:3b")
	if r := m10.TokensPerSecond / m1.TokensPerSecond; math.Abs(r-10) > 0.5 {
		t.Errorf("measured speed ratio %.2f", r)
	}
}

// The speed a node reports is what it measured, and it matches the profile's figure.
func TestMeasuredSpeed(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Models: []string{"llama3.1:8b"}})
	if m, _ := modelInfo(t, n, "llama3.1:8b"); m.TokensPerSecond != 0 {
		t.Errorf("unmeasured speed %v", m.TokensPerSecond)
	}
	for range 3 {
		call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", strings.Repeat("y", 3000), map[string]any{"max_tokens": 100}))
	}
	m, _ := modelInfo(t, n, "llama3.1:8b")
	want := models.DecodeTokensPerSecond(gpu(t, "3090"), spec(t, "llama3.1:8b"))
	if math.Abs(m.TokensPerSecond-want) > 0.02*want {
		t.Errorf("measured decode %.1f tok/s, profile says %.1f", m.TokensPerSecond, want)
	}
	if m.PrefillTokensPerSecond <= m.TokensPerSecond {
		t.Errorf("prefill %.0f tok/s not above decode", m.PrefillTokensPerSecond)
	}
	if m.ParameterSize != "8.0B" || m.Quantization != "Q4_K_M" || m.Family != "llama" || m.SizeBytes != 4_920_000_000 ||
		!strings.HasPrefix(m.Digest, "sha256:") || m.LastUsed.IsZero() || m.Embedding {
		t.Errorf("model facts %+v", m)
	}
}

// LRU eviction: loading a model that does not fit evicts the idle model used longest ago (not the
// one loaded first), and only as many as needed.
func TestLRUEviction(t *testing.T) {
	clk := newAutoClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk,
		Models: []string{"llama3.1:8b", "qwen2.5:7b", "llama3.2:3b"}})
	ctx := context.Background()
	for _, m := range []string{"llama3.1:8b", "qwen2.5:7b"} {
		if err := n.Load(ctx, m, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Use 8b: qwen, loaded later, is now the least recently used.
	if w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", "hi", map[string]any{"max_tokens": 1})); w.Code != 200 {
		t.Fatalf("8b: %d", w.Code)
	}
	need := func(m string) uint64 {
		return models.EstimateVRAM(spec(t, m), models.DefaultContextLength, DefaultSlotsPerGPU)
	}
	t4 := gpu(t, "t4").VRAMBytes
	if need("llama3.1:8b")+need("qwen2.5:7b")+need("llama3.2:3b") <= t4 || need("llama3.1:8b")+need("llama3.2:3b") > t4 {
		t.Fatal("test premise: the three must not fit a T4 together, 8b and 3b must")
	}
	if w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.2:3b", "hi", map[string]any{"max_tokens": 1})); w.Code != 200 {
		t.Fatalf("3b: %d %s", w.Code, w.Body)
	}
	for name, resident := range map[string]bool{"llama3.1:8b": true, "qwen2.5:7b": false, "llama3.2:3b": true} {
		if m, _ := modelInfo(t, n, name); m.Resident != resident {
			t.Errorf("%s resident %v, want %v", name, m.Resident, resident)
		}
	}
	// Telemetry agrees with residency.
	var resident uint64
	ms, _ := n.Models(ctx)
	for _, m := range ms {
		if m.Resident {
			resident += m.VRAMBytes
		}
	}
	if used := gpuSamples(t, n)[0].MemoryUsedBytes; used != resident || used > t4 {
		t.Errorf("GPU memory used %d, resident models %d", used, resident)
	}
}

// A model that needs memory held by busy models gets a 503 with Retry-After, not an eviction of
// a model in use.
func TestNoEvictionOfBusyModels(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk,
		Models: []string{"qwen2.5:14b", "llama3.1:8b"}, Preload: []string{"qwen2.5:14b"}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		call(context.Background(), n, agentapi.PathChatCompletions, chatBody("qwen2.5:14b", "busy", map[string]any{"max_tokens": 5}))
	}()
	eventually(t, "14b busy", func() bool { return clk.Pending() == 1 })
	w := call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", "hi", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "insufficient_vram") {
		t.Errorf("status %d %v %s", w.Code, w.Header(), w.Body)
	}
	drive(t, clk, done)
	if m, _ := modelInfo(t, n, "qwen2.5:14b"); !m.Resident {
		t.Error("busy model was evicted")
	}
}

// A model too big for one GPU spans several.
func TestSpanGPUs(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40"), gpu(t, "a40")}, Clock: newAutoClock(),
		Models: []string{"llama3.1:70b", "llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	need := models.EstimateVRAM(spec(t, "llama3.1:70b"), models.DefaultContextLength, DefaultSlotsPerGPU)
	if need <= gpu(t, "a40").VRAMBytes {
		t.Fatal("test premise: 70b must not fit one A40")
	}
	if err := n.Load(context.Background(), "llama3.1:70b", "-1"); err != nil {
		t.Fatal(err)
	}
	gs := gpuSamples(t, n)
	small := models.EstimateVRAM(spec(t, "llama3.2:1b"), models.DefaultContextLength, DefaultSlotsPerGPU)
	if gs[0].MemoryUsedBytes == 0 || gs[1].MemoryUsedBytes == 0 || gs[0].MemoryUsedBytes+gs[1].MemoryUsedBytes != need+small {
		t.Errorf("memory used %d + %d, want %d", gs[0].MemoryUsedBytes, gs[1].MemoryUsedBytes, need+small)
	}
	for _, g := range gs {
		if g.MemoryUsedBytes > g.MemoryTotalBytes {
			t.Errorf("GPU %d over-committed", g.Index)
		}
	}
	// It decodes at the A40 speed (identical GPUs), measured.
	call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.1:70b", "hi", map[string]any{"max_tokens": 20}))
	m, _ := modelInfo(t, n, "llama3.1:70b")
	want := models.DecodeTokensPerSecond(gpu(t, "a40"), spec(t, "llama3.1:70b"))
	if math.Abs(m.TokensPerSecond-want) > 0.03*want || !m.ExpiresAt.IsZero() {
		t.Errorf("70b: %.2f tok/s (want %.2f), expires %v", m.TokensPerSecond, want, m.ExpiresAt)
	}
}

// The prefix cache: the second identical prompt skips the prefill of its cached blocks, which the
// fake clock shows as less simulated time, and usage reports as cached tokens.
func TestPrefixCache(t *testing.T) {
	clk := newAutoClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk, Models: []string{"llama3.1:8b"}, Preload: []string{"llama3.1:8b"}})
	system := strings.Repeat("You are a careful assistant. ", 200) // ≈ 1450 tokens
	timed := func(user string) (time.Duration, chatResp) {
		body := map[string]any{"model": "llama3.1:8b", "max_tokens": 1, "messages": []map[string]any{
			{"role": "system", "content": system}, {"role": "user", "content": user}}}
		t0 := clk.Now()
		w := call(context.Background(), n, agentapi.PathChatCompletions, body)
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		return clk.Now().Sub(t0), decodeJSON[chatResp](t, w.Body.Bytes())
	}
	cold, r1 := timed("What is a GPU?")
	warm, r2 := timed("What is a GPU?")
	other, r3 := timed("Something else entirely.")
	if r1.Usage.PromptTokensDetails.CachedTokens != 0 {
		t.Errorf("cold request cached %d", r1.Usage.PromptTokensDetails.CachedTokens)
	}
	c2 := r2.Usage.PromptTokensDetails.CachedTokens
	if c2 == 0 || c2 >= r2.Usage.PromptTokens || c2%prefixBlockTokens != 0 {
		t.Errorf("repeat cached %d of %d", c2, r2.Usage.PromptTokens)
	}
	// Same system prompt, different question: the shared blocks are still reused.
	if c3 := r3.Usage.PromptTokensDetails.CachedTokens; c3 == 0 || c3 > c2 {
		t.Errorf("shared prefix cached %d (repeat %d)", c3, c2)
	}
	if warm >= cold || other >= cold {
		t.Errorf("cold %v, warm %v, shared prefix %v", cold, warm, other)
	}
	rate := models.PrefillTokensPerSecond(gpu(t, "t4"), spec(t, "llama3.1:8b"))
	saved := time.Duration(float64(c2) / rate * float64(time.Second))
	if diff := cold - warm; math.Abs(float64(diff-saved)) > float64(2*time.Millisecond) {
		t.Errorf("saved %v, want ≈ %v (%d tokens at %.0f tok/s)", diff, saved, c2, rate)
	}
	// A reload empties the KV cache.
	if err := n.Unload(context.Background(), "llama3.1:8b"); err != nil {
		t.Fatal(err)
	}
	if _, r4 := timed("What is a GPU?"); r4.Usage.PromptTokensDetails.CachedTokens != 0 {
		t.Errorf("after reload cached %d", r4.Usage.PromptTokensDetails.CachedTokens)
	}
}

// The prefix cache holds no more than the node's KV memory (slots × context tokens): prompts
// beyond it evict the least recently used blocks, so an old conversation comes back cold.
func TestPrefixCacheBounded(t *testing.T) {
	clk := newAutoClock()
	// One slot of 1024 tokens: a 16-block cache.
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, SlotsPerGPU: 1, ContextLength: 1024, Clock: clk,
		Models: []string{"llama3.1:8b"}, Preload: []string{"llama3.1:8b"}})
	cached := func(prompt string) int {
		body := map[string]any{"model": "llama3.1:8b", "max_tokens": 1, "messages": []map[string]any{{"role": "user", "content": prompt}}}
		w := call(context.Background(), n, agentapi.PathChatCompletions, body)
		if w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		return decodeJSON[chatResp](t, w.Body.Bytes()).Usage.PromptTokensDetails.CachedTokens
	}
	a := strings.Repeat("alpha beta gamma. ", 150) // ≈ 675 tokens: 10 blocks
	b := strings.Repeat("delta epsilon zeta. ", 150)
	cached(a)
	if got := cached(a); got < 8*prefixBlockTokens {
		t.Fatalf("repeat of a cached %d tokens, want its blocks", got)
	}
	cached(b) // 10 more blocks: 20 > 16, so a's least recently used blocks go
	if got := cached(a); got != 0 {
		t.Errorf("a after b cached %d tokens, want 0 (evicted)", got)
	}
	if got, want := prefixCacheBlocks(4, 4096), 256; got != want {
		t.Errorf("prefixCacheBlocks(4, 4096) = %d, want %d", got, want)
	}
}

func TestTelemetry(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{NodeID: "n1", GPUs: []models.GPUProfile{gpu(t, "a40"), gpu(t, "t4")}, Clock: clk,
		Models: []string{"llama3.1:8b"}, Preload: []string{"llama3.1:8b"}})
	gs := gpuSamples(t, n)
	if len(gs) != 2 {
		t.Fatalf("%d GPUs", len(gs))
	}
	a40, t4 := gpu(t, "a40"), gpu(t, "t4")
	for i, g := range gs {
		p := []models.GPUProfile{a40, t4}[i]
		if g.Index != i || g.Name != p.Name || g.UUID != "GPU-sim-n1-"+string(rune('0'+i)) || !g.Simulated || !g.Healthy ||
			g.MemoryTotalBytes != p.VRAMBytes || g.PowerLimitWatts != p.PowerLimitWatts || g.ThrottleReasons == nil || len(g.ThrottleReasons) != 0 {
			t.Errorf("GPU %d: %+v", i, g)
		}
		if g.UtilizationRatio != 0 || g.TemperatureCelsius != idleTempC || g.PowerWatts != p.IdlePowerWatts || g.SMClockMHz != idleClockMHz {
			t.Errorf("GPU %d not idle: %+v", i, g)
		}
	}
	// The model sits on the GPU with the most free memory: the A40.
	if want := models.EstimateVRAM(spec(t, "llama3.1:8b"), models.DefaultContextLength, DefaultSlotsPerGPU); gs[0].MemoryUsedBytes != want || gs[1].MemoryUsedBytes != 0 {
		t.Errorf("memory used %d / %d, want %d on GPU 0", gs[0].MemoryUsedBytes, gs[1].MemoryUsedBytes, want)
	}
	// Two requests busy on the A40: half its slots.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", "warm up", map[string]any{"max_tokens": 100000 / 100}))
		}()
	}
	eventually(t, "both running", func() bool { return clk.Pending() == 2 })
	busy := gpuSamples(t, n)[0]
	if busy.UtilizationRatio != 0.5 || busy.SMClockMHz != a40.BoostClockMHz || busy.PowerWatts <= a40.IdlePowerWatts || busy.PowerWatts >= a40.PowerLimitWatts {
		t.Errorf("busy GPU: %+v", busy)
	}
	if m, _ := modelInfo(t, n, "llama3.1:8b"); m.InFlight != 2 {
		t.Errorf("model in flight %d", m.InFlight)
	}
	// Temperature follows the load over simulated time, toward 35 + 45 × 0.5.
	clk.Advance(2 * time.Minute) // fires every timer due; the requests keep going
	hot := gpuSamples(t, n)[0]
	if hot.TemperatureCelsius <= idleTempC+10 || hot.TemperatureCelsius > idleTempC+(fullLoadTempC-idleTempC)*0.5+0.1 {
		t.Errorf("temperature under half load %v", hot.TemperatureCelsius)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	drive(t, clk, done)
	if g := gpuSamples(t, n)[0]; g.UtilizationRatio != 0 || g.SMClockMHz != idleClockMHz {
		t.Errorf("after the work: %+v", g)
	}
}

func TestInjectFault(t *testing.T) {
	clk := newAutoClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40"), gpu(t, "3090")}, Clock: clk,
		Models: []string{"llama3.1:8b", "llama3.2:1b"}})
	ctx := context.Background()
	if err := n.InjectFault(5, FaultECC); err == nil {
		t.Error("fault on a missing GPU accepted")
	}
	if err := n.InjectFault(0, "meltdown"); err == nil {
		t.Error("unknown fault accepted")
	}
	if err := n.InjectFault(1, FaultECC); !errors.Is(err, ErrNoECC) {
		t.Errorf("ECC fault on a GeForce: %v", err)
	}

	// ECC: unhealthy, still serving.
	if err := n.InjectFault(0, FaultECC); err != nil {
		t.Fatal(err)
	}
	g := gpuSamples(t, n)[0]
	if g.Healthy || g.ECCUncorrected != 1 || !strings.Contains(g.HealthReason, "ECC") {
		t.Errorf("after ECC: %+v", g)
	}
	if err := n.InjectFault(0, FaultClear); err != nil {
		t.Fatal(err)
	}
	if g := gpuSamples(t, n)[0]; !g.Healthy || g.ECCUncorrected != 0 || g.HealthReason != "" {
		t.Errorf("after clear: %+v", g)
	}

	// Thermal: throttled, unhealthy, half speed.
	timed := func() time.Duration {
		t0 := clk.Now()
		if w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", "x", map[string]any{"max_tokens": 100})); w.Code != 200 {
			t.Fatalf("status %d %s", w.Code, w.Body)
		}
		return clk.Now().Sub(t0)
	}
	if err := n.Load(ctx, "llama3.1:8b", ""); err != nil {
		t.Fatal(err)
	}
	normal := timed()
	if err := n.InjectFault(0, FaultThermal); err != nil {
		t.Fatal(err)
	}
	g = gpuSamples(t, n)[0]
	if g.Healthy || !slices.Contains(g.ThrottleReasons, agentapi.ThrottleHWThermal) || g.TemperatureCelsius < throttleTempC-1 {
		t.Errorf("after thermal: %+v", g)
	}
	if r := float64(timed()) / float64(normal); math.Abs(r-2) > 0.1 {
		t.Errorf("throttled request took %.2f× as long, want 2×", r)
	}
	n.InjectFault(0, FaultClear)

	// XID: the GPU falls off the bus; its models are lost and new loads go elsewhere.
	if err := n.InjectFault(0, FaultXID); err != nil {
		t.Fatal(err)
	}
	gs := gpuSamples(t, n)
	if gs[0].Healthy || gs[0].XIDEvents != 1 || gs[0].LastXID != 79 || gs[0].MemoryUsedBytes != 0 || !strings.Contains(gs[0].HealthReason, "XID 79") {
		t.Errorf("after XID: %+v", gs[0])
	}
	if m, _ := modelInfo(t, n, "llama3.1:8b"); m.Resident {
		t.Error("model on a lost GPU still resident")
	}
	// The 8b model reloads onto the 3090.
	if w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.1:8b", "x", map[string]any{"max_tokens": 1})); w.Code != 200 {
		t.Fatalf("after XID: %d %s", w.Code, w.Body)
	}
	if gs := gpuSamples(t, n); gs[1].MemoryUsedBytes == 0 || gs[0].MemoryUsedBytes != 0 {
		t.Errorf("memory used after reload: %d / %d", gs[0].MemoryUsedBytes, gs[1].MemoryUsedBytes)
	}
	// With every GPU off the bus nothing can load.
	n.InjectFault(AllGPUs, FaultXID)
	w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "x", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "model_does_not_fit") {
		t.Errorf("all GPUs lost: %d %s", w.Code, w.Body)
	}
	n.InjectFault(AllGPUs, FaultClear)
	if w := call(ctx, n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "x", map[string]any{"max_tokens": 1})); w.Code != 200 {
		t.Errorf("after clearing: %d", w.Code)
	}
}

// XID under a non-streamed request in flight: it fails with a 503 rather than hanging.
func TestXIDFailsRequestInFlight(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40")}, Clock: clk, Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	res := make(chan int, 1)
	go func() {
		res <- call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "x", map[string]any{"max_tokens": 50})).Code
	}()
	eventually(t, "running", func() bool { return clk.Pending() == 1 })
	clk.AdvanceToNext()
	n.InjectFault(0, FaultXID)
	select {
	case code := <-res:
		if code != http.StatusServiceUnavailable {
			t.Errorf("status %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("request hung after XID")
	}
}

func TestPull(t *testing.T) {
	clk := newAutoClock()
	n := newNode(t, Config{NodeID: "p", GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk, Models: []string{}})
	ctx := context.Background()
	var got []agentapi.Progress
	t0 := clk.Now()
	if err := n.Pull(ctx, "qwen2.5", func(p agentapi.Progress) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	s := spec(t, "qwen2.5:7b")
	if took, want := clk.Now().Sub(t0), time.Duration(float64(s.WeightsBytes)/100e6*float64(time.Second)); math.Abs(float64(took-want)) > float64(time.Second) {
		t.Errorf("pull took %v, want ≈ %v at 100 MB/s", took, want)
	}
	if got[0].Status != "pulling manifest" || got[len(got)-1].Status != "success" {
		t.Errorf("first %q last %q", got[0].Status, got[len(got)-1].Status)
	}
	var last int64
	downloads := 0
	for _, p := range got {
		if p.Node != "p" {
			t.Errorf("progress node %q", p.Node)
		}
		if !strings.HasPrefix(p.Status, "pulling ") || p.Status == "pulling manifest" {
			continue
		}
		downloads++
		if p.Total != int64(s.WeightsBytes) || p.Completed < last || !strings.HasPrefix(p.Digest, "sha256:") {
			t.Fatalf("progress %+v after %d", p, last)
		}
		last = p.Completed
	}
	if last != int64(s.WeightsBytes) || downloads < 10 || downloads > maxPullReports+1 {
		t.Errorf("completed %d of %d in %d reports", last, s.WeightsBytes, downloads)
	}
	if m, ok := modelInfo(t, n, "qwen2.5:7b"); !ok || !m.OnDisk || m.Resident {
		t.Errorf("after pull: %+v %v", m, ok)
	}
	// Pulling again is quick and succeeds.
	t1 := clk.Now()
	if err := n.Pull(ctx, "qwen2.5:7b", nil); err != nil || clk.Now() != t1 {
		t.Errorf("re-pull: %v, took %v", err, clk.Now().Sub(t1))
	}
	if err := n.Pull(ctx, "gpt-4o", nil); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("unknown model: %v", err)
	}
	// A cancelled pull leaves nothing on disk.
	cctx, cancel := context.WithCancel(ctx)
	calls := 0
	err := n.Pull(cctx, "llama3.1:70b", func(p agentapi.Progress) {
		if calls++; calls == 5 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled pull: %v", err)
	}
	if _, ok := modelInfo(t, n, "llama3.1:70b"); ok {
		t.Error("cancelled pull left the model on disk")
	}
}

func TestLoadUnloadDelete(t *testing.T) {
	clk := newAutoClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: clk, Models: []string{"llama3.2:3b", "mistral"}, KeepAlive: 5 * time.Minute})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
	}{{"qwen2.5:7b", ErrModelNotFound}, {"nope", ErrModelNotFound}} {
		if err := n.Load(ctx, tc.name, ""); !errors.Is(err, tc.err) {
			t.Errorf("Load(%s) = %v", tc.name, err)
		}
		if err := n.Unload(ctx, tc.name); !errors.Is(err, tc.err) {
			t.Errorf("Unload(%s) = %v", tc.name, err)
		}
		if err := n.Delete(ctx, tc.name); !errors.Is(err, tc.err) {
			t.Errorf("Delete(%s) = %v", tc.name, err)
		}
	}
	if err := n.Load(ctx, "llama3.2:3b", "bogus"); err == nil {
		t.Error("bad keep_alive accepted")
	}
	if err := n.Load(ctx, "llama3.2", ""); err != nil {
		t.Fatal(err)
	}
	m, _ := modelInfo(t, n, "llama3.2:3b")
	if !m.Resident || m.ExpiresAt.Sub(clk.Now()) != 5*time.Minute {
		t.Errorf("after load: resident %v expires in %v", m.Resident, m.ExpiresAt.Sub(clk.Now()))
	}
	// Keep-alive runs out on the clock.
	clk.Advance(5*time.Minute + time.Second)
	if m, _ := modelInfo(t, n, "llama3.2:3b"); m.Resident {
		t.Error("still resident after keep-alive")
	}
	// "-1" keeps it; "0" unloads it.
	if err := n.Load(ctx, "mistral", "-1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if m, _ := modelInfo(t, n, "mistral:7b"); !m.Resident || !m.ExpiresAt.IsZero() {
		t.Errorf("keep forever: %+v", m)
	}
	if err := n.Load(ctx, "mistral", "0"); err != nil {
		t.Fatal(err)
	}
	if m, _ := modelInfo(t, n, "mistral:7b"); m.Resident {
		t.Error("keep_alive 0 did not unload")
	}
	if used := gpuSamples(t, n)[0].MemoryUsedBytes; used != 0 {
		t.Errorf("memory used %d with nothing loaded", used)
	}
	// Unloading what is not loaded is fine; delete removes from disk.
	if err := n.Unload(ctx, "mistral"); err != nil {
		t.Error(err)
	}
	if err := n.Load(ctx, "mistral", "1h"); err != nil {
		t.Fatal(err)
	}
	if err := n.Delete(ctx, "mistral:7b"); err != nil {
		t.Fatal(err)
	}
	if _, ok := modelInfo(t, n, "mistral:7b"); ok {
		t.Error("deleted model still listed")
	}
	if w := call(ctx, n, agentapi.PathChatCompletions, chatBody("mistral", "hi", nil)); w.Code != http.StatusNotFound {
		t.Errorf("request for a deleted model: %d", w.Code)
	}
	if used := gpuSamples(t, n)[0].MemoryUsedBytes; used != 0 {
		t.Errorf("memory used %d after delete", used)
	}
}

// Unload and Delete of a model with a request in flight: unload waits for it, delete refuses.
func TestUnloadDeleteBusy(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: clk, Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "x", map[string]any{"max_tokens": 10}))
	}()
	eventually(t, "running", func() bool { return clk.Pending() == 1 })
	if err := n.Delete(context.Background(), "llama3.2:1b"); !errors.Is(err, ErrModelBusy) {
		t.Errorf("delete busy: %v", err)
	}
	if err := n.Unload(context.Background(), "llama3.2:1b"); err != nil {
		t.Fatal(err)
	}
	if m, _ := modelInfo(t, n, "llama3.2:1b"); !m.Resident {
		t.Error("unloaded under a running request")
	}
	drive(t, clk, done)
	if m, _ := modelInfo(t, n, "llama3.2:1b"); m.Resident {
		t.Error("not unloaded after the request ended")
	}
}

// Concurrent mixed traffic under -race: everything finishes and the counters return to zero.
func TestConcurrentTraffic(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4"), gpu(t, "t4")}, SlotsPerGPU: 2, SpeedFactor: 1e6,
		Models: []string{"llama3.2:1b", "llama3.2:3b", "all-minilm"}})
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w interface{ Result() *http.Response }
			switch i % 3 {
			case 0:
				w = call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "q", map[string]any{"max_tokens": 20}))
			case 1:
				w = call(context.Background(), n, agentapi.PathCompletions, map[string]any{"model": "llama3.2:3b", "prompt": "p", "max_tokens": 20, "stream": true})
			default:
				w = call(context.Background(), n, agentapi.PathEmbeddings, map[string]any{"model": "all-minilm", "input": []string{"a", "b"}})
			}
			if code := w.Result().StatusCode; code != 200 {
				t.Errorf("request %d: %d", i, code)
			}
		}()
		if i%5 == 0 {
			go n.GPUs(context.Background())
			go n.Models(context.Background())
		}
	}
	wg.Wait()
	if in, q := n.InFlight(); in != 0 || q != 0 {
		t.Errorf("in flight %d queued %d", in, q)
	}
	for _, g := range gpuSamples(t, n) {
		if g.UtilizationRatio != 0 {
			t.Errorf("GPU %d utilisation %v when idle", g.Index, g.UtilizationRatio)
		}
	}
}
