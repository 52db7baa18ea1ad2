package batch

import (
	"context"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/gateway/store"
)

// TestBatchTraces runs a batch with a tracer: one batch span, one root span per line linked to
// it, and the dispatcher sees the line span as the current span.
func TestBatchTraces(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	var mu sync.Mutex
	var seen []trace.SpanContext
	h := start(t, dir, st, dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		mu.Lock()
		seen = append(seen, trace.SpanContextFromContext(ctx))
		mu.Unlock()
		return echo(ctx, req)
	}), testConfig(), func(o *Options) { o.Tracer = tp.Tracer("test") })
	b := h.create(h.upload(chatLines(3)).ID)
	waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	h.kill()

	var batchSpans, lines []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "herd.batch":
			batchSpans = append(batchSpans, s)
		case "herd.batch.line":
			lines = append(lines, s)
		}
	}
	if len(batchSpans) != 1 || len(lines) != 3 {
		t.Fatalf("%d batch and %d line spans, want 1 and 3", len(batchSpans), len(lines))
	}
	bs := batchSpans[0].SpanContext()
	traces := map[trace.TraceID]bool{}
	for _, l := range lines {
		if l.Parent().IsValid() {
			t.Errorf("line span has a parent: each line is its own trace")
		}
		if links := l.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != bs.SpanID() {
			t.Errorf("line span links %v, want the batch span", links)
		}
		traces[l.SpanContext().TraceID()] = true
		got := map[string]bool{}
		for _, kv := range l.Attributes() {
			got[string(kv.Key)] = true
		}
		for _, k := range []string{"herd.batch.id", "herd.batch.custom_id", "herd.batch.line", "herd.attempts", "http.response.status_code"} {
			if !got[k] {
				t.Errorf("line span lacks %s", k)
			}
		}
	}
	if len(traces) != 3 || traces[bs.TraceID()] {
		t.Errorf("lines are in %d traces (the batch's among them: %v)", len(traces), traces[bs.TraceID()])
	}
	mu.Lock()
	defer mu.Unlock()
	for _, sc := range seen {
		if !traces[sc.TraceID()] {
			t.Errorf("dispatch ran outside its line's trace")
		}
	}
}
