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
	srv := simAgentServer(t)
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
	srv := simAgentServer(t)
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

// TestResponsesContinuedOnSimAgent: a Responses stream continued on this node follows the events
// its client has: no second response.created, sequence numbers from the state's, the open
// message continued under its item id and output_index, and response.completed with the
// stream's id, created_at and model, the whole text (prefix and continuation) and usage counting
// the first node's output tokens too.
func TestResponsesContinuedOnSimAgent(t *testing.T) {
	srv := simAgentServer(t)
	cont := `{"id":"resp_first","created":42,"tokens":3,"content":"Once upon a","reasoning":"hm",` +
		`"responses":{"seq":9,"model":"my-preset","items":[{"id":"rs_first_0","type":"reasoning","text":"hm"},` +
		`{"id":"msg_first_1","type":"message","text":"Once upon a","open":true,"part_open":true}]}}`
	body := `{"herd_continue":` + cont + `,"model":"llama3.2:1b","input":"Tell a story","max_output_tokens":40,"stream":true}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("X-Herd-Continue", "1")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	seq := int64(9)
	var deltas strings.Builder
	var final struct {
		Response struct {
			ID        string `json:"id"`
			CreatedAt int64  `json:"created_at"`
			Model     string `json:"model"`
			Output    []struct {
				ID      string `json:"id"`
				Type    string `json:"type"`
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"output"`
			Usage struct {
				OutputTokens int `json:"output_tokens"`
				TotalTokens  int `json:"total_tokens"`
				InputTokens  int `json:"input_tokens"`
			} `json:"usage"`
		} `json:"response"`
	}
	for line := range strings.Lines(string(out)) {
		data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type        string `json:"type"`
			Seq         int64  `json:"sequence_number"`
			ItemID      string `json:"item_id"`
			OutputIndex int    `json:"output_index"`
			Delta       string `json:"delta"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if ev.Seq != seq {
			t.Fatalf("event %s has sequence_number %d, want %d\n%s", ev.Type, ev.Seq, seq, out)
		}
		seq++
		switch ev.Type {
		case "response.created", "response.in_progress", "response.output_item.added", "error", "response.failed":
			t.Fatalf("a continued stream sent %s:\n%s", ev.Type, out)
		case "response.output_text.delta":
			if ev.ItemID != "msg_first_1" || ev.OutputIndex != 1 {
				t.Fatalf("delta for %s at %d", ev.ItemID, ev.OutputIndex)
			}
			deltas.WriteString(ev.Delta)
		case "response.completed", "response.incomplete":
			_ = json.Unmarshal([]byte(data), &final)
		}
	}
	r := final.Response
	if r.ID != "resp_first" || r.CreatedAt != 42 || r.Model != "my-preset" || len(r.Output) != 2 ||
		r.Output[0].ID != "rs_first_0" || r.Output[1].ID != "msg_first_1" || len(r.Output[1].Content) != 1 {
		t.Fatalf("final response %+v\n%s", r, out)
	}
	if text := r.Output[1].Content[0].Text; text != "Once upon a"+deltas.String() || deltas.Len() == 0 {
		t.Fatalf("text %q, deltas %q", text, deltas.String())
	}
	if r.Usage.OutputTokens < 4 || r.Usage.TotalTokens != r.Usage.InputTokens+r.Usage.OutputTokens {
		t.Fatalf("usage %+v", r.Usage)
	}
}

// simAgentServer serves an agent in front of a fast simulated T4 with llama3.2:1b loaded, cluster
// token "tok", until the test ends.
func simAgentServer(t *testing.T) *httptest.Server {
	t.Helper()
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
	t.Cleanup(srv.Close)
	return srv
}
