package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestStreamedLine: which batch lines run as streams internally, and how they are rewritten.
func TestStreamedLine(t *testing.T) {
	for _, tt := range []struct {
		name, path, body, want string
	}{
		{"chat", "/v1/chat/completions", `{"model":"m","max_tokens":5,"messages":[]}`,
			`{"max_tokens":5,"messages":[],"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{"completions", "/v1/completions", `{"model":"m","prompt":"a","stream":false}`,
			`{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":true}}`},
		{"responses with tools", "/v1/responses", `{"model":"m","input":"a","tools":[{"type":"function"}]}`,
			`{"input":"a","model":"m","stream":true,"tools":[{"type":"function"}]}`},
		{"tools", "/v1/chat/completions", `{"model":"m","tools":[{"type":"function"}]}`, ""},
		{"n", "/v1/chat/completions", `{"model":"m","n":2}`, ""},
		{"logprobs", "/v1/completions", `{"model":"m","logprobs":2}`, ""},
		{"already a stream", "/v1/chat/completions", `{"model":"m","stream":true}`, ""},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":"a"}`, ""},
	} {
		got, ok := streamedLine(tt.path, []byte(tt.body))
		if string(got) != tt.want || ok != (tt.want != "") {
			t.Errorf("%s: got %s %v, want %s", tt.name, got, ok, tt.want)
		}
	}
}

// TestLineAnswer turns a line's internal stream, continued or not, into the answer it asked
// for: the whole text, the last usage, the first chunk's id.
func TestLineAnswer(t *testing.T) {
	chat := "data: {\"id\":\"c1\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"data: {\"id\":\"c1\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once \"}}]}\n\n" +
		// the continuing node's stream: its own opening chunk, then the rest, with usage
		"data: {\"id\":\"c1\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"data: {\"id\":\"c1\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"upon\"},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: {\"id\":\"c1\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n" +
		"data: [DONE]\n\n"
	got, err := lineAnswer("/v1/chat/completions", []byte(chat))
	want := `{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Once upon"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}`
	if err != nil || string(got) != want {
		t.Fatalf("chat: %v\ngot  %s\nwant %s", err, got, want)
	}
	comp := "data: {\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"ab\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n"
	got, err = lineAnswer("/v1/completions", []byte(comp))
	if err != nil || !strings.Contains(string(got), `"object":"text_completion"`) || !strings.Contains(string(got), `"text":"ab"`) || !strings.Contains(string(got), `"usage":null`) {
		t.Fatalf("completions: %v %s", err, got)
	}
	resp := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\"}}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\"}}\n\n"
	got, err = lineAnswer("/v1/responses", []byte(resp))
	if err != nil || string(got) != `{"id":"r","status":"completed"}` {
		t.Fatalf("responses: %v %s", err, got)
	}
	for _, tt := range []struct{ path, sse string }{
		{"/v1/chat/completions", strings.TrimSuffix(chat, "data: [DONE]\n\n")},
		{"/v1/chat/completions", "data: {\"error\":{\"message\":\"x\"}}\n\n"},
		{"/v1/chat/completions", "data: {x\n\n"},
		{"/v1/responses", "event: response.created\ndata: {\"type\":\"response.created\"}\n\n"},
	} {
		if _, err := lineAnswer(tt.path, []byte(tt.sse)); err == nil {
			t.Errorf("%s %q: no error", tt.path, tt.sse)
		}
	}
}

// FuzzLineAnswer: whatever a node streamed for a batch line, turning it into the line's answer
// never panics, and an answer it gives is JSON.
func FuzzLineAnswer(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"), false)
	f.Add([]byte("data: {\"type\":\"response.completed\",\"response\":{}}\n\n"), true)
	f.Fuzz(func(t *testing.T, sse []byte, responses bool) {
		path := "/v1/chat/completions"
		if responses {
			path = "/v1/responses"
		}
		if b, err := lineAnswer(path, sse); err == nil && !json.Valid(b) {
			t.Fatalf("not JSON: %s", b)
		}
	})
}
