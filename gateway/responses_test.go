package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

func TestResponsesRoute(t *testing.T) {
	g := newCoreGW(t, func(c *Config) {
		c.PresetsFile = writePresetFile(t, t.TempDir(), "presets:\n  - name: bot\n    model: llama3.1:8b\n    system: You are terse.\n    max_tokens: 7\n")
	})
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 2, testModel)

	// Passed to the agent's /v1/responses as the client wrote it.
	body := `{"model":"llama3.1:8b","input":"hi","max_output_tokens":9}`
	resp := g.post(t, "/v1/responses", body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(agentapi.HeaderNode) != "a" {
		t.Fatalf("status %d node %q", resp.StatusCode, resp.Header.Get(agentapi.HeaderNode))
	}
	reqs := a.requests()
	if len(reqs) != 1 || reqs[0].path != agentapi.PathResponses || string(reqs[0].body) != body {
		t.Fatalf("agent got %+v", reqs)
	}

	// A preset by name: the system prompt becomes instructions, max_tokens max_output_tokens.
	resp = g.post(t, "/v1/responses", `{"model":"bot","input":"hi","instructions":"In French."}`)
	resp.Body.Close()
	var got map[string]any
	if err := json.Unmarshal(a.requests()[1].body, &got); err != nil {
		t.Fatal(err)
	}
	if got["instructions"] != "You are terse.\n\nIn French." || got["max_output_tokens"] != 7.0 || got["model"] != "llama3.1:8b" {
		t.Errorf("preset applied as %v", got)
	}

	// What needs a stored response is a 400 before anything is scheduled.
	for _, tt := range []struct{ body, param string }{
		{`{"model":"llama3.1:8b","input":"hi","previous_response_id":"resp_1"}`, "previous_response_id"},
		{`{"model":"llama3.1:8b","input":"hi","conversation":{"id":"conv_1"}}`, "conversation"},
		{`{"model":"llama3.1:8b","input":"hi","background":true}`, "background"},
		{`{"model":"llama3.1:8b","prompt":{"id":"pmpt_1"}}`, "prompt"},
		{`{"model":"llama3.1:8b","input":"hi","max_output_tokens":"many"}`, "max_output_tokens"},
	} {
		resp := g.post(t, "/v1/responses", tt.body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", tt.body, resp.StatusCode)
		}
		if e := readOpenAIError(t, resp); nullable(e.Error.Param) != tt.param {
			t.Errorf("%s: error %+v, want param %s", tt.body, e.Error, tt.param)
		}
	}
	// previous_response_id: null is no previous response.
	resp = g.post(t, "/v1/responses", `{"model":"llama3.1:8b","input":"hi","previous_response_id":null,"background":false}`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("null previous_response_id: status %d", resp.StatusCode)
	}
	if n := len(a.requests()); n != 3 {
		t.Errorf("agent got %d requests, want 3: a refused one reached it", n)
	}

	// Stored responses do not exist.
	for _, path := range []string{"/v1/responses/resp_1", "/v1/responses/resp_1/input_items"} {
		resp := g.get(t, path, testAPIKey)
		if e := readOpenAIError(t, resp); resp.StatusCode != 404 || !strings.Contains(e.Error.Message, "does not store responses") {
			t.Errorf("GET %s: %d %+v", path, resp.StatusCode, e.Error)
		}
	}
}

func TestResponsesScan(t *testing.T) {
	var info bodyInfo
	b := []byte(`{"model":"m","instructions":"Be brief.","input":[{"role":"system","content":"x"},{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}],"max_output_tokens":12}`)
	if err := scanBody(b, &info); err != nil {
		t.Fatal(err)
	}
	if err := checkResponses(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.maxTokens != 12 || info.prefixHash == 0 || info.promptBytes < len(`"Be brief."`) {
		t.Errorf("info %+v", info)
	}
	// The same opening with a later turn added hashes alike (KV-cache affinity).
	var next bodyInfo
	b2 := []byte(`{"model":"m","instructions":"Be brief.","input":[{"role":"system","content":"x"},{"role":"user","content":"hi"},{"role":"assistant","content":"other"},{"role":"user","content":"more"}]}`)
	scanBody(b2, &next)
	checkResponses(b2, &next)
	if next.prefixHash != info.prefixHash {
		t.Errorf("prefix hash %x != %x", next.prefixHash, info.prefixHash)
	}
}

// A Responses stream that breaks after it started ends with the Responses API's error event,
// numbered after the events the client has.
func TestResponsesMidStreamFailure(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
	a := newWireAgent(t, "a", wireMidStream)
	g.beat("a", a.srv.URL, 4, testModel)
	resp := g.post(t, "/v1/responses", `{"model":"llama3.1:8b","stream":true,"input":"hi"}`)
	defer resp.Body.Close()
	events := readSSEData(t, resp.Body)
	if len(events) != 3 {
		t.Fatalf("got events %q, want two and an error event", events)
	}
	var e struct {
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
		Seq     *int    `json:"sequence_number"`
	}
	if err := json.Unmarshal([]byte(events[2]), &e); err != nil || e.Type != "error" || e.Code != "upstream_error" ||
		e.Seq == nil || *e.Seq != 2 || !strings.Contains(e.Message, "upstream node a failed mid-stream") {
		t.Errorf("last event %s (%v)", events[2], err)
	}
}

// FuzzCheckResponses: on any body the scanner accepts, the Responses checks answer without
// panicking, refuse only with a 400 naming a parameter, and hash the same body the same way.
func FuzzCheckResponses(f *testing.F) {
	f.Add([]byte(`{"model":"m","instructions":"x","input":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","input":"hi","previous_response_id":"resp_1"}`))
	f.Add([]byte(`{"model":"m","conversation":null,"background":false,"prompt":"p","input":[1,"a",{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var info bodyInfo
		if scanBody(b, &info) != nil {
			return
		}
		err := checkResponses(b, &info)
		if err != nil && (err.Status != 400 || err.Param == "") {
			t.Fatalf("checkResponses(%q) = %+v", b, err)
		}
		var again bodyInfo
		scanBody(b, &again)
		if err2 := checkResponses(b, &again); (err2 == nil) != (err == nil) || again.prefixHash != info.prefixHash {
			t.Fatalf("checkResponses(%q) not deterministic", b)
		}
	})
}
