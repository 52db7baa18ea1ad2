package sim

import (
	"math/rand/v2"
	"strings"
	"unicode/utf8"

	"github.com/herd-llm/herd/openaierr"
)

// What the simulated model answers to a chat request with tools or a response_format, decided
// from the request alone (and the seeds), so the same request gets the same answer:
//
//   - tool_choice "required" or a named function: a call (of that function; with "required" of a
//     tool picked by the seed).
//   - tool_choice "auto" (the default with tools): a call, unless the conversation ends with a tool
//     result; then a text answer. An agent loop against the simulator thus calls a tool once per
//     user turn and then answers, as a real model mostly does.
//   - tool_choice "none": text.
//   - response_format json_object or json_schema: the text is JSON, fitting the schema.
//
// A call's arguments fit the function's parameters schema (schema.go). The output is cut into
// tokens of about four bytes; max_tokens or the context window may cut it short (finish_reason
// "length", the JSON left unfinished, as with a real model). The simulator makes one call per
// answer, which parallel_tool_calls allows either way.

// reply is a composed answer: its tokens, in order, and how it ends. For a tool call the tokens
// are the pieces of the call's arguments.
type reply struct {
	tokens []string
	finish string
	call   *toolCallOut
}

// toolCallOut is a tool call in a chat completion message.
type toolCallOut struct {
	ID       string      `json:"id"`
	Type     string      `json:"type"`
	Function functionOut `json:"function"`
}

type functionOut struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// toolCallDelta is a streamed piece of a tool call: the first carries its id, type and name with
// empty arguments, the rest only argument text; index says which call they add to.
type toolCallDelta struct {
	Index    int           `json:"index"`
	ID       string        `json:"id,omitempty"`
	Type     string        `json:"type,omitempty"`
	Function functionDelta `json:"function"`
}

type functionDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// firstToolDelta opens a streamed tool-call answer as OpenAI does: role, null content and
// refusal, and the call's head.
type firstToolDelta struct {
	Role      string          `json:"role"`
	Content   *string         `json:"content"`
	ToolCalls []toolCallDelta `json:"tool_calls"`
	Refusal   *string         `json:"refusal"`
}

type toolArgsDelta struct {
	ToolCalls []toolCallDelta `json:"tool_calls"`
}

// jsonObjectSchema is what json_object mode (a format without a schema) fills: an object with
// one answer.
var jsonObjectSchema = &schema{
	types:      []string{"object"},
	properties: []property{{name: "answer", schema: &schema{types: []string{"string"}, minLength: 1, maxLength: -1, minItems: -1, maxItems: -1}}},
	required:   []string{"answer"},
	minLength:  -1, maxLength: -1, minItems: -1, maxItems: -1,
}

// compose decides what the model says: room is how many tokens fit in the context window, seed
// the request's text seed, seq the request's number on the node (for the call id).
func (n *Node) compose(req *request, room int, seed uint64, seq uint64) (reply, *openaierr.Error) {
	limit := room
	if req.maxTokens > 0 {
		limit = min(limit, req.maxTokens)
	}
	if t, ok := pickTool(req, seed); ok {
		args := []byte("{}")
		if t.params != nil {
			var err error
			if args, err = generateJSON(t.params, hashStrings("herd-sim-args", u64(seed), t.name)); err != nil {
				return reply{}, invalid("tools", "invalid_function_parameters", "Invalid schema for function '%s': %v.", t.name, err)
			}
		}
		toks, finish := cut(pieces(string(args)), limit, "tool_calls")
		call := &toolCallOut{ID: n.callID(seq), Type: "function", Function: functionOut{Name: t.name, Arguments: strings.Join(toks, "")}}
		return reply{tokens: toks, finish: finish, call: call}, nil
	}
	switch req.format.kind {
	case "json_object", "json_schema":
		s := req.format.schema
		if s == nil {
			s = jsonObjectSchema
		}
		out, err := generateJSON(s, hashStrings("herd-sim-json", u64(seed)))
		if err != nil {
			return reply{}, invalid("response_format", "invalid_json_schema", "Invalid schema for response_format: %v.", err)
		}
		toks, finish := cut(pieces(string(out)), limit, "stop")
		return reply{tokens: toks, finish: finish}, nil
	}
	out, finish := naturalLength(seed), "stop"
	if req.maxTokens > 0 {
		out, finish = req.maxTokens, "length"
	}
	if out > room {
		out, finish = room, "length"
	}
	toks := words(seed, out)
	if t, ok := stopAt(toks, req.stop); ok {
		toks, finish = t, "stop"
	}
	return reply{tokens: toks, finish: finish}, nil
}

// pickTool says whether the answer is a tool call, and of which tool.
func pickTool(req *request, seed uint64) (tool, bool) {
	if len(req.tools) == 0 {
		return tool{}, false
	}
	switch req.toolChoice.mode {
	case "function":
		for _, t := range req.tools {
			if t.name == req.toolChoice.name {
				return t, true
			}
		}
		return tool{}, false
	case "auto":
		if req.afterTool {
			return tool{}, false
		}
	case "required":
	default:
		return tool{}, false
	}
	return req.tools[seed%uint64(len(req.tools))], true
}

// pieces cuts s into tokens of about bytesPerToken bytes, never inside a UTF-8 sequence.
func pieces(s string) []string {
	var out []string
	for len(s) > 0 {
		n := min(bytesPerToken, len(s))
		for n < len(s) && !utf8.RuneStart(s[n]) {
			n++
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

// cut keeps at most limit tokens: finish as given when all fit, "length" when cut.
func cut(toks []string, limit int, finish string) ([]string, string) {
	if len(toks) > limit {
		return toks[:max(limit, 0)], "length"
	}
	return toks, finish
}

// stopAt ends the text before the first stop sequence in it, as OpenAI does (the sequence itself
// is not sent), and reports whether one was found.
func stopAt(toks []string, stops []string) ([]string, bool) {
	if len(stops) == 0 {
		return toks, false
	}
	text := strings.Join(toks, "")
	at := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at < 0 {
		return toks, false
	}
	var out []string
	pos := 0
	for _, t := range toks {
		if pos+len(t) > at {
			if rest := t[:at-pos]; rest != "" {
				out = append(out, rest)
			}
			break
		}
		out = append(out, t)
		pos += len(t)
	}
	return out, true
}

// callID makes an OpenAI-style tool call id ("call_" + 24 base62 characters), unique on the
// node like responseID.
func (n *Node) callID(seq uint64) string {
	r := rand.New(rand.NewPCG(hashStrings("herd-sim-call", n.id, u64(uint64(n.seed)), u64(uint64(n.startedAt.UnixNano()))), seq))
	var b strings.Builder
	b.WriteString("call_")
	for range 24 {
		b.WriteByte(idAlphabet[r.IntN(len(idAlphabet))])
	}
	return b.String()
}
