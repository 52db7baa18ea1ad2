package nodeagent

import (
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/tracing"
)

// OpenTelemetry traces of the agent's inference path, when the process set a tracer provider up.
//
// Decisions:
//   - The agent continues the trace the gateway sent (traceparent: the gateway's attempt span)
//     with a server span named after the route, and under it one span for the backend call,
//     named as the gen_ai conventions ask ("chat llama3.1:8b"): a client span for Ollama and
//     OpenAI-compatible servers, an internal one for the simulated node, which runs in process.
//   - The backend request carries the backend span's context as traceparent (replacing the
//     gateway's), so a backend that traces (vLLM can) continues under it.
//   - Both spans end when the answer has been written (a stream: its last event). Tokens, finish
//     reasons and the response model come from the usage at the end of the answer, which the
//     meter keeps anyway; TTFT is the meter's first token.
//   - A request refused before its body is read (no model, too large) has no span here; the
//     gateway's attempt span records its status.
//   - Off, a.tracer is nil and the request path checks it once.

// tracerName is the instrumentation scope of the agent's spans.
const tracerName = "github.com/herd-llm/herd/nodeagent"

// WithTracerProvider sets the provider the agent's spans come from; nil or a no-op provider
// leaves tracing off.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(a *Agent) {
		a.tracer = nil
		if _, off := tp.(noop.TracerProvider); tp != nil && !off {
			a.tracer = tp.Tracer(tracerName)
		}
	}
}

// inferenceTrace is one inference request's spans on the agent.
type inferenceTrace struct {
	server, backend trace.Span
}

// startInference starts the server and backend spans of an inference request for model and
// returns the request to hand the backend: its context holds the backend span, and its
// traceparent header names it.
func (a *Agent) startInference(r *http.Request, endpoint, model string, start time.Time) (*http.Request, *inferenceTrace) {
	ctx := agentapi.ExtractTraceContext(r.Context(), r.Header)
	op, hasOp := tracing.Operation(endpoint)
	kind := a.backend.Kind()
	common := make([]attribute.KeyValue, 0, 5)
	if hasOp {
		common = append(common, op)
	}
	common = append(common, tracing.KeyRequestModel.String(model), tracing.KeyNode.String(a.cfg.NodeID),
		tracing.KeyBackend.String(kind), tracing.KeySimulated.Bool(a.backend.Simulated()))
	srvAttrs := append([]attribute.KeyValue{semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(endpoint)}, common...)
	if id := r.Header.Get(agentapi.HeaderRequestID); id != "" {
		srvAttrs = append(srvAttrs, tracing.KeyRequestID.String(id))
	}
	ctx, server := a.tracer.Start(ctx, r.Method+" "+endpoint, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(start), trace.WithAttributes(srvAttrs...))
	spanKind := trace.SpanKindClient
	if a.backend.Simulated() {
		spanKind = trace.SpanKindInternal
	}
	ctx, backend := a.tracer.Start(ctx, tracing.SpanName(op, model), trace.WithSpanKind(spanKind),
		trace.WithTimestamp(start), trace.WithAttributes(append(common, tracing.KeyProvider.String(kind))...))
	out := r.WithContext(ctx)
	out.Header = r.Header.Clone()
	delete(out.Header, agentapi.HeaderTraceparent)
	delete(out.Header, "Tracestate")
	agentapi.InjectTraceContext(ctx, out.Header)
	return out, &inferenceTrace{server: server, backend: backend}
}

// end records what the meter saw on both spans and ends them.
func (t *inferenceTrace) end(m *meterWriter, start, now time.Time) {
	if !t.server.IsRecording() {
		t.backend.End()
		t.server.End()
		return
	}
	attrs := make([]attribute.KeyValue, 0, 10)
	if m.status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(m.status))
	}
	attrs = append(attrs, tracing.KeyStream.Bool(m.stream))
	if m.bytes > 0 {
		first := m.firstToken()
		ttft := first.Sub(start)
		attrs = append(attrs, tracing.KeyTTFT.Float64(float64(ttft)/float64(time.Millisecond)))
		if m.stream {
			attrs = append(attrs, tracing.KeyTimeToFirstChunk.Float64(ttft.Seconds()))
		}
		t.backend.AddEvent(tracing.EventFirstToken, trace.WithTimestamp(first))
	}
	if m.status/100 == 2 {
		attrs = append(attrs, tracing.ScanResponse(m.window()).Attributes()...)
	}
	for _, sp := range []trace.Span{t.backend, t.server} {
		sp.SetAttributes(attrs...)
		if m.status >= 500 {
			sp.SetAttributes(semconv.ErrorTypeKey.String(http.StatusText(m.status)))
			sp.SetStatus(codes.Error, "backend answered "+http.StatusText(m.status))
		}
	}
	end := now
	if !m.lastByte.IsZero() {
		end = m.lastByte
	}
	t.backend.End(trace.WithTimestamp(end))
	t.server.End(trace.WithTimestamp(now))
}
