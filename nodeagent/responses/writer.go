package responses

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Options are what a Writer needs besides the request.
type Options struct {
	// ID is the response's id ("resp_..."); item ids derive from it.
	ID string
	// Now is the clock for created_at and completed_at.
	Now func() time.Time
	// Resume, when set, makes the Writer continue a stream that another one began (a stream
	// continued on another node after its first node failed): see Resume.
	Resume *Resume
}

// Resume is what the client of a broken stream has, for the Writer that continues it: it sends
// no response.created or response.in_progress, numbers its events from Seq, keeps the client's
// items (their ids, output_index and text, an open one continued with the backend's deltas) and
// lists them whole in response.completed, whose usage adds Tokens (the first node's output) to
// the backend's.
type Resume struct {
	Seq     int64
	Created int64
	// Model is the response's model as the client has it ("" keeps the request's).
	Model  string
	Items  []ResumeItem
	Tokens int64
}

// ResumeItem is one output item the client has: Kind "message" or "reasoning", its text so
// far, whether it is still open and, for a message, whether its content part is open.
type ResumeItem struct {
	ID, Kind       string
	Text           string
	Open, PartOpen bool
}

// maxBody bounds a non-streamed chat answer the Writer buffers; maxLine one SSE line.
const (
	maxBody = 64 << 20
	maxLine = 16 << 20
)

// Writer is the ResponseWriter a backend writes its chat completions answer to; it writes the
// Responses answer to the client's writer instead. Call Finish once the backend has returned.
//
// A non-2xx answer passes through as it is (the gateway turns every backend error into the
// client's error shape). A streamed answer is translated event by event as the chat chunks
// arrive, each flushed when the backend flushes; a non-streamed one is buffered and translated
// at Finish.
type Writer struct {
	w    http.ResponseWriter
	req  *Request
	opts Options
	hdr  http.Header

	status  int
	pass    bool // not a 2xx: bytes pass through
	stream  bool
	started bool // response.created went out
	done    bool // the final event went out
	failed  bool
	broken  bool // a write to the client failed
	dirty   bool // written to the client since the last flush

	body []byte // non-streamed answer, or the partial SSE line
	seq  int64
	buf  bytes.Buffer

	created   int64
	output    []*item
	text      *item         // the open message item, if any
	reasoning *item         // the open reasoning item, if any
	calls     map[int]*item // open function_call items by chat tool-call index
	lastCall  *item
	finish    string
	usage     *chatUsage
	itemCount int
	// prior is the output tokens of the node that began a resumed stream; model the model
	// name its client has ("" for the request's).
	prior int64
	model string
}

var _ http.Flusher = (*Writer)(nil)

// item is one output item being built.
type item struct {
	index int
	id    string
	kind  string // "message", "function_call" or "reasoning"
	text  bytes.Buffer
	// function calls
	callID, name string
	done         bool
}

// NewWriter returns a Writer for req that writes to w.
func NewWriter(w http.ResponseWriter, req *Request, opts Options) *Writer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := &Writer{w: w, req: req, opts: opts, hdr: http.Header{}, calls: map[int]*item{}}
	if r := opts.Resume; r != nil {
		t.resume(r)
	}
	return t
}

// resume sets the Writer up to continue r's stream. A message whose content part the client
// does not have yet gets it first.
func (t *Writer) resume(r *Resume) {
	t.started, t.created, t.seq, t.prior, t.model = true, r.Created, r.Seq, r.Tokens, r.Model
	for _, ri := range r.Items {
		it := &item{index: len(t.output), id: ri.ID, kind: ri.Kind, done: !ri.Open}
		it.text.WriteString(ri.Text)
		t.output = append(t.output, it)
		if !ri.Open {
			continue
		}
		switch ri.Kind {
		case "message":
			t.text = it
			if !ri.PartOpen {
				t.event("response.content_part.added", map[string]any{"item_id": it.id, "output_index": it.index, "content_index": 0,
					"part": outputTextPart("")})
			}
		case "reasoning":
			t.reasoning = it
		}
	}
	t.itemCount = len(t.output)
}

// Header is the backend's header map; only some of it reaches the client.
func (t *Writer) Header() http.Header { return t.hdr }

// WriteHeader decides how the answer is handled from the backend's status and content type.
func (t *Writer) WriteHeader(code int) {
	if t.status != 0 {
		return
	}
	t.status = code
	h := t.w.Header()
	for k, v := range t.hdr {
		switch k {
		case "Content-Length", "Content-Type":
		default:
			h[k] = v
		}
	}
	if code < 200 || code > 299 {
		t.pass = true
		if ct := t.hdr.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		}
		t.w.WriteHeader(code)
		return
	}
	t.stream = bytes.HasPrefix([]byte(t.hdr.Get("Content-Type")), []byte("text/event-stream"))
	if t.stream {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		t.w.WriteHeader(http.StatusOK)
	}
	// A non-streamed answer's status goes out with its translated body at Finish.
}

// Write takes the backend's bytes.
func (t *Writer) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	switch {
	case t.pass:
		return t.w.Write(p)
	case !t.stream:
		if len(t.body)+len(p) > maxBody {
			return 0, errTooLarge
		}
		t.body = append(t.body, p...)
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			if len(t.body)+len(p) > maxLine {
				return 0, errTooLarge
			}
			t.body = append(t.body, p...)
			break
		}
		line := p[:nl]
		if len(t.body) > 0 {
			t.body = append(t.body, line...)
			line = t.body
		}
		t.line(bytes.TrimRight(line, "\r"))
		t.body = t.body[:0]
		p = p[nl+1:]
	}
	if err := t.flushBuf(false); err != nil {
		return 0, err
	}
	return n, nil
}

type writerError string

func (e writerError) Error() string { return string(e) }

const errTooLarge = writerError("responses: backend answer too large to translate")

// Flush sends the events translated so far.
func (t *Writer) Flush() {
	if t.pass {
		if f, ok := t.w.(http.Flusher); ok {
			f.Flush()
		}
		return
	}
	_ = t.flushBuf(true)
}

// Unwrap lets http.ResponseController reach the client's writer.
func (t *Writer) Unwrap() http.ResponseWriter { return t.w }

func (t *Writer) flushBuf(flush bool) error {
	if t.broken {
		return nil
	}
	if t.buf.Len() > 0 {
		_, err := t.w.Write(t.buf.Bytes())
		t.buf.Reset()
		if err != nil {
			t.broken = true
			return err
		}
		t.dirty = true
	}
	if f, ok := t.w.(http.Flusher); ok && flush && t.dirty {
		f.Flush()
		t.dirty = false
	}
	return nil
}

// Finish completes the answer after the backend returned: the translated body of a non-streamed
// answer, or the closing events of a stream the backend ended without [DONE].
func (t *Writer) Finish() {
	switch {
	case t.pass:
		return
	case t.status == 0:
		// The backend wrote nothing (the client went away first).
		return
	case !t.stream:
		t.finishJSON()
		return
	}
	if len(t.body) > 0 {
		t.line(bytes.TrimRight(t.body, "\r"))
		t.body = t.body[:0]
	}
	if !t.done && !t.failed {
		t.start(0)
		t.complete()
	}
	_ = t.flushBuf(true)
}

// --- chat wire types (answers) ---

type chatUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

type chatToolCallDelta struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// chatReasoning is the reasoning text a chat backend sends beside the answer, under either of the
// two names in use: reasoning_content (llama.cpp's server, DeepSeek, vLLM before 0.10) and
// reasoning (Ollama's OpenAI-compatible API, vLLM since, OpenRouter).
type chatReasoning struct {
	ReasoningContent *string `json:"reasoning_content"`
	Reasoning        *string `json:"reasoning"`
}

// text is the reasoning text, "" for none.
func (r chatReasoning) text() string {
	switch {
	case r.ReasoningContent != nil && *r.ReasoningContent != "":
		return *r.ReasoningContent
	case r.Reasoning != nil:
		return *r.Reasoning
	}
	return ""
}

type chatChunk struct {
	Created int64 `json:"created"`
	Choices []struct {
		Delta struct {
			Content   *string             `json:"content"`
			Refusal   *string             `json:"refusal"`
			ToolCalls []chatToolCallDelta `json:"tool_calls"`
			chatReasoning
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage      `json:"usage"`
	Error json.RawMessage `json:"error"`
}

type chatCompletion struct {
	Created int64 `json:"created"`
	Choices []struct {
		Message struct {
			Content   *string             `json:"content"`
			Refusal   *string             `json:"refusal"`
			ToolCalls []chatToolCallDelta `json:"tool_calls"`
			chatReasoning
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
}

// --- streaming ---

// line handles one SSE line of the chat stream.
func (t *Writer) line(line []byte) {
	payload, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok || t.done || t.failed {
		return // event names, comments, blank lines: chat streams carry everything in data
	}
	payload = bytes.TrimSpace(payload)
	if bytes.Equal(payload, []byte("[DONE]")) {
		if t.started {
			t.complete()
		}
		return
	}
	var c chatChunk
	if err := json.Unmarshal(payload, &c); err != nil {
		t.fail("server_error", "the backend sent a chat chunk that is not JSON: "+err.Error())
		return
	}
	if !isNull(c.Error) {
		t.fail(errorFields(c.Error))
		return
	}
	t.start(c.Created)
	for _, ch := range c.Choices {
		if r := ch.Delta.text(); r != "" {
			t.reasoningDelta(r)
		}
		if ch.Delta.Content != nil && *ch.Delta.Content != "" {
			t.textDelta(*ch.Delta.Content)
		}
		if ch.Delta.Refusal != nil && *ch.Delta.Refusal != "" {
			t.textDelta(*ch.Delta.Refusal)
		}
		for i, tc := range ch.Delta.ToolCalls {
			idx := i
			if tc.Index != nil {
				idx = *tc.Index
			}
			t.callDelta(idx, tc)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			t.finish = *ch.FinishReason
		}
	}
	if c.Usage != nil {
		t.usage = c.Usage
	}
}

// errorFields reads an OpenAI error object (or a bare string) for the error event.
func errorFields(raw json.RawMessage) (code, msg string) {
	var e struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return "server_error", s
	}
	_ = json.Unmarshal(raw, &e)
	code = jsonStringOr(e.Code, e.Type)
	if code == "" {
		code = "server_error"
	}
	if e.Message == "" {
		e.Message = string(raw)
	}
	return code, e.Message
}

func jsonStringOr(raw json.RawMessage, alt string) string {
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s
	}
	return alt
}

// start emits response.created and response.in_progress, once.
func (t *Writer) start(created int64) {
	if t.started {
		return
	}
	t.started = true
	t.created = created
	if t.created == 0 {
		t.created = t.opts.Now().Unix()
	}
	t.event("response.created", map[string]any{"response": t.object("in_progress", nil)})
	t.event("response.in_progress", map[string]any{"response": t.object("in_progress", nil)})
}

func (t *Writer) newItem(kind, prefix string) *item {
	it := &item{index: len(t.output), kind: kind, id: prefix + "_" + t.opts.ID[min(len(t.opts.ID), len("resp_")):] + "_" + strconv.Itoa(t.itemCount)}
	t.itemCount++
	t.output = append(t.output, it)
	return it
}

// reasoningDelta adds reasoning text: a reasoning item, with its text as one reasoning_text part,
// as OpenAI's open-weight models and vLLM give it (no summary: a chat backend makes none).
func (t *Writer) reasoningDelta(s string) {
	if t.reasoning == nil {
		t.closeText("completed")
		t.closeCalls()
		t.reasoning = t.newItem("reasoning", "rs")
		t.event("response.output_item.added", map[string]any{"output_index": t.reasoning.index, "item": reasoningJSON(t.reasoning, "in_progress", false)})
	}
	t.reasoning.text.WriteString(s)
	t.event("response.reasoning_text.delta", map[string]any{"item_id": t.reasoning.id, "output_index": t.reasoning.index, "content_index": 0,
		"delta": s})
}

func (t *Writer) closeReasoning(status string) {
	it := t.reasoning
	if it == nil {
		return
	}
	t.reasoning = nil
	it.done = true
	t.event("response.reasoning_text.done", map[string]any{"item_id": it.id, "output_index": it.index, "content_index": 0,
		"text": it.text.String()})
	t.event("response.output_item.done", map[string]any{"output_index": it.index, "item": reasoningJSON(it, status, true)})
}

func (t *Writer) textDelta(s string) {
	if t.text == nil {
		t.closeReasoning("completed")
		t.closeCalls()
		t.text = t.newItem("message", "msg")
		t.event("response.output_item.added", map[string]any{"output_index": t.text.index, "item": t.messageJSON(t.text, "in_progress", false)})
		t.event("response.content_part.added", map[string]any{"item_id": t.text.id, "output_index": t.text.index, "content_index": 0,
			"part": outputTextPart("")})
	}
	t.text.text.WriteString(s)
	t.event("response.output_text.delta", map[string]any{"item_id": t.text.id, "output_index": t.text.index, "content_index": 0,
		"delta": s, "logprobs": []any{}})
}

func (t *Writer) closeText(status string) {
	it := t.text
	if it == nil {
		return
	}
	t.text = nil
	it.done = true
	full := it.text.String()
	t.event("response.output_text.done", map[string]any{"item_id": it.id, "output_index": it.index, "content_index": 0,
		"text": full, "logprobs": []any{}})
	t.event("response.content_part.done", map[string]any{"item_id": it.id, "output_index": it.index, "content_index": 0,
		"part": outputTextPart(full)})
	t.event("response.output_item.done", map[string]any{"output_index": it.index, "item": t.messageJSON(it, status, true)})
}

func (t *Writer) callDelta(idx int, tc chatToolCallDelta) {
	it := t.calls[idx]
	if it == nil {
		t.closeReasoning("completed")
		t.closeText("completed")
		if t.lastCall != nil && !t.lastCall.done {
			t.closeCall(t.lastCall, "completed")
		}
		it = t.newItem("function_call", "fc")
		it.callID, it.name = tc.ID, tc.Function.Name
		if it.callID == "" {
			it.callID = "call_" + it.id[len("fc_"):]
		}
		t.calls[idx], t.lastCall = it, it
		t.event("response.output_item.added", map[string]any{"output_index": it.index, "item": callJSON(it, "in_progress", "")})
	}
	if it.done {
		return // a delta for a call already closed: nothing valid to add it to
	}
	if it.name == "" {
		it.name = tc.Function.Name
	}
	if tc.Function.Arguments != "" {
		it.text.WriteString(tc.Function.Arguments)
		t.event("response.function_call_arguments.delta", map[string]any{"item_id": it.id, "output_index": it.index, "delta": tc.Function.Arguments})
	}
}

func (t *Writer) closeCall(it *item, status string) {
	it.done = true
	args := it.text.String()
	t.event("response.function_call_arguments.done", map[string]any{"item_id": it.id, "output_index": it.index, "name": it.name, "arguments": args})
	t.event("response.output_item.done", map[string]any{"output_index": it.index, "item": callJSON(it, status, args)})
}

func (t *Writer) closeCalls() {
	if t.lastCall != nil && !t.lastCall.done {
		t.closeCall(t.lastCall, "completed")
	}
}

// complete closes the open items and emits response.completed (or response.incomplete).
func (t *Writer) complete() {
	status, _ := t.finalStatus()
	itemStatus := "completed"
	if status == "incomplete" {
		itemStatus = "incomplete"
	}
	t.closeReasoning(itemStatus)
	t.closeText(itemStatus)
	t.closeCalls()
	t.done = true
	ev := "response.completed"
	if status == "incomplete" {
		ev = "response.incomplete"
	}
	t.event(ev, map[string]any{"response": t.object(status, t.outputJSON(itemStatus))})
}

// fail ends the stream with OpenAI's error event and response.failed.
func (t *Writer) fail(code, msg string) {
	t.failed = true
	t.start(0)
	t.event("error", map[string]any{"code": code, "message": msg, "param": nil})
	obj := t.object("failed", t.outputJSON("incomplete"))
	obj["error"] = map[string]any{"code": code, "message": msg}
	t.event("response.failed", map[string]any{"response": obj})
}

// finalStatus is the response's status and incomplete_details from the chat finish_reason.
func (t *Writer) finalStatus() (string, any) {
	switch t.finish {
	case "length":
		return "incomplete", map[string]any{"reason": "max_output_tokens"}
	case "content_filter":
		return "incomplete", map[string]any{"reason": "content_filter"}
	}
	return "completed", nil
}

// event appends one SSE event, with its type and sequence number, to the pending buffer.
func (t *Writer) event(typ string, fields map[string]any) {
	fields["type"] = typ
	fields["sequence_number"] = t.seq
	t.seq++
	b, _ := json.Marshal(fields)
	t.buf.WriteString("event: ")
	t.buf.WriteString(typ)
	t.buf.WriteString("\ndata: ")
	t.buf.Write(b)
	t.buf.WriteString("\n\n")
}

// --- objects ---

func outputTextPart(text string) map[string]any {
	return map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}}
}

func (t *Writer) messageJSON(it *item, status string, full bool) map[string]any {
	content := []any{}
	if full {
		content = append(content, outputTextPart(it.text.String()))
	}
	return map[string]any{"id": it.id, "type": "message", "status": status, "role": "assistant", "content": content}
}

// reasoningJSON is a reasoning item; its content holds the text once the item is done.
func reasoningJSON(it *item, status string, full bool) map[string]any {
	content := []any{}
	if full {
		content = append(content, map[string]any{"type": "reasoning_text", "text": it.text.String()})
	}
	return map[string]any{"id": it.id, "type": "reasoning", "status": status, "summary": []any{}, "content": content}
}

func callJSON(it *item, status, args string) map[string]any {
	return map[string]any{"id": it.id, "type": "function_call", "status": status, "call_id": it.callID, "name": it.name, "arguments": args}
}

func (t *Writer) outputJSON(itemStatus string) []any {
	out := make([]any, 0, len(t.output))
	for _, it := range t.output {
		switch it.kind {
		case "message":
			out = append(out, t.messageJSON(it, itemStatus, true))
		case "reasoning":
			out = append(out, reasoningJSON(it, itemStatus, true))
		default:
			out = append(out, callJSON(it, "completed", it.text.String()))
		}
	}
	return out
}

// object is the response object with status and output (nil: none yet).
func (t *Writer) object(status string, output []any) map[string]any {
	if output == nil {
		output = []any{}
	}
	r := t.req
	var incomplete any
	var completedAt any
	var usage any
	if status == "completed" || status == "incomplete" {
		_, incomplete = t.finalStatus()
		completedAt = t.opts.Now().Unix()
		usage = t.usageJSON()
	}
	var maxOut any
	if r.MaxOutputTokens != nil {
		maxOut = *r.MaxOutputTokens
	}
	return map[string]any{
		"id": t.opts.ID, "object": "response", "created_at": t.created, "completed_at": completedAt,
		"status": status, "error": nil, "incomplete_details": incomplete,
		"model": t.modelName(), "instructions": r.Instructions, "output": output,
		"max_output_tokens": maxOut, "parallel_tool_calls": r.ParallelToolCalls,
		"previous_response_id": nil, "reasoning": r.Reasoning, "store": false,
		"temperature": r.Temperature, "top_p": r.TopP, "text": map[string]any{"format": r.TextFormat},
		"tool_choice": r.ToolChoice, "tools": r.Tools, "truncation": r.Truncation,
		"metadata": r.Metadata, "user": r.User, "background": false, "service_tier": "default",
		"usage": usage,
	}
}

// modelName is the response's model: a resumed stream's as its client has it, else the
// request's.
func (t *Writer) modelName() string {
	if t.model != "" {
		return t.model
	}
	return t.req.Model
}

func (t *Writer) usageJSON() any {
	u := t.usage
	if u == nil {
		return nil
	}
	if t.prior > 0 {
		// A resumed stream counts the output of the node that began it too.
		c := *u
		c.CompletionTokens += t.prior
		if c.TotalTokens != 0 {
			c.TotalTokens += t.prior
		}
		u = &c
	}
	var cached, reasoning int64
	if u.PromptTokensDetails != nil {
		cached = u.PromptTokensDetails.CachedTokens
	}
	if u.CompletionTokensDetails != nil {
		reasoning = u.CompletionTokensDetails.ReasoningTokens
	}
	total := u.TotalTokens
	if total == 0 {
		total = u.PromptTokens + u.CompletionTokens
	}
	return map[string]any{
		"input_tokens": u.PromptTokens, "input_tokens_details": map[string]any{"cached_tokens": cached},
		"output_tokens": u.CompletionTokens, "output_tokens_details": map[string]any{"reasoning_tokens": reasoning},
		"total_tokens": total,
	}
}

// --- non-streamed ---

func (t *Writer) finishJSON() {
	var c chatCompletion
	h := t.w.Header()
	if err := json.Unmarshal(t.body, &c); err != nil {
		h.Set("Content-Type", "application/json")
		t.w.WriteHeader(http.StatusBadGateway)
		b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": "the backend's chat answer is not JSON: " + err.Error(),
			"type": "server_error", "param": nil, "code": "backend_error"}})
		_, _ = t.w.Write(b)
		return
	}
	t.created = c.Created
	if t.created == 0 {
		t.created = t.opts.Now().Unix()
	}
	for _, ch := range c.Choices[:min(len(c.Choices), 1)] {
		m := ch.Message
		if r := m.text(); r != "" {
			it := t.newItem("reasoning", "rs")
			it.text.WriteString(r)
		}
		text := ""
		if m.Content != nil {
			text = *m.Content
		}
		if m.Refusal != nil && text == "" {
			text = *m.Refusal
		}
		if text != "" || len(m.ToolCalls) == 0 {
			it := t.newItem("message", "msg")
			it.text.WriteString(text)
		}
		for _, tc := range m.ToolCalls {
			it := t.newItem("function_call", "fc")
			it.callID, it.name = tc.ID, tc.Function.Name
			if it.callID == "" {
				it.callID = "call_" + it.id[len("fc_"):]
			}
			it.text.WriteString(tc.Function.Arguments)
		}
		if ch.FinishReason != nil {
			t.finish = *ch.FinishReason
		}
	}
	t.usage = c.Usage
	status, _ := t.finalStatus()
	itemStatus := "completed"
	if status == "incomplete" {
		itemStatus = "incomplete"
	}
	b, _ := json.Marshal(t.object(status, t.outputJSON(itemStatus)))
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	t.w.WriteHeader(t.status)
	_, _ = t.w.Write(b)
}
