package nodeagent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/responses"
)

// Continuation: when a node fails in the middle of a stream, the gateway sends the client's
// request to another node's agent with the answer so far (agentapi.Continuation, marked by
// agentapi.HeaderContinue), and the agent asks its backend to continue that partial answer
// rather than start one, each backend in its own way:
//   - chat completions get the partial text as a trailing assistant message, with vLLM's
//     continue_final_message: true and add_generation_prompt: false (which leave that message
//     open); llama.cpp's server continues a trailing assistant message by itself (its
//     "assistant prefill") and ignores the two fields, and so does Ollama's /v1 route; the
//     simulator follows vLLM;
//   - legacy completions, and Ollama's /api/generate with raw, get the prompt plus the partial
//     text;
//   - Ollama's /api/chat gets a trailing assistant message (with its thinking), which Ollama
//     continues when the model's template leaves the last assistant turn open;
//   - a native request translated for another backend is translated first, then continued as
//     chat.
//
// The output cap (max_tokens, max_completion_tokens, options.num_predict) is lowered by the
// tokens the client already has; sampling parameters and the seed are the client's, unchanged.
// The answer keeps the client's framing: the stream's id and created time, the client's model
// name, and usage (or Ollama's eval_count) with the first node's tokens added.
//
// Refused (400, with the reason, which the gateway puts in the client's error event): reasoning
// without any answer text on an OpenAI-style backend (there is no portable way to prefill a
// model's reasoning), a prompt that is not one string, and Ollama's /api/generate without raw
// (Ollama wraps the prompt in the model's template, so a partial answer cannot follow it).

// errCannotContinue wraps the reasons a request cannot be continued.
var errCannotContinue = errors.New("cannot continue the answer")

// takeContinuation decodes body (a request marked with HeaderContinue) and takes its
// continuation member out.
func takeContinuation(body []byte) (map[string]json.RawMessage, *agentapi.Continuation, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, fmt.Errorf("%w: the body is not a JSON object: %v", errCannotContinue, err)
	}
	raw, ok := req[agentapi.ContinueField]
	if !ok {
		return nil, nil, fmt.Errorf("%w: the body has no %q member", errCannotContinue, agentapi.ContinueField)
	}
	delete(req, agentapi.ContinueField)
	var c agentapi.Continuation
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", errCannotContinue, agentapi.ContinueField, err)
	}
	return req, &c, nil
}

// continueOpenAI turns req, an OpenAI request for route, into one that continues c.
func continueOpenAI(route string, req map[string]json.RawMessage, c *agentapi.Continuation) error {
	if c.Content == "" && c.Reasoning != "" {
		return fmt.Errorf("%w: the model was still reasoning, and an OpenAI-compatible backend cannot be given partial reasoning to continue", errCannotContinue)
	}
	switch route {
	case agentapi.PathChatCompletions:
		var msgs []json.RawMessage
		if err := json.Unmarshal(req["messages"], &msgs); err != nil {
			return fmt.Errorf("%w: messages: %v", errCannotContinue, err)
		}
		msg, _ := json.Marshal(struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		}{"assistant", c.Content})
		msgs = append(msgs, msg)
		req["messages"], _ = json.Marshal(msgs)
		req["continue_final_message"] = json.RawMessage("true")
		req["add_generation_prompt"] = json.RawMessage("false")
		lowerCap(req, c.Tokens, "max_tokens", "max_completion_tokens")
	case agentapi.PathCompletions:
		if err := appendPrompt(req, c.Content); err != nil {
			return err
		}
		lowerCap(req, c.Tokens, "max_tokens")
	default:
		return fmt.Errorf("%w: %s answers cannot be continued", errCannotContinue, route)
	}
	return nil
}

// continueOllama turns req, a native request for an Ollama backend on path, into one that
// continues c.
func continueOllama(path string, req map[string]json.RawMessage, c *agentapi.Continuation) error {
	switch path {
	case agentapi.PathOllamaChat:
		var msgs []json.RawMessage
		if err := json.Unmarshal(req["messages"], &msgs); err != nil {
			return fmt.Errorf("%w: messages: %v", errCannotContinue, err)
		}
		msg, _ := json.Marshal(struct {
			Role     string `json:"role"`
			Content  string `json:"content"`
			Thinking string `json:"thinking,omitempty"`
		}{"assistant", c.Content, c.Reasoning})
		req["messages"], _ = json.Marshal(append(msgs, msg))
	case agentapi.PathOllamaGenerate:
		var raw bool
		_ = json.Unmarshal(req["raw"], &raw)
		if !raw {
			return fmt.Errorf("%w: Ollama's /api/generate wraps the prompt in the model's template, so a partial answer cannot follow it (only raw prompts continue)", errCannotContinue)
		}
		if c.Reasoning != "" {
			return fmt.Errorf("%w: a raw prompt cannot carry partial reasoning", errCannotContinue)
		}
		if err := appendPrompt(req, c.Content); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: %s answers cannot be continued", errCannotContinue, path)
	}
	var opts map[string]json.RawMessage
	if o, ok := req["options"]; ok && json.Unmarshal(o, &opts) == nil && opts != nil {
		lowerCap(opts, c.Tokens, "num_predict")
		req["options"], _ = json.Marshal(opts)
	}
	return nil
}

// continueResponses turns req, a Responses request, into the chat completions request that
// continues c (req's members are replaced by the chat request's), and returns the Responses
// request the answer is written for. The partial text is the open message's; the stream's
// state (c.Responses) is required.
func continueResponses(req map[string]json.RawMessage, c *agentapi.Continuation) (*responses.Request, error) {
	if c.Responses == nil || c.ID == "" {
		return nil, fmt.Errorf("%w: a Responses stream's continuation needs its id and state", errCannotContinue)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCannotContinue, err)
	}
	chat, rreq, e := responses.ToChat(body)
	if e != nil {
		return nil, fmt.Errorf("%w: %s", errCannotContinue, e.Message)
	}
	if !rreq.Stream {
		return nil, fmt.Errorf("%w: only a streamed Responses answer is continued", errCannotContinue)
	}
	clear(req)
	if err := json.Unmarshal(chat, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", errCannotContinue, err)
	}
	if err := continueOpenAI(agentapi.PathChatCompletions, req, c); err != nil {
		return nil, err
	}
	return rreq, nil
}

// resumeOf is the Responses writer's view of a continued stream's state.
func resumeOf(c *agentapi.Continuation) *responses.Resume {
	st := c.Responses
	r := &responses.Resume{Seq: st.Seq, Created: c.Created, Model: st.Model, Tokens: int64(c.Tokens)}
	for _, it := range st.Items {
		r.Items = append(r.Items, responses.ResumeItem{ID: it.ID, Kind: it.Type, Text: it.Text, Open: it.Open, PartOpen: it.PartOpen})
	}
	return r
}

// appendPrompt appends text to req's prompt, which must be one string.
func appendPrompt(req map[string]json.RawMessage, text string) error {
	var prompt string
	if err := json.Unmarshal(req["prompt"], &prompt); err != nil {
		return fmt.Errorf("%w: the prompt is not one string", errCannotContinue)
	}
	req["prompt"], _ = json.Marshal(prompt + text)
	return nil
}

// lowerCap lowers each positive output cap among keys by used tokens, to no less than 1.
func lowerCap(req map[string]json.RawMessage, used int, keys ...string) {
	for _, k := range keys {
		var n int
		if json.Unmarshal(req[k], &n) != nil || n <= 0 {
			continue
		}
		req[k] = json.RawMessage(strconv.Itoa(max(n-used, 1)))
	}
}

// continuedAnswer returns the line fixer of a continued answer: each JSON line gets the
// stream's id and created time, the client's model name (name, unless ""), and its token counts
// (usage's completion_tokens and total_tokens, Ollama's eval_count) raised by the tokens of the
// node that started the answer.
func continuedAnswer(c *agentapi.Continuation, name string) func(dst, line []byte) []byte {
	var id, created, model []byte
	if c.ID != "" {
		id, _ = json.Marshal(c.ID)
	}
	if c.Created != 0 {
		created = strconv.AppendInt(nil, c.Created, 10)
	}
	if name != "" {
		model, _ = json.Marshal(name)
	}
	return func(dst, line []byte) []byte {
		start, end, ok := jsonLine(line)
		if !ok {
			return append(dst, line...)
		}
		obj := line[start:end]
		var edits []edit
		if id != nil {
			edits = replaceIf(edits, obj, "id", '"', id)
		}
		if created != nil {
			edits = replaceIf(edits, obj, "created", 0, created)
		}
		if model != nil {
			edits = replaceIf(edits, obj, "model", '"', model)
		}
		if vs, ve, ok := memberValue(obj, "usage"); ok && obj[vs] == '{' {
			if u := addTokens(obj[vs:ve], c.Tokens); u != nil {
				edits = append(edits, edit{vs, ve, u})
			}
		}
		if vs, ve, ok := memberValue(obj, "eval_count"); ok {
			if n, err := strconv.Atoi(string(obj[vs:ve])); err == nil {
				edits = append(edits, edit{vs, ve, strconv.AppendInt(nil, int64(n+c.Tokens), 10)})
			}
		}
		if len(edits) == 0 {
			return append(dst, line...)
		}
		sortEdits(edits)
		dst = append(dst, line[:start]...)
		at := 0
		for _, e := range edits {
			dst = append(dst, obj[at:e.start]...)
			dst = append(dst, e.with...)
			at = e.end
		}
		dst = append(dst, obj[at:]...)
		return append(dst, line[end:]...)
	}
}

// edit replaces obj[start:end] with with.
type edit struct {
	start, end int
	with       []byte
}

// replaceIf adds an edit setting obj's top-level key to with, when the key is there and its
// value starts with first (0: any value but null).
func replaceIf(edits []edit, obj []byte, key string, first byte, with []byte) []edit {
	vs, ve, ok := memberValue(obj, key)
	if !ok || (first != 0 && obj[vs] != first) || (first == 0 && obj[vs] == 'n') {
		return edits
	}
	return append(edits, edit{vs, ve, with})
}

func sortEdits(e []edit) {
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].start < e[j-1].start; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
}

// addTokens returns a usage object with tokens added to completion_tokens and total_tokens (and
// a Responses usage's output_tokens), nil when it has none of them.
func addTokens(usage []byte, tokens int) []byte {
	var u map[string]json.RawMessage
	if json.Unmarshal(usage, &u) != nil {
		return nil
	}
	changed := false
	for _, k := range []string{"completion_tokens", "total_tokens", "output_tokens"} {
		var n int
		if json.Unmarshal(u[k], &n) == nil && u[k] != nil {
			u[k] = json.RawMessage(strconv.Itoa(n + tokens))
			changed = true
		}
	}
	if !changed {
		return nil
	}
	// Members keep their values; encoding/json sorts the keys, which JSON readers do not mind.
	b, err := json.Marshal(u)
	if err != nil || bytes.Equal(b, usage) {
		return nil
	}
	return b
}
