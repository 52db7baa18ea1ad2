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
	f.Fuzz(func(t *testing.T, kept []byte, sse bool) {
		fr := frameNDJSON
		if sse {
			fr = frameSSE
		}
		readPartial(fr, kept)
		errorEvent(kept, fr)
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
