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
	for _, n := range ex.Nodes {
		if want := n.Node == first; (n.PrefixTokens >= len(sys)/4) != want {
			t.Errorf("node %s: prefix_tokens %d (system prompt about %d tokens); only %s holds it", n.Node, n.PrefixTokens, len(sys)/4, first)
		}
	}
	for _, user := range []string{"Is clause 9 enforceable?", "Summarise clause 2.", "Who signs?"} {
		if got := served(user); got != first {
			t.Fatalf("a user of the same system prompt went to %s, not %s which holds it", got, first)
		}
	}
}
