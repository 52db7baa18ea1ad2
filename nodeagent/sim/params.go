package sim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/herd-llm/herd/openaierr"
)

// Request parameters checked as OpenAI's API checks them: the wrong JSON type is a 400
// invalid_type naming the parameter (decodeBody), a value out of range a 400 with OpenAI's codes
// (decimal_above_max_value, integer_below_min_value, ...). The sampling parameters do not change
// the simulated text; tools, tool_choice, response_format and stop do (structured.go).

const (
	// maxN is OpenAI's bound on n (the simulator itself makes one choice).
	maxN = 128
	// maxStops is how many stop sequences OpenAI takes.
	maxStops = 4
	// maxTopLogprobs bounds chat's top_logprobs, maxCompletionLogprobs completions' logprobs.
	maxTopLogprobs        = 20
	maxCompletionLogprobs = 5
	// maxTools is OpenAI's bound on the tools array.
	maxTools = 128
)

// gotKind names the JSON type encoding/json reports in an UnmarshalTypeError ("string",
// "number 1.5", "bool", ...) as OpenAI's messages do.
func gotKind(v string) string {
	switch {
	case v == "string":
		return "a string"
	case v == "bool":
		return "a boolean"
	case v == "array":
		return "an array"
	case v == "object":
		return "an object"
	case v == "number":
		return "a number"
	case strings.HasPrefix(v, "number "):
		if strings.ContainsAny(v, ".eE") {
			return "a decimal"
		}
		return "an integer"
	}
	return v
}

// floatRange checks a decimal parameter against [lo, hi].
func floatRange(param string, v *float64, lo, hi float64) *openaierr.Error {
	switch {
	case v == nil:
		return nil
	case *v < lo:
		return invalid(param, "decimal_below_min_value", "Invalid '%s': decimal below minimum value. Expected a value >= %s, but got %s instead.", param, num(lo), num(*v))
	case *v > hi:
		return invalid(param, "decimal_above_max_value", "Invalid '%s': decimal above maximum value. Expected a value <= %s, but got %s instead.", param, num(hi), num(*v))
	}
	return nil
}

// intRange checks an integer parameter against [lo, hi].
func intRange(param string, v, lo, hi int) *openaierr.Error {
	switch {
	case v < lo:
		return invalid(param, "integer_below_min_value", "Invalid '%s': integer below minimum value. Expected a value >= %d, but got %d instead.", param, lo, v)
	case v > hi:
		return invalid(param, "integer_above_max_value", "Invalid '%s': integer above maximum value. Expected a value <= %d, but got %d instead.", param, hi, v)
	}
	return nil
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// checkSampling checks the sampling parameters every generation endpoint shares.
func checkSampling(c common) *openaierr.Error {
	for _, p := range []struct {
		name   string
		v      *float64
		lo, hi float64
	}{
		{"temperature", c.Temperature, 0, 2},
		{"top_p", c.TopP, 0, 1},
		{"presence_penalty", c.PresencePenalty, -2, 2},
		{"frequency_penalty", c.FrequencyPenalty, -2, 2},
	} {
		if e := floatRange(p.name, p.v, p.lo, p.hi); e != nil {
			return e
		}
	}
	for k, v := range c.LogitBias {
		if _, err := strconv.ParseUint(k, 10, 32); err != nil {
			return invalid("logit_bias", "invalid_value", "Invalid key in 'logit_bias': '%s'. Expected a token id (a non-negative integer).", k)
		}
		if e := floatRange("logit_bias."+k, &v, -100, 100); e != nil {
			return e
		}
	}
	return nil
}

// parseStop reads stop: null, a string, or an array of at most four strings.
func parseStop(raw json.RawMessage) ([]string, *openaierr.Error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil, nil
		}
		return []string{s}, nil
	}
	var ss []string
	if err := json.Unmarshal(raw, &ss); err != nil {
		return nil, invalid("stop", "invalid_type", "Invalid type for 'stop': expected one of a string or array of strings, but got %s instead.", rawKind(raw))
	}
	if len(ss) > maxStops {
		return nil, invalid("stop", "array_above_max_length", "Invalid 'stop': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", maxStops, len(ss))
	}
	out := ss[:0]
	for _, x := range ss {
		if x != "" {
			out = append(out, x)
		}
	}
	return out, nil
}

// rawKind names the JSON type of a raw value, with its article.
func rawKind(raw json.RawMessage) string {
	t := strings.TrimSpace(string(raw))
	if t == "" {
		return "nothing"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	if strings.ContainsAny(t, ".eE") {
		return "a decimal"
	}
	return "an integer"
}

// checkCompletionOptions checks the parameters only /v1/completions has.
func checkCompletionOptions(cr *completionRequest) *openaierr.Error {
	if cr.Logprobs != nil {
		if e := intRange("logprobs", *cr.Logprobs, 0, maxCompletionLogprobs); e != nil {
			return e
		}
	}
	if cr.BestOf != nil {
		if e := intRange("best_of", *cr.BestOf, 1, 20); e != nil {
			return e
		}
		if *cr.BestOf != 1 {
			return invalid("best_of", "unsupported_value", "Unsupported value: 'best_of' must be 1 on the simulated backend, got %d.", *cr.BestOf)
		}
	}
	return nil
}

// toolCall is a tool call of an earlier assistant turn, as clients send it back.
type toolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// checkToolMessage checks a message's tool fields: a tool result names the call it answers.
func checkToolMessage(i int, m chatMessage) *openaierr.Error {
	if m.Role == "tool" && (m.ToolCallID == nil || *m.ToolCallID == "") {
		return invalid(fmt.Sprintf("messages[%d].tool_call_id", i), "missing_required_parameter", "Missing required parameter: 'messages[%d].tool_call_id'.", i)
	}
	if len(m.ToolCalls) > 0 && m.Role != "assistant" {
		return invalid(fmt.Sprintf("messages[%d].tool_calls", i), "invalid_value", "Invalid parameter: only messages with role 'assistant' can have 'tool_calls'.")
	}
	for j, tc := range m.ToolCalls {
		if tc.Function.Name == "" {
			return invalid(fmt.Sprintf("messages[%d].tool_calls[%d].function.name", i, j), "missing_required_parameter", "Missing required parameter: 'messages[%d].tool_calls[%d].function.name'.", i, j)
		}
	}
	return nil
}

// toolDef is one entry of a chat request's tools array.
type toolDef struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

// responseFormat is a chat request's response_format.
type responseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"json_schema"`
}

// tool is a declared function tool with its parameters' schema read.
type tool struct {
	name   string
	params *schema // nil: no parameters declared
}

// toolChoice is what the client allows: "auto", "none", "required", or "function" with name.
type toolChoice struct {
	mode string
	name string
}

// outputFormat is the requested reply format: "text", "json_object" or "json_schema" (schema set).
type outputFormat struct {
	kind   string
	schema *schema
}

// functionName is OpenAI's rule for function names.
var functionName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// parseChatOptions checks and reads the chat-only parameters: logprobs, tools, tool_choice,
// parallel_tool_calls and response_format.
func parseChatOptions(req *request, cr *chatRequest) *openaierr.Error {
	if cr.TopLogprobs != nil {
		if e := intRange("top_logprobs", *cr.TopLogprobs, 0, maxTopLogprobs); e != nil {
			return e
		}
		if cr.Logprobs == nil || !*cr.Logprobs {
			return invalid("top_logprobs", "invalid_value", "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.")
		}
	}
	if cr.Tools != nil && len(cr.Tools) == 0 {
		return invalid("tools", "empty_array", "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	if len(cr.Tools) > maxTools {
		return invalid("tools", "array_above_max_length", "Invalid 'tools': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", maxTools, len(cr.Tools))
	}
	seen := map[string]bool{}
	for i, t := range cr.Tools {
		p := fmt.Sprintf("tools[%d]", i)
		switch t.Type {
		case "function":
		case "":
			return invalid(p+".type", "missing_required_parameter", "Missing required parameter: '%s.type'.", p)
		case "custom":
			return invalid(p+".type", "unsupported_value", "Tools of type 'custom' are not supported by the simulated backend; only function tools are.")
		default:
			return invalid(p+".type", "invalid_value", "Invalid value: '%s'. Supported values are: 'function' and 'custom'.", t.Type)
		}
		if t.Function == nil {
			return invalid(p+".function", "missing_required_parameter", "Missing required parameter: '%s.function'.", p)
		}
		name := t.Function.Name
		if name == "" {
			return invalid(p+".function.name", "missing_required_parameter", "Missing required parameter: '%s.function.name'.", p)
		}
		if !functionName.MatchString(name) {
			return invalid(p+".function.name", "invalid_value", "Invalid '%s.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", p)
		}
		if seen[name] {
			return invalid("tools", "invalid_value", "Invalid 'tools': function name '%s' is declared twice.", name)
		}
		seen[name] = true
		tl := tool{name: name}
		if !isNull(t.Function.Parameters) {
			s, err := readSchema(t.Function.Parameters)
			if err != nil {
				return invalid(p+".function.parameters", "invalid_function_parameters", "Invalid schema for function '%s': %v.", name, err)
			}
			tl.params = s
		}
		req.tools = append(req.tools, tl)
	}
	tc, e := parseToolChoice(cr.ToolChoice, req.tools)
	if e != nil {
		return e
	}
	req.toolChoice = tc
	f, e := parseResponseFormat(cr.ResponseFormat)
	if e != nil {
		return e
	}
	req.format = f
	return nil
}

// parseToolChoice reads tool_choice: "none", "auto", "required" or
// {"type":"function","function":{"name":...}} naming a declared tool. Absent, it is "auto" with
// tools and "none" without, as in OpenAI's API.
func parseToolChoice(raw json.RawMessage, tools []tool) (toolChoice, *openaierr.Error) {
	if isNull(raw) {
		if len(tools) > 0 {
			return toolChoice{mode: "auto"}, nil
		}
		return toolChoice{mode: "none"}, nil
	}
	if len(tools) == 0 {
		return toolChoice{}, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "none", "auto", "required":
			return toolChoice{mode: s}, nil
		}
		return toolChoice{}, invalid("tool_choice", "invalid_value", "Invalid value: '%s'. Supported values are: 'none', 'auto', and 'required'.", s)
	}
	var obj struct {
		Type     string `json:"type"`
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return toolChoice{}, invalid("tool_choice", "invalid_type", "Invalid type for 'tool_choice': expected one of a string or an object, but got %s instead.", rawKind(raw))
	}
	if obj.Type != "function" {
		return toolChoice{}, invalid("tool_choice.type", "invalid_value", "Invalid value: '%s'. Supported values are: 'function'.", obj.Type)
	}
	if obj.Function == nil || obj.Function.Name == "" {
		return toolChoice{}, invalid("tool_choice.function.name", "missing_required_parameter", "Missing required parameter: 'tool_choice.function.name'.")
	}
	for _, t := range tools {
		if t.name == obj.Function.Name {
			return toolChoice{mode: "function", name: t.name}, nil
		}
	}
	return toolChoice{}, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': function '%s' is not among the declared 'tools'.", obj.Function.Name)
}

// parseResponseFormat reads response_format: text, json_object, or json_schema with a name and a
// schema the simulator can fill.
func parseResponseFormat(rf *responseFormat) (outputFormat, *openaierr.Error) {
	if rf == nil {
		return outputFormat{kind: "text"}, nil
	}
	switch rf.Type {
	case "text", "json_object":
		return outputFormat{kind: rf.Type}, nil
	case "json_schema":
	case "":
		return outputFormat{}, invalid("response_format.type", "missing_required_parameter", "Missing required parameter: 'response_format.type'.")
	default:
		return outputFormat{}, invalid("response_format.type", "invalid_value", "Invalid value: '%s'. Supported values are: 'json_object', 'json_schema', and 'text'.", rf.Type)
	}
	js := rf.JSONSchema
	if js == nil {
		return outputFormat{}, invalid("response_format.json_schema", "missing_required_parameter", "Missing required parameter: 'response_format.json_schema'.")
	}
	if js.Name == "" {
		return outputFormat{}, invalid("response_format.json_schema.name", "missing_required_parameter", "Missing required parameter: 'response_format.json_schema.name'.")
	}
	if !functionName.MatchString(js.Name) {
		return outputFormat{}, invalid("response_format.json_schema.name", "invalid_value", "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.")
	}
	if isNull(js.Schema) {
		// A schema is optional in OpenAI's API: then any JSON object will do.
		return outputFormat{kind: "json_object"}, nil
	}
	s, err := readSchema(js.Schema)
	if err != nil {
		return outputFormat{}, invalid("response_format", "invalid_json_schema", "Invalid schema for response_format '%s': %v.", js.Name, err)
	}
	return outputFormat{kind: "json_schema", schema: s}, nil
}
