package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
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
	resp := ta.postAs(t, agentapi.PathOllamaGenerate, testToken, `{"model":"llama3","prompt":"hi"}`, gatewayNames)
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

// TestNativeRouteOnOtherBackends: a backend that does not speak Ollama gets the OpenAI
// translation of a native request, and the client Ollama's NDJSON with the name it asked for.
func TestNativeRouteOnOtherBackends(t *testing.T) {
	b := &fakeBackend{}
	var got []string
	b.setServe(func(w http.ResponseWriter, _ *http.Request, endpoint string, body []byte) {
		got = append(got, endpoint+" "+string(body))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, sseChunk("Hel")+sseChunk("lo"))
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}`+"\n\ndata: [DONE]\n\n")
	})
	ta := newTestAgent(t, b, nil, nil)
	resp := ta.postAs(t, agentapi.PathOllamaChat, testToken, `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{agentapi.HeaderModel: "llama3:latest", agentapi.HeaderClientModel: "my-preset"})
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"model":"my-preset"`) || !strings.Contains(lines[0], `"content":"Hel"`) ||
		!strings.Contains(lines[2], `"done":true`) || !strings.Contains(lines[2], `"eval_count":2`) {
		t.Fatalf("answer %s", out)
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], agentapi.PathChatCompletions+" ") || !strings.Contains(got[0], `"stream":true`) {
		t.Fatalf("backend got %q", got)
	}
	wantOllamaError(t, ta.post(t, agentapi.PathOllamaChat, testToken, `{"model":"llama3","options":{"temperature":"hot"}}`), http.StatusBadRequest, "temperature")
}

// TestClientModelWrittenIntoAnswers: where the client's name differs from the backend's, the
// agent writes it into the top-level "model" of every line, and leaves nested ones alone.
func TestClientModelWrittenIntoAnswers(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"sse", `data: {"id":"x","model":"llama3:latest","choices":[{"delta":{"content":"\"model\":1"}}]}` + "\n\n", `data: {"id":"x","model":"p","choices":[{"delta":{"content":"\"model\":1"}}]}` + "\n\n"},
		{"ndjson", `{"model":"llama3:latest","done":false}` + "\n" + `{"done":true,"model":"llama3:latest"}` + "\n", `{"model":"p","done":false}` + "\n" + `{"done":true,"model":"p"}` + "\n"},
		{"nested kept", `data: {"type":"response.created","response":{"model":"llama3:latest"}}` + "\n\n", `data: {"type":"response.created","response":{"model":"llama3:latest"}}` + "\n\n"},
		{"json body without newline", `{"object":"chat.completion","model":"llama3:latest"}`, `{"object":"chat.completion","model":"p"}`},
		{"not JSON", "event: x\n: comment\n", "event: x\n: comment\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			aw := &answerWriter{ResponseWriter: rec, fix: renameModel("p")}
			// Written a byte at a time: lines are assembled across writes.
			for i := range len(tc.in) {
				aw.Write([]byte{tc.in[i]})
			}
			aw.finish()
			if got := rec.Body.String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
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

// templatedBackend is a backend that is not Ollama but knows its chat template.
type templatedBackend struct{ *fakeBackend }

func (templatedBackend) ChatTemplate(context.Context, string) (string, bool) {
	return "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}", true
}

// TestShowOnOtherBackends: /api/show for a model of a backend that is not Ollama is built by the
// agent: a Modelfile naming the model and its parameters, the template where the backend tells
// it, the details it lists; an unknown model is Ollama's 404.
func TestShowOnOtherBackends(t *testing.T) {
	b := templatedBackend{&fakeBackend{models: []agentapi.Model{{Name: "qwen2.5:7b", Resident: true, Family: "qwen2", ContextLength: 8192, ParameterSize: "7.6B"}}}}
	ta := newTestAgent(t, b, nil, nil)
	ta.Refresh(context.Background())
	resp := ta.postAs(t, agentapi.PathOllamaShow, testToken, `{"model":"qwen2.5"}`, map[string]string{agentapi.HeaderModel: "qwen2.5:7b"})
	var show struct {
		Modelfile, Parameters, Template string
		Details                         struct{ Family, ParameterSize string } `json:"details"`
		ModelInfo                       map[string]any                         `json:"model_info"`
		Capabilities                    []string
	}
	if err := json.NewDecoder(resp.Body).Decode(&show); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	for _, want := range []string{"FROM qwen2.5:7b\n", "TEMPLATE \"\"\"{{ range .Messages }}", "PARAMETER num_ctx 8192\n", "node " + ta.cfg.NodeID} {
		if !strings.Contains(show.Modelfile, want) {
			t.Errorf("modelfile lacks %q:\n%s", want, show.Modelfile)
		}
	}
	if !strings.HasPrefix(show.Template, "{{ range") || !strings.Contains(show.Parameters, "num_ctx") || show.Details.Family != "qwen2" ||
		show.ModelInfo["qwen2.context_length"] != float64(8192) || len(show.Capabilities) != 1 || show.Capabilities[0] != "completion" {
		t.Fatalf("show %+v", show)
	}
	wantOllamaError(t, ta.post(t, agentapi.PathOllamaShow, testToken, `{"model":"nope"}`), http.StatusNotFound, "model 'nope' not found")
}

// TestRenamedAnswerLength: a non-streamed answer whose model name the agent rewrites loses the
// backend's Content-Length (the length changes), so the gateway reads it whole.
func TestRenamedAnswerLength(t *testing.T) {
	b := &nativeBackend{fakeBackend: &fakeBackend{kind: agentapi.BackendOllama, models: []agentapi.Model{{Name: "llama3:latest", Resident: true}}}, clock: newFakeClock()}
	b.fakeBackend.setServe(func(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {})
	ta := newTestAgent(t, fixedLength{b}, nil, nil)
	resp := ta.postAs(t, agentapi.PathOllamaChat, testToken, `{"model":"llama3","stream":false}`,
		map[string]string{agentapi.HeaderModel: "llama3:latest", agentapi.HeaderClientModel: "a-much-longer-preset-name"})
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(out) != `{"model":"a-much-longer-preset-name","done":true}` {
		t.Fatalf("%d %q %v", resp.StatusCode, out, err)
	}
}

// fixedLength is an Ollama backend whose non-streamed answer declares its Content-Length, as
// Ollama's does.
type fixedLength struct{ *nativeBackend }

func (fixedLength) ServeOllama(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {
	body := `{"model":"llama3","done":true}`
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}
