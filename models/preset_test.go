package models

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func testPreset() Preset {
	return Preset{
		Name: "support-bot", Model: "llama3.1:8b", System: "You are a support agent.",
		Temperature: ptr(0.2), TopP: ptr(0.9), MaxTokens: ptr(256), Stop: []string{"###"}, Seed: ptr(7),
		ResponseFormat: map[string]any{"type": "json_object"},
	}
}

// decode turns a JSON object into a map for comparison.
func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

func TestApply(t *testing.T) {
	p := testPreset()
	tests := []struct {
		name, endpoint, in, want string
	}{
		{
			"chat: defaults filled, system first, unknown fields kept",
			EndpointChatCompletions,
			`{"model":"support-bot","messages":[{"role":"user","content":"hi"}],"x_vendor":{"a":1},"stream":true}`,
			`{"model":"llama3.1:8b","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"hi"}],
			  "x_vendor":{"a":1},"stream":true,"temperature":0.2,"top_p":0.9,"max_tokens":256,"stop":["###"],"seed":7,
			  "response_format":{"type":"json_object"}}`,
		},
		{
			"chat: request values win, its own system message follows the preset's",
			EndpointChatCompletions,
			`{"model":"support-bot","messages":[{"role":"system","content":"Answer in French."},{"role":"user","content":"hi"}],
			  "temperature":1.1,"top_p":null,"max_completion_tokens":50,"stop":"END","seed":1,"response_format":{"type":"text"}}`,
			`{"model":"llama3.1:8b","messages":[{"role":"system","content":"You are a support agent."},{"role":"system","content":"Answer in French."},{"role":"user","content":"hi"}],
			  "temperature":1.1,"top_p":0.9,"max_completion_tokens":50,"stop":"END","seed":1,"response_format":{"type":"text"}}`,
		},
		{
			"completions: system before the prompt, no response_format",
			EndpointCompletions,
			`{"model":"support-bot","prompt":"Once upon"}`,
			`{"model":"llama3.1:8b","prompt":"You are a support agent.\n\nOnce upon","temperature":0.2,"top_p":0.9,"max_tokens":256,"stop":["###"],"seed":7}`,
		},
		{
			"completions: each prompt of a list",
			EndpointCompletions,
			`{"model":"support-bot","prompt":["a","b"],"max_tokens":3}`,
			`{"model":"llama3.1:8b","prompt":["You are a support agent.\n\na","You are a support agent.\n\nb"],"temperature":0.2,"top_p":0.9,"max_tokens":3,"stop":["###"],"seed":7}`,
		},
		{
			"embeddings: model only",
			EndpointEmbeddings,
			`{"model":"support-bot","input":"text","dimensions":8}`,
			`{"model":"llama3.1:8b","input":"text","dimensions":8}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Apply(tc.endpoint, []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := decode(t, got), decode(t, []byte(tc.want)); !reflect.DeepEqual(g, w) {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestApplyWithoutSystem(t *testing.T) {
	p := Preset{Name: "p", Model: "m"}
	got, err := p.Apply(EndpointChatCompletions, []byte(`{"model":"p","messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"messages":[{"role":"user","content":"x"}],"model":"m"}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestApplyErrors(t *testing.T) {
	p := testPreset()
	for _, tc := range []struct{ name, endpoint, body string }{
		{"not json", EndpointChatCompletions, `{`},
		{"array", EndpointChatCompletions, `[]`},
		{"null", EndpointChatCompletions, `null`},
		{"messages not array", EndpointChatCompletions, `{"messages":"hi"}`},
		{"token prompt", EndpointCompletions, `{"prompt":[1,2,3]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Apply(tc.endpoint, []byte(tc.body))
			if !errors.Is(err, ErrPresetBody) {
				t.Fatalf("err = %v, want ErrPresetBody", err)
			}
		})
	}
	if _, err := p.Apply("/v1/images/generations", []byte(`{}`)); err == nil || errors.Is(err, ErrPresetBody) {
		t.Fatalf("unknown endpoint: %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := testPreset()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Preset)
		want string
	}{
		{"empty name", func(p *Preset) { p.Name = "" }, "preset name"},
		{"space in name", func(p *Preset) { p.Name = "a b" }, "preset name"},
		{"no model", func(p *Preset) { p.Model = "" }, "model"},
		{"self model", func(p *Preset) { p.Model = p.Name }, "base model"},
		{"temperature", func(p *Preset) { p.Temperature = ptr(2.5) }, "temperature"},
		{"top_p", func(p *Preset) { p.TopP = ptr(0.0) }, "top_p"},
		{"max_tokens", func(p *Preset) { p.MaxTokens = ptr(0) }, "max_tokens"},
		{"stop", func(p *Preset) { p.Stop = []string{"a", "b", "c", "d", "e"} }, "stop"},
		{"response_format type", func(p *Preset) { p.ResponseFormat = map[string]any{"type": "xml"} }, "response_format"},
		{"json_schema without schema", func(p *Preset) {
			p.ResponseFormat = map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x"}}
		}, "schema"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPreset()
			tc.mod(&p)
			if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestParsePresets(t *testing.T) {
	data := []byte(`
presets:
  - name: extractor
    model: qwen2.5:7b
    system: Extract the fields.
    description: pulls invoice fields
    temperature: 0
    response_format:
      type: json_schema
      json_schema:
        name: invoice
        strict: true
        schema:
          type: object
          properties:
            total: {type: number}
          required: [total]
  - name: poet
    model: llama3.1:8b
    version: 7
    max_tokens: 100
    stop: ["\n\n"]
`)
	ps, err := ParsePresets(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "extractor" || ps[0].Version != 0 || ps[1].Version != 7 || ps[0].Temperature == nil || *ps[0].Temperature != 0 {
		t.Fatalf("presets = %+v", ps)
	}
	// The schema must survive into a request body.
	out, err := ps[0].Apply(EndpointChatCompletions, []byte(`{"model":"extractor","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, out)
	rf := m["response_format"].(map[string]any)
	schema := rf["json_schema"].(map[string]any)["schema"].(map[string]any)
	if rf["type"] != "json_schema" || schema["required"].([]any)[0] != "total" {
		t.Fatalf("response_format = %v", rf)
	}
	if ps[1].MaxTokens == nil || *ps[1].MaxTokens != 100 || ps[1].Stop[0] != "\n\n" {
		t.Fatalf("poet = %+v", ps[1])
	}

	if !ps[1].SameContent(Preset{Name: "poet", Model: "llama3.1:8b", MaxTokens: ps[1].MaxTokens, Stop: []string{"\n\n"}, Version: 2}) ||
		ps[1].SameContent(ps[0]) {
		t.Fatal("SameContent must ignore the version and only the version")
	}

	if ps, err := ParsePresets(nil); err != nil || ps != nil {
		t.Fatalf("empty file: %v %v", ps, err)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "presets:\n  - name: a\n    model: m\n    temprature: 1\n", "temprature"},
		{"duplicate", "presets:\n  - {name: a, model: m}\n  - {name: a, model: n}\n", "duplicate"},
		{"invalid", "presets:\n  - {name: a}\n", "model"},
		{"not yaml", "presets: [", "presets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParsePresets([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzApply checks, for any body, that Apply either refuses it or returns a JSON object with the
// base model, in which every key of the request other than those the preset manages survives
// unchanged.
func FuzzApply(f *testing.F) {
	f.Add(EndpointChatCompletions, []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}],"n":2}`))
	f.Add(EndpointCompletions, []byte(`{"prompt":["a",""],"temperature":null}`))
	f.Add(EndpointCompletions, []byte(`{"prompt":[[1,2]]}`))
	f.Add(EndpointEmbeddings, []byte(`{"input":["a"],"model":"x"}`))
	f.Add(EndpointChatCompletions, []byte(`{"messages":null,"max_completion_tokens":3}`))
	f.Add(EndpointChatCompletions, []byte(`"str"`))
	p := testPreset()
	managed := map[string]bool{"model": true, "messages": true, "prompt": true}
	f.Fuzz(func(t *testing.T, endpoint string, body []byte) {
		out, err := p.Apply(endpoint, body)
		if err != nil {
			return
		}
		var in, got map[string]json.RawMessage
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("Apply accepted a body that is not an object: %q", body)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Apply produced invalid JSON %q: %v", out, err)
		}
		var model string
		if err := json.Unmarshal(got["model"], &model); err != nil || model != p.Model {
			t.Fatalf("model = %s", got["model"])
		}
		for k, v := range in {
			if managed[k] || string(v) == "null" {
				continue
			}
			if !jsonEqual(v, got[k]) {
				t.Fatalf("key %q changed: %s → %s", k, v, got[k])
			}
		}
		if endpoint == EndpointChatCompletions {
			var msgs []json.RawMessage
			if err := json.Unmarshal(got["messages"], &msgs); err != nil || len(msgs) == 0 {
				t.Fatalf("messages = %s", got["messages"])
			}
		}
	})
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestPresetApplyResponses(t *testing.T) {
	temp, maxTok := 0.2, 64
	p := &Preset{Name: "bot", Model: "llama3.2:1b", System: "Be brief.", Temperature: &temp, MaxTokens: &maxTok,
		ResponseFormat: map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{"type": "object"}}}}
	for _, tt := range []struct{ in, want string }{
		{`{"model":"bot","input":"hi"}`,
			`{"input":"hi","instructions":"Be brief.","max_output_tokens":64,"model":"llama3.2:1b","temperature":0.2,"text":{"format":{"name":"x","schema":{"type":"object"},"type":"json_schema"}}}`},
		{`{"model":"bot","input":"hi","instructions":"In French.","max_output_tokens":5,"temperature":1,"text":{"format":{"type":"text"}}}`,
			`{"input":"hi","instructions":"Be brief.\n\nIn French.","max_output_tokens":5,"model":"llama3.2:1b","temperature":1,"text":{"format":{"type":"text"}}}`},
	} {
		out, err := p.Apply(EndpointResponses, []byte(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != tt.want {
			t.Errorf("Apply(%s)\n got %s\nwant %s", tt.in, out, tt.want)
		}
	}
	if _, err := p.Apply(EndpointResponses, []byte(`{"model":"bot","instructions":3}`)); err == nil {
		t.Error("instructions that are not a string: no error")
	}
}
