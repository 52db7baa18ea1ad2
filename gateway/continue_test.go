package gateway

import (
	"strings"
	"testing"
)

// TestReadPartial reads what a client has of a broken stream, on both wires, and says why one
// cannot be continued.
func TestReadPartial(t *testing.T) {
	for _, tt := range []struct {
		name, kept, content, reasoning, why string
		fr                                  framing
		finished                            bool
	}{
		{"chat", "data: {\"id\":\"c1\",\"created\":3,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\",\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
			"Hello", "hm", "", frameSSE, false},
		{"completion", "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"text\":\"ab\",\"finish_reason\":null}]}\n\n", "ab", "", "", frameSSE, false},
		{"finished", "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n", "", "", "", frameSSE, true},
		{"tool call", "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n", "", "", "a tool call was under way", frameSSE, false},
		{"n > 1", "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"}}]}\n\n", "", "", "several choices", frameSSE, false},
		{"ollama chat", "{\"message\":{\"role\":\"assistant\",\"content\":\"a\",\"thinking\":\"t\"},\"done\":false}\n{\"message\":{\"content\":\"b\"},\"done\":false}\n", "ab", "t", "", frameNDJSON, false},
		{"ollama generate", "{\"response\":\"a\",\"done\":false}\n{\"response\":\"\",\"done\":true}\n", "a", "", "", frameNDJSON, true},
		{"not JSON", "data: {oops\n\n", "", "", "not JSON", frameSSE, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, why := readPartial(tt.fr, []byte(tt.kept))
			if tt.why != "" {
				if !strings.Contains(why, tt.why) {
					t.Fatalf("why %q, want %q", why, tt.why)
				}
				return
			}
			if why != "" || p.content.String() != tt.content || p.reasoning.String() != tt.reasoning || p.finished != tt.finished {
				t.Fatalf("why %q content %q reasoning %q finished %v", why, p.content.String(), p.reasoning.String(), p.finished)
			}
		})
	}
}

// FuzzReadPartial: whatever a backend streamed, reading it for a continuation never panics.
func FuzzReadPartial(f *testing.F) {
	f.Add([]byte("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"), true)
	f.Add([]byte("{\"message\":{\"content\":\"x\"},\"done\":false}\n"), false)
	f.Add([]byte("event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\"}}\n\n"), true)
	f.Fuzz(func(t *testing.T, kept []byte, sse bool) {
		fr := frameNDJSON
		if sse {
			fr = frameSSE
		}
		readPartial(fr, kept)
		errorEvent(kept, fr)
		readResponsesPartial(kept, 0)
		responsesErrorEvent(kept)
	})
}

// TestContinueBody puts the continuation first in the client's body, which is otherwise kept.
func TestContinueBody(t *testing.T) {
	k := &call{}
	k.body = []byte(` {"model":"m","stream":true} `)
	p := &partial{id: "c1", created: 4}
	p.content.WriteString("Hi \"you\"")
	k.mt.textEvents = 3
	got := string(k.continueBody(p))
	want := `{"herd_continue":{"id":"c1","created":4,"tokens":3,"content":"Hi \"you\""},"model":"m","stream":true}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	k.body = []byte(`{}`)
	if got := string(k.continueBody(p)); !strings.HasSuffix(got, `"}}`) || strings.Contains(got, ",}") {
		t.Fatalf("empty body: %s", got)
	}
}

// TestReadResponsesPartial reads the state a Responses stream's client has: the response's id,
// created_at and model, the next sequence number, the items with their text, and why one
// cannot be continued.
func TestReadResponsesPartial(t *testing.T) {
	ev := func(typ, data string) string {
		return "event: " + typ + "\ndata: " + data + "\n\n"
	}
	head := ev("response.created", `{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","created_at":42,"model":"m","error":null}}`) +
		ev("response.in_progress", `{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","created_at":42,"model":"m"}}`)
	reasoning := ev("response.output_item.added", `{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning"}}`) +
		ev("response.reasoning_text.delta", `{"type":"response.reasoning_text.delta","sequence_number":3,"item_id":"rs_1","output_index":0,"content_index":0,"delta":"hm"}`) +
		ev("response.output_item.done", `{"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":{"id":"rs_1","type":"reasoning"}}`)
	msg := ev("response.output_item.added", `{"type":"response.output_item.added","sequence_number":5,"output_index":1,"item":{"id":"msg_1","type":"message"}}`) +
		ev("response.content_part.added", `{"type":"response.content_part.added","sequence_number":6,"item_id":"msg_1","output_index":1,"content_index":0}`) +
		ev("response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hel"}`) +
		ev("response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":8,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"lo"}`)

	p, why := readResponsesPartial([]byte(head+reasoning+msg), 9)
	if why != "" || p.id != "resp_1" || p.created != 42 || p.content.String() != "Hello" || p.reasoning.String() != "hm" || p.tokens != 3 {
		t.Fatalf("why %q, %+v", why, p)
	}
	st := p.resp
	if st.Seq != 9 || st.Model != "m" || len(st.Items) != 2 || st.Items[0].Open || !st.Items[1].Open || !st.Items[1].PartOpen || st.Items[1].Text != "Hello" {
		t.Fatalf("state %+v", st)
	}
	done := ev("response.completed", `{"type":"response.completed","sequence_number":9,"response":{"id":"resp_1"}}`)
	if p, why := readResponsesPartial([]byte(head+msg+done), 10); why != "" || !p.finished {
		t.Fatalf("completed: why %q finished %v", why, p.finished)
	}
	for _, tt := range []struct{ name, kept, why string }{
		{"function call", head + ev("response.output_item.added", `{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"fc_1","type":"function_call"}}`), "function_call item"},
		{"no created", msg, "no response.created"},
		{"closed message", head + msg + ev("response.output_item.done", `{"type":"response.output_item.done","sequence_number":9,"output_index":1,"item":{"id":"msg_1","type":"message"}}`), "did not follow"},
		{"summary", head + ev("response.reasoning_summary_text.delta", `{"type":"response.reasoning_summary_text.delta","sequence_number":2}`), "summary"},
		{"not JSON", "data: {x\n\n", "not JSON"},
	} {
		if _, why := readResponsesPartial([]byte(tt.kept), 3); !strings.Contains(why, tt.why) {
			t.Errorf("%s: why %q, want %q", tt.name, why, tt.why)
		}
	}
}

// TestResponsesErrorEvent finds the event a Responses stream's failure starts with.
func TestResponsesErrorEvent(t *testing.T) {
	ok := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"error\":null}}\n\n"
	bad := "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\"}\n\n" +
		"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"boom\"}}}\n\n"
	if at, msg := responsesErrorEvent([]byte(ok + bad)); at != len(ok) || !strings.Contains(msg, "boom") {
		t.Fatalf("at %d msg %q", at, msg)
	}
	cut := "data: {\"error\":{\"message\":\"the ollama backend stream broke\",\"type\":\"server_error\"}}\n\n"
	if at, msg := responsesErrorEvent([]byte(ok + cut)); at != len(ok) || !strings.Contains(msg, "stream broke") {
		t.Fatalf("proxy's error: at %d msg %q", at, msg)
	}
	if at, _ := responsesErrorEvent([]byte(ok)); at != -1 {
		t.Fatalf("no error: at %d", at)
	}
	if !endsResponses([]byte("event: response.completed\ndata: {}\n\n")) || endsResponses([]byte(ok)) {
		t.Fatal("endsResponses")
	}
}
