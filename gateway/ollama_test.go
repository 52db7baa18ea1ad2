package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// nativeAgent is an agent in front of Ollama: it answers the native routes in NDJSON.
type nativeAgent struct {
	srv *httptest.Server
	// cut, when set, ends a stream after two lines by cutting the connection.
	cut bool

	mu   sync.Mutex
	reqs []wireRequest
}

func newNativeAgent(t testing.TB, cut bool) *nativeAgent {
	t.Helper()
	a := &nativeAgent{cut: cut}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.reqs = append(a.reqs, wireRequest{header: r.Header.Clone(), body: body, path: r.URL.Path})
		a.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testClusterToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var req struct {
			Model  string `json:"model"`
			Stream *bool  `json:"stream"`
		}
		_ = json.Unmarshal(body, &req)
		if r.URL.Path == agentapi.PathOllamaShow {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			fmt.Fprintf(w, `{"template":"{{ .Prompt }}","details":{"family":"llama"},"model_info":{"llama.context_length":131072},"capabilities":["completion","tools"]}`)
			return
		}
		if req.Model == "gone" {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":"model '%s' not found"}`, req.Model)
			return
		}
		if req.Stream != nil && !*req.Stream {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			fmt.Fprintf(w, `{"model":%q,"created_at":"2025-06-01T12:00:00Z","message":{"role":"assistant","content":"native hello"},"done":true,"done_reason":"stop","eval_count":2}`, req.Model)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl := w.(http.Flusher)
		for i, word := range wireWords {
			fmt.Fprintf(w, `{"model":%q,"created_at":"2025-06-01T12:00:00Z","message":{"role":"assistant","content":%q},"done":false}`+"\n", req.Model, word)
			fl.Flush()
			if a.cut && i == 1 {
				fmt.Fprint(w, `{"model":"torn`)
				fl.Flush()
				panic(http.ErrAbortHandler)
			}
		}
		fmt.Fprintf(w, `{"model":%q,"created_at":"2025-06-01T12:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":4}`+"\n", req.Model)
	}))
	t.Cleanup(func() {
		a.srv.CloseClientConnections()
		a.srv.Close()
	})
	return a
}

func (a *nativeAgent) requests() []wireRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]wireRequest(nil), a.reqs...)
}

// beatOllama registers an Ollama node.
func (g *coreGW) beatOllama(id, address string, models ...string) {
	hb := agentapi.Heartbeat{NodeID: id, Address: address, Backend: agentapi.BackendOllama, Slots: 4, Version: "test"}
	for _, m := range models {
		hb.Models = append(hb.Models, agentapi.Model{Name: m, Resident: true, OnDisk: true, Digest: "sha256:abc", Family: "llama",
			Format: "gguf", ParameterSize: "8.0B", Quantization: "Q4_K_M", SizeBytes: 4 << 30, VRAMBytes: 5 << 30, ContextLength: 4096})
	}
	g.s.registry.Observe(hb)
}

// ndjsonLines reads an NDJSON body into its lines, each checked to be one JSON object.
func ndjsonLines(t testing.TB, r io.Reader) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", sc.Text(), err)
		}
		out = append(out, v)
	}
	return out
}

// readOllamaError reads an error body and checks it is exactly Ollama's shape.
func readOllamaError(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil || len(v) != 1 {
		t.Fatalf("error body %q is not {\"error\":\"...\"}", b)
	}
	msg, ok := v["error"].(string)
	if !ok {
		t.Fatalf("error body %q: error is not a string", b)
	}
	return msg
}

// TestOllamaErrorShapes checks that every error on /api/* is {"error":"message"} with the status
// Ollama (or the gateway on /v1) would give.
func TestOllamaErrorShapes(t *testing.T) {
	g := newCoreGW(t, nil)
	bad := newWireAgent(t, "a", wire400)
	g.beat("a", bad.srv.URL, 4, "strict")
	crash := newWireAgent(t, "c", wire500)
	g.beat("c", crash.srv.URL, 4, "crashy")
	native := newNativeAgent(t, false)
	g.beatOllama("o", native.srv.URL, "gone")
	for _, tt := range []struct {
		name, method, path, body, key string
		status                        int
		msg                           string
	}{
		{"unknown model", "POST", "/api/chat", `{"model":"x","messages":[]}`, testAPIKey, 404, "model 'x' not found"},
		{"unknown model generate", "POST", "/api/generate", `{"model":"x","prompt":"hi"}`, testAPIKey, 404, "model 'x' not found"},
		{"unknown model embed", "POST", "/api/embed", `{"model":"x","input":"hi"}`, testAPIKey, 404, "model 'x' not found"},
		{"unknown model show", "POST", "/api/show", `{"model":"x"}`, testAPIKey, 404, "model 'x' not found"},
		{"bad JSON", "POST", "/api/chat", `{"model":`, testAPIKey, 400, "unexpected end of JSON input"},
		{"bad JSON show", "POST", "/api/show", `{"model":`, testAPIKey, 400, "unexpected end of JSON input"},
		{"empty body", "POST", "/api/generate", ``, testAPIKey, 400, "missing request body"},
		{"no model", "POST", "/api/chat", `{"messages":[]}`, testAPIKey, 400, "model is required"},
		{"no model show", "POST", "/api/show", `{}`, testAPIKey, 400, "model is required"},
		{"backend 400 in OpenAI's shape", "POST", "/api/chat", `{"model":"strict","stream":false}`, testAPIKey, 400, "temperature must be <= 2"},
		{"backend 500 in OpenAI's shape", "POST", "/api/chat", `{"model":"crashy"}`, testAPIKey, 500, "backend crashed on c"},
		{"Ollama's own 404", "POST", "/api/chat", `{"model":"gone"}`, testAPIKey, 404, "model 'gone' not found"},
		{"no key", "POST", "/api/chat", `{"model":"strict"}`, "", 401, msgNoKey},
		{"no key tags", "GET", "/api/tags", ``, "", 401, msgNoKey},
		{"unknown route", "POST", "/api/pull", `{"model":"x"}`, testAPIKey, 404, "herd does not serve POST /api/pull"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, g.srv.URL+tt.path, strings.NewReader(tt.body))
			if tt.key != "" {
				req.Header.Set("Authorization", "Bearer "+tt.key)
			}
			resp, err := g.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if msg := readOllamaError(t, resp); !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q, want %q", msg, tt.msg)
			}
		})
	}
}

// TestOllamaRelayedFromAnyBackend: on a node whose backend is not Ollama the native request
// still goes to the agent's /api/chat unchanged (the agent translates), with the backend's and
// the client's names for the model in headers, and the agent's NDJSON reaches the client line by
// line, untouched.
func TestOllamaRelayedFromAnyBackend(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newNativeAgent(t, false)
	g.beat("a", a.srv.URL, 4, testModel)
	body := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":9}}`
	resp := g.post(t, "/api/chat", body)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" || resp.Header.Get(agentapi.HeaderNode) != "a" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	lines := ndjsonLines(t, resp.Body)
	if len(lines) != len(wireWords)+1 || lines[len(lines)-1]["done"] != true {
		t.Fatalf("got %d lines: %v", len(lines), lines)
	}
	reqs := a.requests()
	if len(reqs) != 1 || reqs[0].path != agentapi.PathOllamaChat || string(reqs[0].body) != body {
		t.Fatalf("agent requests %+v", reqs)
	}
	if h := reqs[0].header; h.Get(agentapi.HeaderModel) != testModel || h.Get(agentapi.HeaderClientModel) != testModel {
		t.Fatalf("model headers %q %q", h.Get(agentapi.HeaderModel), h.Get(agentapi.HeaderClientModel))
	}
}

// TestOllamaNativePassThrough sends /api/chat to an Ollama node unchanged and relays its lines.
func TestOllamaNativePassThrough(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newNativeAgent(t, false)
	g.beatOllama("o", a.srv.URL, testModel)
	body := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}],"keep_alive":"1h","options":{"num_ctx":8192}}`
	resp := g.post(t, "/api/chat", body)
	lines := ndjsonLines(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(lines) != len(wireWords)+1 || lines[len(lines)-1]["eval_count"] != float64(4) {
		t.Fatalf("status %d lines %v", resp.StatusCode, lines)
	}
	reqs := a.requests()
	if len(reqs) != 1 || reqs[0].path != agentapi.PathOllamaChat || string(reqs[0].body) != body {
		t.Fatalf("agent got %+v", reqs)
	}
	resp = g.post(t, "/api/chat", `{"model":"llama3.1:8b","stream":false}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"content":"native hello"`) || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("non-stream: %d %s", resp.StatusCode, b)
	}
}

// TestOllamaMidStreamFailure ends a stream broken after its first lines with Ollama's error line,
// on both wires, and leaves no torn line.
func TestOllamaMidStreamFailure(t *testing.T) {
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			g := newCoreGW(t, func(c *Config) {
				c.Scheduler.Policy = scheduler.PolicyLeastInflight
				c.NoContinuation = true
			})
			// Every agent answers /api/* in Ollama's format, translating when its backend is not
			// Ollama: the gateway relays lines either way.
			if native {
				g.beatOllama("a", newNativeAgent(t, true).srv.URL, testModel)
			} else {
				g.beat("a", newNativeAgent(t, true).srv.URL, 4, testModel)
			}
			other := newWireAgent(t, "b", wireOK)
			g.beatBusy("b", other.srv.URL, 4, 1, testModel)
			resp := g.post(t, "/api/chat", `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`)
			lines := ndjsonLines(t, resp.Body)
			resp.Body.Close()
			if resp.Header.Get(agentapi.HeaderNode) != "a" || len(lines) != 3 {
				t.Fatalf("node %q, lines %v", resp.Header.Get(agentapi.HeaderNode), lines)
			}
			msg, _ := lines[2]["error"].(string)
			if len(lines[2]) != 1 || !strings.Contains(msg, "upstream node a failed mid-stream") {
				t.Fatalf("last line %v", lines[2])
			}
			if len(other.requests()) != 0 {
				t.Fatal("a stream already under way was retried")
			}
		})
	}
}

// TestOllamaFailover: a failure before the first line, or anywhere in a non-streamed answer,
// moves the request to the next node unseen.
func TestOllamaFailover(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mode   wireMode
		stream bool
	}{
		{"agent 500, streamed", wire500, true},
		{"agent 500, not streamed", wire500, false},
		{"cut mid-answer, not streamed", wireHalfJSON, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newCoreGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
			g.beat("bad", newWireAgent(t, "bad", tt.mode).srv.URL, 4, testModel)
			good := newNativeAgent(t, false)
			g.beatOllama("good", good.srv.URL, testModel)
			g.s.registry.Acquire("good") // the bad node looks idler and is tried first
			defer g.s.registry.Release("good")
			resp := g.post(t, "/api/chat", fmt.Sprintf(`{"model":"llama3.1:8b","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, tt.stream))
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get(agentapi.HeaderNode) != "good" || resp.Header.Get(agentapi.HeaderAttempts) != "2" {
				t.Fatalf("status %d node %q attempts %q: %s", resp.StatusCode, resp.Header.Get(agentapi.HeaderNode), resp.Header.Get(agentapi.HeaderAttempts), b)
			}
			if strings.Contains(string(b), "error") {
				t.Fatalf("the client saw the failure: %s", b)
			}
		})
	}
}

// TestOllamaTagsPsShowVersion checks the listing routes' JSON.
func TestOllamaTagsPsShowVersion(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Version = "1.2.3" })
	g.beatOllama("o", newNativeAgent(t, false).srv.URL, testModel)
	// g.beat's node is an OpenAI-compatible server: its ids are listed exactly as it spells them.
	other := newNativeAgent(t, false)
	g.beat("s", other.srv.URL, 4, "nomic-embed-text")
	for _, tt := range []struct{ path, want string }{
		{"/api/tags", `{"models":[{"name":"llama3.1:8b","model":"llama3.1:8b","modified_at":"2025-06-01T12:00:00Z","size":4294967296,"digest":"sha256:abc","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_K_M"}},` +
			`{"name":"nomic-embed-text","model":"nomic-embed-text","modified_at":"2025-06-01T12:00:00Z","size":0,"digest":"","details":{"parent_model":"","format":"","family":"","families":null,"parameter_size":"","quantization_level":""}}]}`},
		{"/api/ps", `{"models":[{"name":"llama3.1:8b","model":"llama3.1:8b","size":5368709120,"digest":"sha256:abc","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_K_M"},"expires_at":"2317-09-11T11:47:16.854775807Z","size_vram":5368709120,"context_length":4096,"herd_node":"o"},` +
			`{"name":"nomic-embed-text","model":"nomic-embed-text","size":0,"digest":"","details":{"parent_model":"","format":"","family":"","families":null,"parameter_size":"","quantization_level":""},"expires_at":"2317-09-11T11:47:16.854775807Z","size_vram":0,"context_length":0,"herd_node":"s"}]}`},
		{"/api/version", `{"version":"` + ollamaAPIVersion() + `","herd_version":"1.2.3"}`},
	} {
		resp := g.get(t, tt.path, testAPIKey)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != tt.want {
			t.Errorf("%s: %d\n got %s\nwant %s", tt.path, resp.StatusCode, b, tt.want)
		}
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)github\.com/ollama/ollama v` + regexp.QuoteMeta(ollamaModuleVersion) + `(\s|$)`).Match(gomod) {
		t.Errorf("ollamaModuleVersion %s is not go.mod's version of github.com/ollama/ollama", ollamaModuleVersion)
	}
	// An Ollama node answers show itself, through its agent.
	resp := g.post(t, "/api/show", `{"model":"llama3.1:8b"}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"template":"{{ .Prompt }}"`) {
		t.Fatalf("show through the Ollama node: %d %s", resp.StatusCode, b)
	}
	// Any other node's agent answers it too (building it from what its backend tells): the
	// gateway asks it with the node's name for the model.
	resp = g.post(t, "/api/show", `{"model":"nomic-embed-text"}`)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	reqs := other.requests()
	if resp.StatusCode != 200 || len(reqs) != 1 || reqs[0].path != agentapi.PathOllamaShow || reqs[0].header.Get(agentapi.HeaderModel) != "nomic-embed-text" {
		t.Fatalf("show through the other node: %d %s, agent got %+v", resp.StatusCode, b, reqs)
	}
}

// TestOllamaRoot answers Ollama's probe at / and keeps the dashboard for browsers.
func TestOllamaRoot(t *testing.T) {
	g := newCoreGW(t, nil)
	for _, tt := range []struct {
		method, accept, wantType, wantBody string
	}{
		{"GET", "", "text/plain", "Ollama is running"},
		{"GET", "application/json", "text/plain", "Ollama is running"},
		{"HEAD", "", "text/plain", ""},
		{"GET", "text/html,application/xhtml+xml", "text/html", "<title>herd"},
	} {
		req, _ := http.NewRequest(tt.method, g.srv.URL+"/", nil)
		if tt.accept != "" {
			req.Header.Set("Accept", tt.accept)
		}
		resp, err := g.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.wantType) || !strings.Contains(string(b), tt.wantBody) {
			t.Errorf("%s / (Accept %q): %d %s %.40q", tt.method, tt.accept, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	}
}
