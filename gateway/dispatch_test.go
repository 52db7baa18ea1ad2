package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

func TestDispatch(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 2, testModel)
	g.beat("d", a.srv.URL, 2, "drained:1b")
	if err := g.s.registry.SetDraining("d", true); err != nil {
		t.Fatal(err)
	}
	d := g.s.dispatcher()
	ctx := context.Background()

	resp, err := d.Dispatch(ctx, batch.Request{Endpoint: agentapi.PathChatCompletions, Class: batch.ClassBatch,
		Body: []byte(`{"model":"llama3.1:8b","messages":[{"role":"user","content":"line 1"}]}`)})
	// The line ran as a stream internally (so that it could be continued), and its answer is
	// the one chat completion the line asked for.
	if err != nil || resp.StatusCode != 200 || resp.Node != "a" || resp.RequestID == "" ||
		!strings.Contains(string(resp.Body), `"object":"chat.completion"`) || !strings.Contains(string(resp.Body), `"content":"Hello from the herd"`) ||
		!strings.Contains(string(resp.Body), `"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}`) {
		t.Fatalf("Dispatch = %+v (body %s), %v; want the agent's 200 from a", resp, resp.Body, err)
	}
	if got := a.requests()[0].header.Get(agentapi.HeaderClass); got != agentapi.ClassBatch {
		t.Errorf("agent saw class %q, want batch", got)
	}
	if got := string(a.requests()[0].body); !strings.Contains(got, `"stream":true`) || !strings.Contains(got, `"include_usage":true`) {
		t.Errorf("agent got %s, want the line as a stream with usage", got)
	}
	if resp.Simulated || resp.Parameters != nil {
		t.Errorf("a real node's line without parameters: simulated %v, parameters %s", resp.Simulated, resp.Parameters)
	}
	// A simulated node's answer says so; the parameters are the body's, as the node got it.
	sim := agentapi.Heartbeat{NodeID: "a", Address: a.srv.URL, Backend: agentapi.BackendSim, Simulated: true, Slots: 2,
		Models: []agentapi.Model{{Name: testModel, Resident: true, OnDisk: true}}}
	g.s.registry.Observe(sim)
	resp, err = d.Dispatch(ctx, batch.Request{Endpoint: agentapi.PathChatCompletions, Class: batch.ClassBatch,
		Body: []byte(`{"model":"llama3.1:8b","temperature":0.2,"seed":7,"stop":["\n"],"messages":[{"role":"user","content":"x"}],"user":"u"}`)})
	if err != nil || !resp.Simulated || string(resp.Parameters) != `{"seed":7,"stop":["\n"],"temperature":0.2}` {
		t.Fatalf("simulated line: simulated %v parameters %s (%v)", resp.Simulated, resp.Parameters, err)
	}

	// A Responses line, as OpenAI's batches take them, goes to the agent's /v1/responses.
	resp, err = d.Dispatch(ctx, batch.Request{Endpoint: agentapi.PathResponses, Class: batch.ClassBatch,
		Body: []byte(`{"model":"llama3.1:8b","input":"line 2"}`)})
	if reqs := a.requests(); err != nil || resp.StatusCode != 200 || reqs[len(reqs)-1].path != agentapi.PathResponses ||
		!strings.HasPrefix(string(resp.Body), `{"id":"resp_1"`) || !strings.Contains(string(resp.Body), `"text":"hello from a"`) {
		t.Fatalf("Dispatch /v1/responses = %+v (%s), %v", resp, resp.Body, err)
	}

	tests := []struct {
		name     string
		req      batch.Request
		status   int
		code     string
		retrying bool
	}{
		{"unknown model", batch.Request{Endpoint: agentapi.PathChatCompletions, Body: []byte(`{"model":"nope"}`)}, 404, "model_not_found", false},
		{"bad body", batch.Request{Endpoint: agentapi.PathChatCompletions, Body: []byte(`{"model":`)}, 400, "", false},
		{"bad endpoint", batch.Request{Endpoint: "/v1/images", Body: []byte(`{"model":"llama3.1:8b"}`)}, 400, "invalid_endpoint", false},
		{"stored response", batch.Request{Endpoint: agentapi.PathResponses, Body: []byte(`{"model":"llama3.1:8b","input":"x","previous_response_id":"resp_1"}`)}, 400, "unsupported_parameter", false},
		{"no node now", batch.Request{Endpoint: agentapi.PathEmbeddings, Body: []byte(`{"model":"drained:1b","input":"x"}`)}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := d.Dispatch(ctx, tt.req)
			if tt.retrying {
				var ae *APIError
				if err == nil || !errors.As(err, &ae) || ae.Status != 503 {
					t.Fatalf("Dispatch = %+v, %v; want an error wrapping the 503", resp, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dispatch: %v", err)
			}
			var e clientError
			if resp.StatusCode != tt.status || json.Unmarshal(resp.Body, &e) != nil || nullable(e.Error.Code) != nullable(strOrNil(tt.code)) {
				t.Fatalf("Dispatch = %d %s, want %d with code %q", resp.StatusCode, resp.Body, tt.status, tt.code)
			}
		})
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Dispatch(cctx, batch.Request{Endpoint: agentapi.PathChatCompletions, Body: []byte(`{"model":"llama3.1:8b"}`)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dispatch with a cancelled context: %v", err)
	}
}

// A batch line whose node fails midway continues on another node from what the first one
// generated: the continuing request carries that text, and the line's answer is one chat
// completion with the whole text and one usage.
func TestDispatchContinuesMidBody(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
	bad := newWireAgent(t, "bad", wireMidStream)
	good := newWireAgent(t, "good", wireOK)
	g.beat("bad", bad.srv.URL, 2, testModel)
	g.beatBusy("good", good.srv.URL, 2, 1, testModel)
	resp, err := g.s.dispatcher().Dispatch(context.Background(), batch.Request{Endpoint: agentapi.PathChatCompletions, Class: batch.ClassBatch,
		Body: []byte(`{"model":"llama3.1:8b","messages":[{"role":"user","content":"x"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	reqs := good.requests()
	if len(bad.requests()) != 1 || len(reqs) != 1 || resp.Node != "good" || resp.StatusCode != 200 {
		t.Fatalf("Dispatch = %d from %q after %d tries on bad; want 200 from good after one", resp.StatusCode, resp.Node, len(bad.requests()))
	}
	if reqs[0].header.Get(agentapi.HeaderContinue) == "" || !strings.Contains(string(reqs[0].body), `"content":"Hello from"`) {
		t.Fatalf("the continuing request %s carried no partial answer", reqs[0].body)
	}
	var c struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(resp.Body, &c); err != nil || c.Object != "chat.completion" || len(c.Choices) != 1 || c.Choices[0].Message.Content != "Hello from the herd" {
		t.Fatalf("answer %s (%v)", resp.Body, err)
	}
}

// A batch answer lives in memory until it is complete, so even a failure midway fails over.
func TestDispatchFailsOverMidBody(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
	bad := newWireAgent(t, "bad", wireMidStream)
	good := newWireAgent(t, "good", wireOK)
	g.beat("bad", bad.srv.URL, 2, testModel)
	g.beatBusy("good", good.srv.URL, 2, 1, testModel)
	resp, err := g.s.dispatcher().Dispatch(context.Background(), batch.Request{Endpoint: agentapi.PathChatCompletions, Class: batch.ClassBatch,
		Body: []byte(`{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"x"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad.requests()) != 1 || resp.Node != "good" || resp.StatusCode != 200 {
		t.Fatalf("Dispatch = %d from %q after %d tries on bad; want 200 from good after one", resp.StatusCode, resp.Node, len(bad.requests()))
	}
	if strings.Count(string(resp.Body), wireChunk(testModel, 0, wireWords[0])) != 1 || !strings.HasSuffix(string(resp.Body), "data: [DONE]\n\n") {
		t.Fatalf("body %q is not exactly the good node's stream", resp.Body)
	}
}
