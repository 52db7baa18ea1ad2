// Package ollamacompat translates between Ollama's native API (/api/chat, /api/generate,
// /api/embed, /api/embeddings) and the OpenAI API that herd's OpenAI-compatible backends and the
// simulated GPU node speak. It is the one place where that translation lives, both ways: requests
// (Ollama → OpenAI) here, responses (OpenAI → Ollama, streamed or not) in response.go. It does no
// I/O beyond the Writer the agent hands a backend; the agent feeds it bodies and events.
//
// Wire structs are github.com/ollama/ollama/api's own types, so the JSON is Ollama's exactly.
//
// Decisions (the README's "Ollama clients" section lists what cannot map):
//   - Upstream generation always streams (with stream_options.include_usage), whether or not the
//     Ollama client streams: one translation path, and durations measured as tokens arrive
//     (prompt_eval_duration: request to first token; eval_duration: first to last token) where the
//     backend reports no timings. A non-streamed Ollama answer is assembled from the stream.
//   - /api/generate becomes a chat completion (system + user message), so the model's chat
//     template applies as Ollama applies the model's template; raw prompts and prompts with a
//     suffix become legacy completions, which apply no template.
//   - format "json" becomes response_format json_object; a JSON schema becomes response_format
//     json_schema named "response".
//   - Images become image_url parts with data: URLs (the type sniffed from the bytes).
//   - Tool calls get ids where Ollama has none ("call_<message>_<n>"), and a tool message that
//     names its tool (tool_name) without an id is linked to the latest call of that tool, since
//     OpenAI requires tool_call_id.
package ollamacompat

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ollama/ollama/api"
)

// Endpoint is one of Ollama's native inference routes.
type Endpoint int

// The native inference routes.
const (
	Chat Endpoint = iota
	Generate
	Embed
	Embeddings
)

// OpenAI routes requests are translated to.
const (
	PathChatCompletions = "/v1/chat/completions"
	PathCompletions     = "/v1/completions"
	PathEmbeddings      = "/v1/embeddings"
)

// RequestError is an error about the request itself (the client's 400); its message is written
// the way Ollama words its own.
type RequestError struct{ Message string }

// Error implements error.
func (e *RequestError) Error() string { return e.Message }

func badRequest(format string, args ...any) error {
	return &RequestError{Message: fmt.Sprintf(format, args...)}
}

// Upstream is an Ollama request translated to the OpenAI API.
type Upstream struct {
	// Path is the OpenAI route (PathChatCompletions, ...).
	Path string
	// Body is the OpenAI request body.
	Body []byte
	// Completion is true when Path is the legacy completions route (its chunks carry "text").
	Completion bool
}

// oaMessage is an OpenAI chat message as herd sends it.
type oaMessage struct {
	Role       string       `json:"role"`
	Content    any          `json:"content"`
	ToolCalls  []oaToolCall `json:"tool_calls,omitempty"`
	ToolCallID string       `json:"tool_call_id,omitempty"`
}

type oaToolCall struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Function oaToolFunction `json:"function"`
}

type oaToolFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type oaPart struct {
	Type     string      `json:"type"`
	Text     string      `json:"text,omitempty"`
	ImageURL *oaImageURL `json:"image_url,omitempty"`
}

type oaImageURL struct {
	URL string `json:"url"`
}

type oaStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// oaRequest is the OpenAI chat or completions request herd sends. Sampling parameters are
// pointers so that only what the Ollama request set is sent.
type oaRequest struct {
	Model            string           `json:"model"`
	Messages         []oaMessage      `json:"messages,omitempty"`
	Prompt           *string          `json:"prompt,omitempty"`
	Suffix           string           `json:"suffix,omitempty"`
	Stream           bool             `json:"stream"`
	StreamOptions    *oaStreamOptions `json:"stream_options,omitempty"`
	MaxTokens        *int             `json:"max_tokens,omitempty"`
	Temperature      *float64         `json:"temperature,omitempty"`
	TopP             *float64         `json:"top_p,omitempty"`
	TopK             *int             `json:"top_k,omitempty"`
	MinP             *float64         `json:"min_p,omitempty"`
	Seed             *int             `json:"seed,omitempty"`
	Stop             []string         `json:"stop,omitempty"`
	FrequencyPenalty *float64         `json:"frequency_penalty,omitempty"`
	PresencePenalty  *float64         `json:"presence_penalty,omitempty"`
	ResponseFormat   map[string]any   `json:"response_format,omitempty"`
	Tools            api.Tools        `json:"tools,omitempty"`
	ReasoningEffort  string           `json:"reasoning_effort,omitempty"`
}

// oaEmbedRequest is the OpenAI embeddings request herd sends.
type oaEmbedRequest struct {
	Model          string `json:"model"`
	Input          any    `json:"input"`
	EncodingFormat string `json:"encoding_format"`
	Dimensions     int    `json:"dimensions,omitempty"`
}

// Translate turns the native request body for ep into its OpenAI equivalent.
func Translate(ep Endpoint, body []byte) (Upstream, error) {
	switch ep {
	case Chat:
		var req api.ChatRequest
		if err := decode(body, &req); err != nil {
			return Upstream{}, err
		}
		return translateChat(&req)
	case Generate:
		var req api.GenerateRequest
		if err := decode(body, &req); err != nil {
			return Upstream{}, err
		}
		return translateGenerate(&req)
	case Embed:
		var req api.EmbedRequest
		if err := decode(body, &req); err != nil {
			return Upstream{}, err
		}
		input, err := embedInput(req.Input)
		if err != nil {
			return Upstream{}, err
		}
		return marshal(PathEmbeddings, false, oaEmbedRequest{Model: req.Model, Input: input, EncodingFormat: "float", Dimensions: req.Dimensions})
	case Embeddings:
		var req api.EmbeddingRequest
		if err := decode(body, &req); err != nil {
			return Upstream{}, err
		}
		return marshal(PathEmbeddings, false, oaEmbedRequest{Model: req.Model, Input: req.Prompt, EncodingFormat: "float"})
	}
	return Upstream{}, fmt.Errorf("ollamacompat: unknown endpoint %d", ep)
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

func marshal(path string, completion bool, v any) (Upstream, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Upstream{}, badRequest("%v", err)
	}
	return Upstream{Path: path, Body: b, Completion: completion}, nil
}

// embedInput checks /api/embed's input: a string or a list of strings (as Ollama takes it).
func embedInput(in any) (any, error) {
	switch v := in.(type) {
	case string:
		return v, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, badRequest("invalid input type")
			}
			out[i] = s
		}
		return out, nil
	case nil:
		return "", nil
	}
	return nil, badRequest("invalid input type")
}

func translateChat(req *api.ChatRequest) (Upstream, error) {
	out := oaRequest{Model: req.Model, Stream: true, StreamOptions: &oaStreamOptions{IncludeUsage: true}, Tools: req.Tools}
	if err := applyOptions(&out, req.Options); err != nil {
		return Upstream{}, err
	}
	if err := applyFormat(&out, req.Format); err != nil {
		return Upstream{}, err
	}
	applyThink(&out, req.Think)
	msgs, err := chatMessages(req.Messages)
	if err != nil {
		return Upstream{}, err
	}
	out.Messages = msgs
	return marshal(PathChatCompletions, false, out)
}

func translateGenerate(req *api.GenerateRequest) (Upstream, error) {
	out := oaRequest{Model: req.Model, Stream: true, StreamOptions: &oaStreamOptions{IncludeUsage: true}}
	if err := applyOptions(&out, req.Options); err != nil {
		return Upstream{}, err
	}
	if err := applyFormat(&out, req.Format); err != nil {
		return Upstream{}, err
	}
	applyThink(&out, req.Think)
	if req.Raw || req.Suffix != "" {
		if len(req.Images) > 0 {
			return Upstream{}, badRequest("images cannot be sent with raw or suffix on this node's backend (OpenAI completions take text only)")
		}
		prompt := req.Prompt
		if req.System != "" && !req.Raw {
			prompt = req.System + "\n\n" + prompt
		}
		out.Prompt, out.Suffix = &prompt, req.Suffix
		out.ResponseFormat = nil // legacy completions have no response_format
		return marshal(PathCompletions, true, out)
	}
	if req.System != "" {
		out.Messages = append(out.Messages, oaMessage{Role: "system", Content: req.System})
	}
	out.Messages = append(out.Messages, oaMessage{Role: "user", Content: content(req.Prompt, req.Images)})
	return marshal(PathChatCompletions, false, out)
}

// chatMessages maps Ollama messages to OpenAI's.
func chatMessages(in []api.Message) ([]oaMessage, error) {
	out := make([]oaMessage, 0, len(in))
	// lastCall maps a tool's name to the id of its latest call, for tool results without an id.
	lastCall := map[string]string{}
	for i, m := range in {
		om := oaMessage{Role: m.Role, Content: content(m.Content, m.Images)}
		for j, tc := range m.ToolCalls {
			id := tc.ID
			if id == "" {
				id = "call_" + strconv.Itoa(i) + "_" + strconv.Itoa(j)
			}
			args, err := json.Marshal(tc.Function.Arguments)
			if err != nil {
				return nil, badRequest("messages[%d].tool_calls[%d].function.arguments: %v", i, j, err)
			}
			om.ToolCalls = append(om.ToolCalls, oaToolCall{ID: id, Type: "function", Function: oaToolFunction{Name: tc.Function.Name, Arguments: string(args)}})
			lastCall[tc.Function.Name] = id
		}
		if m.Role == "tool" {
			om.ToolCallID = m.ToolCallID
			if om.ToolCallID == "" {
				om.ToolCallID = lastCall[m.ToolName]
			}
		}
		if len(om.ToolCalls) > 0 && m.Content == "" {
			om.Content = nil // OpenAI's assistant message with only tool calls has null content
		}
		out = append(out, om)
	}
	return out, nil
}

// content is a message's content: the text, or text and image parts when there are images.
func content(text string, images []api.ImageData) any {
	if len(images) == 0 {
		return text
	}
	parts := make([]oaPart, 0, len(images)+1)
	if text != "" {
		parts = append(parts, oaPart{Type: "text", Text: text})
	}
	for _, img := range images {
		url := "data:" + imageType(img) + ";base64," + base64.StdEncoding.EncodeToString(img)
		parts = append(parts, oaPart{Type: "image_url", ImageURL: &oaImageURL{URL: url}})
	}
	return parts
}

// imageType sniffs an image's media type; Ollama takes raw bytes without one.
func imageType(b []byte) string {
	t := http.DetectContentType(b)
	if strings.HasPrefix(t, "image/") {
		return t
	}
	return "image/png"
}

// applyFormat maps Ollama's format ("json" or a JSON schema) to response_format.
func applyFormat(out *oaRequest, format json.RawMessage) error {
	f := strings.TrimSpace(string(format))
	switch {
	case f == "" || f == "null" || f == `""`:
		return nil
	case f == `"json"`:
		out.ResponseFormat = map[string]any{"type": "json_object"}
		return nil
	case strings.HasPrefix(f, "{"):
		var schema map[string]any
		if err := json.Unmarshal(format, &schema); err != nil {
			return badRequest("format: %v", err)
		}
		out.ResponseFormat = map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "response", "schema": schema}}
		return nil
	}
	return badRequest("invalid format: %s; expected \"json\" or a valid JSON Schema", f)
}

// applyThink maps a think level ("high", "medium", "low") to reasoning_effort; true/false have
// no OpenAI equivalent.
func applyThink(out *oaRequest, t *api.ThinkValue) {
	if t != nil && t.IsString() {
		out.ReasoningEffort = t.String()
	}
}

// applyOptions maps Ollama's options to OpenAI parameters. Options OpenAI-compatible servers have
// no name for (num_ctx, repeat_penalty, mirostat, ...) are dropped, as Ollama drops options it
// does not know; a mapped option of the wrong type is a 400, as in Ollama.
func applyOptions(out *oaRequest, opts map[string]any) error {
	for k, v := range opts {
		if v == nil {
			continue
		}
		var err error
		switch k {
		case "temperature":
			out.Temperature, err = floatOpt(k, v)
		case "top_p":
			out.TopP, err = floatOpt(k, v)
		case "min_p":
			out.MinP, err = floatOpt(k, v)
		case "frequency_penalty":
			out.FrequencyPenalty, err = floatOpt(k, v)
		case "presence_penalty":
			out.PresencePenalty, err = floatOpt(k, v)
		case "top_k":
			out.TopK, err = intOpt(k, v)
		case "seed":
			out.Seed, err = intOpt(k, v)
		case "num_predict":
			var n *int
			if n, err = intOpt(k, v); err == nil && *n > 0 {
				out.MaxTokens = n // -1 (no limit) and -2 (fill the context) leave max_tokens unset
			}
		case "stop":
			out.Stop, err = stringsOpt(k, v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func floatOpt(k string, v any) (*float64, error) {
	f, ok := v.(float64)
	if !ok {
		return nil, badRequest("option %q must be of type float32", k)
	}
	return &f, nil
}

func intOpt(k string, v any) (*int, error) {
	f, ok := v.(float64)
	if !ok {
		return nil, badRequest("option %q must be of type integer", k)
	}
	n := int(f)
	return &n, nil
}

func stringsOpt(k string, v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, badRequest("option %q must be of type array", k)
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, badRequest("option %q must be of an array of strings", k)
		}
		out[i] = s
	}
	return out, nil
}
