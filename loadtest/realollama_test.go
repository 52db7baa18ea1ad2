package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// Routing on real engines: three real `ollama serve` processes (the tiny generated model,
// OLLAMA_NUM_PARALLEL=2, OLLAMA_MAX_LOADED_MODELS=1, OLLAMA_DEBUG=1) behind herd agents and a herd
// gateway, driven through herd's Ollama front (/api/chat). What the engines did is read from
// their own debug logs: every prompt logs `loading cache slot ... prompt=P used=U remaining=R`,
// R being the tokens the runner evaluated after its slot cache, and every model load logs
// `llama runner started in ...` — counts, not timings. The responses' prompt_eval_duration is
// summed beside them, and TTFT is measured at the client.
//
// TestRealOllamaRouting is the bounded version `make test` runs (one policy, small workloads,
// checking the measurement against the engines); BenchmarkRealOllamaRouting is the comparison of
// the policies docs/BENCHMARKS.md reports:
//
//	HERD_BIN=build go test -run '^$' -bench RealOllamaRouting -benchtime 1x -timeout 30m ./loadtest/

// realOllamaModels are the tiny models every node has (different seeds: different weights);
// multi-model traffic asks for them with Zipf popularity, the others for the first.
var realOllamaModels = []string{"tinya", "tinyb", "tinyc", "tinyd"}

// realWorkload is one kind of traffic: rounds of requests, each round sent with `concurrency`
// at once and finished before the next starts (a conversation's turn waits for the one before).
type realWorkload struct {
	name        string
	rounds      [][]realRequest
	concurrency int
}

type realRequest struct {
	model    string
	messages []chatMessage
}

// realSizes shape the workloads; the benchmark's are larger than the test's.
type realSizes struct {
	presets, usersPerPreset, questions int // preset users
	convs, turns                       int // multi-turn, convs spread over the presets
	modelRequests                      int // multi-model
}

var (
	realTestSizes  = realSizes{presets: 3, usersPerPreset: 2, questions: 2, convs: 3, turns: 3, modelRequests: 12}
	realBenchSizes = realSizes{presets: 3, usersPerPreset: 4, questions: 4, convs: 6, turns: 5, modelRequests: 40}
)

// Text sizes in characters: the tiny model's tokenizer makes about 1.8 tokens a character, and
// every prompt must stay within its 2,048-token context (turn 5 of a conversation is about 1,000
// characters).
const (
	realSystemChars    = 480
	realConvSysChars   = 300
	realQuestionChars  = 40
	realReplyChars     = 80
	realModelChars     = 120
	realNumPredict     = 8
	realConcurrency    = 3
	realModelParallel  = 2
	realRequestTimeout = 2 * time.Minute
)

func realText(r *mrand.Rand, chars int) string {
	s := text(r, chars/3)
	if len(s) > chars {
		s = s[:chars]
	}
	return s
}

// realWorkloads builds the three workloads from a seed.
func realWorkloads(sz realSizes, seed uint64) []realWorkload {
	rng := func(a, b uint64) *mrand.Rand { return mrand.New(mrand.NewPCG(seed^a*0x9e3779b97f4a7c15, b)) }
	system := make([]string, sz.presets)
	convSystem := make([]string, sz.presets)
	for p := range system {
		system[p] = fmt.Sprintf("You are preset %d. ", p+1) + realText(rng(1, uint64(p)), realSystemChars)
		convSystem[p] = fmt.Sprintf("You are helper %d. ", p+1) + realText(rng(2, uint64(p)), realConvSysChars)
	}
	m0 := realOllamaModels[0]

	// Preset users: every user of a preset sends its own questions behind the preset's system
	// prompt; users of all presets interleaved, as a shared office would send them.
	var preset realWorkload
	preset.name, preset.concurrency = "preset-users", realConcurrency
	var all []realRequest
	for q := range sz.questions {
		for u := range sz.usersPerPreset {
			for p := range sz.presets {
				r := rng(3, uint64(q*1000+u*10+p))
				all = append(all, realRequest{model: m0, messages: []chatMessage{
					{Role: "system", Content: system[p]}, {Role: "user", Content: realText(r, realQuestionChars)}}})
			}
		}
	}
	// In a seeded random order: a fixed cycle of presets would line up with round robin's cycle
	// over the nodes and hand it a perfect affinity no real office would.
	shuffle := rng(6, 0)
	shuffle.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	preset.rounds = [][]realRequest{all}

	// Multi-turn: conversations under the presets, each turn re-sending the history.
	var conv realWorkload
	conv.name, conv.concurrency = "multi-turn", realConcurrency
	for t := range sz.turns {
		var round []realRequest
		for c := range sz.convs {
			msgs := []chatMessage{{Role: "system", Content: convSystem[c%sz.presets]}}
			for k := 0; k <= t; k++ {
				r := rng(4, uint64(c*100+k))
				msgs = append(msgs, chatMessage{Role: "user", Content: realText(r, realQuestionChars)})
				if k < t {
					msgs = append(msgs, chatMessage{Role: "assistant", Content: realText(r, realReplyChars)})
				}
			}
			round = append(round, realRequest{model: m0, messages: msgs})
		}
		// Conversations take turns in a different order each round, for the same reason.
		rng(7, uint64(t)).Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		conv.rounds = append(conv.rounds, round)
	}

	// Multi-model: single questions over the four models with Zipf popularity.
	var mm realWorkload
	mm.name, mm.concurrency = "multi-model", 2
	cdf := zipfCDF(len(realOllamaModels), 1)
	var reqs []realRequest
	for i := range sz.modelRequests {
		r := rng(5, uint64(i))
		m := realOllamaModels[zipfPick(cdf, r.Float64())]
		reqs = append(reqs, realRequest{model: m, messages: []chatMessage{{Role: "user", Content: realText(r, realModelChars)}}})
	}
	mm.rounds = [][]realRequest{reqs}
	return []realWorkload{preset, conv, mm}
}

// realEngines is three ollama serve processes with every tiny model.
func realEngines(t testing.TB) []*ollamatest.Server {
	t.Helper()
	env := []string{"OLLAMA_DEBUG=1", fmt.Sprintf("OLLAMA_NUM_PARALLEL=%d", realModelParallel), "OLLAMA_MAX_LOADED_MODELS=1",
		"OLLAMA_KEEP_ALIVE=30m"}
	var out []*ollamatest.Server
	for range 3 {
		s := ollamatest.Start(t, ollamatest.Options{Model: realOllamaModels[0], Seed: 1, Env: env})
		for i, m := range realOllamaModels[1:] {
			s.Create(t, m, int64(i+2))
		}
		out = append(out, s)
	}
	return out
}

// realHerd is a herd gateway with one agent per engine.
type realHerd struct {
	url   string
	procs []*Process
	dir   string
}

func startRealHerd(t testing.TB, bin, policy string, engines []*ollamatest.Server) (*realHerd, error) {
	t.Helper()
	dir := t.TempDir()
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := &realHerd{dir: dir}
	gw, url, err := startListening(ctx, "gateway", bin, []string{"gateway", "--data", dir, "--cluster-token", token,
		"--policy", policy, "--log-level", "warn", "--heartbeat-interval", "250ms"}, "", dir, "/healthz")
	if err != nil {
		return nil, err
	}
	h.url = url
	h.procs = append(h.procs, gw)
	for i, e := range engines {
		id := fmt.Sprintf("ollama%d", i+1)
		p, _, err := startListening(ctx, "agent "+id, bin, []string{"agent", "--gateway", url, "--cluster-token", token,
			"--node-id", id, "--backend", "ollama", "--ollama-url", e.URL, "--slots", fmt.Sprint(realModelParallel),
			// The engines run with OLLAMA_MAX_LOADED_MODELS=1 (realEngines), which Ollama's API
			// does not tell: the agent is told, as its operator would tell it.
			"--ollama-max-loaded-models", "1",
			"--agent-heartbeat-interval", "250ms", "--log-level", "warn"}, "", dir, "")
		if err != nil {
			h.stop()
			return nil, err
		}
		h.procs = append(h.procs, p)
	}
	// Ready once the gateway lists every node with every model.
	deadline := time.Now().Add(45 * time.Second)
	for {
		if ok, _ := h.ready(ctx, len(engines)); ok {
			return h, nil
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, fmt.Errorf("herd over real Ollama not ready (logs in %s)", dir)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *realHerd) ready(ctx context.Context, nodes int) (bool, error) {
	ids, err := listNodes(ctx, h.url, "")
	if err != nil || len(ids) < nodes {
		return false, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/api/tags", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var tags struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil {
		return false, err
	}
	for _, m := range realOllamaModels {
		if !slices.ContainsFunc(tags.Models, func(x struct {
			Name string `json:"name"`
		}) bool {
			return strings.HasPrefix(x.Name, m)
		}) {
			return false, nil
		}
	}
	return true, nil
}

func (h *realHerd) stop() {
	for i := len(h.procs) - 1; i >= 0; i-- {
		_ = h.procs[i].Stop(5 * time.Second)
	}
}

// unloadAll empties every engine (keep_alive 0 for each model /api/ps lists, until it lists
// none), so that each phase starts with cold caches and no model loaded. Only loaded models are
// named: asking Ollama to unload a model that is not loaded first loads it.
func unloadAll(t testing.TB, engines []*ollamatest.Server) {
	t.Helper()
	for _, e := range engines {
		deadline := time.Now().Add(30 * time.Second)
		for {
			loaded := psModels(t, e.URL)
			if len(loaded) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still has %v loaded after unloading", e.URL, loaded)
			}
			for _, m := range loaded {
				resp, err := http.Post(e.URL+"/api/generate", "application/json", strings.NewReader(fmt.Sprintf(`{"model":%q,"keep_alive":0}`, m)))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// psModels lists the models an engine has loaded.
func psModels(t testing.TB, base string) []string {
	t.Helper()
	resp, err := http.Get(base + "/api/ps")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ps struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ps.Models {
		out = append(out, m.Name)
	}
	return out
}

// realOutcome is one request's result.
type realOutcome struct {
	ttft            time.Duration
	promptEvalNs    int64
	promptEvalCount int
	node            string
	err             error
}

// ollamaChat sends one streamed /api/chat through herd and reads it to the end.
func ollamaChat(ctx context.Context, client *http.Client, base string, r realRequest) realOutcome {
	body, _ := json.Marshal(map[string]any{"model": r.model, "messages": r.messages, "stream": true,
		"options": map[string]any{"num_predict": realNumPredict}})
	ctx, cancel := context.WithTimeout(ctx, realRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", bytes.NewReader(body))
	if err != nil {
		return realOutcome{err: err}
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return realOutcome{err: err}
	}
	defer resp.Body.Close()
	out := realOutcome{node: resp.Header.Get(HeaderNode)}
	if resp.StatusCode != http.StatusOK {
		b, _ := bufio.NewReader(resp.Body).ReadString(0)
		out.err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
		return out
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var line struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Done               bool   `json:"done"`
			PromptEvalCount    int    `json:"prompt_eval_count"`
			PromptEvalDuration int64  `json:"prompt_eval_duration"`
			Error              string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			out.err = fmt.Errorf("bad NDJSON line %q: %w", sc.Text(), err)
			return out
		}
		if line.Error != "" {
			out.err = fmt.Errorf("stream error: %s", line.Error)
			return out
		}
		if out.ttft == 0 && (line.Message.Content != "" || line.Done) {
			out.ttft = time.Since(start)
		}
		if line.Done {
			out.promptEvalNs, out.promptEvalCount = line.PromptEvalDuration, line.PromptEvalCount
			return out
		}
	}
	out.err = fmt.Errorf("stream ended without done: %v", sc.Err())
	return out
}

// realPhase is what one workload under one policy measured.
type realPhase struct {
	Policy, Workload string
	Requests, Errors int
	Engine           EngineStats
	PromptEvalMs     float64
	PromptEvalCount  int64
	TTFTP50, TTFTP90 time.Duration
	Nodes            map[string]int
	FirstError       string
}

// runRealPhase sends w through h and reads what the engines logged meanwhile.
func runRealPhase(t testing.TB, h *realHerd, engines []*ollamatest.Server, policy string, w realWorkload) realPhase {
	t.Helper()
	unloadAll(t, engines)
	offsets := make([]int, len(engines))
	for i, e := range engines {
		offsets[i] = len(e.Log())
	}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	ph := realPhase{Policy: policy, Workload: w.name, Nodes: map[string]int{}}
	var ttfts []time.Duration
	var mu sync.Mutex
	for _, round := range w.rounds {
		work := make(chan realRequest)
		var wg sync.WaitGroup
		for range w.concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range work {
					o := ollamaChat(context.Background(), client, h.url, r)
					mu.Lock()
					ph.Requests++
					if o.err != nil {
						ph.Errors++
						if ph.FirstError == "" {
							ph.FirstError = o.err.Error()
						}
					} else {
						ttfts = append(ttfts, o.ttft)
						ph.PromptEvalMs += float64(o.promptEvalNs) / 1e6
						ph.PromptEvalCount += int64(o.promptEvalCount)
						ph.Nodes[o.node]++
					}
					mu.Unlock()
				}
			}()
		}
		for _, r := range round {
			work <- r
		}
		close(work)
		wg.Wait()
	}
	// The runner logs a prompt's slot line before it evaluates it; by now every request is done.
	for i, e := range engines {
		st, err := ParseEngineLog(strings.NewReader(e.Log()[offsets[i]:]), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		ph.Engine.Add(st)
	}
	sort.Slice(ttfts, func(i, j int) bool { return ttfts[i] < ttfts[j] })
	if n := len(ttfts); n > 0 {
		ph.TTFTP50, ph.TTFTP90 = ttfts[(n-1)/2], ttfts[(n*9-1)/10]
	}
	return ph
}

func (p realPhase) row() string {
	return fmt.Sprintf("| %s | %s | %d | %d | %d | %d | %.1f | %d | %.0f / %.0f | %s |", p.Workload, p.Policy, p.Requests, p.Engine.PromptTokens,
		p.Engine.PrefillTokens, p.Engine.CachedTokens, p.PromptEvalMs, p.Engine.ModelLoads,
		float64(p.TTFTP50.Microseconds())/1000, float64(p.TTFTP90.Microseconds())/1000, nodeSplit(p.Nodes))
}

const realTableHead = "| workload | policy | requests | prompt tokens | evaluated (R) | reused (U) | prompt_eval_duration Σ ms | model loads | TTFT p50 / p90 ms | requests by node |\n" +
	"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"

func nodeSplit(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// checkRealPhase holds what must be true of any phase on real engines, whatever the policy: no
// errors, one slot line per request (the log accounts for every prompt), the engine's prompt
// counts equal to what the responses report, and no more evaluated than prompted.
func checkRealPhase(t testing.TB, p realPhase) {
	t.Helper()
	if p.Errors > 0 {
		t.Errorf("%s/%s: %d of %d requests failed, first: %s", p.Workload, p.Policy, p.Errors, p.Requests, p.FirstError)
	}
	if p.Engine.Prefills != p.Requests {
		t.Errorf("%s/%s: %d slot lines in the engines' logs for %d requests", p.Workload, p.Policy, p.Engine.Prefills, p.Requests)
	}
	if p.Engine.PromptTokens != p.PromptEvalCount {
		t.Errorf("%s/%s: logs say %d prompt tokens, responses' prompt_eval_count %d", p.Workload, p.Policy, p.Engine.PromptTokens, p.PromptEvalCount)
	}
	if p.Engine.PrefillTokens+p.Engine.CachedTokens != p.Engine.PromptTokens || p.Engine.PrefillTokens < int64(p.Requests) {
		t.Errorf("%s/%s: evaluated %d + reused %d ≠ prompt %d", p.Workload, p.Policy, p.Engine.PrefillTokens, p.Engine.CachedTokens, p.Engine.PromptTokens)
	}
}

// TestRealOllamaRouting runs small versions of the three workloads through herd over three real
// Ollama servers with herd's default policy, and checks the accounting the benchmark relies on.
// Cost: about a minute (three servers, four tiny models each, ~45 requests on one thread each).
func TestRealOllamaRouting(t *testing.T) {
	bin := needHerd(t)
	engines := realEngines(t)
	h, err := startRealHerd(t, bin, "herd", engines)
	if err != nil {
		t.Fatal(err)
	}
	defer h.stop()
	var phases []realPhase
	for _, w := range realWorkloads(realTestSizes, 1) {
		p := runRealPhase(t, h, engines, "herd", w)
		checkRealPhase(t, p)
		phases = append(phases, p)
	}
	var b strings.Builder
	b.WriteString(realTableHead + "\n")
	for _, p := range phases {
		b.WriteString(p.row() + "\n")
	}
	t.Logf("real Ollama 0.17.4 behind herd (test sizes):\n%s", b.String())
	// Multi-turn: each conversation's turns share a growing prefix, so some reuse must show.
	if phases[1].Engine.CachedTokens == 0 {
		t.Error("multi-turn: the engines reused no cached token at all")
	}
	// Multi-model: with one model loaded per node, every model asked for is loaded somewhere.
	if phases[2].Engine.ModelLoads < 2 {
		t.Errorf("multi-model: %d model loads", phases[2].Engine.ModelLoads)
	}
}

// BenchmarkRealOllamaRouting compares the policies on the three workloads, each policy on its own
// gateway over the same three engines (emptied before every phase). One iteration is the whole
// comparison; run with -benchtime 1x. HERD_REAL_OLLAMA_POLICIES overrides the policies;
// HERD_REAL_OLLAMA_OUT, when set, receives the markdown table.
func BenchmarkRealOllamaRouting(b *testing.B) {
	bin := needHerdB(b)
	policies := []string{"round_robin", "least_inflight", "chwbl", "herd"}
	if v := os.Getenv("HERD_REAL_OLLAMA_POLICIES"); v != "" {
		policies = strings.Split(v, ",")
	}
	engines := realEngines(b)
	workloads := realWorkloads(realBenchSizes, 1)
	var rows []string
	for b.Loop() {
		rows = rows[:0]
		for _, policy := range policies {
			h, err := startRealHerd(b, bin, policy, engines)
			if err != nil {
				b.Logf("policy %s: %v (skipped)", policy, err)
				continue
			}
			for _, w := range workloads {
				p := runRealPhase(b, h, engines, policy, w)
				checkRealPhase(b, p)
				rows = append(rows, p.row())
				b.ReportMetric(float64(p.Engine.PrefillTokens), w.name+"/"+policy+"-evaluated-tok")
				b.ReportMetric(float64(p.Engine.ModelLoads), w.name+"/"+policy+"-loads")
			}
			h.stop()
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return strings.SplitN(rows[i], "|", 3)[1] < strings.SplitN(rows[j], "|", 3)[1] })
	table := realTableHead + "\n" + strings.Join(rows, "\n") + "\n"
	for _, w := range workloads {
		if w.name == "multi-model" {
			var seq []string
			for _, round := range w.rounds {
				for _, r := range round {
					seq = append(seq, r.model)
				}
			}
			table += fmt.Sprintf("\nmulti-model: the fewest loads any placement could make for this request order on %d nodes keeping one model each: %d (Belady's MIN; the first load of each model included)\n",
				len(engines), minLoads(seq, len(engines)))
		}
	}
	b.Logf("real Ollama 0.17.4 behind herd:\n%s", table)
	if out := os.Getenv("HERD_REAL_OLLAMA_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// needHerdB is needHerd for benchmarks.
func needHerdB(b *testing.B) string {
	b.Helper()
	if herdBinErr != nil {
		b.Fatal(herdBinErr)
	}
	if herdBin == "" {
		b.Skip("needs the herd binary: set HERD_BIN=build (or HERD_BIN=/path/to/herd)")
	}
	return herdBin
}

// minLoads is the fewest model loads that serving seq in order can take on nodes keeping one
// model each (a cache of `slots` models), the first load of each model included: Belady's MIN,
// which on a miss evicts the model asked for again furthest in the future. No policy that sees
// requests one at a time can do better; it bounds what the multi-model workload lets a router
// save.
func minLoads(seq []string, slots int) int {
	loaded := map[string]bool{}
	loads := 0
	for i, m := range seq {
		if loaded[m] {
			continue
		}
		loads++
		if len(loaded) >= slots {
			victim, far := "", -1
			for k := range loaded {
				next := len(seq) // never again
				for j := i + 1; j < len(seq); j++ {
					if seq[j] == k {
						next = j
						break
					}
				}
				if next > far || next == far && k < victim {
					victim, far = k, next
				}
			}
			delete(loaded, victim)
		}
		loaded[m] = true
	}
	return loads
}

func TestMinLoads(t *testing.T) {
	for _, tc := range []struct {
		seq   string
		slots int
		want  int
	}{
		{"aaaa", 1, 1},
		{"abab", 1, 4},
		{"abab", 2, 2},
		// Three slots, four models: d evicts the one asked for furthest ahead (c), not a or b.
		{"abcdabdab", 3, 4},
		{"abcdcab", 3, 5},
	} {
		if got := minLoads(strings.Split(tc.seq, ""), tc.slots); got != tc.want {
			t.Errorf("minLoads(%q, %d) = %d, want %d", tc.seq, tc.slots, got, tc.want)
		}
	}
}
