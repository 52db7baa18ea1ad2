package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/openaierr"
)

var fuzzEndpoints = []string{agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathEmbeddings}

func fuzzSeeds(f *testing.F) {
	for _, s := range []struct {
		ep   uint8
		body string
	}{
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":3}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"assistant","content":null},{"role":"tool","content":"r"}],"max_completion_tokens":2,"seed":-5}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}],"max_tokens":1000000000}`},
		{0, `{"model":"","messages":[]}`},
		{0, `{"model":1}`},
		{0, `null`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":{"x":1}}]}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"top_p":1,"stop":["a"],"logit_bias":{"1":2},"presence_penalty":-1}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer","minimum":1}},"required":["a"]}}}],"tool_choice":"required","stream":true}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"1"}],"tools":[{"type":"function","function":{"name":"f"}}]}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"array","items":{"enum":[1,"a"]}}}}}`},
		{0, `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"},"max_tokens":2}`},
		{1, `{"model":"llama3.2:1b","prompt":"once","max_tokens":4}`},
		{1, `{"model":"llama3.2:1b","prompt":[1,2,3]}`},
		{1, `{"model":"llama3.2:1b","prompt":[[1,2,3]],"stream":true}`},
		{1, `{"model":"llama3.2:1b","prompt":[]}`},
		{2, `{"model":"all-minilm","input":["a","b"],"encoding_format":"base64"}`},
		{2, `{"model":"all-minilm","input":[[1],[2,3]],"dimensions":3}`},
		{2, `{"model":"all-minilm","input":[[]]}`},
		{2, `{"model":"all-minilm","input":""}`},
		{3, `{}`},
	} {
		f.Add(s.ep, []byte(s.body))
	}
}

// FuzzParseRequest: any body either parses into a usable request or yields a 4xx OpenAI error.
func FuzzParseRequest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, ep uint8, body []byte) {
		endpoint := "/v1/unknown"
		if int(ep) < len(fuzzEndpoints) {
			endpoint = fuzzEndpoints[ep]
		}
		req, e := parseRequest(endpoint, body)
		if e != nil {
			if req != nil {
				t.Fatal("request and error")
			}
			if e.Status != http.StatusBadRequest && e.Status != http.StatusNotFound {
				t.Fatalf("status %d", e.Status)
			}
			b, err := json.Marshal(e.Body())
			if err != nil || e.Message == "" || e.Type != openaierr.TypeInvalidRequest || !json.Valid(b) {
				t.Fatalf("bad error %+v: %v", e, err)
			}
			return
		}
		if strings.TrimSpace(req.model) == "" || req.maxTokens < 0 || req.dimensions < 0 {
			t.Fatalf("accepted %+v", req)
		}
		switch endpoint {
		case agentapi.PathChatCompletions:
			if req.prompt == "" || req.promptTokens < 1 || req.wantsEmbedding {
				t.Fatalf("chat request %+v", req)
			}
		case agentapi.PathCompletions:
			if req.promptTokens < 1 || req.wantsEmbedding {
				t.Fatalf("completion request %+v", req)
			}
		case agentapi.PathEmbeddings:
			if !req.wantsEmbedding || len(req.inputs) == 0 || len(req.inputs) != len(req.inputTokens) || len(req.inputs) > maxEmbeddingInputs {
				t.Fatalf("embedding request %+v", req)
			}
			for _, c := range req.inputTokens {
				if c < 1 {
					t.Fatalf("empty input accepted: %+v", req)
				}
			}
		default:
			t.Fatalf("unknown endpoint %s accepted", endpoint)
		}
	})
}

// FuzzServeInference: whatever the body, the node answers with a well-formed response (JSON, or
// an SSE stream ending in [DONE]) or an OpenAI-shaped error, and leaves no slot taken.
func FuzzServeInference(f *testing.F) {
	fuzzSeeds(f)
	n, err := New(Config{GPUs: []models.GPUProfile{mustGPU("t4")}, Clock: newAutoClock(), ContextLength: 512,
		Models: []string{"llama3.2:1b", "all-minilm"}, Preload: []string{"llama3.2:1b", "all-minilm"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ep uint8, body []byte) {
		endpoint := "/v1/unknown"
		if int(ep) < len(fuzzEndpoints) {
			endpoint = fuzzEndpoints[ep]
		}
		w := call(context.Background(), n, endpoint, body)
		if w.Header().Get(agentapi.HeaderSimulated) != "true" {
			t.Fatal("no simulated header")
		}
		out := w.Body.Bytes()
		switch {
		case w.Code != http.StatusOK:
			var e agentapi.ErrorBody
			if err := json.Unmarshal(out, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Fatalf("status %d body %q", w.Code, out)
			}
		case w.Header().Get("Content-Type") == "text/event-stream":
			events := bytes.Split(bytes.TrimSuffix(out, []byte("\n\n")), []byte("\n\n"))
			if string(events[len(events)-1]) != "data: [DONE]" {
				t.Fatalf("stream does not end in [DONE]: %q", out)
			}
			for _, ev := range events[:len(events)-1] {
				if !bytes.HasPrefix(ev, []byte("data: ")) || !json.Valid(ev[len("data: "):]) {
					t.Fatalf("bad event %q", ev)
				}
			}
		default:
			if !json.Valid(out) {
				t.Fatalf("invalid JSON %q", out)
			}
		}
		if in, q := n.InFlight(); in != 0 || q != 0 {
			t.Fatalf("in flight %d queued %d", in, q)
		}
	})
}

func mustGPU(key string) models.GPUProfile {
	p, _ := models.LookupGPU(key)
	return p
}
