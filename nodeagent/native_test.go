package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"

	"github.com/herd-llm/herd/internal/fakeclock"
)

// nativeBackend is a fake Ollama: it serves the native routes in NDJSON on a fake clock.
type nativeBackend struct {
	*fakeBackend
	clock *fakeclock.Clock
	paths []string
}

var _ NativeOllama = (*nativeBackend)(nil)

// ServeOllama streams 10 lines 10 ms apart after 200 ms of prefill, then the final line with
// Ollama's counts.
func (n *nativeBackend) ServeOllama(w http.ResponseWriter, r *http.Request, path string, body []byte) {
	n.paths = append(n.paths, path)
	w.Header().Set("Content-Type", "application/x-ndjson")
	n.clock.Advance(200 * time.Millisecond)
	for i := range 10 {
		if i > 0 {
			n.clock.Advance(10 * time.Millisecond)
		}
		fmt.Fprintf(w, `{"model":"llama3","created_at":"2025-06-01T12:00:00Z","response":"w%d","done":false}`+"\n", i)
		w.(http.Flusher).Flush()
	}
	io.WriteString(w, `{"model":"llama3","created_at":"2025-06-01T12:00:00Z","response":"","done":true,"prompt_eval_count":40,"eval_count":10}`+"\n")
}

// TestNativeOllamaRoute passes native requests to a backend that speaks Ollama, counts them in
// flight and learns tokens per second from Ollama's NDJSON as from OpenAI's SSE.
func TestNativeOllamaRoute(t *testing.T) {
	clock := newFakeClock()
	b := &nativeBackend{fakeBackend: &fakeBackend{kind: agentapi.BackendOllama, models: []agentapi.Model{{Name: "llama3:latest", Resident: true}}}, clock: clock}
	ta := newTestAgent(t, b, nil, nil, WithClock(clock))
	ta.Refresh(context.Background())
	resp := ta.post(t, agentapi.PathOllamaGenerate, testToken, `{"model":"llama3","prompt":"hi"}`)
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" || len(out) == 0 {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	if len(b.paths) != 1 || b.paths[0] != agentapi.PathOllamaGenerate {
		t.Fatalf("backend paths %v", b.paths)
	}
	m := ta.Heartbeat(context.Background()).Models[0]
	// 10 tokens, 9 gaps of 10 ms after the first: 100 tokens/s; 40 prompt tokens in 200 ms.
	if math.Abs(m.TokensPerSecond-100) > 1e-6 || math.Abs(m.PrefillTokensPerSecond-200) > 1e-6 {
		t.Errorf("tokens/s %v prefill %v, want 100 200", m.TokensPerSecond, m.PrefillTokensPerSecond)
	}
	if hb := ta.Heartbeat(context.Background()); hb.InFlight != 0 {
		t.Errorf("in flight %d after the request", hb.InFlight)
	}

	resp = ta.post(t, agentapi.PathOllamaChat, "wrong", `{"model":"llama3"}`)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", resp.StatusCode)
	}
	resp = ta.post(t, agentapi.PathOllamaChat, testToken, `{"messages":[]}`)
	wantOllamaError(t, resp, http.StatusBadRequest, "model is required")
}

// TestNativeRouteOnOtherBackends: a backend that does not speak Ollama answers 404 in Ollama's
// shape (the gateway translates for those nodes and never sends them native requests).
func TestNativeRouteOnOtherBackends(t *testing.T) {
	ta := newTestAgent(t, &fakeBackend{}, nil, nil)
	for _, p := range []string{agentapi.PathOllamaChat, agentapi.PathOllamaShow} {
		wantOllamaError(t, ta.post(t, p, testToken, `{"model":"llama3"}`), http.StatusNotFound, "does not serve Ollama's native API")
	}
}

func wantOllamaError(t *testing.T, resp *http.Response, status int, contains string) {
	t.Helper()
	var v map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != status || len(v) != 1 {
		t.Fatalf("status %d body %v (%v), want %d", resp.StatusCode, v, err, status)
	}
	if msg := v["error"]; msg == "" || !strings.Contains(msg, contains) {
		t.Fatalf("error %q, want %q", msg, contains)
	}
}
