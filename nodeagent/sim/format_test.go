package sim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"

	"github.com/herd-llm/herd/internal/golden"
)

func goldenNode(t *testing.T) *Node {
	return newNode(t, Config{
		NodeID: "golden", GPUs: []models.GPUProfile{gpu(t, "a40")}, Seed: 42, Clock: newAutoClock(),
		Models: []string{"llama3.1:8b", "all-minilm"}, Preload: []string{"llama3.1:8b", "all-minilm"},
	})
}

// The exact bytes of non-streamed responses, under a fixed seed and a fake clock: ids, created and
// text are deterministic, so any change to the wire format shows up here.
func TestGoldenResponses(t *testing.T) {
	for _, tc := range []struct {
		golden   string
		endpoint string
		body     string
	}{
		{"chat.json", agentapi.PathChatCompletions,
			`{"model":"llama3.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the herd."}]}`},
		{"chat_max_tokens.json", agentapi.PathChatCompletions,
			`{"model":"llama3.1:8b","messages":[{"role":"user","content":[{"type":"text","text":"Count to three."}]}],"max_completion_tokens":7}`},
		{"completion.json", agentapi.PathCompletions,
			`{"model":"llama3.1:8b","prompt":"Once upon a time","max_tokens":12}`},
		{"embeddings.json", agentapi.PathEmbeddings,
			`{"model":"all-minilm","input":["first text","second text"],"dimensions":8}`},
		{"embeddings_base64.json", agentapi.PathEmbeddings,
			`{"model":"all-minilm:latest","input":"one","encoding_format":"base64","dimensions":4}`},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			w := call(context.Background(), goldenNode(t), tc.endpoint, tc.body)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if got := w.Header().Get(agentapi.HeaderSimulated); got != "true" {
				t.Errorf("%s = %q", agentapi.HeaderSimulated, got)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			golden.Check(t, filepath.Join("testdata", tc.golden), w.Body.Bytes())
		})
	}
}

type chatResp struct {
	ID                string  `json:"id"`
	Object            string  `json:"object"`
	Created           int64   `json:"created"`
	Model             string  `json:"model"`
	SystemFingerprint *string `json:"system_fingerprint"`
	Choices           []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Text         string         `json:"text"`
		Logprobs     map[string]any `json:"logprobs"`
		FinishReason string         `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		TotalTokens         int `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
}

// Semantics of the non-streamed formats beyond the golden bytes.
func TestGenerationSemantics(t *testing.T) {
	n := goldenNode(t)
	for _, tc := range []struct {
		name       string
		endpoint   string
		body       map[string]any
		object     string
		idPrefix   string
		finish     string
		completion int // 0: natural length 16..256
	}{
		{"chat natural", agentapi.PathChatCompletions, chatBody("llama3.1", "Tell me about GPUs.", nil), "chat.completion", "chatcmpl-", "stop", 0},
		{"chat max_tokens", agentapi.PathChatCompletions, chatBody("llama3.1", "Tell me about GPUs.", map[string]any{"max_tokens": 33}), "chat.completion", "chatcmpl-", "length", 33},
		{"completion natural", agentapi.PathCompletions, map[string]any{"model": "llama3.1:8b", "prompt": "The cluster"}, "text_completion", "cmpl-", "stop", 0},
		{"completion token prompt", agentapi.PathCompletions, map[string]any{"model": "llama3.1:8b", "prompt": []int{1, 2, 3, 4, 5}, "max_tokens": 3}, "text_completion", "cmpl-", "length", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := call(context.Background(), n, tc.endpoint, tc.body)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			r := decodeJSON[chatResp](t, w.Body.Bytes())
			if r.Object != tc.object || !strings.HasPrefix(r.ID, tc.idPrefix) || len(r.ID) != len(tc.idPrefix)+29 {
				t.Errorf("object %q id %q", r.Object, r.ID)
			}
			if r.Model != "llama3.1:8b" || r.Created < testEpoch.Unix() || r.Created > n.clock.Now().Unix() || r.SystemFingerprint == nil || !strings.HasPrefix(*r.SystemFingerprint, "fp_") {
				t.Errorf("model %q created %d fingerprint %v", r.Model, r.Created, r.SystemFingerprint)
			}
			if len(r.Choices) != 1 || r.Choices[0].Index != 0 || r.Choices[0].FinishReason != tc.finish || r.Choices[0].Logprobs != nil {
				t.Fatalf("choices %+v", r.Choices)
			}
			text := r.Choices[0].Text
			if tc.object == "chat.completion" {
				text = r.Choices[0].Message.Content
				if r.Choices[0].Message.Role != "assistant" {
					t.Errorf("role %q", r.Choices[0].Message.Role)
				}
			}
			u := r.Usage
			if tc.completion > 0 && u.CompletionTokens != tc.completion {
				t.Errorf("completion_tokens %d, want %d", u.CompletionTokens, tc.completion)
			}
			if u.CompletionTokens < 1 || u.CompletionTokens > 256 || u.PromptTokens < 1 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("usage %+v", u)
			}
			// One pseudo-word per token.
			if got := len(strings.Fields(text)); got != u.CompletionTokens {
				t.Errorf("%d words for %d completion tokens: %q", got, u.CompletionTokens, text)
			}
		})
	}
	// The same request gives the same text; a different seed does not.
	body := chatBody("llama3.1", "Determinism, please.", nil)
	a := decodeJSON[chatResp](t, call(context.Background(), n, agentapi.PathChatCompletions, body).Body.Bytes())
	b := decodeJSON[chatResp](t, call(context.Background(), n, agentapi.PathChatCompletions, body).Body.Bytes())
	if a.Choices[0].Message.Content != b.Choices[0].Message.Content || a.ID == b.ID {
		t.Errorf("same request: texts equal %v, ids differ %v", a.Choices[0].Message.Content == b.Choices[0].Message.Content, a.ID != b.ID)
	}
	body["seed"] = 7
	c := decodeJSON[chatResp](t, call(context.Background(), n, agentapi.PathChatCompletions, body).Body.Bytes())
	if c.Choices[0].Message.Content == a.Choices[0].Message.Content {
		t.Error("request seed does not change the text")
	}
}

func TestEmbeddings(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: newAutoClock(), Models: []string{"nomic-embed-text", "all-minilm"}})
	type embResp struct {
		Object string `json:"object"`
		Model  string `json:"model"`
		Data   []struct {
			Object    string    `json:"object"`
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Usage map[string]int `json:"usage"`
	}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		model  string
		dim    int
		inputs int
	}{
		{"string", map[string]any{"model": "nomic-embed-text", "input": "hello"}, "nomic-embed-text:latest", 768, 1},
		{"array", map[string]any{"model": "all-minilm", "input": []string{"a", "bb", "ccc"}}, "all-minilm:latest", 384, 3},
		{"tokens", map[string]any{"model": "all-minilm", "input": []int{101, 2023, 102}}, "all-minilm:latest", 384, 1},
		{"token arrays", map[string]any{"model": "all-minilm", "input": [][]int{{1, 2}, {3}}}, "all-minilm:latest", 384, 2},
		{"dimensions", map[string]any{"model": "nomic-embed-text", "input": "x", "dimensions": 256}, "nomic-embed-text:latest", 256, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := call(context.Background(), n, agentapi.PathEmbeddings, tc.body)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			r := decodeJSON[embResp](t, w.Body.Bytes())
			if r.Object != "list" || r.Model != tc.model || len(r.Data) != tc.inputs {
				t.Fatalf("object %q model %q %d items", r.Object, r.Model, len(r.Data))
			}
			if r.Usage["prompt_tokens"] < 1 || r.Usage["total_tokens"] != r.Usage["prompt_tokens"] {
				t.Errorf("usage %v", r.Usage)
			}
			for i, d := range r.Data {
				if d.Object != "embedding" || d.Index != i || len(d.Embedding) != tc.dim {
					t.Fatalf("item %d: object %q index %d dim %d", i, d.Object, d.Index, len(d.Embedding))
				}
				var norm float64
				for _, x := range d.Embedding {
					norm += float64(x) * float64(x)
				}
				if math.Abs(norm-1) > 1e-4 {
					t.Errorf("item %d norm² %v", i, norm)
				}
			}
		})
	}
	// Same text, same vector, on any node; different text, different vector; base64 holds the same floats.
	other := newNode(t, Config{NodeID: "other", Seed: 99, GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Models: []string{"all-minilm"}})
	get := func(n *Node, input, format string) []byte {
		w := call(context.Background(), n, agentapi.PathEmbeddings, map[string]any{"model": "all-minilm", "input": input, "encoding_format": format})
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		return w.Body.Bytes()
	}
	if !bytes.Equal(get(n, "same", ""), get(other, "same", "")) {
		t.Error("two nodes disagree on an embedding")
	}
	if bytes.Equal(get(n, "same", ""), get(n, "different", "")) {
		t.Error("different inputs, same embedding")
	}
	floats := decodeJSON[embResp](t, get(n, "same", "float")).Data[0].Embedding
	b64 := decodeJSON[struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}](t, get(n, "same", "base64")).Data[0].Embedding
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 4*len(floats) {
		t.Fatalf("base64 embedding: %v, %d bytes", err, len(raw))
	}
	for i, f := range floats {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != f {
			t.Fatalf("component %d: base64 %v, float %v", i, got, f)
		}
	}
}

func TestErrors(t *testing.T) {
	n := newNode(t, Config{
		GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: newAutoClock(),
		Models: []string{"llama3.2:1b", "llama3.1:70b", "all-minilm"}, ContextLength: 2048,
	})
	long := strings.Repeat("word ", 2000) // ≈ 2500 tokens > 2048
	for _, tc := range []struct {
		name     string
		endpoint string
		body     string
		status   int
		typ      string
		code     string // "" means null
		param    string // "" means null
	}{
		{"bad json", agentapi.PathChatCompletions, `{"model":`, 400, "invalid_request_error", "", ""},
		{"empty body", agentapi.PathChatCompletions, ``, 400, "invalid_request_error", "", ""},
		{"not an object", agentapi.PathChatCompletions, `[1,2]`, 400, "invalid_request_error", "", ""},
		{"missing model", agentapi.PathChatCompletions, `{"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "missing_required_parameter", "model"},
		{"missing messages", agentapi.PathChatCompletions, `{"model":"llama3.2:1b"}`, 400, "invalid_request_error", "missing_required_parameter", "messages"},
		{"empty messages", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","messages":[]}`, 400, "invalid_request_error", "empty_array", "messages"},
		{"bad role", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","messages":[{"role":"robot","content":"hi"}]}`, 400, "invalid_request_error", "invalid_value", "messages[0].role"},
		{"messages wrong type", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","messages":"hi"}`, 400, "invalid_request_error", "invalid_type", "messages"},
		{"stream wrong type", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","stream":"yes","messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "invalid_type", "stream"},
		{"content wrong type", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","messages":[{"role":"user","content":42}]}`, 400, "invalid_request_error", "invalid_type", "messages[0].content"},
		{"max_tokens zero", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "integer_below_min_value", "max_tokens"},
		{"n two", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","n":2,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "unsupported_value", "n"},
		{"unknown model", agentapi.PathChatCompletions, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"catalogue model not on node", agentapi.PathChatCompletions, `{"model":"qwen2.5:7b","messages":[{"role":"user","content":"hi"}]}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"embedding model for chat", agentapi.PathChatCompletions, `{"model":"all-minilm","messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "", "model"},
		{"chat model for embeddings", agentapi.PathEmbeddings, `{"model":"llama3.2:1b","input":"hi"}`, 400, "invalid_request_error", "", "model"},
		{"context exceeded", agentapi.PathChatCompletions, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"` + long + `"}]}`, 400, "invalid_request_error", "context_length_exceeded", "messages"},
		{"model does not fit", agentapi.PathChatCompletions, `{"model":"llama3.1:70b","messages":[{"role":"user","content":"hi"}]}`, 503, "service_unavailable", "model_does_not_fit", ""},
		{"completion missing prompt", agentapi.PathCompletions, `{"model":"llama3.2:1b"}`, 400, "invalid_request_error", "missing_required_parameter", "prompt"},
		{"completion two prompts", agentapi.PathCompletions, `{"model":"llama3.2:1b","prompt":["a","b"]}`, 400, "invalid_request_error", "unsupported_value", "prompt"},
		{"completion prompt wrong type", agentapi.PathCompletions, `{"model":"llama3.2:1b","prompt":{"a":1}}`, 400, "invalid_request_error", "invalid_type", "prompt"},
		{"embedding missing input", agentapi.PathEmbeddings, `{"model":"all-minilm"}`, 400, "invalid_request_error", "missing_required_parameter", "input"},
		{"embedding empty input", agentapi.PathEmbeddings, `{"model":"all-minilm","input":""}`, 400, "invalid_request_error", "invalid_value", "input"},
		{"embedding empty array", agentapi.PathEmbeddings, `{"model":"all-minilm","input":[]}`, 400, "invalid_request_error", "empty_array", "input"},
		{"embedding bad format", agentapi.PathEmbeddings, `{"model":"all-minilm","input":"x","encoding_format":"int8"}`, 400, "invalid_request_error", "invalid_value", "encoding_format"},
		{"embedding too many dims", agentapi.PathEmbeddings, `{"model":"all-minilm","input":"x","dimensions":1000}`, 400, "invalid_request_error", "invalid_value", "dimensions"},
		{"unknown endpoint", "/v1/images/generations", `{"model":"llama3.2:1b"}`, 404, "invalid_request_error", "unknown_url", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := call(context.Background(), n, tc.endpoint, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if w.Header().Get(agentapi.HeaderSimulated) != "true" || w.Header().Get("Content-Type") != "application/json" {
				t.Errorf("headers %v", w.Header())
			}
			// The exact OpenAI error shape: all four keys present, absent ones null.
			raw := decodeJSON[map[string]map[string]any](t, w.Body.Bytes())
			e, ok := raw["error"]
			if !ok || len(raw) != 1 {
				t.Fatalf("body %s", w.Body)
			}
			for _, k := range []string{"message", "type", "param", "code"} {
				if _, ok := e[k]; !ok {
					t.Errorf("error lacks %q: %s", k, w.Body)
				}
			}
			if msg, _ := e["message"].(string); msg == "" {
				t.Error("empty message")
			}
			if e["type"] != tc.typ {
				t.Errorf("type %v, want %s", e["type"], tc.typ)
			}
			check := func(key, want string) {
				if want == "" {
					if e[key] != nil {
						t.Errorf("%s %v, want null", key, e[key])
					}
				} else if e[key] != want {
					t.Errorf("%s %v, want %s", key, e[key], want)
				}
			}
			check("code", tc.code)
			check("param", tc.param)
		})
	}
	if in, q := n.InFlight(); in != 0 || q != 0 {
		t.Errorf("after errors: in flight %d, queued %d", in, q)
	}
}
