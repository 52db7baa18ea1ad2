package models

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestApplyOllama(t *testing.T) {
	temp, maxTok, seed := 0.2, 64, 7
	p := Preset{Name: "bot", Model: "llama3.1:8b", System: "Be kind.", Temperature: &temp, MaxTokens: &maxTok, Seed: &seed,
		Stop: []string{"END"}, ResponseFormat: map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "r", "schema": map[string]any{"type": "object"}}}}
	for _, tt := range []struct {
		name, endpoint, body, want string
	}{
		{"chat", EndpointOllamaChat, `{"model":"bot","messages":[{"role":"system","content":"Mine."},{"role":"user","content":"hi"}],"options":{"temperature":0.9},"keep_alive":"1h"}`,
			`{"format":{"type":"object"},"keep_alive":"1h","messages":[{"content":"Be kind.","role":"system"},{"role":"system","content":"Mine."},{"role":"user","content":"hi"}],"model":"llama3.1:8b","options":{"num_predict":64,"seed":7,"stop":["END"],"temperature":0.9}}`},
		{"generate with own system and format", EndpointOllamaGenerate, `{"model":"bot","prompt":"hi","system":"Mine.","format":"json"}`,
			`{"format":"json","model":"llama3.1:8b","options":{"num_predict":64,"seed":7,"stop":["END"],"temperature":0.2},"prompt":"hi","system":"Be kind.\n\nMine."}`},
		{"embed", EndpointOllamaEmbed, `{"model":"bot","input":"x","options":{"temperature":1}}`,
			`{"input":"x","model":"llama3.1:8b","options":{"temperature":1}}`},
	} {
		got, err := p.ApplyOllama(tt.endpoint, []byte(tt.body))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		// Compare as decoded JSON: key order is not part of the contract.
		var g, w any
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal([]byte(tt.want), &w)
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		if string(gb) != string(wb) {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, gb, wb)
		}
	}
	for _, body := range []string{`[1]`, `{"model":"bot","options":[1]}`, `{"model":"bot","system":3}`} {
		if _, err := p.ApplyOllama(EndpointOllamaGenerate, []byte(body)); !errors.Is(err, ErrPresetBody) {
			t.Errorf("%s: error %v, want ErrPresetBody", body, err)
		}
	}
}
