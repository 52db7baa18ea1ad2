package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// tracedGW is a core test gateway whose spans go to an in-memory recorder.
func tracedGW(t *testing.T, edit func(*Config)) (*coreGW, *tracetest.SpanRecorder) {
	t.Helper()
	g := newCoreGW(t, edit)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	g.s.core.tracer = tracerFrom(tp)
	return g, rec
}

func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestTraceOfAFailover(t *testing.T) {
	g, rec := tracedGW(t, func(c *Config) { c.Scheduler.Policy = scheduler.PolicyLeastInflight })
	bad := newWireAgent(t, "bad", wire500)
	good := newWireAgent(t, "good", wireOK)
	g.beat("bad", bad.srv.URL, 4, testModel)
	g.beatBusy("good", good.srv.URL, 4, 1, testModel)

	resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","stream":true,"max_tokens":7,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(agentapi.HeaderAttempts) != "2" {
		t.Fatalf("status %d attempts %q: want a failover", resp.StatusCode, resp.Header.Get(agentapi.HeaderAttempts))
	}

	servers := spansNamed(rec, "POST /v1/chat/completions")
	if len(servers) != 1 {
		t.Fatalf("%d server spans", len(servers))
	}
	srv := servers[0]
	attempts := spansNamed(rec, "herd.attempt")
	scheds := spansNamed(rec, "herd.schedule")
	if len(attempts) != 2 || len(scheds) != 2 {
		t.Fatalf("%d attempt and %d schedule spans, want 2 and 2", len(attempts), len(scheds))
	}
	for _, s := range append(attempts, scheds...) {
		if s.Parent().SpanID() != srv.SpanContext().SpanID() || s.SpanContext().TraceID() != srv.SpanContext().TraceID() {
			t.Fatalf("%s is not a child of the request span", s.Name())
		}
	}
	first, second := attempts[0], attempts[1]
	if v, _ := attr(first, "herd.node"); v.AsString() != "bad" {
		t.Fatalf("first attempt on %q", v.AsString())
	}
	if v, _ := attr(first, "herd.retry_reason"); !strings.Contains(v.AsString(), "HTTP 500") || first.Status().Code != codes.Error {
		t.Errorf("first attempt: retry reason %q status %v", v.AsString(), first.Status())
	}
	if v, _ := attr(second, "herd.attempt"); v.AsInt64() != 2 {
		t.Errorf("second attempt numbered %d", v.AsInt64())
	}
	if v, _ := attr(second, "http.response.status_code"); v.AsInt64() != 200 || second.Status().Code == codes.Error {
		t.Errorf("second attempt: status code %d, span status %v", v.AsInt64(), second.Status())
	}
	if ev := second.Events(); len(ev) != 1 || ev[0].Name != "herd.first_token" {
		t.Errorf("second attempt events %v", ev)
	}
	// Each agent was sent its own attempt's context.
	for _, c := range []struct {
		a    *wireAgent
		span sdktrace.ReadOnlySpan
	}{{bad, first}, {good, second}} {
		reqs := c.a.requests()
		want := "00-" + c.span.SpanContext().TraceID().String() + "-" + c.span.SpanContext().SpanID().String() + "-01"
		if len(reqs) != 1 || reqs[0].header.Get("Traceparent") != want {
			t.Errorf("agent %s got traceparent %q, want %q", c.a.id, reqs[0].header.Get("Traceparent"), want)
		}
	}
	if v, _ := attr(scheds[1], "herd.candidates"); v.AsInt64() != 1 {
		t.Errorf("second decision had %d candidates, want 1 (bad excluded)", v.AsInt64())
	}
	for key, want := range map[string]any{
		"herd.node": "good", "herd.attempts": int64(2), "gen_ai.request.model": testModel, "gen_ai.request.max_tokens": int64(7),
		"gen_ai.request.stream": true, "gen_ai.usage.input_tokens": int64(5), "gen_ai.usage.output_tokens": int64(len(wireWords)),
		"http.response.status_code": int64(200), "gen_ai.operation.name": "chat",
	} {
		v, ok := attr(srv, key)
		if !ok || v.AsInterface() != want {
			t.Errorf("request span %s = %v, want %v", key, v.AsInterface(), want)
		}
	}
	for _, key := range []string{"herd.ttft_ms", "gen_ai.response.time_to_first_chunk", "herd.queue_wait_ms", "herd.request_id"} {
		if _, ok := attr(srv, key); !ok {
			t.Errorf("request span lacks %s", key)
		}
	}
}

func TestTraceContinuesTheClientsTrace(t *testing.T) {
	g, rec := tracedGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 4, testModel)
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, g.srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"llama3.1:8b","messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	srv := spansNamed(rec, "POST /v1/chat/completions")
	if len(srv) != 1 || srv[0].SpanContext().TraceID().String() != tid || srv[0].Parent().SpanID().String() != sid || !srv[0].Parent().IsRemote() {
		t.Fatalf("request span does not continue the client's trace: %+v", srv)
	}
	if srv[0].SpanKind() != trace.SpanKindServer {
		t.Errorf("kind %v", srv[0].SpanKind())
	}
}

func TestTraceOfAQueuedRequest(t *testing.T) {
	g, rec := tracedGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beatBusy("a", a.srv.URL, 1, 1, testModel)
	done := make(chan int, 1)
	go func() {
		resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","messages":[]}`)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	eventually(t, "request queued", func() bool { n, _ := g.s.core.adm.Depth(); return n == 1 })
	g.beat("a", a.srv.URL, 1, testModel) // the slot frees
	if code := recv(t, done); code != 200 {
		t.Fatalf("status %d", code)
	}
	scheds, queues := spansNamed(rec, "herd.schedule"), spansNamed(rec, "herd.queue")
	if len(scheds) != 1 || len(queues) != 1 {
		t.Fatalf("%d schedule and %d queue spans", len(scheds), len(queues))
	}
	if queues[0].Parent().SpanID() != scheds[0].SpanContext().SpanID() {
		t.Error("the queue span is not the schedule span's child")
	}
	if v, _ := attr(scheds[0], "herd.queued"); !v.AsBool() {
		t.Error("schedule span does not say the request queued")
	}
	if v, _ := attr(scheds[0], "herd.node"); v.AsString() != "a" {
		t.Errorf("chosen node %q", v.AsString())
	}
}

func TestTraceOfARefusedRequest(t *testing.T) {
	g, rec := tracedGW(t, nil)
	resp := g.post(t, "/v1/chat/completions", `{"model":"nope","messages":[]}`)
	resp.Body.Close()
	srv := spansNamed(rec, "POST /v1/chat/completions")
	if len(srv) != 1 {
		t.Fatalf("%d request spans", len(srv))
	}
	if v, _ := attr(srv[0], "http.response.status_code"); v.AsInt64() != int64(resp.StatusCode) {
		t.Errorf("status attribute %d, response %d", v.AsInt64(), resp.StatusCode)
	}
	if v, _ := attr(srv[0], "gen_ai.request.model"); v.AsString() != "nope" {
		t.Errorf("request model %q", v.AsString())
	}
	if len(spansNamed(rec, "herd.attempt")) != 0 {
		t.Error("an attempt span for a request that never reached a node")
	}
}

// discardExporter drops spans: the benchmark measures making them, not sending them.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkProxyChatTraced is BenchmarkProxyChat/json with tracing on (every request sampled,
// spans batched to an exporter that drops them): the cost of tracing a request. With tracing off
// BenchmarkProxyChat is the figure to compare with.
func BenchmarkProxyChatTraced(b *testing.B) {
	agent := newBenchAgent(b)
	body := benchChatBody
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	h := benchGateway(b, agent.URL, agentapi.BackendOpenAI, WithTransport(newAgentTransport()), WithTracerProvider(tp))
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	benchServe(b, h, req, body)
}
