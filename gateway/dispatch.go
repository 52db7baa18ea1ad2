package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Batch lines take the same path as interactive requests (body scan, model and preset
// resolution, scheduling, admission, failover), as the batch class, with the answer captured in
// memory. Because nothing reached a client, even an answer that breaks off midway fails over.
//
// What Dispatch returns, for the runner:
//   - an agent's answer, whatever its status, as a Response;
//   - a line the gateway itself refuses for good (400 bad body, 404 unknown model) as a Response
//     with the OpenAI error object, so that the line fails into the error file;
//   - an error when no answer came and a later try may get one: no node can take the line now
//     (503, 429 queue full, queued past deadline), every attempt failed without an answer, or
//     ctx ended.

// dispatcher runs batch lines through the gateway's request path.
type dispatcher struct{ s *Server }

var _ batch.Dispatcher = dispatcher{}

// dispatcher returns the batch.Dispatcher the batch runner sends its lines through.
func (s *Server) dispatcher() batch.Dispatcher { return dispatcher{s: s} }

// Dispatch runs one batch line on some node.
func (d dispatcher) Dispatch(ctx context.Context, req batch.Request) (batch.Response, error) {
	s := d.s
	switch req.Endpoint {
	case agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathEmbeddings, agentapi.PathResponses:
	default:
		err := badRequest("invalid_endpoint", "url", "Endpoint %q is not supported; use %s, %s, %s or %s.", req.Endpoint,
			agentapi.PathChatCompletions, agentapi.PathResponses, agentapi.PathCompletions, agentapi.PathEmbeddings)
		return batch.Response{StatusCode: err.Status, Body: errorJSON(err)}, nil
	}
	class := req.Class
	if class == "" {
		class = agentapi.ClassBatch
	}
	k := s.getCall(ctx, req.Endpoint, class)
	defer putCall(k)
	k.reqID = s.requestID("", k.seq)
	k.body = req.Body
	if s.core.tracer != nil {
		k.startDispatchSpan()
	}

	var m memSink
	var res result
	if err := k.prepare(nil); err != nil { // batch lines carry no tenant: no rate limit
		res.err = err
	} else {
		k.held = &m
		if !s.cfg.NoContinuation {
			if body, ok := streamedLine(req.Endpoint, k.body); ok {
				k.body, k.inner = body, true
				k.continuable(nil)
			}
		}
		res = k.run(&m)
	}
	k.finish(res)
	switch {
	case res.clientGone:
		if err := ctx.Err(); err != nil {
			return batch.Response{}, err
		}
		return batch.Response{}, context.Canceled
	case res.err != nil && res.fromAgent:
		return batch.Response{StatusCode: res.err.Status, Body: errorJSON(res.err), Node: k.node, RequestID: k.reqID}, nil
	case res.err != nil:
		if res.err.Status == http.StatusTooManyRequests || res.err.Status >= 500 {
			return batch.Response{}, fmt.Errorf("gateway: dispatch: %w", res.err)
		}
		return batch.Response{StatusCode: res.err.Status, Body: errorJSON(res.err), RequestID: k.reqID}, nil
	}
	status := m.status
	if status == 0 {
		status = http.StatusOK
	}
	body := m.buf.Bytes()
	if k.inner && status == http.StatusOK && k.frame == frameSSE {
		// (A backend that answered the stream with one JSON body gave the answer itself.)
		b, err := lineAnswer(req.Endpoint, body)
		if err != nil {
			return batch.Response{}, fmt.Errorf("gateway: dispatch on node %s: %w", k.node, err)
		}
		body = b
	}
	resp := batch.Response{StatusCode: status, Body: body, Node: k.node, RequestID: k.reqID, Parameters: samplingParameters(k.body)}
	if v, ok := s.registry.Node(k.node); ok {
		resp.Simulated = v.Heartbeat.Simulated
	}
	return resp, nil
}

// provenanceParams are the request fields that shape a generation: what a delivery manifest
// records so that an output can be traced to how it was made.
var provenanceParams = []string{
	"temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "seed", "stop", "n",
	"frequency_penalty", "presence_penalty", "repeat_penalty", "logit_bias", "response_format", "reasoning_effort",
}

// samplingParameters returns the generation parameters of a request body (as the node got it,
// presets applied) as a JSON object, nil when it has none. Batch path only: it decodes the body.
func samplingParameters(body []byte) json.RawMessage {
	var all map[string]json.RawMessage
	if json.Unmarshal(body, &all) != nil {
		return nil
	}
	picked := make(map[string]json.RawMessage, len(provenanceParams))
	for _, k := range provenanceParams {
		if v, ok := all[k]; ok {
			picked[k] = v
		}
	}
	if len(picked) == 0 {
		return nil
	}
	out, err := json.Marshal(picked)
	if err != nil {
		return nil
	}
	return out
}

// errorJSON is err in the OpenAI error shape.
func errorJSON(err *APIError) []byte {
	b, _ := json.Marshal(err.Body())
	return b
}

// memSink is a sink in memory, for batch lines.
type memSink struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

var _ sink = (*memSink)(nil)

func (m *memSink) Header() http.Header {
	if m.header == nil {
		m.header = http.Header{}
	}
	return m.header
}

func (m *memSink) WriteHeader(status int) {
	if m.status == 0 {
		m.status = status
	}
}

func (m *memSink) Write(p []byte) (int, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	return m.buf.Write(p)
}

// Flush does nothing: memory needs no flushing.
func (m *memSink) Flush() {}

// reset forgets a response that broke off, so the next attempt starts clean.
func (m *memSink) reset() {
	clear(m.header)
	m.status = 0
	m.buf.Reset()
}

// writeTo gives a held answer to the client w: its headers, and with body its status and body
// too (without, the caller writes an error).
func (m *memSink) writeTo(w http.ResponseWriter, body bool) {
	h := w.Header()
	for key, v := range m.header {
		h[key] = v
	}
	if !body {
		return
	}
	status := m.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(m.buf.Bytes())
}
