package nodeagent

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// TestContinueRequests: each route and backend is asked to continue the partial answer in its
// own way, the output cap lowered by the tokens already sent, sampling parameters kept.
func TestContinueRequests(t *testing.T) {
	c := &agentapi.Continuation{ID: "chatcmpl-1", Created: 7, Tokens: 3, Content: "Once upon"}
	for _, tt := range []struct {
		name, route, body, want string
		ollama                  bool
	}{
		{"chat", agentapi.PathChatCompletions,
			`{"model":"m","seed":5,"temperature":0.2,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
			`{"add_generation_prompt":false,"continue_final_message":true,"max_tokens":7,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Once upon"}],"model":"m","seed":5,"temperature":0.2}`, false},
		{"completions", agentapi.PathCompletions, `{"model":"m","prompt":"Tell: ","max_tokens":2}`,
			`{"max_tokens":1,"model":"m","prompt":"Tell: Once upon"}`, false},
		{"ollama chat", agentapi.PathOllamaChat, `{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":100,"seed":1}}`,
			`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Once upon"}],"model":"m","options":{"num_predict":97,"seed":1}}`, true},
		{"ollama raw generate", agentapi.PathOllamaGenerate, `{"model":"m","raw":true,"prompt":"[s]"}`,
			`{"model":"m","prompt":"[s]Once upon","raw":true}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"herd_continue":` + mustJSON(c) + `,` + tt.body[1:]
			req, got, err := takeContinuation([]byte(body))
			if err != nil || *got != *c {
				t.Fatalf("take: %+v %v", got, err)
			}
			if tt.ollama {
				err = continueOllama(tt.route, req, got)
			} else {
				err = continueOpenAI(tt.route, req, got)
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := json.Marshal(req); string(b) != tt.want {
				t.Errorf("got  %s\nwant %s", b, tt.want)
			}
		})
	}
	for _, tt := range []struct{ name, route, body, why string }{
		{"generate with a template", agentapi.PathOllamaGenerate, `{"model":"m","prompt":"hi"}`, "only raw prompts continue"},
		{"token prompt", agentapi.PathCompletions, `{"model":"m","prompt":[1,2]}`, "not one string"},
		{"responses", agentapi.PathResponses, `{"model":"m","input":"hi"}`, "cannot be continued"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, got, _ := takeContinuation([]byte(`{"herd_continue":` + mustJSON(c) + `,` + tt.body[1:]))
			var err error
			if strings.HasPrefix(tt.route, "/api/") {
				err = continueOllama(tt.route, req, got)
			} else {
				err = continueOpenAI(tt.route, req, got)
			}
			if err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("err %v, want %q", err, tt.why)
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestContinuedAnswerFraming: the continuing node's answer keeps the stream's id, created time
// and the client's model name, and its usage counts the first node's tokens too.
func TestContinuedAnswerFraming(t *testing.T) {
	fix := continuedAnswer(&agentapi.Continuation{ID: "chatcmpl-first", Created: 100, Tokens: 4}, "my-preset")
	for _, tt := range []struct{ in, want string }{
		{`data: {"id":"chatcmpl-new","object":"chat.completion.chunk","created":200,"model":"base","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}` + "\n",
			`data: {"id":"chatcmpl-first","object":"chat.completion.chunk","created":100,"model":"my-preset","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}` + "\n"},
		{`data: {"id":"chatcmpl-new","created":200,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}` + "\n",
			`data: {"id":"chatcmpl-first","created":100,"choices":[],"usage":{"completion_tokens":7,"prompt_tokens":9,"total_tokens":16}}` + "\n"},
		{`{"model":"base","created_at":"2025-01-01T00:00:00Z","done":true,"eval_count":5,"prompt_eval_count":9}` + "\n",
			`{"model":"my-preset","created_at":"2025-01-01T00:00:00Z","done":true,"eval_count":9,"prompt_eval_count":9}` + "\n"},
		{"data: [DONE]\n", "data: [DONE]\n"},
	} {
		if got := string(fix(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

// TestContinuationThroughTheAgent: a request marked as a continuation reaches the backend
// rewritten, and its answer goes back in the client's framing; one the backend's kind cannot
// continue is refused with the reason.
func TestContinuationThroughTheAgent(t *testing.T) {
	b := &fakeBackend{}
	var got []byte
	b.setServe(func(w http.ResponseWriter, _ *http.Request, _ string, body []byte) {
		got = body
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"chatcmpl-2","created":9,"model":"llama3:latest","choices":[{"index":0,"delta":{"content":" more"}}]}`+"\n\n")
		io.WriteString(w, `data: {"id":"chatcmpl-2","created":9,"model":"llama3:latest","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`+"\n\ndata: [DONE]\n\n")
	})
	ta := newTestAgent(t, b, nil, nil)
	h := map[string]string{agentapi.HeaderContinue: "1", agentapi.HeaderModel: "llama3:latest", agentapi.HeaderClientModel: "llama3", agentapi.HeaderRequestID: "req-c"}
	resp := ta.postAs(t, agentapi.PathChatCompletions, testToken,
		`{"herd_continue":{"id":"chatcmpl-1","created":5,"tokens":2,"content":"Some"},"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}`, h)
	out, _ := io.ReadAll(resp.Body)
	want := `data: {"id":"chatcmpl-1","created":5,"model":"llama3","choices":[{"index":0,"delta":{"content":" more"}}]}` + "\n\n" +
		`data: {"id":"chatcmpl-1","created":5,"model":"llama3","choices":[],"usage":{"completion_tokens":3,"prompt_tokens":5,"total_tokens":8}}` + "\n\ndata: [DONE]\n\n"
	if resp.StatusCode != 200 || string(out) != want {
		t.Fatalf("%d\n%s\nwant\n%s", resp.StatusCode, out, want)
	}
	if !strings.Contains(string(got), `{"role":"assistant","content":"Some"}`) || strings.Contains(string(got), "herd_continue") || !strings.Contains(string(got), `"continue_final_message":true`) {
		t.Fatalf("backend got %s", got)
	}
	if logs := ta.logs.String(); !strings.Contains(logs, "continuing a broken stream") || !strings.Contains(logs, "request_id=req-c") || !strings.Contains(logs, "prefix_chars=4") {
		t.Errorf("log: %s", logs)
	}
	resp = ta.postAs(t, agentapi.PathChatCompletions, testToken,
		`{"herd_continue":{"tokens":2,"content":"","reasoning":"hmm"},"model":"llama3","stream":true,"messages":[]}`, h)
	out, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(out), "cannot_continue") || !strings.Contains(string(out), "still reasoning") {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
}

// FuzzAnswerLines feeds arbitrary backend output, cut at an arbitrary point, through the
// continued answer's line fixer: it never panics, passes every byte of a line it does not
// rewrite, and keeps a line's newline.
func FuzzAnswerLines(f *testing.F) {
	f.Add([]byte(`data: {"id":"x","created":1,"model":"m","usage":{"completion_tokens":2,"total_tokens":3}}`+"\n\n"), 10)
	f.Add([]byte(`{"model":"m","eval_count":3,"done":true}`+"\n"), 3)
	f.Add([]byte("data: {\"id\":\"\\\"\",\"model\":null}\n"), 0)
	f.Add([]byte("data: {\"usage\":{\"completion_tokens\":\"x\"}}\n"), 5)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		fix := continuedAnswer(&agentapi.Continuation{ID: "id-1", Created: 5, Tokens: 2}, "client")
		rec := httptest.NewRecorder()
		aw := &answerWriter{ResponseWriter: rec, fix: fix}
		cut = min(max(cut, 0), len(in))
		aw.Write(in[:cut])
		aw.Write(in[cut:])
		aw.finish()
		if got, want := bytes.Count(rec.Body.Bytes(), []byte("\n")), bytes.Count(in, []byte("\n")); got != want {
			t.Fatalf("%d lines out of %d: %q", got, want, rec.Body.Bytes())
		}
		rename := renameModel("client")
		for line := range bytes.Lines(in) {
			out := rename(nil, line)
			if _, _, ok := jsonLine(line); !ok && !bytes.Equal(out, line) {
				t.Fatalf("a line that is not JSON was changed: %q → %q", line, out)
			}
		}
	})
}
