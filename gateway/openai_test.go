package gateway

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

func TestHealthAndReady(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Version = "v1.2.3" })

	resp := g.get(t, "/healthz", "")
	var h healthBody
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 || h.Version != "v1.2.3" || h.Status != "ok" {
		t.Fatalf("/healthz = %d %+v (%v), want 200 ok v1.2.3", resp.StatusCode, h, err)
	}
	resp.Body.Close()

	resp = g.get(t, "/readyz", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with no node = %d, want 503", resp.StatusCode)
	}
	if e := readOpenAIError(t, resp); !strings.Contains(e.Error.Message, "no node") {
		t.Errorf("/readyz message %q does not say no node is registered", e.Error.Message)
	}

	g.beat("a", "http://127.0.0.1:1", 1, testModel)
	resp = g.get(t, "/readyz", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with a node = %d, want 200", resp.StatusCode)
	}
	resp.Body.Close()

	// Three hours of silence at a one-hour interval make the node stale.
	g.clock.Advance(3*time.Hour + time.Second)
	resp = g.get(t, "/readyz", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with a stale node = %d, want 503", resp.StatusCode)
	}
	if e := readOpenAIError(t, resp); !strings.Contains(e.Error.Message, "stale") {
		t.Errorf("/readyz message %q does not say the node is stale", e.Error.Message)
	}
}

func TestModels(t *testing.T) {
	g := newCoreGW(t, func(c *Config) {
		c.PresetsFile = writePresetFile(t, t.TempDir(), "presets:\n  - name: support-bot\n    model: llama3.1:8b\n    system: You answer support questions.\n")
	})
	g.beat("old", "http://127.0.0.1:1", 1, "gone-model:7b")
	g.clock.Advance(3*time.Hour + time.Second) // "old" goes stale
	g.beat("a", "http://127.0.0.1:2", 1, testModel, "qwen2.5:7b")
	g.beat("b", "http://127.0.0.1:3", 1, testModel, "nomic-embed-text", "Qwen/Qwen2.5-0.5B-Instruct")
	// An Ollama node's names are Ollama's: "all-minilm" is "all-minilm:latest".
	g.s.registry.Observe(agentapi.Heartbeat{NodeID: "o", Address: "http://127.0.0.1:4", Backend: agentapi.BackendOllama, Slots: 1,
		Models: []agentapi.Model{{Name: "all-minilm", OnDisk: true}}})

	resp := g.get(t, "/v1/models", testAPIKey)
	defer resp.Body.Close()
	var list modelList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/v1/models = %d (%v)", resp.StatusCode, err)
	}
	var got []string
	for _, m := range list.Data {
		got = append(got, m.ID+"/"+m.OwnedBy)
		if m.Object != "model" || m.Created == 0 {
			t.Errorf("model %+v: want object model and a created time", m)
		}
	}
	// An OpenAI-compatible server's ids are listed exactly as it spells them.
	want := []string{"Qwen/Qwen2.5-0.5B-Instruct/herd", "all-minilm:latest/herd", "llama3.1:8b/herd", "nomic-embed-text/herd", "qwen2.5:7b/herd", "support-bot/herd-preset"}
	if list.Object != "list" || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("/v1/models = %s %v, want list %v", list.Object, got, want)
	}

	for _, tt := range []struct{ id, want string }{
		{"llama3.1:8b", "llama3.1:8b"},
		{"nomic-embed-text", "nomic-embed-text"},
		{"Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"},
		{"all-minilm", "all-minilm:latest"},
		{"ALL-MINILM:latest", "all-minilm:latest"},
		{"support-bot", "support-bot"},
	} {
		resp := g.get(t, "/v1/models/"+tt.id, testAPIKey)
		var m modelObject
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 || m.ID != tt.want {
			t.Errorf("/v1/models/%s = %d %+v (%v), want %s", tt.id, resp.StatusCode, m, err, tt.want)
		}
		resp.Body.Close()
	}
	// No alias for an OpenAI-compatible server's ids: they are case-sensitive and know no tag.
	for _, id := range []string{"qwen/qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct:latest", "nomic-embed-text:latest"} {
		resp := g.get(t, "/v1/models/"+id, testAPIKey)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/v1/models/%s = %d, want 404", id, resp.StatusCode)
		}
		resp.Body.Close()
	}
	resp = g.get(t, "/v1/models/gone-model:7b", testAPIKey)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/v1/models of a model only a stale node has = %d, want 404", resp.StatusCode)
	}
	if e := readOpenAIError(t, resp); nullable(e.Error.Code) != "model_not_found" || e.Error.Message != "The model `gone-model:7b` does not exist or you do not have access to it." {
		t.Errorf("404 error = %+v", e.Error)
	}
}

func TestAuth(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.AdminKeys = []string{testAdminKey} })
	tests := []struct {
		name, path, key string
		status          int
		code, message   string
	}{
		{"no key", "/v1/models", "", 401, "invalid_api_key", "You didn't provide an API key"},
		{"wrong key", "/v1/models", "sk-wrong-0000000000000", 401, "invalid_api_key", "Incorrect API key provided: sk-"},
		{"api key", "/v1/models", testAPIKey, 200, "", ""},
		{"admin key on v1", "/v1/models", testAdminKey, 200, "", ""},
		{"admin route, api key", "/admin/v1/nodes", testAPIKey, 403, "insufficient_permissions", "admin"},
		{"admin route, no key", "/admin/v1/nodes", "", 401, "invalid_api_key", "You didn't provide"},
		{"admin route, admin key", "/admin/v1/nodes", testAdminKey, 200, "", ""},
		{"health needs no key", "/healthz", "", 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := g.get(t, tt.path, tt.key)
			if resp.StatusCode != tt.status {
				t.Fatalf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.status)
			}
			if tt.code == "" {
				resp.Body.Close()
				return
			}
			e := readOpenAIError(t, resp)
			if nullable(e.Error.Code) != tt.code || !strings.Contains(e.Error.Message, tt.message) {
				t.Errorf("error = %+v, want code %s and a message with %q", e.Error, tt.code, tt.message)
			}
			if tt.status == 401 && e.Error.Type != errInvalidRequest {
				t.Errorf("401 type = %s, want %s as OpenAI sends", e.Error.Type, errInvalidRequest)
			}
			if strings.Contains(e.Error.Message, tt.key) && tt.key != "" {
				t.Errorf("error message %q echoes the whole key", e.Error.Message)
			}
		})
	}

	// Agents authenticate with the cluster token.
	hb := `{"node_id":"n1","address":"http://127.0.0.1:9","backend":"openai","slots":1}`
	for _, tt := range []struct {
		token  string
		status int
	}{{"", 401}, {testAPIKey, 401}, {testClusterToken, 200}} {
		req, _ := http.NewRequest(http.MethodPost, g.srv.URL+agentapi.PathHeartbeat, strings.NewReader(hb))
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		resp, err := g.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("heartbeat with token %q = %d, want %d", tt.token, resp.StatusCode, tt.status)
		}
	}
}

func TestNoKeysOnLoopbackIsOpen(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.APIKeys = nil })
	resp := g.get(t, "/v1/models", "")
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/models without keys configured = %d, want 200", resp.StatusCode)
	}
	cfg := DefaultConfig()
	cfg.ClusterToken, cfg.DataDir, cfg.Listen = "x", t.TempDir(), "0.0.0.0:8080"
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted a non-loopback listener without API keys")
	}
}

func TestChatNonStream(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 2, testModel)

	body := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`
	req, _ := http.NewRequest(http.MethodPost, g.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("X-Request-Id", "client-req-42")
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d body %s", resp.StatusCode, out)
	}
	var cc struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(out, &cc); err != nil || len(cc.Choices) != 1 || cc.Choices[0].Message.Content != "hello from a" || cc.Usage.TotalTokens != 8 {
		t.Fatalf("response %s (%v) is not the agent's completion", out, err)
	}
	for h, want := range map[string]string{agentapi.HeaderNode: "a", agentapi.HeaderAttempts: "1", agentapi.HeaderRequestID: "client-req-42", "Content-Type": "application/json"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	reqs := a.requests()
	if len(reqs) != 1 {
		t.Fatalf("agent got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if string(r.body) != body {
		t.Errorf("agent got body %s, want the client's bytes %s", r.body, body)
	}
	if r.path != agentapi.PathChatCompletions {
		t.Errorf("agent path = %s", r.path)
	}
	if got := r.header.Get("Authorization"); got != "Bearer "+testClusterToken {
		t.Errorf("agent Authorization = %q, want the cluster token, never the client's key", got)
	}
	if r.header.Get(agentapi.HeaderRequestID) != "client-req-42" || r.header.Get(agentapi.HeaderClass) != agentapi.ClassInteractive {
		t.Errorf("agent headers %v lack the request ID or class", r.header)
	}
	if !strings.Contains(g.log.String(), "inference request") {
		t.Errorf("no debug line for the request in the log:\n%s", g.log.String())
	}
}

func TestGeneratedRequestID(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 2, testModel)
	seen := map[string]bool{}
	for range 3 {
		resp := g.post(t, "/v1/embeddings", `{"model":"llama3.1:8b","input":"x"}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		id := resp.Header.Get(agentapi.HeaderRequestID)
		if !strings.HasPrefix(id, "req_") || seen[id] {
			t.Fatalf("request ID %q: want a fresh req_ ID", id)
		}
		seen[id] = true
	}
}

func TestChatStreamPassThroughChunkByChunk(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireSlowEachStep)
	g.beat("a", a.srv.URL, 2, testModel)

	// The gateway answers when the first event is there, so the first one is let out at once.
	go func() { a.step <- struct{}{} }()
	resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The agent sends chunk i only after the client has read chunk i-1 through the gateway: the
	// gateway cannot be holding chunks back, or this would deadlock.
	br := bufio.NewReader(resp.Body)
	for i, word := range wireWords {
		if i > 0 {
			send(t, a.step, struct{}{})
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if want := "data: " + wireChunk(testModel, i, word) + "\n"; line != want {
			t.Fatalf("chunk %d = %q, want %q", i, line, want)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Fatalf("chunk %d not followed by a blank line: %q", i, blank)
		}
	}
	rest := readSSEData(t, br)
	if len(rest) != 2 || !strings.Contains(rest[0], `"usage":{"prompt_tokens":5,"completion_tokens":4`) || rest[1] != "[DONE]" {
		t.Fatalf("after the chunks got %q, want the usage chunk and [DONE]", rest)
	}
	if resp.Header.Get(agentapi.HeaderNode) != "a" {
		t.Errorf("X-Herd-Node = %q", resp.Header.Get(agentapi.HeaderNode))
	}
}

func TestRequestErrors(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.MaxBodyBytes = 4 << 10 })
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 2, testModel)
	g.beat("d", a.srv.URL, 2, "drained-model:1b")
	if err := g.s.registry.SetDraining("d", true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, body string
		status           int
		typ, code, param string
		message          string
	}{
		{"bad json", "/v1/chat/completions", `{"model":`, 400, errInvalidRequest, "<null>", "<null>", "We could not parse the JSON body"},
		{"missing model", "/v1/chat/completions", `{"messages":[]}`, 400, errInvalidRequest, "missing_required_parameter", "model", "you must provide a model parameter"},
		{"stream wrong type", "/v1/chat/completions", `{"model":"llama3.1:8b","stream":"yes"}`, 400, errInvalidRequest, "invalid_type", "stream", "Invalid type for 'stream'"},
		{"max_tokens wrong type", "/v1/completions", `{"model":"llama3.1:8b","max_tokens":"10"}`, 400, errInvalidRequest, "invalid_type", "max_tokens", "expected an integer"},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-9"}`, 404, errInvalidRequest, "model_not_found", "model", "The model `gpt-9` does not exist or you do not have access to it."},
		{"too large", "/v1/chat/completions", `{"model":"llama3.1:8b","prompt":"` + strings.Repeat("x", 5<<10) + `"}`, 413, errInvalidRequest, "request_too_large", "<null>", "too large"},
		{"no node", "/v1/chat/completions", `{"model":"drained-model:1b"}`, 503, errUnavailable, "no_node_available", "<null>", "node d: draining"},
		{"unknown route", "/v1/nope", `{}`, 404, errInvalidRequest, "<null>", "<null>", "Invalid URL (POST /v1/nope)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := g.post(t, tt.path, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			retryAfter := resp.Header.Get("Retry-After")
			e := readOpenAIError(t, resp)
			if e.Error.Type != tt.typ || nullable(e.Error.Code) != tt.code || nullable(e.Error.Param) != tt.param || !strings.Contains(e.Error.Message, tt.message) {
				t.Errorf("error = {%q %s %s %s}, want {%q %s %s %s}", e.Error.Message, e.Error.Type, nullable(e.Error.Code), nullable(e.Error.Param), tt.message, tt.typ, tt.code, tt.param)
			}
			if tt.status == 503 && retryAfter == "" {
				t.Errorf("503 without Retry-After")
			}
		})
	}
	if n := len(a.requests()); n != 0 {
		t.Errorf("agent got %d requests from bad ones, want 0", n)
	}
}

func TestAgentClientErrorPassesThrough(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wire400)
	b := newWireAgent(t, "b", wire400)
	g.beat("a", a.srv.URL, 2, testModel)
	g.beat("b", b.srv.URL, 2, testModel)
	for range 4 {
		resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","temperature":9}`)
		if resp.StatusCode != 400 || resp.Header.Get(agentapi.HeaderAttempts) != "1" {
			t.Errorf("status %d attempts %s, want the agent's 400 after 1 attempt", resp.StatusCode, resp.Header.Get(agentapi.HeaderAttempts))
		}
		if e := readOpenAIError(t, resp); nullable(e.Error.Param) != "temperature" {
			t.Errorf("error %+v is not the agent's", e.Error)
		}
	}
	if total := len(a.requests()) + len(b.requests()); total != 4 {
		t.Errorf("agents got %d requests for 4 client requests: a 4xx was retried", total)
	}
}

func TestFailoverBeforeFirstByte(t *testing.T) {
	for _, tt := range []struct {
		name string
		mode wireMode
		// refuse puts no agent at all at the failing node's address.
		refuse bool
	}{
		{name: "connection refused", refuse: true},
		{name: "agent 500", mode: wire500},
		{name: "agent 429", mode: wire429},
		{name: "agent hangs", mode: wireHang},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newCoreGW(t, func(c *Config) {
				c.FirstByteTimeout = 300 * time.Millisecond
				c.Scheduler.Policy = scheduler.PolicyLeastInflight
			})
			good := newWireAgent(t, "good", wireOK)
			badAddr := refusedURL(t)
			if !tt.refuse {
				badAddr = newWireAgent(t, "bad", tt.mode).srv.URL
			}
			// The failing node looks idler, so it is tried first until its circuit opens.
			g.beat("bad", badAddr, 4, testModel)
			g.beatBusy("good", good.srv.URL, 4, 1, testModel)

			var failovers int
			for i := range 8 {
				stream := i%2 == 1
				body := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`
				if stream {
					body = `{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}`
				}
				resp := g.post(t, "/v1/chat/completions", body)
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get(agentapi.HeaderNode) != "good" {
					t.Fatalf("request %d: status %d node %q body %s: the client saw the failure", i, resp.StatusCode, resp.Header.Get(agentapi.HeaderNode), out)
				}
				if stream && !strings.HasSuffix(string(out), "data: [DONE]\n\n") {
					t.Fatalf("request %d: stream %q does not end with [DONE]", i, out)
				}
				if resp.Header.Get(agentapi.HeaderAttempts) == "2" {
					failovers++
				}
			}
			if failovers == 0 {
				t.Fatal("no request was tried on the failing node first; the test proves nothing")
			}
			if !strings.Contains(g.log.String(), "failed_attempts") {
				t.Errorf("failed attempts were not logged")
			}
		})
	}
}

func TestAllAttemptsFail(t *testing.T) {
	g := newCoreGW(t, nil)
	g.beat("a", refusedURL(t), 1, testModel)
	g.beat("b", refusedURL(t), 1, testModel)
	resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b"}`)
	if resp.StatusCode != 503 || resp.Header.Get(agentapi.HeaderAttempts) != "2" {
		t.Fatalf("status %d attempts %q, want 503 after 2", resp.StatusCode, resp.Header.Get(agentapi.HeaderAttempts))
	}
	e := readOpenAIError(t, resp)
	if nullable(e.Error.Code) != "upstream_error" || !strings.Contains(e.Error.Message, "node a:") || !strings.Contains(e.Error.Message, "node b:") {
		t.Errorf("error %+v does not list both attempts", e.Error)
	}

	// When an agent did answer, its answer says more than a summary: it is relayed.
	g2 := newCoreGW(t, nil)
	crash := newWireAgent(t, "c", wire500)
	g2.beat("c", crash.srv.URL, 1, testModel)
	resp = g2.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b"}`)
	if resp.StatusCode != 500 {
		t.Fatalf("status %d, want the agent's 500", resp.StatusCode)
	}
	if e := readOpenAIError(t, resp); !strings.Contains(e.Error.Message, "backend crashed on c") {
		t.Errorf("error %+v is not the agent's", e.Error)
	}
}

func TestCircuitOpensAfterFailures(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
	good := newWireAgent(t, "good", wireOK)
	g.beat("bad", refusedURL(t), 4, testModel)
	g.beatBusy("good", good.srv.URL, 4, 1, testModel)
	for range 6 {
		resp := g.post(t, "/v1/embeddings", `{"model":"llama3.1:8b","input":"x"}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	v, _ := g.s.registry.Node("bad")
	if v.Circuit == "closed" {
		t.Fatalf("circuit of the refusing node is %s after repeated failures, want open", v.Circuit)
	}
}

func TestMidStreamFailure(t *testing.T) {
	for _, tt := range []struct {
		name  string
		mode  wireMode
		cause string
	}{
		{"connection cut", wireMidStream, "failed mid-stream"},
		{"agent goes silent", wireHangMidBody, "no data for"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newCoreGW(t, func(c *Config) {
				c.StreamIdleTimeout = 200 * time.Millisecond
				c.Scheduler.Policy = scheduler.PolicyLeastInflight
			})
			a := newWireAgent(t, "a", tt.mode)
			other := newWireAgent(t, "b", wireOK)
			g.beat("a", a.srv.URL, 4, testModel)
			g.beatBusy("b", other.srv.URL, 4, 1, testModel) // a is preferred; b would take a retry
			resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			defer resp.Body.Close()
			if resp.Header.Get(agentapi.HeaderNode) != "a" {
				t.Fatalf("served by %q; the test needs node a", resp.Header.Get(agentapi.HeaderNode))
			}
			events := readSSEData(t, resp.Body)
			if len(events) != 3 {
				t.Fatalf("got events %q, want two chunks and an error event", events)
			}
			for i := range 2 {
				if events[i] != wireChunk(testModel, i, wireWords[i]) {
					t.Errorf("event %d = %q", i, events[i])
				}
			}
			var e clientError
			if err := json.Unmarshal([]byte(events[2]), &e); err != nil {
				t.Fatalf("last event %q is not an error object: %v", events[2], err)
			}
			if e.Error.Type != errServer || nullable(e.Error.Code) != "upstream_error" || e.Error.Param != nil ||
				!strings.Contains(e.Error.Message, "upstream node a failed mid-stream") || !strings.Contains(e.Error.Message, tt.cause) {
				t.Errorf("error event %+v", e.Error)
			}
			if len(other.requests()) != 0 {
				t.Errorf("a request that had started streaming was retried on another node")
			}
		})
	}
}

// A JSON answer that breaks off after it started cannot be retried or fixed: the client must see
// a broken response, never a clean end of truncated JSON.
func TestMidBodyFailureWithoutSSE(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireHalfJSON)
	g.beat("a", a.srv.URL, 1, testModel)
	req, _ := http.NewRequest(http.MethodPost, g.srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"llama3.1:8b"}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		return // cut before the buffered headers went out: an error, as it must be
	}
	defer resp.Body.Close()
	if body, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("read %q to a clean end; want the connection cut", body)
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireHang)
	g.beat("a", a.srv.URL, 1, testModel)
	req, _ := http.NewRequest(http.MethodPost, g.srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"llama3.1:8b"}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	done := make(chan struct{})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	go func() {
		defer close(done)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	recv(t, a.entered)
	tr.CloseIdleConnections()
	// Cancel the client's request by closing its connection from the server side of the test.
	g.srv.CloseClientConnections()
	recv(t, done)
	// The agent's request context ends when the gateway cancels it; then the slot is released.
	eventually(t, "the gateway to release the slot", func() bool {
		v, _ := g.s.registry.Node("a")
		return v.GatewayInFlight == 0
	})
}

func TestPreset(t *testing.T) {
	g := newCoreGW(t, func(c *Config) {
		c.PresetsFile = writePresetFile(t, t.TempDir(), "presets:\n  - name: support-bot\n    model: llama3.1:8b\n    system: You answer support questions.\n    temperature: 0.1\n")
	})
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 1, testModel)
	resp := g.post(t, "/v1/chat/completions", `{"model":"support-bot","messages":[{"role":"user","content":"my printer"}]}`)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	reqs := a.requests()
	if len(reqs) != 1 {
		t.Fatalf("agent got %d requests", len(reqs))
	}
	var sent struct {
		Model       string  `json:"model"`
		Temperature float64 `json:"temperature"`
		Messages    []struct {
			Role, Content string
		} `json:"messages"`
	}
	if err := json.Unmarshal(reqs[0].body, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Model != testModel || sent.Temperature != 0.1 || len(sent.Messages) != 2 || sent.Messages[0].Role != "system" || sent.Messages[1].Content != "my printer" {
		t.Errorf("agent got %s, want the preset applied", reqs[0].body)
	}

	g.beat("a", a.srv.URL, 1, "other:1b") // the base model is gone
	resp = g.post(t, "/v1/chat/completions", `{"model":"support-bot"}`)
	if resp.StatusCode != 503 {
		t.Fatalf("preset without its base model: status %d, want 503", resp.StatusCode)
	}
	if e := readOpenAIError(t, resp); !strings.Contains(e.Error.Message, "no node has") {
		t.Errorf("error %+v", e.Error)
	}
}

func TestQueueOverHTTP(t *testing.T) {
	g := newCoreGW(t, func(c *Config) {
		c.QueueSize = 1
		c.QueueTimeout = time.Minute
		c.AdminKeys = []string{testAdminKey}
	})
	a := newWireAgent(t, "a", wireHang)
	g.beat("a", a.srv.URL, 1, testModel)
	body := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`

	type answer struct {
		status int
		err    clientError
		retry  string
	}
	sendReq := func() <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodPost, g.srv.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			resp, err := g.srv.Client().Do(req)
			if err != nil {
				t.Errorf("POST: %v", err)
				ch <- answer{}
				return
			}
			defer resp.Body.Close()
			ans := answer{status: resp.StatusCode, retry: resp.Header.Get("Retry-After")}
			b, _ := io.ReadAll(resp.Body)
			_ = json.Unmarshal(b, &ans.err)
			ch <- ans
		}()
		return ch
	}
	first := sendReq() // holds the only slot
	recv(t, a.entered)
	second := sendReq() // waits in the queue
	eventually(t, "the second request to queue", func() bool { n, _ := g.s.core.adm.Depth(); return n == 1 })
	// The wait is visible where an operator looks: the admin API and /metrics.
	qresp := g.get(t, "/admin/v1/queue", testAdminKey)
	qbody, _ := io.ReadAll(qresp.Body)
	qresp.Body.Close()
	checkGolden(t, "admin_queue.golden.json", qbody)
	mresp := g.get(t, "/metrics", testAdminKey)
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, line := range []string{
		`herd_gateway_queue_depth{class="interactive",model="llama3.1:8b"} 1`,
		`herd_gateway_queue_depth{class="batch",model="llama3.1:8b"} 0`,
		`herd_gateway_queue_capacity{class="interactive",model="llama3.1:8b"} 1`,
	} {
		if !strings.Contains(string(mbody), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	third := recv(t, sendReq()) // the queue is full
	if third.status != 429 || nullable(third.err.Error.Code) != "queue_full" || third.retry == "" {
		t.Fatalf("third request = %d %+v Retry-After %q, want 429 queue_full", third.status, third.err.Error, third.retry)
	}
	g.clock.Advance(time.Minute)
	got := recv(t, second)
	if got.status != 503 || nullable(got.err.Error.Code) != "queue_timeout" || !strings.Contains(got.err.Error.Message, "queued past its deadline") {
		t.Fatalf("queued request after the deadline = %d %+v, want 503 queued past deadline", got.status, got.err.Error)
	}
	close(a.release)
	if got := recv(t, first); got.status != 200 {
		t.Fatalf("first request = %d", got.status)
	}
}

func TestRecoveryAnswersInOpenAIShape(t *testing.T) {
	g := newCoreGW(t, nil)
	g.s.engine.GET("/v1/boom", func(*gin.Context) { panic("boom") })
	resp := g.get(t, "/v1/boom", testAPIKey)
	if resp.StatusCode != 500 {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	if e := readOpenAIError(t, resp); e.Error.Type != errServer || strings.Contains(e.Error.Message, "boom") {
		t.Errorf("error %+v: want a server_error that does not leak the panic", e.Error)
	}
	if !strings.Contains(g.log.String(), "panic in handler") {
		t.Errorf("the panic was not logged")
	}
}

func TestMetricsCountRequests(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 1, testModel)
	resp := g.post(t, "/v1/embeddings", `{"model":"llama3.1:8b","input":"x"}`)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp = g.get(t, "/metrics", testMetricsToken)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := `herd_requests_total{model="llama3.1:8b",node="a",status="200"} 1`
	if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
		t.Fatalf("/metrics = %d, lacks %s", resp.StatusCode, want)
	}
}

// Right after a (re)start, before any node has registered, an unknown model is a retryable 503:
// the registry is empty, not the cluster.
func TestUnknownModelWhileNodesRegister(t *testing.T) {
	s, err := New(Config{DataDir: t.TempDir(), ClusterToken: "t", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions",
		strings.NewReader(`{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}`)))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "still registering") {
		t.Fatalf("got %d %s", rec.Code, rec.Body.String())
	}
}
