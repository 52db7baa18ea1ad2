package nodeagent_test

import (
	"encoding/json"
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

// TestResponsesToolsOnSimAgent: the Responses API's function tools and text.format reach the
// simulator through the agent's translation: a function_call item with arguments that fit the
// declared parameters (streamed: the arguments' deltas add up to the done event), and JSON text
// for a json_schema format.
func TestResponsesToolsOnSimAgent(t *testing.T) {
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
	post := func(body string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		return string(out)
	}
	const tools = `"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer","minimum":1,"maximum":3}},"required":["city","days"],"additionalProperties":false}}]`

	var r struct {
		Status string `json:"status"`
		Output []struct {
			Type      string `json:"type"`
			Name      string `json:"name"`
			CallID    string `json:"call_id"`
			Arguments string `json:"arguments"`
			Content   []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
	}
	out := post(`{"model":"llama3.2:1b","input":"Weather in Oslo?",` + tools + `,"tool_choice":"required"}`)
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Output) != 1 || r.Output[0].Type != "function_call" || r.Output[0].Name != "get_weather" || r.Output[0].CallID == "" {
		t.Fatalf("%v: %s", err, out)
	}
	var args struct {
		City *string `json:"city"`
		Days *int    `json:"days"`
	}
	if err := json.Unmarshal([]byte(r.Output[0].Arguments), &args); err != nil || args.City == nil || args.Days == nil || *args.Days < 1 || *args.Days > 3 {
		t.Errorf("arguments %s: %v", r.Output[0].Arguments, err)
	}

	stream := post(`{"model":"llama3.2:1b","input":"Weather in Oslo?",` + tools + `,"tool_choice":"required","stream":true}`)
	var deltas strings.Builder
	var done string
	for _, line := range strings.Split(stream, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type      string `json:"type"`
			Delta     string `json:"delta"`
			Arguments string `json:"arguments"`
		}
		json.Unmarshal([]byte(data), &ev)
		switch ev.Type {
		case "response.function_call_arguments.delta":
			deltas.WriteString(ev.Delta)
		case "response.function_call_arguments.done":
			done = ev.Arguments
		}
	}
	if done == "" || deltas.String() != done || !json.Valid([]byte(done)) || !strings.Contains(stream, "event: response.completed\n") {
		t.Errorf("streamed arguments %q, done %q:\n%s", deltas.String(), done, stream)
	}

	// The Responses API takes a tool_choice without tools (chat completions do not): text.
	if out := post(`{"model":"llama3.2:1b","input":"hi","tool_choice":"auto","parallel_tool_calls":true,"max_output_tokens":4}`); !strings.Contains(out, `"output_text"`) {
		t.Errorf("tool_choice without tools: %s", out)
	}

	out = post(`{"model":"llama3.2:1b","input":"A city, as JSON","text":{"format":{"type":"json_schema","name":"city","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string"},"population":{"type":"integer","minimum":0}},"required":["name","population"],"additionalProperties":false}}}}`)
	r.Output = nil
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Output) != 1 || len(r.Output[0].Content) != 1 {
		t.Fatalf("%v: %s", err, out)
	}
	var city struct {
		Name       *string `json:"name"`
		Population *int    `json:"population"`
	}
	if err := json.Unmarshal([]byte(r.Output[0].Content[0].Text), &city); err != nil || city.Name == nil || city.Population == nil || *city.Population < 0 {
		t.Errorf("text %q: %v", r.Output[0].Content[0].Text, err)
	}
}
