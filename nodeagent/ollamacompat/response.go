package ollamacompat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
)

// Response turns one OpenAI answer (an SSE stream of chat or completion chunks) into Ollama's
// wire format: NDJSON chunks as they come when the client streams, one JSON object at the end
// when it does not. Feed it the upstream body as it arrives and call End when it ends.
type Response struct {
	ep         Endpoint
	model      string
	stream     bool
	completion bool
	// start is when the gateway received the request (total_duration); sent is when this
	// attempt's request went upstream (prompt_eval_duration is measured from it).
	start, sent time.Time

	line        []byte // a partial SSE line carried between Feeds
	content     strings.Builder
	thinking    strings.Builder
	calls       []toolCall
	finish      string
	finished    bool
	done        bool
	failed      string
	usage       *usage
	timings     *timings
	first, last time.Time
}

type toolCall struct {
	id, name string
	args     strings.Builder
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// timings is llama.cpp server's per-request timing report, sent beside usage.
type timings struct {
	PromptN     int     `json:"prompt_n"`
	PromptMS    float64 `json:"prompt_ms"`
	PredictedN  int     `json:"predicted_n"`
	PredictedMS float64 `json:"predicted_ms"`
}

// chunk is an OpenAI chat or completion chunk, with the extensions backends add (reasoning
// text, llama.cpp's timings) and an error event's payload.
type chunk struct {
	Choices []struct {
		Index int    `json:"index"`
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			Reasoning        string `json:"reasoning"`
			ToolCalls        []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage   *usage          `json:"usage"`
	Timings *timings        `json:"timings"`
	Error   json.RawMessage `json:"error"`
}

// NewResponse starts the translation of one attempt's answer. model is the name the client asked
// for (Ollama echoes it); completion is Upstream.Completion.
func NewResponse(ep Endpoint, model string, stream, completion bool, start, sent time.Time) *Response {
	return &Response{ep: ep, model: model, stream: stream, completion: completion, start: start, sent: sent}
}

// Feed takes the next bytes of the upstream SSE body and appends to dst the NDJSON lines the
// client gets now (none when it does not stream).
func (r *Response) Feed(dst, p []byte, now time.Time) []byte {
	for len(p) > 0 && !r.done {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			r.line = append(r.line, p...)
			return dst
		}
		line := p[:nl]
		if len(r.line) > 0 {
			r.line = append(r.line, line...)
			line = r.line
		}
		dst = r.event(dst, bytes.TrimRight(line, "\r"), now)
		r.line = r.line[:0]
		p = p[nl+1:]
	}
	return dst
}

// event handles one SSE line.
func (r *Response) event(dst, line []byte, now time.Time) []byte {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return dst // blank lines, comments, event: and id: lines
	}
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("[DONE]")) {
		return r.end(dst, now)
	}
	var c chunk
	if err := json.Unmarshal(data, &c); err != nil {
		return r.fail(dst, fmt.Sprintf("the backend sent a chunk that is not JSON: %v", err))
	}
	if len(c.Error) > 0 && string(c.Error) != "null" {
		return r.fail(dst, errorText(c.Error))
	}
	if c.Usage != nil {
		r.usage = c.Usage
	}
	if c.Timings != nil {
		r.timings = c.Timings
	}
	var text, think string
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue // Ollama answers with one choice
		}
		text += ch.Text + ch.Delta.Content
		think += ch.Delta.ReasoningContent + ch.Delta.Reasoning
		for _, tc := range ch.Delta.ToolCalls {
			for len(r.calls) <= tc.Index {
				r.calls = append(r.calls, toolCall{})
			}
			t := &r.calls[tc.Index]
			if tc.ID != "" {
				t.id = tc.ID
			}
			t.name += tc.Function.Name
			t.args.WriteString(tc.Function.Arguments)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			r.finish, r.finished = *ch.FinishReason, true
		}
	}
	if text == "" && think == "" {
		return dst
	}
	if r.first.IsZero() {
		r.first = now
	}
	r.last = now
	if !r.stream {
		r.content.WriteString(text)
		r.thinking.WriteString(think)
		return dst
	}
	return r.appendJSONLine(dst, r.message(text, think, now, nil))
}

// message builds a non-final chunk (or, with metrics set by the caller, the final one).
func (r *Response) message(text, think string, now time.Time, calls []api.ToolCall) any {
	if r.ep == Generate {
		return &api.GenerateResponse{Model: r.model, CreatedAt: now.UTC(), Response: text, Thinking: think, ToolCalls: calls}
	}
	return &api.ChatResponse{Model: r.model, CreatedAt: now.UTC(),
		Message: api.Message{Role: "assistant", Content: text, Thinking: think, ToolCalls: calls}}
}

func (r *Response) appendJSONLine(dst []byte, v any) []byte {
	b, _ := json.Marshal(v)
	dst = append(dst, b...)
	return append(dst, '\n')
}

// fail ends the answer with an error: an error line when streaming, else End's 500.
func (r *Response) fail(dst []byte, msg string) []byte {
	r.failed, r.done = msg, true
	if r.stream {
		return AppendError(dst, msg)
	}
	return dst
}

// end writes the final chunk (streaming) once the upstream stream is complete.
func (r *Response) end(dst []byte, now time.Time) []byte {
	r.done = true
	if !r.stream {
		return dst
	}
	calls, err := r.toolCalls()
	if err != nil {
		return r.fail(dst, err.Error())
	}
	if len(calls) > 0 {
		dst = r.appendJSONLine(dst, r.message("", "", now, calls))
	}
	return r.appendJSONLine(dst, r.final("", "", nil, now))
}

// final is the done chunk with the metrics.
func (r *Response) final(text, think string, calls []api.ToolCall, now time.Time) any {
	v := r.message(text, think, now, calls)
	m := api.Metrics{TotalDuration: now.Sub(r.start)}
	if r.usage != nil {
		m.PromptEvalCount, m.EvalCount = r.usage.PromptTokens, r.usage.CompletionTokens
	}
	if t := r.timings; t != nil {
		if m.PromptEvalCount == 0 {
			m.PromptEvalCount = t.PromptN
		}
		if m.EvalCount == 0 {
			m.EvalCount = t.PredictedN
		}
		m.PromptEvalDuration = time.Duration(t.PromptMS * float64(time.Millisecond))
		m.EvalDuration = time.Duration(t.PredictedMS * float64(time.Millisecond))
	} else if !r.first.IsZero() {
		m.PromptEvalDuration = r.first.Sub(r.sent)
		m.EvalDuration = r.last.Sub(r.first)
	}
	reason := doneReason(r.finish)
	switch v := v.(type) {
	case *api.GenerateResponse:
		v.Done, v.DoneReason, v.Metrics = true, reason, m
	case *api.ChatResponse:
		v.Done, v.DoneReason, v.Metrics = true, reason, m
	}
	return v
}

// toolCalls assembles the streamed tool calls; their arguments must be JSON objects.
func (r *Response) toolCalls() ([]api.ToolCall, error) {
	var out []api.ToolCall
	for i := range r.calls {
		c := &r.calls[i]
		if c.name == "" {
			continue
		}
		tc := api.ToolCall{ID: c.id, Function: api.ToolCallFunction{Index: i, Name: c.name, Arguments: api.NewToolCallFunctionArguments()}}
		if args := strings.TrimSpace(c.args.String()); args != "" {
			if err := json.Unmarshal([]byte(args), &tc.Function.Arguments); err != nil {
				return nil, fmt.Errorf("the backend's call of tool %q has arguments that are not a JSON object: %v", c.name, err)
			}
		}
		out = append(out, tc)
	}
	return out, nil
}

// doneReason maps OpenAI's finish_reason to Ollama's done_reason. Ollama says "stop" when it
// stopped to call tools.
func doneReason(finish string) string {
	switch finish {
	case "", "stop", "tool_calls", "function_call":
		return "stop"
	}
	return finish
}

// End is called when the upstream body ended. It appends the rest of the answer to dst: for a
// stream the final chunk if [DONE] did not already bring it (or an error line if the stream
// broke off before the answer finished); for a non-streamed answer the whole JSON object. status
// is the HTTP status of a non-streamed answer.
func (r *Response) End(dst []byte, now time.Time) (out []byte, status int) {
	// A last line without its newline is a stream cut short, not a chunk to parse.
	r.line = r.line[:0]
	if !r.done {
		if !r.finished {
			dst = r.fail(dst, "the backend's stream ended before the answer was complete")
		} else {
			dst = r.end(dst, now)
		}
	}
	if r.stream {
		return dst, http.StatusOK
	}
	if r.failed != "" {
		return AppendError(dst, r.failed), http.StatusInternalServerError
	}
	calls, err := r.toolCalls()
	if err != nil {
		return AppendError(dst, err.Error()), http.StatusBadGateway
	}
	b, _ := json.Marshal(r.final(r.content.String(), r.thinking.String(), calls, now))
	return append(dst, b...), http.StatusOK
}

// embedAnswer is an OpenAI embeddings response.
type embedAnswer struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	} `json:"data"`
	Usage *usage `json:"usage"`
}

// EmbedResponse turns an OpenAI embeddings response into /api/embed's (ep Embed) or
// /api/embeddings' (ep Embeddings). /api/embed's vectors are scaled to unit length, as Ollama
// scales them; the legacy route's are left as the model made them, as in Ollama.
func EmbedResponse(ep Endpoint, model string, body []byte, start, now time.Time) ([]byte, error) {
	var a embedAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("the backend's embeddings answer is not JSON: %w", err)
	}
	slices.SortStableFunc(a.Data, func(x, y struct {
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}) int {
		return x.Index - y.Index
	})
	if ep == Embeddings {
		out := api.EmbeddingResponse{Embedding: []float64{}}
		if len(a.Data) > 0 {
			out.Embedding = a.Data[0].Embedding
		}
		return json.Marshal(out)
	}
	out := api.EmbedResponse{Model: model, Embeddings: make([][]float32, 0, len(a.Data)), TotalDuration: now.Sub(start)}
	for _, d := range a.Data {
		out.Embeddings = append(out.Embeddings, unit(d.Embedding))
	}
	if a.Usage != nil {
		out.PromptEvalCount = a.Usage.PromptTokens
	}
	return json.Marshal(out)
}

// unit scales v to unit length (a zero vector stays zero).
func unit(v []float64) []float32 {
	var sum float64
	for _, x := range v {
		sum += x * x
	}
	out := make([]float32, len(v))
	n := math.Sqrt(sum)
	for i, x := range v {
		if n > 0 {
			out[i] = float32(x / n)
		}
	}
	return out
}

// AppendError appends Ollama's error line, {"error":"message"} and a newline, to dst.
func AppendError(dst []byte, msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	dst = append(dst, b...)
	return append(dst, '\n')
}

// ErrorMessage is the message of an error body in any shape a backend or agent answers with:
// OpenAI's {"error":{"message":...}}, Ollama's {"error":"..."}, FastAPI's {"detail":...}, or
// plain text.
func ErrorMessage(body []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &e) == nil {
		if len(e.Error) > 0 && string(e.Error) != "null" {
			return errorText(e.Error)
		}
		if e.Message != "" {
			return e.Message
		}
		if len(e.Detail) > 0 {
			return errorText(e.Detail)
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	if s == "" {
		return "the backend answered with an empty error"
	}
	return s
}

// errorText is the text of an error value: a string, or an object with a message.
func errorText(raw json.RawMessage) string {
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
	return strings.TrimSpace(string(raw))
}

// IsBadRequest reports whether err is about the client's request (a 400).
func IsBadRequest(err error) bool {
	var re *RequestError
	return errors.As(err, &re)
}
