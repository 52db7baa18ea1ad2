package batch

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/tracing"
)

// Batch traces. A batch runs for minutes or hours, and its lines are requests of their own, so
// a batch is not one trace: each run of a batch's lines on this gateway is a "herd.batch" span,
// and each line is the root of its own trace ("herd.batch.line", retries included), linked to
// that span. The dispatcher's request span is the line span's child.

// runLinesTraced is runLines inside the batch run's span.
func (s *Service) runLinesTraced(ctx context.Context, b store.Batch) error {
	ctx, sp := s.tracer.Start(ctx, "herd.batch", trace.WithAttributes(
		tracing.KeyBatchID.String(b.ID), tracing.KeyEndpoint.String(b.Endpoint),
		tracing.KeyLines.Int(b.RequestCounts.Total)))
	defer sp.End()
	err := s.runLines(ctx, b)
	if err != nil {
		sp.SetStatus(codes.Error, err.Error())
	}
	return err
}

// startLine starts line l's span: a new trace, linked to the batch run's span in ctx.
func (s *Service) startLine(ctx context.Context, b store.Batch, l InputLine) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, "herd.batch.line", trace.WithNewRoot(),
		trace.WithLinks(trace.LinkFromContext(ctx)),
		trace.WithAttributes(tracing.KeyBatchID.String(b.ID), tracing.KeyCustomID.String(l.CustomID),
			tracing.KeyLineIndex.Int(l.Index), tracing.KeyEndpoint.String(b.Endpoint)))
}

// endLine records the line's outcome on its span (which the caller ends).
func endLine(sp trace.Span, res store.LineResult) {
	if !sp.IsRecording() {
		return
	}
	sp.SetAttributes(tracing.KeyAttempts.Int(res.Attempts), tracing.KeyNode.String(res.Node))
	if res.Model != "" {
		sp.SetAttributes(tracing.KeyRequestModel.String(res.Model))
	}
	if res.StatusCode != 0 {
		sp.SetAttributes(semconv.HTTPResponseStatusCode(res.StatusCode))
	}
	if res.PromptTokens > 0 || res.CompletionTokens > 0 {
		sp.SetAttributes(tracing.KeyInputTokens.Int(res.PromptTokens), tracing.KeyOutputTokens.Int(res.CompletionTokens))
	}
	if res.ErrorCode != "" {
		sp.SetAttributes(semconv.ErrorTypeKey.String(res.ErrorCode))
		sp.SetStatus(codes.Error, res.ErrorMessage)
	}
}
