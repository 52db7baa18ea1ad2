package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// Preset is an "offline custom GPT": a name clients ask for as a model, standing for a base model,
// a system prompt and default sampling parameters. The gateway applies it to the request body
// before the request is scheduled, so it works the same on every backend.
type Preset struct {
	// Name is what clients put in "model" ("support-bot").
	Name string `json:"name" yaml:"name"`
	// Model is the base model the preset runs on ("llama3.1:8b").
	Model string `json:"model" yaml:"model"`
	// System is prepended to the conversation (chat) or to the prompt (completions).
	System      string `json:"system,omitempty" yaml:"system,omitempty"`
	Description string `json:"description,omitempty" yaml:"description,omitempty"`
	// Version counts the revisions of a preset. Zero (omitted) lets the gateway number it: 1 for
	// a new preset, the current version + 1 when the content changed, unchanged when it did not.
	// A version given explicitly (in YAML or JSON) is kept as given.
	Version int `json:"version,omitempty" yaml:"version,omitempty"`

	// Defaults, used where the request is silent; the request's own values win.
	Temperature *float64 `json:"temperature,omitempty" yaml:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty" yaml:"top_p,omitempty"`
	MaxTokens   *int     `json:"max_tokens,omitempty" yaml:"max_tokens,omitempty"`
	Stop        []string `json:"stop,omitempty" yaml:"stop,omitempty"`
	Seed        *int     `json:"seed,omitempty" yaml:"seed,omitempty"`
	// ResponseFormat is OpenAI's response_format object, e.g. {"type":"json_schema","json_schema":{...}}.
	// It only applies to chat completions, the one endpoint that has it.
	ResponseFormat map[string]any `json:"response_format,omitempty" yaml:"response_format,omitempty"`

	CreatedAt time.Time `json:"created_at,omitzero" yaml:"created_at,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero" yaml:"updated_at,omitempty"`
}

// Endpoints a preset can be applied to.
const (
	EndpointChatCompletions = "/v1/chat/completions"
	EndpointCompletions     = "/v1/completions"
	EndpointEmbeddings      = "/v1/embeddings"
	EndpointResponses       = "/v1/responses"
)

// presetNameRE is deliberately close to model-name syntax ("name:tag", "org/name") so a preset is
// indistinguishable from a model to a client, and excludes whitespace and URL-hostile characters.
var presetNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// Validate reports a preset that cannot be applied.
func (p Preset) Validate() error {
	var errs []error
	if !presetNameRE.MatchString(p.Name) {
		errs = append(errs, fmt.Errorf("preset name %q: must be 1-128 characters of letters, digits, '.', '_', ':', '/', '-', starting with a letter or digit", p.Name))
	}
	if p.Model == "" {
		errs = append(errs, fmt.Errorf("preset %q: model (the base model) is empty", p.Name))
	} else if p.Model == p.Name {
		errs = append(errs, fmt.Errorf("preset %q: model must name a base model, not the preset itself", p.Name))
	}
	if p.Temperature != nil && (*p.Temperature < 0 || *p.Temperature > 2) {
		errs = append(errs, fmt.Errorf("preset %q: temperature %v is outside [0, 2]", p.Name, *p.Temperature))
	}
	if p.TopP != nil && (*p.TopP <= 0 || *p.TopP > 1) {
		errs = append(errs, fmt.Errorf("preset %q: top_p %v is outside (0, 1]", p.Name, *p.TopP))
	}
	if p.MaxTokens != nil && *p.MaxTokens < 1 {
		errs = append(errs, fmt.Errorf("preset %q: max_tokens %d must be at least 1", p.Name, *p.MaxTokens))
	}
	if len(p.Stop) > 4 {
		errs = append(errs, fmt.Errorf("preset %q: at most 4 stop sequences, got %d", p.Name, len(p.Stop)))
	}
	if p.ResponseFormat != nil {
		if err := validateResponseFormat(p.ResponseFormat); err != nil {
			errs = append(errs, fmt.Errorf("preset %q: response_format: %w", p.Name, err))
		}
	}
	if p.Version < 0 {
		errs = append(errs, fmt.Errorf("preset %q: version %d is negative", p.Name, p.Version))
	}
	return errors.Join(errs...)
}

func validateResponseFormat(rf map[string]any) error {
	if _, err := json.Marshal(rf); err != nil {
		return fmt.Errorf("not representable as JSON: %w", err)
	}
	switch t, _ := rf["type"].(string); t {
	case "text", "json_object":
		return nil
	case "json_schema":
		js, ok := rf["json_schema"].(map[string]any)
		if !ok {
			return errors.New(`type "json_schema" needs a "json_schema" object`)
		}
		if name, _ := js["name"].(string); name == "" {
			return errors.New(`json_schema.name is required`)
		}
		if _, ok := js["schema"].(map[string]any); !ok {
			return errors.New(`json_schema.schema must be an object`)
		}
		return nil
	default:
		return fmt.Errorf(`type %q: want "text", "json_object" or "json_schema"`, t)
	}
}

// presetFile is the YAML layout of a presets file.
type presetFile struct {
	Presets []Preset `yaml:"presets"`
}

// ParsePresets parses a YAML presets file (`presets: [...]`). Unknown keys, invalid presets and
// duplicate names are errors: a typo in a preset file should stop the gateway, not silently drop
// a default. A preset without `version:` keeps Version 0: whoever stores it numbers it.
func ParsePresets(data []byte) ([]Preset, error) {
	// A UTF-8 byte order mark (Windows editors write one) is not part of the document.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f presetFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) { // an empty file: no presets
			return nil, nil
		}
		return nil, fmt.Errorf("presets: %w", err)
	}
	seen := make(map[string]bool, len(f.Presets))
	var errs []error
	for i := range f.Presets {
		p := &f.Presets[i]
		p.ResponseFormat = normalizeYAML(p.ResponseFormat)
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("presets[%d]: %w", i, err))
			continue
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("presets[%d]: duplicate preset name %q", i, p.Name))
		}
		seen[p.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f.Presets, nil
}

// SameContent reports whether p and q configure the same thing: every field but Version and the
// timestamps is equal. Applying a preset whose content did not change is not a new version.
func (p Preset) SameContent(q Preset) bool {
	p.Version, p.CreatedAt, p.UpdatedAt = 0, time.Time{}, time.Time{}
	q.Version, q.CreatedAt, q.UpdatedAt = 0, time.Time{}, time.Time{}
	a, errA := json.Marshal(p)
	b, errB := json.Marshal(q)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// normalizeYAML turns the map[any]any yaml may produce for non-string keys into map[string]any so
// the value marshals to JSON.
func normalizeYAML(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = normalizeYAMLValue(v)
	}
	return out
}

func normalizeYAMLValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return normalizeYAML(t)
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, v := range t {
			out[fmt.Sprint(k)] = normalizeYAMLValue(v)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, v := range t {
			out[i] = normalizeYAMLValue(v)
		}
		return out
	default:
		return v
	}
}

// ErrPresetBody is wrapped by Apply's errors about the request body (as opposed to its arguments),
// so the gateway can answer 400.
var ErrPresetBody = errors.New("request body")

// Apply rewrites an OpenAI request body for endpoint so it runs the preset:
//
//   - "model" becomes the base model (every endpoint);
//   - /v1/chat/completions: the preset's system prompt is inserted as the first message, before
//     all the request's messages, including a system message the request brings itself. The
//     preset is the operator's instruction and frames the conversation; the caller's own system
//     message still follows and refines it, and nothing the caller sent is dropped.
//   - /v1/completions: the system prompt is prepended to the prompt text, separated by a blank
//     line (for a list of prompts, to each one). Token-array prompts cannot take text and are an
//     error when the preset has a system prompt.
//   - /v1/embeddings: only the model changes.
//   - /v1/responses: the system prompt becomes the instructions, before the request's own
//     instructions (separated by a blank line) when it has some.
//
// Defaults (temperature, top_p, max_tokens, stop, seed, and response_format for chat) are filled
// only where the request is silent (the key is absent or null); the request's values win. For
// chat, a request that sets max_completion_tokens is not given max_tokens. For Responses,
// max_tokens fills max_output_tokens and response_format fills text.format (in that API's
// shape); stop and seed are passed as herd's extensions, which every backend herd fronts reads.
// Every other field is preserved byte for byte.
func (p *Preset) Apply(endpoint string, body []byte) ([]byte, error) {
	req, err := p.withModel(body)
	if err != nil {
		return nil, err
	}

	switch endpoint {
	case EndpointChatCompletions:
		if err := p.applyChat(req); err != nil {
			return nil, err
		}
	case EndpointCompletions:
		if err := p.applyCompletion(req); err != nil {
			return nil, err
		}
	case EndpointEmbeddings:
		return json.Marshal(req)
	case EndpointResponses:
		if err := p.applyResponses(req); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("preset %q: endpoint %q does not take presets", p.Name, endpoint)
	}
	if err := p.fillDefaults(endpoint, req); err != nil {
		return nil, err
	}
	return json.Marshal(req)
}

// withModel decodes a request body, which must be a JSON object, with its "model" set to the
// preset's base model.
func (p *Preset) withModel(body []byte) (map[string]json.RawMessage, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %w", ErrPresetBody, err)
	}
	if req == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrPresetBody)
	}
	model, err := json.Marshal(p.Model)
	if err != nil {
		return nil, err
	}
	req["model"] = model
	return req, nil
}

func (p *Preset) applyChat(req map[string]json.RawMessage) error {
	if p.System == "" {
		return nil
	}
	var msgs []json.RawMessage
	if raw, ok := req["messages"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &msgs); err != nil {
			return fmt.Errorf("%w: messages must be an array: %w", ErrPresetBody, err)
		}
	}
	sys, err := json.Marshal(struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}{"system", p.System})
	if err != nil {
		return err
	}
	out, err := json.Marshal(append([]json.RawMessage{sys}, msgs...))
	if err != nil {
		return err
	}
	req["messages"] = out
	return nil
}

// applyResponses puts the system prompt into a Responses request's instructions: the preset's
// first, then the request's own, as in a chat request.
func (p *Preset) applyResponses(req map[string]json.RawMessage) error {
	return p.prependSystem(req, "instructions")
}

// prependSystem puts the system prompt into the string field key: the preset's first, then the
// request's own text (separated by a blank line) when it brings some.
func (p *Preset) prependSystem(req map[string]json.RawMessage, key string) error {
	if p.System == "" {
		return nil
	}
	text := p.System
	if raw, ok := req[key]; ok && !isNull(raw) {
		var own string
		if err := json.Unmarshal(raw, &own); err != nil {
			return fmt.Errorf("%w: %s must be a string: %w", ErrPresetBody, key, err)
		}
		if own != "" {
			text += "\n\n" + own
		}
	}
	b, err := json.Marshal(text)
	if err != nil {
		return err
	}
	req[key] = b
	return nil
}

// responsesFormat is a chat response_format in the Responses API's text.format shape, which
// has the json_schema fields at the top: {"type":"json_schema","name":...,"schema":...}.
func responsesFormat(rf map[string]any) map[string]any {
	out := map[string]any{"type": rf["type"]}
	if js, ok := rf["json_schema"].(map[string]any); ok {
		for k, v := range js {
			out[k] = v
		}
	}
	return out
}

func (p *Preset) applyCompletion(req map[string]json.RawMessage) error {
	if p.System == "" {
		return nil
	}
	raw, ok := req["prompt"]
	if !ok || isNull(raw) {
		// OpenAI treats a missing prompt as <|endoftext|>, i.e. "start from nothing": the system
		// prompt alone is then the whole prompt.
		b, err := json.Marshal(p.System)
		if err != nil {
			return err
		}
		req["prompt"] = b
		return nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		b, err := json.Marshal(p.System + "\n\n" + one)
		if err != nil {
			return err
		}
		req["prompt"] = b
		return nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err == nil {
		for i := range many {
			many[i] = p.System + "\n\n" + many[i]
		}
		b, err := json.Marshal(many)
		if err != nil {
			return err
		}
		req["prompt"] = b
		return nil
	}
	return fmt.Errorf("%w: preset %q has a system prompt, which cannot be prepended to a token-array prompt; send text", ErrPresetBody, p.Name)
}

func (p *Preset) fillDefaults(endpoint string, req map[string]json.RawMessage) error {
	set := func(key string, v any) error {
		if raw, ok := req[key]; ok && !isNull(raw) {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("preset %q: %s: %w", p.Name, key, err)
		}
		req[key] = b
		return nil
	}
	var errs []error
	if p.Temperature != nil {
		errs = append(errs, set("temperature", *p.Temperature))
	}
	if p.TopP != nil {
		errs = append(errs, set("top_p", *p.TopP))
	}
	if p.MaxTokens != nil {
		switch raw, ok := req["max_completion_tokens"]; {
		case endpoint == EndpointResponses:
			errs = append(errs, set("max_output_tokens", *p.MaxTokens))
		case !ok || isNull(raw):
			errs = append(errs, set("max_tokens", *p.MaxTokens))
		}
	}
	if len(p.Stop) > 0 {
		errs = append(errs, set("stop", p.Stop))
	}
	if p.Seed != nil {
		errs = append(errs, set("seed", *p.Seed))
	}
	if p.ResponseFormat != nil && endpoint == EndpointChatCompletions {
		errs = append(errs, set("response_format", p.ResponseFormat))
	}
	if p.ResponseFormat != nil && endpoint == EndpointResponses {
		var text map[string]json.RawMessage
		if raw, ok := req["text"]; ok && !isNull(raw) {
			if err := json.Unmarshal(raw, &text); err != nil {
				return fmt.Errorf("%w: text must be an object: %w", ErrPresetBody, err)
			}
		}
		if raw, ok := text["format"]; !ok || isNull(raw) {
			if text == nil {
				text = map[string]json.RawMessage{}
			}
			b, err := json.Marshal(responsesFormat(p.ResponseFormat))
			if err != nil {
				return fmt.Errorf("preset %q: response_format: %w", p.Name, err)
			}
			text["format"] = b
			tb, _ := json.Marshal(text)
			req["text"] = tb
		}
	}
	return errors.Join(errs...)
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}
