package backend

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// ollamaResponsesStream is the Responses event stream Ollama writes for the chat answers given,
// made by Ollama's own converter and framed the way its middleware frames events, so the test
// sees the bytes the release in go.mod puts on the wire.
func ollamaResponsesStream(t *testing.T, chunks ...api.ChatResponse) []byte {
	t.Helper()
	c := openai.NewResponsesStreamConverter("resp_1", "msg_1", "tiny", openai.ResponsesRequest{Model: "tiny"})
	var b bytes.Buffer
	for _, ch := range chunks {
		for _, ev := range c.Process(ch) {
			d, err := json.Marshal(ev.Data)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", ev.Event, d)
		}
	}
	return b.Bytes()
}

// completedOutput is the raw "output" of the stream's response.completed event.
func completedOutput(t *testing.T, stream string) string {
	t.Helper()
	for line := range strings.SplitSeq(stream, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || !strings.Contains(data, `"response.completed"`) {
			continue
		}
		var ev struct {
			Response struct {
				Output json.RawMessage `json:"output"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("completed event: %v: %s", err, data)
		}
		return string(ev.Response.Output)
	}
	t.Fatalf("no response.completed event in %q", stream)
	return ""
}

func TestOllamaResponsesStreamMended(t *testing.T) {
	said := []api.ChatResponse{
		{Model: "tiny", Message: api.Message{Role: "assistant", Content: "Hello"}},
		{Model: "tiny", Message: api.Message{Role: "assistant", Content: " there"}},
		{Model: "tiny", Message: api.Message{Role: "assistant"}, Done: true, DoneReason: "stop",
			Metrics: api.Metrics{PromptEvalCount: 3, EvalCount: 2}},
	}
	silent := []api.ChatResponse{
		{Model: "tiny", Message: api.Message{Role: "assistant"}, Done: true, DoneReason: "stop",
			Metrics: api.Metrics{PromptEvalCount: 3}},
	}
	empty := ollamaResponsesStream(t, silent...)
	if completedOutput(t, string(empty)) != "null" {
		t.Logf("Ollama's own stream no longer ends a silent reply with output null; the mend is now a no-op")
	}
	tests := []struct {
		name       string
		stream     []byte
		wantOutput string
		unchanged  bool
	}{
		{"a reply passes unchanged", ollamaResponsesStream(t, said...), "", true},
		{"a silent reply gets an output array", empty, "[]", false},
	}
	for _, tt := range tests {
		// Every split of the stream into two writes: a line cut anywhere is still mended whole.
		for _, cut := range []int{1, 7, len(tt.stream) / 2, len(tt.stream) - 3} {
			t.Run(fmt.Sprintf("%s/cut %d", tt.name, cut), func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					fl := w.(http.Flusher)
					_, _ = w.Write(tt.stream[:cut])
					fl.Flush()
					_, _ = w.Write(tt.stream[cut:])
					fl.Flush()
				}))
				defer srv.Close()
				o := newOllama(t, srv.URL, t.TempDir())
				body := `{"model":"tiny","input":"hi","stream":true}`
				rec := newFlushRecorder()
				o.ServeInference(rec, agentRequest(t, agentapi.PathResponses, body), agentapi.PathResponses, []byte(body))
				got := rec.body()
				if tt.unchanged {
					if got != string(tt.stream) {
						t.Fatalf("stream changed on the way:\n got %q\nwant %q", got, tt.stream)
					}
					return
				}
				if out := completedOutput(t, got); out != tt.wantOutput {
					t.Fatalf("completed output %s, want %s", out, tt.wantOutput)
				}
				// Every other line is byte for byte Ollama's.
				gl, wl := strings.Split(got, "\n"), strings.Split(string(tt.stream), "\n")
				if len(gl) != len(wl) {
					t.Fatalf("%d lines, want %d", len(gl), len(wl))
				}
				for i := range gl {
					if gl[i] != wl[i] && !strings.Contains(wl[i], `"response.completed"`) {
						t.Errorf("line %d changed: %q, was %q", i, gl[i], wl[i])
					}
				}
			})
		}
	}
}

func TestMendDataLine(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"null output", `data: {"response":{"id":"r","output":null},"type":"response.completed"}` + "\n",
			`data: {"response":{"id":"r","output":[]},"type":"response.completed"}` + "\n"},
		{"no space, CRLF", `data:{"response":{"output":null}}` + "\r\n", `data: {"response":{"output":[]}}` + "\r\n"},
		{"array kept", `data: {"response":{"output":[]}}` + "\n", `data: {"response":{"output":[]}}` + "\n"},
		{"null output nested elsewhere", `data: {"item":{"output":null}}` + "\n", `data: {"item":{"output":null}}` + "\n"},
		{"not data", `event: response.completed` + "\n", `event: response.completed` + "\n"},
		{"broken JSON", `data: {"response":{"output":null}` + "\n", `data: {"response":{"output":null}` + "\n"},
		{"text mentioning it", `data: {"delta":"\"output\":null"}` + "\n", `data: {"delta":"\"output\":null"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(mendLines([]byte(tt.in))); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzMendLines(f *testing.F) {
	f.Add([]byte(`data: {"response":{"output":null}}` + "\n\n"))
	f.Add([]byte("event: x\ndata: {\"a\":1}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := mendLines(in)
		if !bytes.Contains(in, nullOutput) && !bytes.Equal(out, in) {
			t.Fatalf("a stream without a null output changed: %q -> %q", in, out)
		}
		if bytes.Count(out, []byte("\n")) != bytes.Count(in, []byte("\n")) {
			t.Fatalf("line count changed: %q -> %q", in, out)
		}
	})
}
