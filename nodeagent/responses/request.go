// Package responses translates the OpenAI Responses API (POST /v1/responses) to and from chat
// completions, for backends that do not serve it themselves: the simulated GPU node, and
// OpenAI-compatible servers (or Ollama releases before 0.13.3) without the route. An agent whose
// backend serves /v1/responses natively (Ollama ≥ 0.13.3, vLLM) passes requests through instead.
//
// ToChat turns a Responses request into a chat completions request; Writer stands in for the
// client's ResponseWriter while the backend answers that chat request and writes, in its place, the
// Responses answer: a response object, or the streamed event sequence (response.created,
// response.in_progress, response.output_item.added, response.content_part.added,
// response.output_text.delta…, response.output_text.done, response.content_part.done,
// response.output_item.done, response.completed with usage; function calls as function_call items
// with response.function_call_arguments.delta/done), each with its sequence_number.
//
// Decisions (what does not map):
//   - Nothing is stored: the response says "store": false, previous_response_id, conversation
//     and item_reference inputs (which need a stored response) are refused with a 400, and so is
//     background mode, which needs one to poll.
//   - Only function tools map to chat tools; built-in tools (web_search, file_search, computer
//     use, code interpreter, MCP, ...) are refused with a 400 naming the tool.
//   - input_image maps to a chat image_url part (URL or data URL); file inputs (file_id,
//     input_file) are refused: there is no file store behind a chat backend.
//   - Reasoning items in the input are dropped (a chat backend cannot take them back). Reasoning
//     text a backend sends (reasoning_content or reasoning, in chunks or in the message) becomes a
//     reasoning item before the message, its text one reasoning_text content part, streamed as
//     response.reasoning_text.delta/done; its summary is empty, as a chat backend writes none.
//   - developer messages become system messages, which every chat backend accepts.
//   - A chat finish_reason "length" makes the response "incomplete" with reason
//     max_output_tokens; "content_filter" makes it incomplete with reason content_filter.
package responses

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/herd-llm/herd/openaierr"
)

// Error is a request the translation refuses, as herd's one OpenAI error.
type Error = openaierr.Error

func invalid(param, code, format string, args ...any) *Error {
	return openaierr.BadRequest(code, param, format, args...)
}

// wireRequest is a Responses request as far as the translation reads it.
type wireRequest struct {
	Model              *string           `json:"model"`
	Input              json.RawMessage   `json:"input"`
	Instructions       json.RawMessage   `json:"instructions"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	Temperature        *float64          `json:"temperature"`
	TopP               *float64          `json:"top_p"`
	Tools              []json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls"`
	Text               *textConfig       `json:"text"`
	Stream             *bool             `json:"stream"`
	Metadata           json.RawMessage   `json:"metadata"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Conversation       json.RawMessage   `json:"conversation"`
	Background         *bool             `json:"background"`
	Prompt             json.RawMessage   `json:"prompt"`
	Reasoning          *reasoning        `json:"reasoning"`
	User               *string           `json:"user"`
	Truncation         *string           `json:"truncation"`
	// Not in the Responses API, but clients of OpenAI-compatible servers send them; passed on.
	Seed *int64          `json:"seed"`
	Stop json.RawMessage `json:"stop"`
}

type textConfig struct {
	Format json.RawMessage `json:"format"`
}

type reasoning struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

// Request is what the answer echoes of the Responses request it answers.
type Request struct {
	Model             string
	Stream            bool
	Instructions      json.RawMessage // a JSON string, or null
	MaxOutputTokens   *int
	Temperature       float64
	TopP              float64
	Tools             json.RawMessage // the request's tools array as sent ([] if none)
	ToolChoice        json.RawMessage
	ParallelToolCalls bool
	TextFormat        json.RawMessage
	Metadata          json.RawMessage
	Reasoning         json.RawMessage // {"effort","summary"} or null
	Truncation        string
	User              json.RawMessage
}

// chat request wire types.
type chatRequest struct {
	Model             string          `json:"model"`
	Messages          []chatMessage   `json:"messages"`
	Stream            bool            `json:"stream,omitempty"`
	StreamOptions     *streamOptions  `json:"stream_options,omitempty"`
	MaxTokens         *int            `json:"max_tokens,omitempty"`
	Temperature       *float64        `json:"temperature,omitempty"`
	TopP              *float64        `json:"top_p,omitempty"`
	Tools             []chatTool      `json:"tools,omitempty"`
	ToolChoice        json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    json.RawMessage `json:"response_format,omitempty"`
	ReasoningEffort   string          `json:"reasoning_effort,omitempty"`
	User              string          `json:"user,omitempty"`
	Seed              *int64          `json:"seed,omitempty"`
	Stop              json.RawMessage `json:"stop,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role       string         `json:"role"`
	Content    any            `json:"content"` // string, []chatPart, or nil
	ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

type chatPart struct {
	Type     string    `json:"type"`
	Text     string    `json:"text,omitempty"`
	ImageURL *imageURL `json:"image_url,omitempty"`
}

type imageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

type chatToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function chatFunction `json:"function"`
}

type chatFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type chatTool struct {
	Type     string           `json:"type"`
	Function chatToolFunction `json:"function"`
}

type chatToolFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// inputItem is one element of a Responses input array.
type inputItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

type inputPart struct {
	Type     string  `json:"type"`
	Text     string  `json:"text"`
	Refusal  string  `json:"refusal"`
	ImageURL *string `json:"image_url"`
	FileID   *string `json:"file_id"`
	Detail   string  `json:"detail"`
}

var (
	jsonNull  = json.RawMessage("null")
	jsonEmpty = json.RawMessage("[]")
	jsonAuto  = json.RawMessage(`"auto"`)
	jsonText  = json.RawMessage(`{"type":"text"}`)
	jsonObj   = json.RawMessage("{}")
)

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, jsonNull)
}

// refused says why a Responses request cannot be served, whatever the backend: the features that
// need a stored response. It returns nil when none is asked for.
func refused(r *wireRequest) *Error {
	switch {
	case r.PreviousResponseID != nil && *r.PreviousResponseID != "":
		return invalid("previous_response_id", "unsupported_parameter",
			"previous_response_id is not supported: herd does not store responses (store is always false). Send the whole conversation in input instead.")
	case !isNull(r.Conversation):
		return invalid("conversation", "unsupported_parameter",
			"conversation is not supported: herd does not store conversations. Send the whole conversation in input instead.")
	case r.Background != nil && *r.Background:
		return invalid("background", "unsupported_parameter",
			"background mode is not supported: herd does not store responses to poll. Use stream=true for long answers.")
	case !isNull(r.Prompt):
		return invalid("prompt", "unsupported_parameter", "Stored prompt templates are not supported; send instructions and input instead.")
	}
	return nil
}

// ToChat translates a Responses request body into a chat completions request body, and returns
// what the answer must echo. A request it cannot translate is an *Error (400).
func ToChat(body []byte) ([]byte, *Request, *Error) {
	var r wireRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&r); err != nil {
		return nil, nil, invalid("", "invalid_json", "We could not parse the JSON body of your request: %v.", err)
	}
	if r.Model == nil || *r.Model == "" {
		return nil, nil, invalid("model", "missing_required_parameter", "Missing required parameter: 'model'.")
	}
	if e := refused(&r); e != nil {
		return nil, nil, e
	}
	out := &Request{
		Model: *r.Model, Instructions: jsonNull, MaxOutputTokens: r.MaxOutputTokens,
		Temperature: 1, TopP: 1, Tools: jsonEmpty, ToolChoice: jsonAuto, ParallelToolCalls: true,
		TextFormat: jsonText, Metadata: jsonObj, Reasoning: jsonNull, Truncation: "disabled", User: jsonNull,
	}
	chat := chatRequest{Model: *r.Model, MaxTokens: r.MaxOutputTokens, Temperature: r.Temperature, TopP: r.TopP,
		ParallelToolCalls: r.ParallelToolCalls, Seed: r.Seed}
	if !isNull(r.Stop) {
		chat.Stop = r.Stop
	}
	if r.Stream != nil && *r.Stream {
		out.Stream = true
		chat.Stream = true
		chat.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	if r.Temperature != nil {
		out.Temperature = *r.Temperature
	}
	if r.TopP != nil {
		out.TopP = *r.TopP
	}
	if r.ParallelToolCalls != nil {
		out.ParallelToolCalls = *r.ParallelToolCalls
	}
	if r.Truncation != nil && *r.Truncation != "" {
		out.Truncation = *r.Truncation
	}
	if !isNull(r.Metadata) {
		out.Metadata = r.Metadata
	}
	if r.User != nil {
		chat.User = *r.User
		out.User, _ = json.Marshal(*r.User)
	}
	if r.Reasoning != nil {
		if r.Reasoning.Effort != nil {
			chat.ReasoningEffort = *r.Reasoning.Effort
		}
		out.Reasoning, _ = json.Marshal(r.Reasoning)
	}

	if !isNull(r.Instructions) {
		var s string
		if err := json.Unmarshal(r.Instructions, &s); err != nil {
			return nil, nil, invalid("instructions", "invalid_type", "Invalid type for 'instructions': expected a string.")
		}
		out.Instructions = r.Instructions
		if s != "" {
			chat.Messages = append(chat.Messages, chatMessage{Role: "system", Content: s})
		}
	}
	msgs, e := inputMessages(r.Input)
	if e != nil {
		return nil, nil, e
	}
	chat.Messages = append(chat.Messages, msgs...)
	if len(chat.Messages) == 0 {
		return nil, nil, invalid("input", "missing_required_parameter", "Missing required parameter: 'input'.")
	}

	if len(r.Tools) > 0 {
		out.Tools, _ = json.Marshal(r.Tools)
	}
	for i, raw := range r.Tools {
		t, e := chatToolOf(i, raw)
		if e != nil {
			return nil, nil, e
		}
		chat.Tools = append(chat.Tools, t)
	}
	if !isNull(r.ToolChoice) {
		tc, e := chatToolChoice(r.ToolChoice)
		if e != nil {
			return nil, nil, e
		}
		out.ToolChoice = r.ToolChoice
		// Chat completions refuse a tool_choice without tools (OpenAI, and the simulator, answer
		// 400); the Responses API takes one, so it goes only with tools.
		if len(chat.Tools) > 0 {
			chat.ToolChoice = tc
		}
	}
	if r.Text != nil && !isNull(r.Text.Format) {
		rf, e := chatResponseFormat(r.Text.Format)
		if e != nil {
			return nil, nil, e
		}
		chat.ResponseFormat, out.TextFormat = rf, r.Text.Format
	}
	b, err := json.Marshal(chat)
	if err != nil {
		return nil, nil, invalid("", "invalid_request", "Could not translate the request: %v.", err)
	}
	return b, out, nil
}

// inputMessages translates input (a string, or an array of items) into chat messages.
func inputMessages(input json.RawMessage) ([]chatMessage, *Error) {
	if isNull(input) {
		return nil, nil
	}
	t := bytes.TrimSpace(input)
	switch t[0] {
	case '"':
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return nil, invalid("input", "invalid_type", "Invalid 'input': %v.", err)
		}
		return []chatMessage{{Role: "user", Content: s}}, nil
	case '[':
	default:
		return nil, invalid("input", "invalid_type", "Invalid type for 'input': expected a string or an array of input items.")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(t, &items); err != nil {
		return nil, invalid("input", "invalid_type", "Invalid 'input': %v.", err)
	}
	var msgs []chatMessage
	for i, raw := range items {
		var it inputItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return nil, invalid(fmt.Sprintf("input[%d]", i), "invalid_type", "Invalid 'input[%d]': expected an input item object.", i)
		}
		switch it.Type {
		case "", "message":
			m, e := messageItem(i, it)
			if e != nil {
				return nil, e
			}
			msgs = append(msgs, m)
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return nil, invalid(fmt.Sprintf("input[%d]", i), "missing_required_parameter", "Invalid 'input[%d]': a function_call item needs call_id and name.", i)
			}
			tc := chatToolCall{ID: it.CallID, Type: "function", Function: chatFunction{Name: it.Name, Arguments: it.Arguments}}
			// Consecutive calls are one assistant turn with several tool calls.
			if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" && len(msgs[n-1].ToolCalls) > 0 {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, tc)
			} else {
				msgs = append(msgs, chatMessage{Role: "assistant", Content: "", ToolCalls: []chatToolCall{tc}})
			}
		case "function_call_output":
			if it.CallID == "" {
				return nil, invalid(fmt.Sprintf("input[%d].call_id", i), "missing_required_parameter", "Invalid 'input[%d]': a function_call_output item needs call_id.", i)
			}
			text, e := outputText(i, it.Output)
			if e != nil {
				return nil, e
			}
			msgs = append(msgs, chatMessage{Role: "tool", ToolCallID: it.CallID, Content: text})
		case "reasoning":
			// A chat backend cannot take reasoning back; the conversation goes on without it.
		case "item_reference":
			return nil, invalid(fmt.Sprintf("input[%d]", i), "unsupported_parameter", "item_reference inputs are not supported: herd does not store responses.")
		default:
			return nil, invalid(fmt.Sprintf("input[%d].type", i), "unsupported_value", "Input items of type '%s' are not supported by this backend.", it.Type)
		}
	}
	return msgs, nil
}

var messageRoles = map[string]string{"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}

// messageItem translates a message input item.
func messageItem(i int, it inputItem) (chatMessage, *Error) {
	role, ok := messageRoles[it.Role]
	if !ok {
		return chatMessage{}, invalid(fmt.Sprintf("input[%d].role", i), "invalid_value",
			"Invalid value for 'input[%d].role': '%s'. Supported values are: 'user', 'assistant', 'system', and 'developer'.", i, it.Role)
	}
	if isNull(it.Content) {
		return chatMessage{}, invalid(fmt.Sprintf("input[%d].content", i), "missing_required_parameter", "Missing required parameter: 'input[%d].content'.", i)
	}
	c := bytes.TrimSpace(it.Content)
	if c[0] == '"' {
		var s string
		if err := json.Unmarshal(c, &s); err != nil {
			return chatMessage{}, invalid(fmt.Sprintf("input[%d].content", i), "invalid_type", "Invalid 'input[%d].content': %v.", i, err)
		}
		return chatMessage{Role: role, Content: s}, nil
	}
	var parts []inputPart
	if err := json.Unmarshal(c, &parts); err != nil {
		return chatMessage{}, invalid(fmt.Sprintf("input[%d].content", i), "invalid_type", "Invalid type for 'input[%d].content': expected a string or an array of content parts.", i)
	}
	var out []chatPart
	var text strings.Builder
	images := false
	for j, p := range parts {
		param := fmt.Sprintf("input[%d].content[%d]", i, j)
		switch p.Type {
		case "input_text", "output_text", "text":
			out = append(out, chatPart{Type: "text", Text: p.Text})
			text.WriteString(p.Text)
		case "refusal":
			out = append(out, chatPart{Type: "text", Text: p.Refusal})
			text.WriteString(p.Refusal)
		case "input_image":
			if p.ImageURL == nil || *p.ImageURL == "" {
				return chatMessage{}, invalid(param+".image_url", "unsupported_parameter", "Invalid '%s': only image_url images are supported (no file_id: herd has no file store for images).", param)
			}
			images = true
			d := p.Detail
			if d == "" {
				d = "auto"
			}
			out = append(out, chatPart{Type: "image_url", ImageURL: &imageURL{URL: *p.ImageURL, Detail: d}})
		case "input_file":
			return chatMessage{}, invalid(param+".type", "unsupported_value", "Invalid '%s': input_file is not supported by this backend.", param)
		default:
			return chatMessage{}, invalid(param+".type", "invalid_value", "Invalid value for '%s.type': '%s'.", param, p.Type)
		}
	}
	if images {
		return chatMessage{Role: role, Content: out}, nil
	}
	// Text only: one string, which every chat backend takes for every role.
	return chatMessage{Role: role, Content: text.String()}, nil
}

// outputText is a function_call_output's output as text: a string, or text parts joined.
func outputText(i int, raw json.RawMessage) (string, *Error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []inputPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", invalid(fmt.Sprintf("input[%d].output", i), "invalid_type", "Invalid type for 'input[%d].output': expected a string or an array of content parts.", i)
	}
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// chatToolOf translates one Responses tool; only function tools map.
func chatToolOf(i int, raw json.RawMessage) (chatTool, *Error) {
	var t struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return chatTool{}, invalid(fmt.Sprintf("tools[%d]", i), "invalid_type", "Invalid 'tools[%d]': expected a tool object.", i)
	}
	if t.Type != "function" {
		return chatTool{}, invalid(fmt.Sprintf("tools[%d].type", i), "unsupported_value",
			"Tools of type '%s' are not supported by this backend; only function tools are.", t.Type)
	}
	if t.Name == "" {
		return chatTool{}, invalid(fmt.Sprintf("tools[%d].name", i), "missing_required_parameter", "Missing required parameter: 'tools[%d].name'.", i)
	}
	params := t.Parameters
	if isNull(params) {
		params = nil
	}
	return chatTool{Type: "function", Function: chatToolFunction{Name: t.Name, Description: t.Description, Parameters: params, Strict: t.Strict}}, nil
}

// chatToolChoice translates tool_choice: a mode string as it is, a named function into chat's
// nested shape.
func chatToolChoice(raw json.RawMessage) (json.RawMessage, *Error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto", "none", "required":
			return raw, nil
		}
		return nil, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': '%s'.", s)
	}
	var tc struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &tc); err != nil || tc.Type != "function" || tc.Name == "" {
		return nil, invalid("tool_choice", "unsupported_value", "Only 'auto', 'none', 'required' or {\"type\":\"function\",\"name\":...} tool choices are supported by this backend.")
	}
	b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}})
	return b, nil
}

// chatResponseFormat translates text.format into chat's response_format.
func chatResponseFormat(raw json.RawMessage) (json.RawMessage, *Error) {
	var f struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict,omitempty"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, invalid("text.format", "invalid_type", "Invalid type for 'text.format': expected an object.")
	}
	switch f.Type {
	case "text":
		return nil, nil
	case "json_object":
		return json.RawMessage(`{"type":"json_object"}`), nil
	case "json_schema":
		if f.Name == "" || isNull(f.Schema) {
			return nil, invalid("text.format", "missing_required_parameter", "A json_schema text format needs name and schema.")
		}
		js := map[string]any{"name": f.Name, "schema": f.Schema}
		if f.Description != "" {
			js["description"] = f.Description
		}
		if f.Strict != nil {
			js["strict"] = *f.Strict
		}
		b, _ := json.Marshal(map[string]any{"type": "json_schema", "json_schema": js})
		return b, nil
	}
	return nil, invalid("text.format.type", "invalid_value", "Invalid value for 'text.format.type': '%s'.", f.Type)
}
