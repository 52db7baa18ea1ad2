package sim

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// TestParamValidation: wrong types and values out of OpenAI's ranges are 400s in the OpenAI error
// shape naming the parameter, with OpenAI's codes; the edges of each range are accepted.
func TestParamValidation(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: newAutoClock(), Models: []string{"llama3.2:1b"}})
	const msgs = `"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]`
	const fn = `{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}`
	chat := func(extra string) string { return "{" + msgs + "," + extra + "}" }
	for _, tc := range []struct {
		name, body, code, param, message string // message: a part of the message
	}{
		// Types.
		{"temperature string", chat(`"temperature":"hot"`), "invalid_type", "temperature", "expected a decimal, but got a string"},
		{"top_p string", chat(`"top_p":"x"`), "invalid_type", "top_p", "expected a decimal"},
		{"stop number", chat(`"stop":5`), "invalid_type", "stop", "expected one of a string or array of strings, but got an integer"},
		{"stop array of numbers", chat(`"stop":[1,2]`), "invalid_type", "stop", ""},
		{"tools string", chat(`"tools":"x"`), "invalid_type", "tools", "expected an array"},
		{"tools of numbers", chat(`"tools":[1]`), "invalid_type", "tools", ""},
		{"max_tokens decimal", chat(`"max_tokens":1.5`), "invalid_type", "max_tokens", "expected an integer, but got a decimal"},
		{"n string", chat(`"n":"2"`), "invalid_type", "n", ""},
		{"seed bool", chat(`"seed":true`), "invalid_type", "seed", "but got a boolean"},
		{"presence_penalty object", chat(`"presence_penalty":{}`), "invalid_type", "presence_penalty", ""},
		{"logit_bias array", chat(`"logit_bias":[1]`), "invalid_type", "logit_bias", ""},
		{"logprobs number", chat(`"logprobs":1`), "invalid_type", "logprobs", ""},
		{"user number", chat(`"user":5`), "invalid_type", "user", ""},
		{"response_format string", chat(`"response_format":"json"`), "invalid_type", "response_format", ""},
		{"tool_choice number", chat(`"tools":[` + fn + `],"tool_choice":3`), "invalid_type", "tool_choice", ""},
		{"parallel_tool_calls string", chat(`"tools":[` + fn + `],"parallel_tool_calls":"yes"`), "invalid_type", "parallel_tool_calls", ""},
		// Ranges.
		{"temperature 99", chat(`"temperature":99`), "decimal_above_max_value", "temperature", "Expected a value <= 2, but got 99 instead"},
		{"temperature negative", chat(`"temperature":-0.1`), "decimal_below_min_value", "temperature", "Expected a value >= 0"},
		{"top_p above 1", chat(`"top_p":1.01`), "decimal_above_max_value", "top_p", "<= 1"},
		{"top_p negative", chat(`"top_p":-1`), "decimal_below_min_value", "top_p", ""},
		{"presence_penalty 3", chat(`"presence_penalty":3`), "decimal_above_max_value", "presence_penalty", "<= 2"},
		{"frequency_penalty -2.5", chat(`"frequency_penalty":-2.5`), "decimal_below_min_value", "frequency_penalty", ">= -2"},
		{"n zero", chat(`"n":0`), "integer_below_min_value", "n", ">= 1"},
		{"n 129", chat(`"n":129`), "integer_above_max_value", "n", "<= 128"},
		{"max_completion_tokens zero", chat(`"max_completion_tokens":0`), "integer_below_min_value", "max_completion_tokens", ""},
		{"top_logprobs 21", chat(`"logprobs":true,"top_logprobs":21`), "integer_above_max_value", "top_logprobs", "<= 20"},
		{"top_logprobs without logprobs", chat(`"top_logprobs":2`), "invalid_value", "top_logprobs", "'logprobs' must be set to true"},
		{"logit_bias 101", chat(`"logit_bias":{"42":101}`), "decimal_above_max_value", "logit_bias.42", "<= 100"},
		{"logit_bias key", chat(`"logit_bias":{"abc":1}`), "invalid_value", "logit_bias", "abc"},
		{"five stops", chat(`"stop":["a","b","c","d","e"]`), "array_above_max_length", "stop", "maximum length 4"},
		{"stream_options without stream", chat(`"stream_options":{"include_usage":true}`), "invalid_value", "stream_options", "only allowed when 'stream' is enabled"},
		// Tools, tool_choice and response_format.
		{"tools empty", chat(`"tools":[]`), "empty_array", "tools", ""},
		{"tool type missing", chat(`"tools":[{"function":{"name":"f"}}]`), "missing_required_parameter", "tools[0].type", ""},
		{"tool type unknown", chat(`"tools":[{"type":"web_search"}]`), "invalid_value", "tools[0].type", "'web_search'"},
		{"tool function missing", chat(`"tools":[{"type":"function"}]`), "missing_required_parameter", "tools[0].function", ""},
		{"tool name missing", chat(`"tools":[{"type":"function","function":{}}]`), "missing_required_parameter", "tools[0].function.name", ""},
		{"tool name bad", chat(`"tools":[{"type":"function","function":{"name":"get weather"}}]`), "invalid_value", "tools[0].function.name", "pattern"},
		{"tool name twice", chat(`"tools":[` + fn + `,` + fn + `]`), "invalid_value", "tools", "twice"},
		{"tool parameters not a schema", chat(`"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"banana"}}}]`), "invalid_function_parameters", "tools[0].function.parameters", "banana"},
		{"tool parameters a string", chat(`"tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]`), "invalid_function_parameters", "tools[0].function.parameters", ""},
		{"tool_choice without tools", chat(`"tool_choice":"auto"`), "invalid_value", "tool_choice", "only allowed when 'tools' are specified"},
		{"tool_choice unknown mode", chat(`"tools":[` + fn + `],"tool_choice":"sometimes"`), "invalid_value", "tool_choice", "'sometimes'"},
		{"tool_choice unknown function", chat(`"tools":[` + fn + `],"tool_choice":{"type":"function","function":{"name":"nope"}}`), "invalid_value", "tool_choice", "nope"},
		{"tool_choice no name", chat(`"tools":[` + fn + `],"tool_choice":{"type":"function"}`), "missing_required_parameter", "tool_choice.function.name", ""},
		{"response_format unknown", chat(`"response_format":{"type":"xml"}`), "invalid_value", "response_format.type", "'xml'"},
		{"response_format no type", chat(`"response_format":{}`), "missing_required_parameter", "response_format.type", ""},
		{"json_schema missing", chat(`"response_format":{"type":"json_schema"}`), "missing_required_parameter", "response_format.json_schema", ""},
		{"json_schema no name", chat(`"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}`), "missing_required_parameter", "response_format.json_schema.name", ""},
		{"json_schema bad schema", chat(`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"integer","minimum":5,"maximum":1}}}`), "invalid_json_schema", "response_format", "minimum 5"},
		{"json_schema dangling ref", chat(`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"$ref":"#/$defs/nope"}}}`), "invalid_json_schema", "response_format", "points at nothing"},
		{"tool message without id", `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"},{"role":"tool","content":"42"}]}`, "missing_required_parameter", "messages[1].tool_call_id", ""},
		{"user message with tool_calls", `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "invalid_value", "messages[0].tool_calls", ""},
		// Completions.
		{"completion temperature", `{"model":"llama3.2:1b","prompt":"x","temperature":"warm"}`, "invalid_type", "temperature", ""},
		{"completion logprobs 6", `{"model":"llama3.2:1b","prompt":"x","logprobs":6}`, "integer_above_max_value", "logprobs", "<= 5"},
		{"completion echo string", `{"model":"llama3.2:1b","prompt":"x","echo":"yes"}`, "invalid_type", "echo", ""},
		{"completion best_of 21", `{"model":"llama3.2:1b","prompt":"x","best_of":21}`, "integer_above_max_value", "best_of", ""},
		{"completion stop", `{"model":"llama3.2:1b","prompt":"x","stop":{"a":1}}`, "invalid_type", "stop", "but got an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := agentapi.PathChatCompletions
			if strings.Contains(tc.body, `"prompt"`) {
				ep = agentapi.PathCompletions
			}
			w := call(context.Background(), n, ep, tc.body)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			e := decodeJSON[map[string]map[string]any](t, w.Body.Bytes())["error"]
			if e["type"] != "invalid_request_error" || e["code"] != tc.code || e["param"] != tc.param {
				t.Errorf("type %v code %v param %v, want invalid_request_error %s %s", e["type"], e["code"], e["param"], tc.code, tc.param)
			}
			if msg, _ := e["message"].(string); !strings.Contains(msg, tc.message) {
				t.Errorf("message %q lacks %q", msg, tc.message)
			}
		})
	}

	// The edges of every range, and the other legal forms, are accepted.
	for _, extra := range []string{
		`"temperature":0`, `"temperature":2`, `"temperature":null`, `"top_p":0`, `"top_p":1`,
		`"presence_penalty":-2`, `"frequency_penalty":2`, `"n":1`, `"stop":"x"`, `"stop":["a","b","c","d"]`, `"stop":null`,
		`"logit_bias":{"50256":-100}`, `"logprobs":true,"top_logprobs":20`, `"user":"u1"`, `"seed":-1`,
		`"stream":true,"stream_options":{"include_usage":true}`, `"stream":false,"stream_options":null`,
		`"tools":[` + fn + `],"tool_choice":"none"`, `"tools":[` + fn + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}}`,
		`"tools":[` + fn + `],"parallel_tool_calls":false`, `"tools":[{"type":"function","function":{"name":"noargs"}}]`,
		`"response_format":{"type":"text"}`, `"response_format":{"type":"json_object"}`,
		`"response_format":{"type":"json_schema","json_schema":{"name":"any"}}`,
	} {
		if w := call(context.Background(), n, agentapi.PathChatCompletions, chat(extra+`,"max_tokens":3`)); w.Code != http.StatusOK {
			t.Errorf("%s: status %d: %s", extra, w.Code, w.Body)
		}
	}
	if w := call(context.Background(), n, agentapi.PathCompletions, `{"model":"llama3.2:1b","prompt":"x","logprobs":5,"echo":false,"best_of":1,"max_tokens":2}`); w.Code != http.StatusOK {
		t.Errorf("completion: status %d: %s", w.Code, w.Body)
	}
}

// TestStopSequences: the text ends before the first stop sequence, which is not sent, with
// finish_reason stop, on both generation endpoints.
func TestStopSequences(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: newAutoClock(), Models: []string{"llama3.2:1b"}, Seed: 7})
	full := decodeJSON[chatResp](t, call(context.Background(), n, agentapi.PathChatCompletions, chatBody("llama3.2:1b", "tell me", nil)).Body.Bytes())
	text := full.Choices[0].Message.Content
	words := strings.Fields(text)
	if len(words) < 4 {
		t.Fatalf("text too short: %q", text)
	}
	stop := " " + words[3] // a sequence the text holds
	want := text[:strings.Index(text, stop)]
	got := decodeJSON[chatResp](t, call(context.Background(), n, agentapi.PathChatCompletions,
		chatBody("llama3.2:1b", "tell me", map[string]any{"stop": []string{"zzz-not-there", stop}})).Body.Bytes())
	if c := got.Choices[0]; c.Message.Content != want || c.FinishReason != "stop" {
		t.Errorf("stopped at %q: %q (%s), want %q", stop, c.Message.Content, c.FinishReason, want)
	}
	if got.Usage.CompletionTokens >= full.Usage.CompletionTokens {
		t.Errorf("completion tokens %d, full text %d", got.Usage.CompletionTokens, full.Usage.CompletionTokens)
	}
}
