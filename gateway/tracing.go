package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/herd-llm/herd/gateway/admission"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
	"github.com/herd-llm/herd/tracing"
)

// OpenTelemetry traces of the request path, when the process set a tracer provider up
// (WithTracerProvider with tracing on).
//
// Decisions:
//   - One trace per request. The gateway continues a client's W3C traceparent, if it sent one,
//     under a server span named after the route ("POST /v1/chat/completions"); a batch line's
//     span ("dispatch /v1/chat/completions") is the child of the runner's line span instead.
//   - Each admission round is a "herd.schedule" child span carrying the decision it ended with
//     (policy, candidates in order, the chosen node and its score, how many nodes the filters
//     refused and why); when the request had to wait for a slot, a "herd.queue" child of it
//     covers the wait.
//   - Each attempt on a node is a "herd.attempt" client span (node, attempt number, and on
//     failover the retry reason); its context goes to the agent as traceparent, so the agent's
//     server span is its child.
//   - The request span ends when the answer ends (a stream: with its last event), so its
//     duration is the whole request; TTFT is an attribute (herd.ttft_ms, and for streams
//     gen_ai.response.time_to_first_chunk) and an event on the attempt that produced it. Tokens,
//     finish reasons and the response model are read from the last bytes of the answer (the
//     usage object) that the call's meter keeps (usage.go), and scanned only while a span records.
//   - Off, s.core.tracer is nil: each hook on the request path is one nil check, and nothing is
//     allocated or timed for tracing.

// tracerName is the instrumentation scope of the gateway's spans.
const tracerName = "github.com/herd-llm/herd/gateway"

// WithTracerProvider sets the provider the gateway's spans come from. A nil or no-op provider
// leaves tracing off.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// tracerFrom returns the gateway's tracer from tp, or nil when tp traces nothing.
func tracerFrom(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	if _, off := tp.(noop.TracerProvider); off {
		return nil
	}
	return tp.Tracer(tracerName)
}

// startServerSpan starts the span of an interactive request, under the client's trace context.
func (k *call) startServerSpan(r *http.Request) {
	ctx := agentapi.ExtractTraceContext(k.ctx, r.Header)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(k.path),
		tracing.KeyRequestID.String(k.reqID), tracing.KeyClass.String(k.class),
	}
	if op, ok := tracing.Operation(k.path); ok {
		attrs = append(attrs, op)
	}
	k.ctx, k.span = k.s.core.tracer.Start(ctx, r.Method+" "+k.path, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(k.start), trace.WithAttributes(attrs...))
}

// startDispatchSpan starts the span of a batch line's dispatch, under the runner's line span.
func (k *call) startDispatchSpan() {
	attrs := []attribute.KeyValue{tracing.KeyRequestID.String(k.reqID), tracing.KeyClass.String(k.class)}
	if op, ok := tracing.Operation(k.path); ok {
		attrs = append(attrs, op)
	}
	k.ctx, k.span = k.s.core.tracer.Start(k.ctx, "dispatch "+k.path, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithTimestamp(k.start), trace.WithAttributes(attrs...))
}

// traceAdmission records the admission round that began at start: a schedule span with the
// decision, and a queue span when the request waited. granted is the node's index in the
// decision's snapshot, or -1 when admission refused the request (err).
func (k *call) traceAdmission(start time.Time, g admission.Grant, err error) {
	now := k.s.core.clock.Now()
	waited := time.Duration(0)
	queuedAt := k.tk.QueuedAt()
	if !queuedAt.IsZero() {
		waited = now.Sub(queuedAt)
		k.queueWait += waited
	}
	if !k.span.IsRecording() {
		return
	}
	ctx, sp := k.s.core.tracer.Start(k.ctx, "herd.schedule", trace.WithTimestamp(start))
	sp.SetAttributes(tracing.KeyQueued.Bool(!queuedAt.IsZero()), tracing.KeyQueueWait.Float64(ms(waited)))
	if snap := k.tk.LastSnap; snap != nil {
		d := &k.dec
		nodes := make([]string, 0, len(d.Candidates))
		for _, c := range d.Candidates {
			if c.Node < len(snap.Nodes) {
				nodes = append(nodes, snap.Nodes[c.Node].ID)
			}
		}
		reasons := make([]string, 0, len(d.Rejections))
		for _, r := range d.Rejections {
			if r.Node < len(snap.Nodes) {
				reasons = append(reasons, snap.Nodes[r.Node].ID+": "+r.Reason.String())
			}
		}
		sp.SetAttributes(tracing.KeyPolicy.String(d.Policy), tracing.KeyCandidates.Int(len(nodes)),
			tracing.KeyCandidateNodes.StringSlice(nodes), tracing.KeyRejected.Int(len(reasons)),
			tracing.KeyRejections.StringSlice(reasons), tracing.KeyAttempt.Int(k.attempts+1))
		if err == nil && g.Snapshot() == snap {
			n := g.Node()
			sp.SetAttributes(tracing.KeyNode.String(n.ID))
			for _, c := range d.Candidates {
				if c.Node == g.Index() {
					sp.SetAttributes(tracing.KeyScore.Float64(c.Score))
				}
			}
		}
	}
	if !queuedAt.IsZero() {
		_, q := k.s.core.tracer.Start(ctx, "herd.queue", trace.WithTimestamp(queuedAt),
			trace.WithAttributes(tracing.KeyClass.String(k.class), tracing.KeyRequestModel.String(k.model)))
		if err != nil {
			q.SetStatus(codes.Error, errText(err))
		}
		q.End(trace.WithTimestamp(now))
	}
	if err != nil {
		sp.SetStatus(codes.Error, errText(err))
	}
	sp.End(trace.WithTimestamp(now))
}

// startAttempt starts the span of an attempt on node n; the agent request carries its context.
func (k *call) startAttempt(n *scheduler.Node) trace.Span {
	ctx, sp := k.s.core.tracer.Start(k.ctx, "herd.attempt", trace.WithSpanKind(trace.SpanKindClient))
	k.actx = ctx
	if sp.IsRecording() {
		sp.SetAttributes(tracing.KeyNode.String(n.ID), tracing.KeyAttempt.Int(k.attempts),
			semconv.HTTPRequestMethodKey.String(http.MethodPost), semconv.URLFull(n.Address+k.path))
	}
	return sp
}

// endAttempt ends an attempt's span; failures is len(k.failures) before the attempt.
func (k *call) endAttempt(sp trace.Span, o outcome, failures int) {
	k.actx = nil
	if !sp.IsRecording() {
		sp.End()
		return
	}
	if k.status != 0 {
		// The attempt committed an answer to the client: k.ttft is its first byte.
		k.answered = true
		sp.AddEvent(tracing.EventFirstToken, trace.WithTimestamp(k.start.Add(k.ttft)))
	}
	if k.status != 0 {
		sp.SetAttributes(semconv.HTTPResponseStatusCode(k.status))
	}
	if len(k.failures) > failures {
		reason := k.failures[len(k.failures)-1]
		sp.SetAttributes(tracing.KeyRetryReason.String(reason))
		if o == outcomeRetry || o == outcomeContinue || k.status >= 500 {
			sp.SetStatus(codes.Error, reason)
		}
	}
	if o == outcomeContinue {
		// The stream goes on on the next attempt's node, which continues the partial answer.
		sp.SetAttributes(attribute.Bool("herd.continued", true))
	}
	if k.cont.body != nil && o != outcomeContinue {
		sp.SetAttributes(attribute.Bool("herd.continuation", true)) // this attempt continued it
	}
	if o == outcomeAbort {
		sp.SetStatus(codes.Error, "response broke off")
	}
	sp.End()
}

// endSpan ends the request's span with what the request came to.
func (k *call) endSpan(res result, status int, latency time.Duration) {
	sp := k.span
	k.span = nil
	if status == 0 && res.err != nil {
		status = res.err.Status
	}
	if !sp.IsRecording() {
		sp.End()
		return
	}
	attrs := make([]attribute.KeyValue, 0, 16)
	// The model as the client named it (a preset's name, when one was applied), then the base
	// model the scheduler placed.
	switch {
	case k.preset != "":
		attrs = append(attrs, tracing.KeyRequestModel.String(k.preset), tracing.KeyPreset.String(k.preset))
	case len(k.info.model) > 0:
		attrs = append(attrs, tracing.KeyRequestModel.String(string(k.info.model)))
	}
	if k.model != "" {
		attrs = append(attrs, tracing.KeyModel.String(k.model))
	}
	if k.info.maxTokens > 0 {
		attrs = append(attrs, tracing.KeyMaxTokens.Int(k.info.maxTokens))
	}
	attrs = append(attrs, tracing.KeyStream.Bool(k.info.stream), tracing.KeyAttempts.Int(k.attempts),
		tracing.KeyQueueWait.Float64(ms(k.queueWait)))
	if status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	if k.node != "" {
		attrs = append(attrs, tracing.KeyNode.String(k.node))
	}
	if k.cont.count > 0 {
		// The stream broke midway and went on on another node (continue.go), this many times.
		attrs = append(attrs, attribute.Int("herd.continuations", k.cont.count))
	}
	if k.answered {
		attrs = append(attrs, tracing.KeyTTFT.Float64(ms(k.ttft)))
		if k.info.stream {
			attrs = append(attrs, tracing.KeyTimeToFirstChunk.Float64(k.ttft.Seconds()))
		}
	}
	if status/100 == 2 {
		r := tracing.ScanOutcome(k.mt.window())
		u := k.mt.usage()
		r.InputTokens, r.HasInput, r.OutputTokens, r.HasOutput = u.prompt, u.hasPrompt, u.completion, u.hasCompletion
		attrs = append(attrs, r.Attributes()...)
	}
	sp.SetAttributes(attrs...)
	switch {
	case res.err != nil && status >= 500:
		code := res.err.Code
		if code == "" {
			code = strconv.Itoa(status)
		}
		sp.SetAttributes(semconv.ErrorTypeKey.String(code))
		sp.SetStatus(codes.Error, res.err.Message)
	case status >= 500 || res.abort:
		sp.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		sp.SetStatus(codes.Error, "upstream failed")
	}
	sp.End(trace.WithTimestamp(k.start.Add(latency)))
}

func errText(err error) string {
	return admissionError(err).Message
}

// ms is d in milliseconds, fractional.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
