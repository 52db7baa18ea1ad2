package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// TestPrefixRouting sends two users of one long system prompt (a preset's) through the gateway:
// the second goes where the first went, because the prefix index knows that node's engine holds
// the system prompt, and POST /admin/v1/explain shows the match per candidate.
func TestPrefixRouting(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.AdminKeys = []string{testAdminKey} })
	agents := map[string]*wireAgent{}
	for _, id := range []string{"n1", "n2", "n3"} {
		agents[id] = newWireAgent(t, id, wireOK)
		g.beat(id, agents[id].srv.URL, 4, testModel)
	}
	sys := strings.Repeat("You answer questions about the firm's contracts, citing clauses. ", 150)
	body := func(user string) string {
		return `{"model":"` + testModel + `","messages":[{"role":"system","content":"` + sys + `"},{"role":"user","content":"` + user + `"}]}`
	}
	served := func(user string) string {
		t.Helper()
		resp := g.post(t, "/v1/chat/completions", body(user))
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get(agentapi.HeaderNode)
	}
	first := served("What does clause 4 say?")

	req, _ := http.NewRequest(http.MethodPost, g.srv.URL+"/admin/v1/explain", strings.NewReader(body("Is clause 9 enforceable?")))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ex scheduler.Explanation
	err = json.NewDecoder(resp.Body).Decode(&ex)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("explain: %d %v", resp.StatusCode, err)
	}
	if ex.Order[0] != first {
		t.Fatalf("explain orders %v, want %s (which holds the system prompt) first", ex.Order, first)
	}
	// Tokens are counted in the model's tokens per byte as the answers' usage taught the gateway
	// (the fake agent reports few prompt tokens), so only which node holds the prompt is checked.
	for _, n := range ex.Nodes {
		if want := n.Node == first; (n.PrefixTokens > 0) != want {
			t.Errorf("node %s: prefix_tokens %d; only %s holds the system prompt", n.Node, n.PrefixTokens, first)
		}
	}
	for _, user := range []string{"Is clause 9 enforceable?", "Summarise clause 2.", "Who signs?"} {
		if got := served(user); got != first {
			t.Fatalf("a user of the same system prompt went to %s, not %s which holds it", got, first)
		}
	}
}

// TestTokensPerByte: the prompt estimate follows the answers' usage, bounded, per model.
func TestTokensPerByte(t *testing.T) {
	var tpb tokensPerByte
	if got := tpb.tokens("m", 4000); got != 1000 {
		t.Fatalf("unlearned: %d tokens for 4000 bytes, want 1000 (four bytes a token)", got)
	}
	tpb.observe("m", 6000, 4000) // a tokenizer that makes 1.5 tokens a byte
	if got := tpb.tokens("m", 4000); got != 6000 {
		t.Fatalf("after one answer: %d tokens, want 6000", got)
	}
	tpb.observe("m", 1<<40, 1)
	if r := tpb.ratio("m"); r > maxTokensPerByte {
		t.Fatalf("ratio %v past its bound", r)
	}
	m := []scheduler.PrefixMatch{{Node: "a", Tokens: 100}}
	tpb.scale("other", m)
	if m[0].Tokens != 100 {
		t.Fatalf("scaled to %d for a model at the default ratio, want 100", m[0].Tokens)
	}
}
