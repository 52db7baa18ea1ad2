package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Continuation: a stream whose node fails after the client has part of the answer (the
// connection cut, the agent gone, an error event from the backend, or silence past the stall
// timeout while the node's heartbeat is late) goes on on another node, and the client sees one
// stream.
//
// Decisions:
//   - The normal path stays a pass-through: while a stream that could be continued is relayed,
//     the gateway only keeps a copy of the events the client has (kept, bounded by maxKept); it
//     reads them only when the node fails.
//   - The new node's agent does the rewriting (nodeagent/continue.go): the gateway sends it the
//     client's request unchanged plus one "herd_continue" member (agentapi.Continuation: the
//     text and reasoning so far, the stream's id and created time, the tokens already sent),
//     marked by the X-Herd-Continue header. The agent asks its backend to continue that partial
//     message in the backend's own way and writes the answer in the client's framing: same id,
//     created and model, usage with both nodes' tokens. The gateway relays it after what the
//     client already has, so no text is repeated or missing.
//   - Routes: streamed chat, legacy completions and Responses (continue_responses.go) on /v1,
//     /api/chat and /api/generate on the Ollama front, and batch lines, which the gateway runs
//     as streams internally to that end (batch_stream.go).
//   - Not continued, the stream ends with an error event as before, saying why: a tool call
//     under way (no backend herd drives can resume one mid-arguments), several choices (n > 1),
//     an answer longer than maxKept, continuation turned off (--no-continuation, or the client's
//     X-Herd-No-Continue header), or no attempt left (--max-attempts counts every node tried).
//   - A stream whose finish_reason (or Ollama's done line) already reached the client and broke
//     only before [DONE] is completed by the gateway ([DONE] written), not continued.

// maxKept bounds the events kept for a continuation; a longer answer is not continued.
const maxKept = 4 << 20

// continuation is the call's state for continuing a broken stream.
type continuation struct {
	// keep is true while the relayed events are kept: the call may be continued.
	keep bool
	// refused says why the call may not be continued, when keep is false for a stream.
	refused string
	kept    []byte
	// body is the continuing request's body; nil while the stream is on its first node.
	body []byte
	// count is how many times the stream was continued.
	count int
}

// reset empties the state for the pool, keeping a modest buffer.
func (c *continuation) reset() {
	kept := c.kept[:0]
	if cap(kept) > 256<<10 {
		kept = nil
	}
	*c = continuation{kept: kept}
}

// continuable decides whether the call's stream may be continued: a streamed answer on a route
// that can be, with continuation on in the config and not refused by the client (h).
func (k *call) continuable(h http.Header) {
	switch {
	case !(k.info.stream || k.inner) || (k.held != nil && !k.inner):
		return
	case k.path != agentapi.PathChatCompletions && k.path != agentapi.PathCompletions &&
		k.path != agentapi.PathOllamaChat && k.path != agentapi.PathOllamaGenerate &&
		k.path != agentapi.PathResponses:
		k.cont.refused = "continuation is not supported on " + k.path
	case k.s.cfg.NoContinuation:
		k.cont.refused = "continuation is off on this gateway"
	case h != nil && h.Get(agentapi.HeaderNoContinue) != "":
		k.cont.refused = "continuation was turned off by the request's " + agentapi.HeaderNoContinue + " header"
	default:
		k.cont.keep = true
	}
}

// keep notes events relayed to the client, for a continuation.
func (c *continuation) note(out []byte) {
	if !c.keep {
		return
	}
	if len(c.kept)+len(out) > maxKept {
		c.keep, c.kept = false, c.kept[:0]
		c.refused = fmt.Sprintf("the answer is longer than the %d bytes kept for a continuation", maxKept)
		return
	}
	c.kept = append(c.kept, out...)
}

// partial is what a broken stream's client has: its framing and the answer so far.
type partial struct {
	id        string
	created   int64
	content   strings.Builder
	reasoning strings.Builder
	// finished is true when the answer's end (finish_reason, Ollama's done) reached the client.
	finished bool
	// resp is a Responses stream's state (readResponsesPartial); tokens counts its text events.
	resp   *agentapi.ResponsesState
	tokens int
}

// readPartial reads the kept events of a stream in framing fr. why says what makes the answer
// impossible to continue ("" when it can be).
func readPartial(fr framing, kept []byte) (p *partial, why string) {
	p = &partial{}
	for len(kept) > 0 {
		line := kept
		if i := bytes.IndexByte(kept, '\n'); i >= 0 {
			line, kept = kept[:i], kept[i+1:]
		} else {
			kept = nil
		}
		line = bytes.TrimSpace(line)
		if fr == frameSSE {
			data, ok := bytes.CutPrefix(line, []byte("data:"))
			if !ok {
				continue
			}
			line = bytes.TrimSpace(data)
			if bytes.Equal(line, []byte("[DONE]")) {
				p.finished = true
				continue
			}
		}
		if len(line) == 0 {
			continue
		}
		if why := p.add(fr, line); why != "" {
			return p, why
		}
	}
	return p, ""
}

// streamEvent is an event of an OpenAI stream (chat or completion chunk) or a line of Ollama's.
type streamEvent struct {
	ID      string `json:"id"`
	Created int64  `json:"created"`
	Choices []struct {
		Index int    `json:"index"`
		Text  string `json:"text"`
		Delta struct {
			Content          string            `json:"content"`
			ReasoningContent string            `json:"reasoning_content"`
			Reasoning        string            `json:"reasoning"`
			ToolCalls        []json.RawMessage `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	// Ollama's.
	Message *struct {
		Content   string            `json:"content"`
		Thinking  string            `json:"thinking"`
		ToolCalls []json.RawMessage `json:"tool_calls"`
	} `json:"message"`
	Response string          `json:"response"`
	Thinking string          `json:"thinking"`
	Done     bool            `json:"done"`
	Error    json.RawMessage `json:"error"`
}

// add folds one event into p.
func (p *partial) add(fr framing, data []byte) string {
	var ev streamEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return "an event the client has is not JSON"
	}
	if len(ev.Error) > 0 && string(ev.Error) != "null" {
		return "" // the backend's error event is the failure itself: it is dropped, not passed on
	}
	if p.id == "" {
		p.id, p.created = ev.ID, ev.Created
	}
	if fr == frameNDJSON {
		if m := ev.Message; m != nil {
			if len(m.ToolCalls) > 0 {
				return "a tool call was under way"
			}
			p.content.WriteString(m.Content)
			p.reasoning.WriteString(m.Thinking)
		}
		p.content.WriteString(ev.Response)
		p.reasoning.WriteString(ev.Thinking)
		p.finished = p.finished || ev.Done
		return ""
	}
	for _, c := range ev.Choices {
		if c.Index != 0 {
			return "the request asked for several choices (n > 1)"
		}
		if len(c.Delta.ToolCalls) > 0 {
			return "a tool call was under way"
		}
		p.content.WriteString(c.Text)
		p.content.WriteString(c.Delta.Content)
		p.reasoning.WriteString(c.Delta.ReasoningContent)
		p.reasoning.WriteString(c.Delta.Reasoning)
		if c.FinishReason != nil && *c.FinishReason != "" {
			p.finished = true
		}
	}
	return ""
}

// continueBody is the continuing request's body: the client's request with the continuation
// member put first (the body is a JSON object: the scan checked it).
func (k *call) continueBody(p *partial) []byte {
	tokens := k.mt.textEvents
	if p.resp != nil {
		tokens = p.tokens
	}
	c, _ := json.Marshal(agentapi.Continuation{
		ID: p.id, Created: p.created, Tokens: tokens,
		Content: p.content.String(), Reasoning: p.reasoning.String(), Responses: p.resp,
	})
	body := bytes.TrimSpace(k.body)
	out := make([]byte, 0, len(body)+len(c)+len(agentapi.ContinueField)+4)
	out = append(out, '{', '"')
	out = append(out, agentapi.ContinueField...)
	out = append(out, '"', ':')
	out = append(out, c...)
	if rest := bytes.TrimSpace(body[1:]); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, body[1:]...)
}

// tryContinue decides, for a stream that broke on node after the client got part of it,
// whether it goes on elsewhere. It returns outcomeContinue with the continuing body ready, or
// outcomeDone when the answer was in fact complete; else "" outcome and why it cannot go on.
func (k *call) tryContinue(node string, fr framing, w sink) (outcome, string) {
	if !k.cont.keep {
		if k.cont.refused == "" {
			return outcomeDone, "the answer is not a stream that can be continued"
		}
		return outcomeDone, k.cont.refused
	}
	if k.attempts >= k.s.cfg.MaxAttempts {
		return outcomeDone, fmt.Sprintf("all %d attempts (--max-attempts) are used", k.attempts)
	}
	var p *partial
	var why string
	if k.path == agentapi.PathResponses {
		p, why = readResponsesPartial(k.cont.kept, k.events)
	} else {
		p, why = readPartial(fr, k.cont.kept)
	}
	if why != "" {
		return outcomeDone, why
	}
	if p.finished && k.path == agentapi.PathResponses {
		// response.completed (or incomplete) reached the client: nothing follows it.
		k.status = http.StatusOK
		return outcomeFinished, ""
	}
	if p.finished {
		if fr == frameSSE {
			_, _ = w.Write([]byte("data: [DONE]\n\n"))
			w.Flush()
		}
		k.status = http.StatusOK
		return outcomeFinished, ""
	}
	k.cont.body = k.continueBody(p)
	k.cont.count++
	k.s.metrics.continuations.WithLabelValues(k.metricsLabel(), node, "continued").Inc()
	return outcomeContinue, ""
}

// errorEvent finds the first event in out (whole events in framing fr) that is a backend's error
// event ({"error": ...} at the top level): it returns where that event starts and the error's
// message, or -1.
func errorEvent(out []byte, fr framing) (int, string) {
	if !bytes.Contains(out, []byte(`"error"`)) {
		return -1, ""
	}
	sep := fr.sep()
	for at := 0; at < len(out); {
		ev := out[at:]
		next := len(out)
		if i := bytes.Index(ev, sep); i >= 0 {
			ev, next = ev[:i], at+i+len(sep)
		}
		if bytes.Contains(ev, []byte(`"error"`)) {
			payload := ev
			if fr == frameSSE {
				payload = nil
				for line := range bytes.Lines(ev) {
					if d, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:")); ok {
						payload = bytes.TrimSpace(d)
					}
				}
			}
			var e struct {
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(payload, &e) == nil && len(e.Error) > 0 && string(e.Error) != "null" {
				return at, "the backend sent an error event: " + errorMessageOf(e.Error)
			}
		}
		at = next
	}
	return -1, ""
}

// errorMessageOf is the message of an error value: a string, or an object with a message.
func errorMessageOf(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Message != "" {
		return o.Message
	}
	return string(raw)
}
