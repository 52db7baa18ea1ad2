package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/openaierr"
)

// invalid is a 400 invalid_request_error naming param.
func invalid(param, code, format string, args ...any) *openaierr.Error {
	return openaierr.BadRequest(code, param, format, args...)
}

// --- requests ---

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// common holds the fields every generation endpoint shares. The sampling parameters do not
// change what the simulator says, but they are checked as OpenAI checks them (params.go).
type common struct {
	Model               string             `json:"model"`
	Stream              bool               `json:"stream"`
	StreamOptions       *streamOptions     `json:"stream_options"`
	MaxTokens           *int               `json:"max_tokens"`
	MaxCompletionTokens *int               `json:"max_completion_tokens"`
	N                   *int               `json:"n"`
	Seed                *int64             `json:"seed"`
	Temperature         *float64           `json:"temperature"`
	TopP                *float64           `json:"top_p"`
	PresencePenalty     *float64           `json:"presence_penalty"`
	FrequencyPenalty    *float64           `json:"frequency_penalty"`
	LogitBias           map[string]float64 `json:"logit_bias"`
	Stop                json.RawMessage    `json:"stop"`
	User                *string            `json:"user"`
}

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       *string         `json:"name"`
	ToolCalls  []toolCall      `json:"tool_calls"`
	ToolCallID *string         `json:"tool_call_id"`
}

type chatRequest struct {
	common
	Messages          *[]chatMessage  `json:"messages"`
	Logprobs          *bool           `json:"logprobs"`
	TopLogprobs       *int            `json:"top_logprobs"`
	Tools             []toolDef       `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	ResponseFormat    *responseFormat `json:"response_format"`
}

type completionRequest struct {
	common
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     *bool           `json:"echo"`
	BestOf   *int            `json:"best_of"`
	Suffix   *string         `json:"suffix"`
}

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

// request is what ServeInference needs from any of the three endpoints.
type request struct {
	endpoint string
	model    string
	stream   bool
	usage    bool // stream_options.include_usage
	// maxTokens is the client's cap on output tokens; 0 when unset.
	maxTokens int
	seed      int64
	// prompt is the rendered prompt (chat messages in a template, or the completion prompt);
	// promptTokens its estimate, or the exact count when the client sent token ids.
	prompt       string
	promptTokens int
	// inputs are the embedding inputs, one text each (token-id inputs rendered as text).
	inputs         []string
	inputTokens    []int
	base64         bool
	dimensions     int
	wantsEmbedding bool
	// stop are the stop sequences: the text ends before the first of them.
	stop []string
	// tools are the declared function tools; toolChoice what the client allows of them.
	tools      []tool
	toolChoice toolChoice
	// format is the response_format: the reply is JSON (fitting format.schema where set).
	format outputFormat
	// afterTool is whether the conversation ends with a tool result.
	afterTool bool
}

// Maximum number of inputs in one embeddings request, as OpenAI limits it.
const maxEmbeddingInputs = 2048

var chatRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true}

// parseRequest decodes and validates a request body for endpoint. It returns an OpenAI-shaped
// error for anything a client got wrong.
func parseRequest(endpoint string, body []byte) (*request, *openaierr.Error) {
	switch endpoint {
	case agentapi.PathChatCompletions:
		var cr chatRequest
		if e := decodeBody(body, &cr); e != nil {
			return nil, e
		}
		req, e := parseCommon(endpoint, cr.common)
		if e != nil {
			return nil, e
		}
		if e := parseChatOptions(req, &cr); e != nil {
			return nil, e
		}
		if cr.Messages == nil {
			return nil, invalid("messages", "missing_required_parameter", "Missing required parameter: 'messages'.")
		}
		if len(*cr.Messages) == 0 {
			return nil, invalid("messages", "empty_array", "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
		}
		var b strings.Builder
		for i, m := range *cr.Messages {
			if m.Role == "" {
				return nil, invalid(fmt.Sprintf("messages[%d].role", i), "missing_required_parameter", "Missing required parameter: 'messages[%d].role'.", i)
			}
			if !chatRoles[m.Role] {
				return nil, invalid(fmt.Sprintf("messages[%d].role", i), "invalid_value",
					"Invalid value: '%s'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool', and 'function'.", m.Role)
			}
			text, e := messageText(i, m.Content)
			if e != nil {
				return nil, e
			}
			if e := checkToolMessage(i, m); e != nil {
				return nil, e
			}
			// A chat template of the usual shape; its bytes count toward the prompt like a real one.
			b.WriteString("<|" + m.Role + "|>\n" + text + "\n")
			for _, tc := range m.ToolCalls {
				b.WriteString("<|tool_call|>" + tc.Function.Name + " " + tc.Function.Arguments + "\n")
			}
			req.afterTool = m.Role == "tool" || m.Role == "function"
		}
		b.WriteString("<|assistant|>\n")
		req.prompt = b.String()
		req.promptTokens = estimateTokens(req.prompt)
		return req, nil

	case agentapi.PathCompletions:
		var cr completionRequest
		if e := decodeBody(body, &cr); e != nil {
			return nil, e
		}
		req, e := parseCommon(endpoint, cr.common)
		if e != nil {
			return nil, e
		}
		if e := checkCompletionOptions(&cr); e != nil {
			return nil, e
		}
		if isNull(cr.Prompt) {
			return nil, invalid("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'.")
		}
		texts, counts, e := parseTextsOrTokens("prompt", cr.Prompt)
		if e != nil {
			return nil, e
		}
		if len(texts) != 1 {
			return nil, invalid("prompt", "unsupported_value", "The simulated backend takes one prompt per request, got %d.", len(texts))
		}
		req.prompt = texts[0]
		req.promptTokens = max(counts[0], 1)
		return req, nil

	case agentapi.PathEmbeddings:
		var er embeddingRequest
		if e := decodeBody(body, &er); e != nil {
			return nil, e
		}
		if strings.TrimSpace(er.Model) == "" {
			return nil, invalid("model", "missing_required_parameter", "Missing required parameter: 'model'.")
		}
		if isNull(er.Input) {
			return nil, invalid("input", "missing_required_parameter", "Missing required parameter: 'input'.")
		}
		texts, counts, e := parseTextsOrTokens("input", er.Input)
		if e != nil {
			return nil, e
		}
		if len(texts) == 0 {
			return nil, invalid("input", "empty_array", "Invalid 'input': empty array. Expected an array with minimum length 1.")
		}
		if len(texts) > maxEmbeddingInputs {
			return nil, invalid("input", "array_above_max_length", "Invalid 'input': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", maxEmbeddingInputs, len(texts))
		}
		for i, c := range counts {
			if c == 0 {
				return nil, invalid("input", "invalid_value", "Invalid 'input[%d]': empty input. Expected a non-empty string or token array.", i)
			}
		}
		req := &request{endpoint: endpoint, model: er.Model, inputs: texts, inputTokens: counts, wantsEmbedding: true}
		switch er.EncodingFormat {
		case "", "float":
		case "base64":
			req.base64 = true
		default:
			return nil, invalid("encoding_format", "invalid_value", "Invalid value: '%s'. Supported values are: 'float' and 'base64'.", er.EncodingFormat)
		}
		if er.Dimensions != nil {
			if *er.Dimensions < 1 {
				return nil, invalid("dimensions", "integer_below_min_value", "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got %d instead.", *er.Dimensions)
			}
			req.dimensions = *er.Dimensions
		}
		return req, nil
	}
	return nil, &openaierr.Error{Status: http.StatusNotFound, Type: openaierr.TypeInvalidRequest, Code: "unknown_url",
		Message: fmt.Sprintf("Unknown request URL: POST %s. The simulated backend serves %s, %s and %s.", endpoint,
			agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathEmbeddings)}
}

// decodeBody unmarshals a JSON object, translating decoding failures into OpenAI's messages.
func decodeBody(body []byte, v any) *openaierr.Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalid("", "", "We could not parse the JSON body of your request: the body is empty. The API expects a JSON payload.")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field := strings.TrimPrefix(te.Field, "common.") // the embedded struct is not part of the API
			return invalid(field, "invalid_type", "Invalid type for '%s': expected %s, but got %s instead.", field, jsonKind(te.Type.Kind().String()), gotKind(te.Value))
		}
		return invalid("", "", "We could not parse the JSON body of your request: %v. The API expects a JSON payload.", err)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64":
		return "an integer"
	case "float64":
		return "a decimal"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return goKind
}

func parseCommon(endpoint string, c common) (*request, *openaierr.Error) {
	if strings.TrimSpace(c.Model) == "" {
		return nil, invalid("model", "missing_required_parameter", "Missing required parameter: 'model'.")
	}
	req := &request{endpoint: endpoint, model: c.Model, stream: c.Stream}
	if c.StreamOptions != nil && c.Stream {
		req.usage = c.StreamOptions.IncludeUsage
	}
	for _, p := range []struct {
		name string
		v    *int
	}{{"max_tokens", c.MaxTokens}, {"max_completion_tokens", c.MaxCompletionTokens}} {
		if p.v == nil {
			continue
		}
		if *p.v < 1 {
			return nil, invalid(p.name, "integer_below_min_value", "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", p.name, *p.v)
		}
		req.maxTokens = *p.v // max_completion_tokens, checked last, wins as in OpenAI's API
	}
	if c.N != nil && *c.N != 1 {
		if e := intRange("n", *c.N, 1, maxN); e != nil {
			return nil, e
		}
		return nil, invalid("n", "unsupported_value", "Unsupported value: 'n' must be 1 on the simulated backend, got %d.", *c.N)
	}
	if c.Seed != nil {
		req.seed = *c.Seed
	}
	if c.StreamOptions != nil && !c.Stream {
		return nil, invalid("stream_options", "invalid_value", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	if e := checkSampling(c); e != nil {
		return nil, e
	}
	stop, e := parseStop(c.Stop)
	if e != nil {
		return nil, e
	}
	req.stop = stop
	return req, nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// messageText extracts the text of a chat message's content: a string, null (an assistant turn
// with tool calls), or an array of content parts of which the text parts count.
func messageText(i int, raw json.RawMessage) (string, *openaierr.Error) {
	param := fmt.Sprintf("messages[%d].content", i)
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", invalid(param, "invalid_type", "Invalid type for '%s': expected one of a string or array of objects.", param)
	}
	var b strings.Builder
	for j, p := range parts {
		switch p.Type {
		case "text":
			b.WriteString(p.Text)
		case "image_url", "input_audio", "file", "refusal":
			// Non-text parts have no token estimate here; they are accepted and not counted.
		default:
			return "", invalid(fmt.Sprintf("%s[%d].type", param, j), "invalid_value", "Invalid value: '%s'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal' and 'file'.", p.Type)
		}
	}
	return b.String(), nil
}

// parseTextsOrTokens reads what OpenAI accepts as a prompt or an embedding input: a string, an
// array of strings, an array of token ids, or an array of token-id arrays. It returns one text and
// one token count per item; token ids are rendered as text so they hash like text.
func parseTextsOrTokens(param string, raw json.RawMessage) ([]string, []int, *openaierr.Error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []string{s}, []int{estimateTokens(s)}, nil
	}
	var ss []string
	if err := json.Unmarshal(raw, &ss); err == nil {
		counts := make([]int, len(ss))
		for i, x := range ss {
			counts[i] = estimateTokens(x)
		}
		return ss, counts, nil
	}
	var ids []int64
	if err := json.Unmarshal(raw, &ids); err == nil {
		return []string{renderTokens(ids)}, []int{len(ids)}, nil
	}
	var idss [][]int64
	if err := json.Unmarshal(raw, &idss); err == nil {
		texts := make([]string, len(idss))
		counts := make([]int, len(idss))
		for i, x := range idss {
			texts[i], counts[i] = renderTokens(x), len(x)
		}
		return texts, counts, nil
	}
	return nil, nil, invalid(param, "invalid_type", "Invalid type for '%s': expected a string, an array of strings, an array of integers, or an array of integer arrays.", param)
}

func renderTokens(ids []int64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

// estimateTokens is the prompt-size estimate: bytes ÷ 4, rounded up. An empty text is 0 tokens.
func estimateTokens(s string) int {
	return (len(s) + bytesPerToken - 1) / bytesPerToken
}

// --- responses ---

type promptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *promptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// assistantMessage is the answer of a chat completion: text in Content, or (Content null) tool
// calls.
type assistantMessage struct {
	Role      string        `json:"role"`
	Content   *string       `json:"content"`
	Refusal   *string       `json:"refusal"`
	ToolCalls []toolCallOut `json:"tool_calls,omitempty"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      assistantMessage `json:"message"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason string           `json:"finish_reason"`
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             usage        `json:"usage"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

// chunkDelta is a streamed piece of the assistant message. The first carries the role (and
// content "" and refusal null, as OpenAI sends them); the last is empty.
type chunkDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

type firstChunkDelta struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        any       `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// chatChunk is one chat.completion.chunk event. Usage is present (null until the last chunk)
// only when the client asked for stream_options.include_usage, as with OpenAI.
type chatChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type textCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []textChoice `json:"choices"`
	Usage             usage        `json:"usage"`
}

// textChunk is one streamed text_completion event; Usage as in chatChunk.
type textChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []textChoice    `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

type embeddingList struct {
	Object string          `json:"object"`
	Data   []embeddingData `json:"data"`
	Model  string          `json:"model"`
	Usage  embeddingUsage  `json:"usage"`
}

// sse writes server-sent events, flushing each one. The response headers go out with the first
// event, so an error before it can still be a plain JSON error with its status.
type sse struct {
	w       http.ResponseWriter
	flusher http.Flusher
	started bool
}

func newSSE(w http.ResponseWriter) *sse {
	f, _ := w.(http.Flusher)
	return &sse{w: w, flusher: f}
}

func (s *sse) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

func (s *sse) data(b []byte) error {
	s.start()
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	if s.flusher != nil {
		s.flusher.Flush()
	}
	return nil
}

func (s *sse) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.data(b)
}

func (s *sse) done() error { return s.data([]byte("[DONE]")) }
