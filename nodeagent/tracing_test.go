package nodeagent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func TestInferenceSpans(t *testing.T) {
	for _, tt := range []struct {
		name   string
		sim    bool
		stream bool
		path   string
	}{
		{"json", false, false, agentapi.PathChatCompletions}, {"stream", false, true, agentapi.PathChatCompletions},
		{"simulated", true, false, agentapi.PathChatCompletions},
		// Translated to chat completions for the backend; the spans still name a chat operation.
		{"responses", false, false, agentapi.PathResponses},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			defer tp.Shutdown(context.Background())
			b := &fakeBackend{sim: tt.sim}
			var gotHeader string
			var gotSpan trace.SpanContext
			b.setServe(func(w http.ResponseWriter, r *http.Request, _ string, _ []byte) {
				gotHeader, gotSpan = r.Header.Get("Traceparent"), trace.SpanContextFromContext(r.Context())
				if !tt.stream {
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, `{"model":"m-0613","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n")
				w.(http.Flusher).Flush()
				io.WriteString(w, "data: {\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n")
				io.WriteString(w, "data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
			})
			ta := newTestAgent(t, b, nil, nil, WithTracerProvider(tp))

			const tid, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
			body := `{"model":"m","messages":[]}`
			if tt.path == agentapi.PathResponses {
				body = `{"model":"m","input":"hi"}`
			}
			req, _ := http.NewRequest(http.MethodPost, ta.srv.URL+tt.path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Traceparent", "00-"+tid+"-"+parent+"-01")
			req.Header.Set(agentapi.HeaderRequestID, "req_1")
			resp, err := ta.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()

			spans := rec.Ended()
			if len(spans) != 2 {
				t.Fatalf("%d spans, want server and backend", len(spans))
			}
			be, srv := spans[0], spans[1]
			if srv.Name() != "POST "+tt.path || be.Name() != "chat m" {
				t.Fatalf("span names %q, %q", srv.Name(), be.Name())
			}
			if srv.SpanContext().TraceID().String() != tid || srv.Parent().SpanID().String() != parent || srv.SpanKind() != trace.SpanKindServer {
				t.Fatalf("server span does not continue the gateway's trace")
			}
			if be.Parent().SpanID() != srv.SpanContext().SpanID() {
				t.Fatal("backend span is not the server span's child")
			}
			wantKind := trace.SpanKindClient
			if tt.sim {
				wantKind = trace.SpanKindInternal
			}
			if be.SpanKind() != wantKind {
				t.Errorf("backend span kind %v, want %v", be.SpanKind(), wantKind)
			}
			want := fmt.Sprintf("00-%s-%s-01", tid, be.SpanContext().SpanID())
			if gotHeader != want || gotSpan.SpanID() != be.SpanContext().SpanID() {
				t.Errorf("backend got traceparent %q (context span %s), want %q", gotHeader, gotSpan.SpanID(), want)
			}
			attrs := map[attribute.Key]attribute.Value{}
			for _, kv := range be.Attributes() {
				attrs[kv.Key] = kv.Value
			}
			finish := "stop"
			if tt.stream {
				finish = "length"
			}
			for _, kv := range srv.Attributes() {
				if kv.Key == "" {
					t.Error("server span has an attribute without a key")
				}
			}
			if op, _ := attributeOf(srv, "gen_ai.operation.name"); op != "chat" {
				t.Errorf("server span gen_ai.operation.name = %q", op)
			}
			for k, v := range map[attribute.Key]any{
				"gen_ai.usage.input_tokens": int64(3), "gen_ai.usage.output_tokens": int64(1), "gen_ai.request.model": "m",
				"gen_ai.operation.name": "chat", "herd.node": "node-a", "herd.simulated": tt.sim, "gen_ai.request.stream": tt.stream,
				"http.response.status_code": int64(200),
			} {
				if attrs[k].AsInterface() != v {
					t.Errorf("backend span %s = %v, want %v", k, attrs[k].AsInterface(), v)
				}
			}
			if fr := attrs["gen_ai.response.finish_reasons"].AsStringSlice(); len(fr) != 1 || fr[0] != finish {
				t.Errorf("finish reasons %v", fr)
			}
			if len(be.Events()) != 1 || be.Events()[0].Name != "herd.first_token" {
				t.Errorf("backend span events %v", be.Events())
			}
		})
	}
}

// attributeOf returns span's attribute key as a string, and whether it has it.
func attributeOf(span sdktrace.ReadOnlySpan, key attribute.Key) (string, bool) {
	for _, kv := range span.Attributes() {
		if kv.Key == key {
			return kv.Value.String(), true
		}
	}
	return "", false
}
