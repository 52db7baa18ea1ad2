package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// schemaCases are the JSON Schemas the generator is held to: what the published clients send
// (zod through the Vercel AI SDK and LangChain, Pydantic through the Python SDK, hand-written
// OpenAI function parameters), and the keywords the reader claims to honour.
var schemaCases = map[string]string{
	"weather":              `{"type":"object","properties":{"city":{"type":"string","description":"City name"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","unit"],"additionalProperties":false}`,
	"zod":                  `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"name":{"type":"string"},"age":{"type":"number"},"tags":{"type":"array","items":{"type":"string"}},"nick":{"anyOf":[{"type":"string"},{"type":"null"}]},"active":{"type":"boolean"}},"required":["name","age","tags","nick","active"],"additionalProperties":false}`,
	"nested":               `{"type":"object","properties":{"order":{"type":"object","properties":{"id":{"type":"integer"},"lines":{"type":"array","minItems":1,"items":{"type":"object","properties":{"sku":{"type":"string","minLength":3,"maxLength":8},"qty":{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10},"price":{"type":"number","minimum":0.5,"maximum":99.5,"multipleOf":0.25}},"required":["sku","qty","price"]}}},"required":["id","lines"]}},"required":["order"]}`,
	"recursive $defs":      `{"$defs":{"node":{"type":"object","properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["name","children"]}},"$ref":"#/$defs/node"}`,
	"pydantic definitions": `{"definitions":{"Pet":{"title":"Pet","type":"object","properties":{"kind":{"const":"dog"},"born":{"type":"string","format":"date"}},"required":["kind","born"]}},"title":"Owner","type":"object","properties":{"email":{"type":"string","format":"email"},"id":{"type":"string","format":"uuid"},"seen":{"type":"string","format":"date-time"},"pets":{"type":"array","items":{"$ref":"#/definitions/Pet"}}},"required":["email","id","seen","pets"]}`,
	"pointer ref":          `{"type":"object","properties":{"home":{"type":"object","properties":{"street":{"type":"string"},"zip":{"type":"string","maxLength":5}},"required":["street","zip"]},"work":{"$ref":"#/properties/home"}},"required":["home","work"]}`,
	"unique enum items":    `{"type":"array","minItems":2,"maxItems":4,"uniqueItems":true,"items":{"enum":["red","green","blue",1,null]}}`,
	"nullable type list":   `{"type":"object","properties":{"a":{"type":["string","null"]},"b":{"type":["integer","null"],"minimum":-5,"maximum":-3},"c":{"type":"null"}},"required":["a","b","c"]}`,
	"allOf":                `{"allOf":[{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]},{"properties":{"y":{"type":"boolean"}},"required":["y"]}]}`,
	"untyped":              `{"properties":{"anything":{},"n":{"minimum":10}},"required":["anything","n","undeclared"]}`,
	"integer multipleOf":   `{"type":"integer","minimum":-100,"maximum":100,"multipleOf":7}`,
	"string bounds":        `{"type":"string","minLength":40,"maxLength":41}`,
	"empty":                `{}`,
	"deep":                 `{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"object","properties":{"c":{"type":"object","properties":{"d":{"type":"object","properties":{"e":{"type":"object","properties":{"f":{"type":"object","properties":{"g":{"type":"array","minItems":1,"items":{"type":"string"}}},"required":["g"]}},"required":["f"]}},"required":["e"]}},"required":["d"]}},"required":["c"]}},"required":["b"]}},"required":["a"]}`,
}

// compileSchema compiles a schema with a real JSON Schema validator (formats asserted).
func compileSchema(t testing.TB, raw string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("schema %s: %v", raw, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource("mem://schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("mem://schema.json")
	if err != nil {
		t.Fatalf("compile %s: %v", raw, err)
	}
	return s
}

// validate checks a generated instance against a compiled schema.
func validate(t testing.TB, s *jsonschema.Schema, instance []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(instance))
	if err != nil {
		t.Fatalf("generated %s is not JSON: %v", instance, err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("generated %s does not validate: %v", instance, err)
	}
}

// TestGenerateValidates: for every schema and 64 seeds, the generated value validates against the
// schema with a real validator, and the same seed gives the same bytes.
func TestGenerateValidates(t *testing.T) {
	for name, raw := range schemaCases {
		t.Run(name, func(t *testing.T) {
			v := compileSchema(t, raw)
			s, err := readSchema(json.RawMessage(raw))
			if err != nil {
				t.Fatal(err)
			}
			distinct := map[string]bool{}
			for seed := range uint64(64) {
				out, err := generateJSON(s, seed)
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				validate(t, v, out)
				again, _ := generateJSON(s, seed)
				if !bytes.Equal(out, again) {
					t.Fatalf("seed %d: %s then %s", seed, out, again)
				}
				distinct[string(out)] = true
			}
			if name != "empty" && len(distinct) < 2 {
				t.Errorf("64 seeds gave %d distinct values", len(distinct))
			}
		})
	}
}

// TestReadSchemaRejects: what is not a schema, or one no value fits, is refused.
func TestReadSchemaRejects(t *testing.T) {
	for _, raw := range []string{
		`"object"`, `[]`, `false`, `{"type":"banana"}`, `{"type":5}`, `{"properties":[]}`,
		`{"required":"a"}`, `{"enum":[]}`, `{"anyOf":{}}`, `{"minLength":-1}`, `{"minLength":3,"maxLength":2}`,
		`{"minimum":3,"maximum":2}`, `{"minimum":2,"exclusiveMaximum":2}`, `{"multipleOf":0}`, `{"$ref":"#/nope"}`,
		`{"$ref":"http://example.com/s.json"}`, `{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`,
		`{"items":[{"type":"string"}]}`, `{"prefixItems":[{}]}`, `{"properties":{"a":false}}`,
		strings.Repeat(`{"items":`, 100) + `{}` + strings.Repeat(`}`, 100),
	} {
		if _, err := readSchema(json.RawMessage(raw)); err == nil {
			t.Errorf("%s: accepted", raw)
		}
	}
	// A schema that requires itself for ever is read, and refused when filled.
	s, err := readSchema(json.RawMessage(`{"$defs":{"a":{"type":"object","properties":{"a":{"$ref":"#/$defs/a"}},"required":["a"]}},"$ref":"#/$defs/a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generateJSON(s, 1); err == nil {
		t.Error("an endless schema was filled")
	}
}

// FuzzReadSchema: the schema reader and generator never panic or hang on any input; whatever the
// reader accepts, the generator fills with valid JSON (or refuses with an error), the same each
// time.
func FuzzReadSchema(f *testing.F) {
	for _, raw := range schemaCases {
		f.Add([]byte(raw), uint64(1))
	}
	f.Add([]byte(`{"$ref":"#"}`), uint64(2))
	f.Add([]byte(`{"anyOf":[{"$ref":"#/anyOf/1"},{"$ref":"#/anyOf/0"}]}`), uint64(3))
	f.Add([]byte(`{"type":"number","minimum":1e300,"maximum":1.7e308,"multipleOf":1e-300}`), uint64(4))
	f.Add([]byte(`{"type":"integer","multipleOf":0.3,"exclusiveMinimum":true,"minimum":0}`), uint64(5))
	f.Fuzz(func(t *testing.T, raw []byte, seed uint64) {
		s, err := readSchema(raw)
		if err != nil {
			return
		}
		out, err := generateJSON(s, seed)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%s made invalid JSON %s", raw, out)
		}
		if again, _ := generateJSON(s, seed); !bytes.Equal(out, again) {
			t.Fatalf("%s: %s then %s", raw, out, again)
		}
	})
}

// toolResp is a chat completion with tool calls.
type toolResp struct {
	Choices []struct {
		Message struct {
			Role      string  `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// tools declares three function tools with the weather, nested and zod schemas.
func tools() []map[string]any {
	var out []map[string]any
	for _, name := range []string{"weather", "nested", "zod"} {
		out = append(out, map[string]any{"type": "function", "function": map[string]any{
			"name": strings.ReplaceAll(name, " ", "_"), "description": "a tool", "parameters": json.RawMessage(schemaCases[name]),
		}})
	}
	return out
}

// TestToolCalls: tool_choice decides between a call and text; a call's arguments validate against
// its function's schema; the stream carries the same call in OpenAI's pieces.
func TestToolCalls(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Models: []string{"llama3.2:3b"}, Seed: 3})
	srv, _ := serve(t, n)
	validators := map[string]*jsonschema.Schema{}
	for _, name := range []string{"weather", "nested", "zod"} {
		validators[name] = compileSchema(t, schemaCases[name])
	}
	user := []map[string]any{{"role": "user", "content": "What is the weather in Oslo?"}}
	afterTool := append(append([]map[string]any{}, user...),
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []map[string]any{{"id": "call_1", "type": "function", "function": map[string]any{"name": "weather", "arguments": `{"city":"Oslo"}`}}}},
		map[string]any{"role": "tool", "tool_call_id": "call_1", "content": "12 degrees"})
	named := func(name string) map[string]any {
		return map[string]any{"type": "function", "function": map[string]any{"name": name}}
	}
	for i, tc := range []struct {
		name     string
		messages []map[string]any
		choice   any    // nil: not sent
		want     string // the function called, "*" any, "" text
	}{
		{"auto", user, nil, "*"},
		{"auto explicit", user, "auto", "*"},
		{"auto after tool result", afterTool, nil, ""},
		{"none", user, "none", ""},
		{"required", user, "required", "*"},
		{"required after tool result", afterTool, "required", "*"},
		{"named nested", user, named("nested"), "nested"},
		{"named zod", afterTool, named("zod"), "zod"},
		{"named weather", user, named("weather"), "weather"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"model": "llama3.2:3b", "messages": tc.messages, "tools": tools(), "seed": i}
			if tc.choice != nil {
				body["tool_choice"] = tc.choice
			}
			w := call(context.Background(), n, agentapi.PathChatCompletions, body)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			r := decodeJSON[toolResp](t, w.Body.Bytes())
			c := r.Choices[0]
			if tc.want == "" {
				if len(c.Message.ToolCalls) != 0 || c.Message.Content == nil || *c.Message.Content == "" || c.FinishReason != "stop" {
					t.Fatalf("want text: %s", w.Body)
				}
				return
			}
			if len(c.Message.ToolCalls) != 1 || c.Message.Content != nil || c.FinishReason != "tool_calls" || c.Message.Role != "assistant" {
				t.Fatalf("want one tool call: %s", w.Body)
			}
			got := c.Message.ToolCalls[0]
			if tc.want != "*" && got.Function.Name != tc.want {
				t.Errorf("called %s, want %s", got.Function.Name, tc.want)
			}
			v, ok := validators[got.Function.Name]
			if !ok || got.Type != "function" || !strings.HasPrefix(got.ID, "call_") || len(got.ID) != 29 {
				t.Fatalf("call %+v", got)
			}
			validate(t, v, []byte(got.Function.Arguments))
			if want := len(pieces(got.Function.Arguments)); r.Usage.CompletionTokens != want {
				t.Errorf("completion_tokens %d, want %d", r.Usage.CompletionTokens, want)
			}

			// The same request streamed: the head (index, id, type, name, empty arguments) in the
			// first chunk with the role, then argument deltas, then finish_reason tool_calls.
			body["stream"] = true
			events, _ := readSSE(context.Background(), t, srv.URL+agentapi.PathChatCompletions, body)
			var args strings.Builder
			var finish string
			k := 0
			for ev := range events {
				if ev.err != nil {
					t.Fatal(ev.err)
				}
				if ev.data == "[DONE]" {
					continue
				}
				var ch struct {
					Choices []struct {
						Delta        map[string]json.RawMessage `json:"delta"`
						FinishReason *string                    `json:"finish_reason"`
					} `json:"choices"`
				}
				if err := json.Unmarshal([]byte(ev.data), &ch); err != nil || len(ch.Choices) != 1 {
					t.Fatalf("chunk %s", ev.data)
				}
				d := ch.Choices[0].Delta
				if ch.Choices[0].FinishReason != nil {
					finish = *ch.Choices[0].FinishReason
					if len(d) != 0 {
						t.Errorf("last chunk's delta %s", ev.data)
					}
					continue
				}
				var calls []map[string]json.RawMessage
				if err := json.Unmarshal(d["tool_calls"], &calls); err != nil || len(calls) != 1 {
					t.Fatalf("chunk %d without one tool call: %s", k, ev.data)
				}
				var fn struct {
					Name      *string `json:"name"`
					Arguments *string `json:"arguments"`
				}
				json.Unmarshal(calls[0]["function"], &fn)
				if string(calls[0]["index"]) != "0" || fn.Arguments == nil {
					t.Fatalf("chunk %d: %s", k, ev.data)
				}
				if k == 0 {
					if string(d["role"]) != `"assistant"` || string(d["content"]) != "null" || string(calls[0]["type"]) != `"function"` ||
						fn.Name == nil || *fn.Name != got.Function.Name || *fn.Arguments != "" || !strings.HasPrefix(string(calls[0]["id"]), `"call_`) {
						t.Errorf("first chunk %s", ev.data)
					}
				} else if fn.Name != nil || calls[0]["id"] != nil || d["role"] != nil {
					t.Errorf("chunk %d repeats the head: %s", k, ev.data)
				}
				args.WriteString(*fn.Arguments)
				k++
			}
			if args.String() != got.Function.Arguments || finish != "tool_calls" {
				t.Errorf("streamed %q (%s)\nwhole    %q", args.String(), finish, got.Function.Arguments)
			}
		})
	}

	// A token cap cuts the arguments short, as it does a real model's: finish_reason length.
	w := call(context.Background(), n, agentapi.PathChatCompletions, map[string]any{
		"model": "llama3.2:3b", "messages": user, "tools": tools(), "tool_choice": named("nested"), "max_tokens": 3})
	r := decodeJSON[toolResp](t, w.Body.Bytes())
	if c := r.Choices[0]; c.FinishReason != "length" || len(c.Message.ToolCalls) != 1 || len(c.Message.ToolCalls[0].Function.Arguments) > 3*bytesPerToken+3 {
		t.Errorf("capped call: %s", w.Body)
	}
}

// TestResponseFormat: json_object answers a JSON object, json_schema JSON that validates against
// the schema, streamed and not, and the same for the same seed.
func TestResponseFormat(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Models: []string{"llama3.2:3b"}, Seed: 5})
	srv, _ := serve(t, n)
	for name, raw := range schemaCases {
		t.Run(name, func(t *testing.T) {
			v := compileSchema(t, raw)
			body := chatBody("llama3.2:3b", "Give me "+name, map[string]any{"response_format": map[string]any{
				"type": "json_schema", "json_schema": map[string]any{"name": "answer", "strict": true, "schema": json.RawMessage(raw)}}})
			w := call(context.Background(), n, agentapi.PathChatCompletions, body)
			r := decodeJSON[chatResp](t, w.Body.Bytes())
			if w.Code != http.StatusOK || r.Choices[0].FinishReason != "stop" {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			content := r.Choices[0].Message.Content
			validate(t, v, []byte(content))
			body["stream"] = true
			events, _ := readSSE(context.Background(), t, srv.URL+agentapi.PathChatCompletions, body)
			var text strings.Builder
			for ev := range events {
				if ev.err != nil {
					t.Fatal(ev.err)
				}
				if ev.data == "[DONE]" {
					continue
				}
				c := decodeJSON[chunk](t, []byte(ev.data))
				if len(c.Choices) == 1 && c.Choices[0].Delta != nil && c.Choices[0].Delta.Content != nil {
					text.WriteString(*c.Choices[0].Delta.Content)
				}
			}
			if text.String() != content {
				t.Errorf("streamed %q\nwhole    %q", text.String(), content)
			}
		})
	}
	for i := range 8 {
		body := chatBody("llama3.2:3b", fmt.Sprintf("Answer in JSON %d", i), map[string]any{"response_format": map[string]string{"type": "json_object"}})
		w := call(context.Background(), n, agentapi.PathChatCompletions, body)
		var obj map[string]any
		if err := json.Unmarshal([]byte(decodeJSON[chatResp](t, w.Body.Bytes()).Choices[0].Message.Content), &obj); err != nil || len(obj) == 0 {
			t.Errorf("json_object: %s", w.Body)
		}
	}
}
