package models

import (
	"encoding/json"
	"fmt"
)

// Ollama's native routes a preset can be applied to.
const (
	EndpointOllamaChat       = "/api/chat"
	EndpointOllamaGenerate   = "/api/generate"
	EndpointOllamaEmbed      = "/api/embed"
	EndpointOllamaEmbeddings = "/api/embeddings"
)

// ApplyOllama rewrites a native Ollama request body for endpoint so it runs the preset, with the
// same rules as Apply in Ollama's terms:
//
//   - "model" becomes the base model (every endpoint);
//   - /api/chat: the system prompt is inserted as the first message, before all of the
//     request's own messages;
//   - /api/generate: the system prompt goes in "system", before the request's own system text
//     (separated by a blank line) when it brings one;
//   - /api/embed, /api/embeddings: only the model changes.
//
// Defaults go into "options" only where the request is silent: temperature, top_p, seed, stop,
// and max_tokens as num_predict. response_format becomes "format" where the request has none:
// json_object as "json", json_schema as its schema (chat and generate only).
func (p *Preset) ApplyOllama(endpoint string, body []byte) ([]byte, error) {
	req, err := p.withModel(body)
	if err != nil {
		return nil, err
	}
	switch endpoint {
	case EndpointOllamaChat:
		if err := p.applyChat(req); err != nil {
			return nil, err
		}
	case EndpointOllamaGenerate:
		if err := p.prependSystem(req, "system"); err != nil {
			return nil, err
		}
	case EndpointOllamaEmbed, EndpointOllamaEmbeddings:
		return json.Marshal(req)
	default:
		return nil, fmt.Errorf("preset %q: endpoint %q does not take presets", p.Name, endpoint)
	}
	if err := p.fillOllamaDefaults(req); err != nil {
		return nil, err
	}
	return json.Marshal(req)
}

func (p *Preset) fillOllamaDefaults(req map[string]json.RawMessage) error {
	opts := map[string]json.RawMessage{}
	if raw, ok := req["options"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &opts); err != nil || opts == nil {
			return fmt.Errorf("%w: options must be an object", ErrPresetBody)
		}
	}
	set := func(key string, v any) {
		if raw, ok := opts[key]; ok && !isNull(raw) {
			return
		}
		b, _ := json.Marshal(v) // numbers and strings: always representable
		opts[key] = b
	}
	if p.Temperature != nil {
		set("temperature", *p.Temperature)
	}
	if p.TopP != nil {
		set("top_p", *p.TopP)
	}
	if p.MaxTokens != nil {
		set("num_predict", *p.MaxTokens)
	}
	if len(p.Stop) > 0 {
		set("stop", p.Stop)
	}
	if p.Seed != nil {
		set("seed", *p.Seed)
	}
	if len(opts) > 0 {
		b, err := json.Marshal(opts)
		if err != nil {
			return err
		}
		req["options"] = b
	}
	if raw, ok := req["format"]; p.ResponseFormat != nil && (!ok || isNull(raw) || string(raw) == `""`) {
		var format any
		switch t, _ := p.ResponseFormat["type"].(string); t {
		case "json_object":
			format = "json"
		case "json_schema":
			js, _ := p.ResponseFormat["json_schema"].(map[string]any)
			format = js["schema"]
		}
		if format != nil {
			b, err := json.Marshal(format)
			if err != nil {
				return fmt.Errorf("preset %q: response_format: %w", p.Name, err)
			}
			req["format"] = b
		}
	}
	return nil
}
