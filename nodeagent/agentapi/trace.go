package agentapi

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Trace context crosses every hop of a request (client → gateway → agent → backend) as W3C
// trace context: the traceparent and tracestate headers. The gateway sends its attempt span's
// context to the agent; the agent continues the trace under it.

// HeaderTraceparent is the W3C trace context header, in Go's canonical form.
const HeaderTraceparent = "Traceparent"

var traceContext = propagation.TraceContext{}

// InjectTraceContext writes the span context of ctx into h as traceparent (and tracestate).
// Without a valid span context in ctx it writes nothing.
func InjectTraceContext(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	traceContext.Inject(ctx, propagation.HeaderCarrier(h))
}

// ExtractTraceContext returns ctx with the remote span context h carries, if any: the parent of
// the span the receiver starts. A missing or malformed traceparent leaves ctx as it is.
func ExtractTraceContext(ctx context.Context, h http.Header) context.Context {
	if len(h[HeaderTraceparent]) == 0 {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.HeaderCarrier(h))
}
