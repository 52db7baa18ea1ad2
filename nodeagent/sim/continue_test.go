package sim

import (
	"context"
	"strings"
	"testing"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// TestContinuationDependsOnThePrefix: asked to continue a trailing assistant message
// (continue_final_message, as vLLM), the simulator goes on from that text: a different prefix
// gives a different continuation (so "restart and skip N words" cannot pass for one), the same
// prefix the same one, and the first word is spaced from the prefix.
func TestContinuationDependsOnThePrefix(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	cont := func(prefix string) string {
		body := map[string]any{"model": "llama3.2:1b", "max_tokens": 8, "seed": 3,
			"continue_final_message": true, "add_generation_prompt": false,
			"messages": []map[string]any{{"role": "user", "content": "tell me"}, {"role": "assistant", "content": prefix}}}
		w := call(context.Background(), n, agentapi.PathChatCompletions, body)
		if w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		c := decodeJSON[chatCompletion](t, w.Body.Bytes())
		return *c.Choices[0].Message.Content
	}
	a, b, a2 := cont("Once upon a"), cont("Once upon the"), cont("Once upon a")
	if a == b || a != a2 {
		t.Fatalf("continuations of different prefixes %q and %q; again %q", a, b, a2)
	}
	if !strings.HasPrefix(a, " ") {
		t.Fatalf("continuation %q is not spaced from its prefix", a)
	}
	fresh := call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "tell me", map[string]any{"max_tokens": 8, "seed": 3}))
	if strings.Contains(fresh.Body.String(), a) {
		t.Fatalf("the continuation is the fresh answer's text: %s", fresh.Body)
	}
	for _, bad := range []map[string]any{
		{"model": "llama3.2:1b", "continue_final_message": true, "add_generation_prompt": false, "messages": []map[string]any{{"role": "user", "content": "x"}}},
		{"model": "llama3.2:1b", "continue_final_message": true, "messages": []map[string]any{{"role": "assistant", "content": "x"}}},
	} {
		if w := call(context.Background(), n, agentapi.PathChatCompletions, bad); w.Code != 400 {
			t.Errorf("%v: %d %s", bad, w.Code, w.Body)
		}
	}
}
