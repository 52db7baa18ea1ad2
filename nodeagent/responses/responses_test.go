package responses

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	oairesponses "github.com/openai/openai-go/v3/responses"

	"github.com/herd-llm/herd/internal/golden"
)

var fixedNow = func() time.Time { return time.Unix(1764000000, 0) }

// chatSSE is a chat completions stream as a backend writes it, one event per write.
func chatSSE(chunks ...string) []string {
	out := make([]string, 0, len(chunks)+1)
	for _, c := range chunks {
		out = append(out, "data: "+c+"\n\n")
	}
	return append(out, "data: [DONE]\n\n")
}

// flushRecorder counts flushes.
type flushRecorder struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushRecorder) Flush() { f.flushes++; f.ResponseRecorder.Flush() }

// translate runs a backend's answer (status, content type, writes) through a Writer for body.
func translate(t *testing.T, body string, status int, contentType string, writes []string) *flushRecorder {
	t.Helper()
	_, req, e := ToChat([]byte(body))
	if e != nil {
		t.Fatalf("ToChat: %v", e)
	}
	rec := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
	w := NewWriter(rec, req, Options{ID: "resp_0123456789abcdef", Now: fixedNow})
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", "999")
	w.Header().Set("X-Herd-Simulated", "true")
	w.WriteHeader(status)
	for _, s := range writes {
		// Cut each write in two, as a network read may.
		half := len(s) / 2
		w.Write([]byte(s[:half]))
		w.Write([]byte(s[half:]))
		w.Flush()
	}
	w.Finish()
	return rec
}

// events parses an SSE body into (event name, data object) pairs and checks the framing.
func events(t *testing.T, body string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		lines := strings.Split(ev, "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "event: ") || !strings.HasPrefix(lines[1], "data: ") {
			t.Fatalf("malformed event %q", ev)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &m); err != nil {
			t.Fatalf("event data %q: %v", lines[1], err)
		}
		if m["type"] != strings.TrimPrefix(lines[0], "event: ") {
			t.Fatalf("event %q carries type %v", lines[0], m["type"])
		}
		out = append(out, m)
	}
	for i, m := range out {
		if m["sequence_number"] != float64(i) {
			t.Fatalf("event %d (%v) has sequence_number %v", i, m["type"], m["sequence_number"])
		}
	}
	return out
}

func types(evs []map[string]any) string {
	var s []string
	for _, e := range evs {
		s = append(s, e["type"].(string))
	}
	return strings.Join(s, "\n")
}

func TestStreamText(t *testing.T) {
	rec := translate(t, `{"model":"llama3.2:1b","input":"Count to three","stream":true,"instructions":"Be brief.","max_output_tokens":16}`,
		200, "text/event-stream", chatSSE(
			`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764000001,"model":"llama3.2:1b","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
			`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764000001,"model":"llama3.2:1b","choices":[{"index":0,"delta":{"content":"One,"},"finish_reason":null}]}`,
			`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764000001,"model":"llama3.2:1b","choices":[{"index":0,"delta":{"content":" two, three."},"finish_reason":null}]}`,
			`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764000001,"model":"llama3.2:1b","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764000001,"model":"llama3.2:1b","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}`,
		))
	if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" || rec.Header().Get("Content-Length") != "" || rec.Header().Get("X-Herd-Simulated") != "true" {
		t.Errorf("headers %v", rec.Header())
	}
	if rec.flushes == 0 {
		t.Error("no flush reached the client")
	}
	golden.Check(t, "testdata/stream_text.sse", rec.Body.Bytes())
	evs := events(t, rec.Body.String())
	want := strings.Join([]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
		"response.output_item.done", "response.completed"}, "\n")
	if got := types(evs); got != want {
		t.Fatalf("event sequence:\n%s\nwant:\n%s", got, want)
	}
	last := evs[len(evs)-1]["response"].(map[string]any)
	usage := last["usage"].(map[string]any)
	if last["status"] != "completed" || usage["input_tokens"] != 12.0 || usage["output_tokens"] != 6.0 || last["instructions"] != "Be brief." {
		t.Errorf("final response %v", last)
	}
}

func TestStreamToolCalls(t *testing.T) {
	rec := translate(t, `{"model":"qwen2.5:7b","input":[{"role":"user","content":"Weather in Paris and Rome?"}],"stream":true,
		"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}`,
		200, "text/event-stream; charset=utf-8", chatSSE(
			`{"created":1764000002,"choices":[{"index":0,"delta":{"role":"assistant","content":"Checking."}}]}`,
			`{"created":1764000002,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}`,
			`{"created":1764000002,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}`,
			`{"created":1764000002,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}`,
			`{"created":1764000002,"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]}}]}`,
			`{"created":1764000002,"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":40,"completion_tokens":20,"total_tokens":60}}`,
		))
	golden.Check(t, "testdata/stream_tools.sse", rec.Body.Bytes())
	evs := events(t, rec.Body.String())
	want := strings.Join([]string{"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.completed"}, "\n")
	if got := types(evs); got != want {
		t.Fatalf("event sequence:\n%s\nwant:\n%s", got, want)
	}
	out := evs[len(evs)-1]["response"].(map[string]any)["output"].([]any)
	if len(out) != 3 {
		t.Fatalf("output %v", out)
	}
	fc := out[1].(map[string]any)
	if fc["type"] != "function_call" || fc["call_id"] != "call_a" || fc["name"] != "get_weather" || fc["arguments"] != `{"city":"Paris"}` {
		t.Errorf("first call %v", fc)
	}
}

func TestStreamLengthIsIncomplete(t *testing.T) {
	rec := translate(t, `{"model":"m","input":"hi","stream":true,"max_output_tokens":1}`, 200, "text/event-stream", chatSSE(
		`{"created":1764000003,"choices":[{"index":0,"delta":{"content":"Hel"}}]}`,
		`{"created":1764000003,"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`,
	))
	golden.Check(t, "testdata/stream_incomplete.sse", rec.Body.Bytes())
	evs := events(t, rec.Body.String())
	last := evs[len(evs)-1]
	resp := last["response"].(map[string]any)
	if last["type"] != "response.incomplete" || resp["status"] != "incomplete" ||
		resp["incomplete_details"].(map[string]any)["reason"] != "max_output_tokens" {
		t.Errorf("last event %v", last)
	}
}

func TestStreamBackendError(t *testing.T) {
	// The agent's stream guard ends a broken backend stream with an OpenAI error event.
	rec := translate(t, `{"model":"m","input":"hi","stream":true}`, 200, "text/event-stream", []string{
		"data: " + `{"created":1764000004,"choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n",
		"\n\ndata: " + `{"error":{"message":"the sim backend stream broke: read: connection reset","type":"server_error","param":null,"code":"backend_stream_error"}}` + "\n\n",
	})
	golden.Check(t, "testdata/stream_error.sse", rec.Body.Bytes())
	evs := events(t, rec.Body.String())
	n := len(evs)
	if evs[n-2]["type"] != "error" || evs[n-2]["code"] != "backend_stream_error" || evs[n-1]["type"] != "response.failed" {
		t.Errorf("stream ends with %v, %v", evs[n-2], evs[n-1])
	}
}

func TestNonStream(t *testing.T) {
	rec := translate(t, `{"model":"llama3.2:1b","input":"Say hello","metadata":{"k":"v"}}`, 200, "application/json", []string{
		`{"id":"chatcmpl-9","object":"chat.completion","created":1764000005,"model":"llama3.2:1b","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`,
	})
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Content-Length") != itoa(rec.Body.Len()) {
		t.Errorf("status %d headers %v", rec.Code, rec.Header())
	}
	golden.Check(t, "testdata/nonstream.json", rec.Body.Bytes())
	var r map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	msg := r["output"].([]any)[0].(map[string]any)
	text := msg["content"].([]any)[0].(map[string]any)["text"]
	if r["object"] != "response" || r["status"] != "completed" || text != "Hello!" || r["store"] != false {
		t.Errorf("response %v", r)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestErrorPassesThrough(t *testing.T) {
	body := `{"error":{"message":"The model ` + "`x`" + ` does not exist.","type":"invalid_request_error","param":"model","code":"model_not_found"}}`
	rec := translate(t, `{"model":"x","input":"hi","stream":true}`, 404, "application/json", []string{body})
	if rec.Code != 404 || rec.Body.String() != body || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("got %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
}

func TestToChat(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
	}{
		{"string input", `{"model":"m","input":"hi","instructions":"Be brief.","max_output_tokens":5,"temperature":0.5}`,
			`{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}],"max_tokens":5,"temperature":0.5}`},
		{"stream", `{"model":"m","input":"hi","stream":true}`,
			`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{"items and tools", `{"model":"m","input":[
			{"type":"message","role":"developer","content":"Use tools."},
			{"role":"user","content":[{"type":"input_text","text":"Weather "},{"type":"input_text","text":"in Paris?"}]},
			{"type":"function_call","call_id":"c1","name":"w","arguments":"{\"city\":\"Paris\"}"},
			{"type":"function_call","call_id":"c2","name":"w","arguments":"{}"},
			{"type":"function_call_output","call_id":"c1","output":"sunny"},
			{"type":"reasoning","id":"rs_1","summary":[]},
			{"role":"assistant","content":[{"type":"output_text","text":"Sunny."}]}],
			"tools":[{"type":"function","name":"w","description":"weather","parameters":{"type":"object"},"strict":true}],
			"tool_choice":{"type":"function","name":"w"},"parallel_tool_calls":false,
			"text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}},"reasoning":{"effort":"low"}}`,
			`{"model":"m","messages":[{"role":"system","content":"Use tools."},{"role":"user","content":"Weather in Paris?"},` +
				`{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}},{"id":"c2","type":"function","function":{"name":"w","arguments":"{}"}}]},` +
				`{"role":"tool","content":"sunny","tool_call_id":"c1"},{"role":"assistant","content":"Sunny."}],` +
				`"tools":[{"type":"function","function":{"name":"w","description":"weather","parameters":{"type":"object"},"strict":true}}],` +
				`"tool_choice":{"function":{"name":"w"},"type":"function"},"parallel_tool_calls":false,` +
				`"response_format":{"json_schema":{"name":"out","schema":{"type":"object"},"strict":true},"type":"json_schema"},"reasoning_effort":"low"}`},
		{"image", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"What is it?"},{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"What is it?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"auto"}}]}]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, _, e := ToChat([]byte(tt.in))
			if e != nil {
				t.Fatal(e)
			}
			if string(got) != tt.want {
				t.Errorf("ToChat\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestToChatRefuses(t *testing.T) {
	for _, tt := range []struct{ in, param string }{
		{`{"input":"hi"}`, "model"},
		{`{"model":"m"}`, "input"},
		{`{"model":"m","input":"hi","previous_response_id":"resp_1"}`, "previous_response_id"},
		{`{"model":"m","input":"hi","background":true}`, "background"},
		{`{"model":"m","input":"hi","conversation":"conv_1"}`, "conversation"},
		{`{"model":"m","input":"hi","tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}`, "input[0].content[0].type"},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]}`, "input[0].content[0].image_url"},
		{`{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "input[0]"},
		{`{"model":"m","input":[{"role":"wizard","content":"hi"}]}`, "input[0].role"},
		{`{"model":"m","input":3}`, "input"},
		{`{"model":"m","input":"hi","tool_choice":"sometimes"}`, "tool_choice"},
		{`{"model":"m","input":"hi","text":{"format":{"type":"yaml"}}}`, "text.format.type"},
		{`not json`, ""},
	} {
		_, _, e := ToChat([]byte(tt.in))
		if e == nil || e.Status != http.StatusBadRequest || e.Param != tt.param || e.Message == "" {
			t.Errorf("ToChat(%s) = %+v, want a 400 on %q", tt.in, e, tt.param)
		}
	}
}

// FuzzToChat: any body is translated into a chat request that is valid JSON with the model and
// at least one message, or refused with a 400.
func FuzzToChat(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi"}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]},{"type":"function_call","call_id":"c","name":"n","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"o"}]}]}`,
		`{"model":"m","input":"hi","tools":[{"type":"function","name":"f"}],"tool_choice":"auto","text":{"format":{"type":"json_object"}}}`,
		`{"model":"m","instructions":null,"input":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		chat, req, e := ToChat(body)
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Message == "" {
				t.Fatalf("error %+v", e)
			}
			return
		}
		var c struct {
			Model    string            `json:"model"`
			Messages []json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(chat, &c); err != nil || c.Model == "" || c.Model != req.Model || len(c.Messages) == 0 {
			t.Fatalf("ToChat(%q) = %s (%v)", body, chat, err)
		}
	})
}

// FuzzWriter: whatever a backend streams, the client gets well-formed events with consecutive
// sequence numbers, ending with exactly one terminal event.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"arguments\":\"{\"}}]}}]}\n\n"))
	f.Add([]byte("data: {\"error\":\"boom\"}\n\n"))
	f.Add([]byte("data: not json\n\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		_, req, _ := ToChat([]byte(`{"model":"m","input":"hi","stream":true}`))
		rec := httptest.NewRecorder()
		w := NewWriter(rec, req, Options{ID: "resp_x", Now: fixedNow})
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.Write(stream)
		w.Finish()
		evs := events(t, rec.Body.String())
		terminal := 0
		for _, e := range evs {
			switch e["type"] {
			case "response.completed", "response.incomplete", "response.failed":
				terminal++
			}
		}
		if terminal != 1 || evs[0]["type"] != "response.created" {
			t.Fatalf("stream %q gave %d terminal events:\n%s", stream, terminal, types(evs))
		}
	})
}

func TestStreamReasoning(t *testing.T) {
	// llama.cpp's server names the field reasoning_content, Ollama and newer vLLM reasoning.
	for _, field := range []string{"reasoning_content", "reasoning"} {
		t.Run(field, func(t *testing.T) {
			rec := translate(t, `{"model":"qwen3:8b","input":"2+2?","stream":true,"reasoning":{"effort":"low"}}`, 200, "text/event-stream", chatSSE(
				`{"created":1764000006,"choices":[{"index":0,"delta":{"role":"assistant","content":"","`+field+`":"Two plus"}}]}`,
				`{"created":1764000006,"choices":[{"index":0,"delta":{"`+field+`":" two is four."}}]}`,
				`{"created":1764000006,"choices":[{"index":0,"delta":{"content":"4"}}]}`,
				`{"created":1764000006,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14,"completion_tokens_details":{"reasoning_tokens":7}}}`,
			))
			golden.Check(t, "testdata/stream_reasoning.sse", rec.Body.Bytes())
			evs := events(t, rec.Body.String())
			want := strings.Join([]string{"response.created", "response.in_progress",
				"response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
				"response.reasoning_text.done", "response.output_item.done",
				"response.output_item.added", "response.content_part.added", "response.output_text.delta",
				"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}, "\n")
			if got := types(evs); got != want {
				t.Fatalf("event sequence:\n%s\nwant:\n%s", got, want)
			}
			if d := evs[6]["item"].(map[string]any); d["type"] != "reasoning" || d["id"] != evs[3]["item_id"] {
				t.Errorf("reasoning item %v", d)
			}
			resp := evs[len(evs)-1]["response"].(map[string]any)
			out := resp["output"].([]any)
			rs := out[0].(map[string]any)
			part := rs["content"].([]any)[0].(map[string]any)
			if len(out) != 2 || rs["type"] != "reasoning" || part["type"] != "reasoning_text" || part["text"] != "Two plus two is four." ||
				len(rs["summary"].([]any)) != 0 || out[1].(map[string]any)["type"] != "message" {
				t.Errorf("output %v", out)
			}
			if u := resp["usage"].(map[string]any); u["output_tokens_details"].(map[string]any)["reasoning_tokens"] != 7.0 {
				t.Errorf("usage %v", u)
			}
		})
	}
}

func TestNonStreamReasoning(t *testing.T) {
	rec := translate(t, `{"model":"qwen3:8b","input":"2+2?"}`, 200, "application/json", []string{
		`{"created":1764000007,"choices":[{"index":0,"message":{"role":"assistant","content":"4","reasoning_content":"Two plus two is four."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}`,
	})
	golden.Check(t, "testdata/nonstream_reasoning.json", rec.Body.Bytes())
	var r struct {
		Output []struct {
			Type    string `json:"type"`
			Content []struct {
				Type, Text string
			} `json:"content"`
		} `json:"output"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Output) != 2 || r.Output[0].Type != "reasoning" || r.Output[0].Content[0].Text != "Two plus two is four." ||
		r.Output[1].Type != "message" || r.Output[1].Content[0].Text != "4" {
		t.Errorf("output %+v", r.Output)
	}
}

// TestReasoningReadByOpenAIGo reads the translated reasoning stream with the official Go SDK's
// own types: the events it names are the ones its union knows, and the final response's
// reasoning item carries the text.
func TestReasoningReadByOpenAIGo(t *testing.T) {
	body, err := os.ReadFile("testdata/stream_reasoning.sse")
	if err != nil {
		t.Fatal(err)
	}
	var deltas string
	var final oairesponses.Response
	for _, ev := range events(t, string(body)) {
		raw, _ := json.Marshal(ev)
		var u oairesponses.ResponseStreamEventUnion
		if err := json.Unmarshal(raw, &u); err != nil {
			t.Fatalf("SDK cannot read %s: %v", raw, err)
		}
		switch v := u.AsAny().(type) {
		case oairesponses.ResponseReasoningTextDeltaEvent:
			deltas += v.Delta
		case oairesponses.ResponseCompletedEvent:
			final = v.Response
		case nil:
			t.Errorf("the SDK does not know event %s", ev["type"])
		}
	}
	if deltas != "Two plus two is four." || final.OutputText() != "4" {
		t.Fatalf("deltas %q, output text %q", deltas, final.OutputText())
	}
	rs := final.Output[0].AsReasoning()
	if rs.ID == "" || len(rs.Content) != 1 || rs.Content[0].Text != "Two plus two is four." {
		t.Errorf("reasoning item %+v", rs)
	}
}
