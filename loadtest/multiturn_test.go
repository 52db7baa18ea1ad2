package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// promptBytes is the size of a request's messages as the simulated nodes count them (≈ 4 bytes a
// token).
func promptBytes(msgs []chatMessage) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Content) + len(m.Role) + 6
	}
	return n
}

// The multi-turn conversations are what the issue pins: several presets shared by groups of
// users, history growing by one exchange a turn, the last turn over 8k tokens and within the
// simulated nodes' context; bodies depend on the seed and (user, conversation, turn) only.
func TestMultiTurnConversations(t *testing.T) {
	g := newGenerator(Options{Workload: WorkloadMultiTurn, Seed: 1, Model: DefaultModel}.withDefaults())
	if len(g.presets) != MultiTurnPresets {
		t.Fatalf("%d presets", len(g.presets))
	}
	first := g.turnMessages(0, 0, 0)
	if first[0].Content != g.turnMessages(MultiTurnPresets, 3, 5)[0].Content {
		t.Error("users of one preset do not share its system prompt")
	}
	if first[0].Content == g.turnMessages(1, 0, 0)[0].Content {
		t.Error("users of different presets share a system prompt")
	}
	prev := first
	for turn := 1; turn < MultiTurnTurns; turn++ {
		cur := g.turnMessages(0, 0, turn)
		if len(cur) != len(prev)+2 {
			t.Fatalf("turn %d: %d messages after %d", turn, len(cur), len(prev))
		}
		for i := range prev {
			if cur[i] != prev[i] {
				t.Fatalf("turn %d does not extend turn %d at message %d", turn, turn-1, i)
			}
		}
		prev = cur
	}
	tokens := promptBytes(prev) / 4
	if tokens < 8000 || tokens+MultiTurnMaxTokens >= MultiTurnContext {
		t.Errorf("last turn ≈ %d tokens, want ≥ 8000 and room for the answer within %d", tokens, MultiTurnContext)
	}
	if sys := promptBytes(first[:1]) / 4; sys < 1500 {
		t.Errorf("system prompt ≈ %d tokens, want a long one", sys)
	}
	again := newGenerator(Options{Workload: WorkloadMultiTurn, Seed: 1, Model: DefaultModel}.withDefaults())
	a, _ := json.Marshal(g.turnMessages(7, 2, 9))
	b, _ := json.Marshal(again.turnMessages(7, 2, 9))
	if string(a) != string(b) {
		t.Error("the same seed gave another conversation")
	}
	if got := multiTurnThink(MultiTurnUsers, 2); got != 24*time.Second {
		t.Errorf("think time of 48 users at 2 req/s: %v, want 24s", got)
	}
	if MultiTurnWarmUp(0.1) != 120*time.Second || MultiTurnWarmUp(10) != 30*time.Second || MultiTurnWarmUp(1) != 48*time.Second {
		t.Errorf("warm-ups %v %v %v", MultiTurnWarmUp(0.1), MultiTurnWarmUp(10), MultiTurnWarmUp(1))
	}
}

// Zipf popularity over the eight models: shares 1/k normalised, and the draws follow them.
func TestMultiModelZipf(t *testing.T) {
	models := MultiModelModels()
	if len(models) < 8 {
		t.Fatalf("%d models, want ≥ 8", len(models))
	}
	shares := zipfShares(len(models), MultiModelZipfS)
	if math.Abs(shares[0]-0.368) > 0.001 || math.Abs(shares[7]-0.046) > 0.001 {
		t.Errorf("shares %v", shares)
	}
	g := newGenerator(Options{Workload: WorkloadMultiModel, Seed: 3}.withDefaults())
	counts := map[string]int{}
	const n = 20000
	for i := range uint64(n) {
		counts[g.modelOf(i)]++
	}
	for k, m := range models {
		if got := float64(counts[m]) / n; math.Abs(got-shares[k]) > 0.015 {
			t.Errorf("%s drawn %.3f of the time, want %.3f", m, got, shares[k])
		}
	}
	var body struct {
		Model     string `json:"model"`
		MaxTokens int    `json:"max_tokens"`
	}
	if err := json.Unmarshal(g.body(5), &body); err != nil || !strings.Contains(strings.Join(models, ","), body.Model) || body.MaxTokens != MultiModelMaxTokens {
		t.Errorf("body %+v, %v", body, err)
	}
}

// recordingTurns serves chat completions and keeps each request's message count per system
// prompt + first user message (a conversation).
type recordingTurns struct {
	mu    sync.Mutex
	turns map[string][]int
	at    []time.Duration
	start time.Time
	next  http.Handler
}

func (h *recordingTurns) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Messages []chatMessage `json:"messages"`
	}
	if json.Unmarshal(body, &req) == nil && len(req.Messages) >= 2 {
		h.mu.Lock()
		key := req.Messages[0].Content[:40] + "|" + req.Messages[1].Content
		h.turns[key] = append(h.turns[key], len(req.Messages))
		h.at = append(h.at, time.Since(h.start))
		h.mu.Unlock()
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.next.ServeHTTP(w, r)
}

// The multi-turn users hold conversations: each conversation's requests come one turn after the
// other, growing by one exchange (or start over after the last turn); no request leaves after the
// duration; the warm-up's requests are left out of the report.
func TestMultiTurnSessions(t *testing.T) {
	h := &recordingTurns{turns: map[string][]int{}, start: time.Now(), next: NewFakeBackend(FaultOK, FakeOptions{})}
	srv := httptest.NewServer(h)
	defer srv.Close()
	// 48 users at 96 req/s: a mean think time of 0.5 s.
	rep, err := Run(context.Background(), Options{Target: srv.URL, Workload: WorkloadMultiTurn, RPS: 96, Duration: 3 * time.Second,
		WarmUp: time.Second, Seed: 1, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if rep.Users != MultiTurnUsers || rep.WarmUpS != 1 {
		t.Errorf("users %d, warm-up %v", rep.Users, rep.WarmUpS)
	}
	total := 0
	for key, counts := range h.turns {
		total += len(counts)
		for i := 1; i < len(counts); i++ {
			if counts[i] != counts[i-1]+2 && counts[i] != 2 {
				t.Errorf("conversation %q: %d messages after %d", key[:60], counts[i], counts[i-1])
			}
		}
	}
	if total < 100 || len(h.turns) < MultiTurnUsers {
		t.Errorf("%d requests in %d conversations", total, len(h.turns))
	}
	for _, at := range h.at {
		if at > 3*time.Second+500*time.Millisecond {
			t.Errorf("a request arrived %v into a 3s run", at)
		}
	}
	if rep.Sent >= total || rep.Sent == 0 {
		t.Errorf("report counts %d of %d requests: the warm-up's should be left out", rep.Sent, total)
	}
}
