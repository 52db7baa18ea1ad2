package nodeagent_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/sim"
)

// TestResponsesOnSimAgent: a simulated node has no Responses route of its own; the agent
// translates, streamed and not.
func TestResponsesOnSimAgent(t *testing.T) {
	t4, _ := models.LookupGPU("t4")
	node, err := sim.New(sim.Config{NodeID: "s", GPUs: []models.GPUProfile{t4}, Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}, SpeedFactor: 1000})
	if err != nil {
		t.Fatal(err)
	}
	a, err := nodeagent.New(nodeagent.Config{NodeID: "s", ClusterToken: "tok", Listen: "127.0.0.1:0"}, node, node)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	for _, stream := range []bool{false, true} {
		body := `{"model":"llama3.2:1b","input":"Say hello","instructions":"Be brief.","max_output_tokens":8`
		if stream {
			body += `,"stream":true`
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", strings.NewReader(body+"}"))
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("stream=%v: %d %s", stream, resp.StatusCode, out)
		}
		// Eight tokens may end the answer early: incomplete then, with reason max_output_tokens.
		want := `"object":"response"`
		if stream {
			want = "event: response.completed\n"
			if strings.Contains(string(out), `"reason":"max_output_tokens"`) {
				want = "event: response.incomplete\n"
			}
		}
		if !strings.Contains(string(out), want) || !strings.HasPrefix(string(out), map[bool]string{true: "event: response.created\n", false: "{"}[stream]) ||
			resp.Header.Get("X-Herd-Simulated") != "true" {
			t.Errorf("stream=%v: %v\n%s", stream, resp.Header, out)
		}
	}
}
