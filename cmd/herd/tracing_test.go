package main

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP traces endpoint in the test process: it decodes each
// ExportTraceServiceRequest (protobuf) as a collector would and keeps the spans.
type otlpReceiver struct {
	srv *httptest.Server

	mu    sync.Mutex
	spans []gotSpan
	bad   []string
}

// gotSpan is a received span with its resource's attributes.
type gotSpan struct {
	service  string
	resource map[string]string
	span     *tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	fail := func(format string, args ...any) {
		r.mu.Lock()
		r.bad = append(r.bad, fmt.Sprintf(format, args...))
		r.mu.Unlock()
		http.Error(w, fmt.Sprintf(format, args...), http.StatusBadRequest)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		fail("unexpected %s %s", req.Method, req.URL.Path)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		fail("content type %q, want application/x-protobuf", ct)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			fail("gzip: %v", err)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		fail("read: %v", err)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &export); err != nil {
		fail("decode ExportTraceServiceRequest: %v", err)
		return
	}
	r.mu.Lock()
	for _, rs := range export.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.spans = append(r.spans, gotSpan{service: res["service.name"], resource: res, span: sp})
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans received so far with trace id tid.
func (r *otlpReceiver) trace(tid string) []gotSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []gotSpan
	for _, s := range r.spans {
		if hex.EncodeToString(s.span.GetTraceId()) == tid {
			out = append(out, s)
		}
	}
	return out
}

// attrMap renders attributes as strings (arrays joined with commas), which is all the test needs.
func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = anyText(kv.GetValue())
	}
	return m
}

func anyText(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_ArrayValue:
		var parts []string
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, anyText(e))
		}
		return strings.Join(parts, ",")
	}
	return ""
}

// find returns the one span of spans from service named name; it fails the test otherwise.
func find(t *testing.T, spans []gotSpan, service, name string) gotSpan {
	t.Helper()
	var hits []gotSpan
	for _, s := range spans {
		if s.service == service && s.span.GetName() == name {
			hits = append(hits, s)
		}
	}
	if len(hits) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, s.service+"/"+s.span.GetName())
		}
		t.Fatalf("want one %s span %q, got %d among %v", service, name, len(hits), names)
	}
	return hits[0]
}

func spanID(s gotSpan) string   { return hex.EncodeToString(s.span.GetSpanId()) }
func parentID(s gotSpan) string { return hex.EncodeToString(s.span.GetParentSpanId()) }

func wantAttrs(t *testing.T, s gotSpan, want map[string]string, present ...string) {
	t.Helper()
	got := attrMap(s.span.GetAttributes())
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s %q: attribute %s = %q, want %q (all: %v)", s.service, s.span.GetName(), k, got[k], v, got)
		}
	}
	for _, k := range present {
		if _, ok := got[k]; !ok {
			t.Errorf("%s %q: attribute %s missing (all: %v)", s.service, s.span.GetName(), k, got)
		}
	}
}

// fakeOpenAIBackend is an OpenAI-compatible server that records the traceparent it is sent.
type fakeOpenAIBackend struct {
	srv         *httptest.Server
	mu          sync.Mutex
	traceparent []string
}

func newFakeOpenAIBackend(t *testing.T) *fakeOpenAIBackend {
	f := &fakeOpenAIBackend{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/models":
			_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"fake-model","object":"model","created":1,"owned_by":"test"}]}`)
		case "/v1/chat/completions":
			_, _ = io.Copy(io.Discard, r.Body)
			f.mu.Lock()
			f.traceparent = append(f.traceparent, r.Header.Get("Traceparent"))
			f.mu.Unlock()
			_, _ = io.WriteString(w, `{"id":"chatcmpl-fake","object":"chat.completion","created":1,"model":"fake-model-0613","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// TestTracingAcrossGatewayAndAgent starts a gateway and two agents (a simulated node and one in
// front of an OpenAI-compatible backend) exporting OTLP/HTTP to an in-process receiver, sends
// requests carrying the client's own traceparent, and checks that each request is one trace:
// gateway server span → schedule and attempt spans → the agent's server span (child of the
// attempt) → the backend span, whose context reached the backend. The gateway exports every
// 100 ms; the agents only at shutdown (a 10-minute schedule delay), which checks the flush.
func TestTracingAcrossGatewayAndAgent(t *testing.T) {
	herdBinary(t)
	recv := newOTLPReceiver(t)
	backend := newFakeOpenAIBackend(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.srv.URL)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=it")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	c := startGateway(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
	simAgent := c.addSimAgent("node-sim", "3090")
	oaAgent := c.addAgent("node-oa", "--backend", "openai", "--openai-url", backend.srv.URL)
	c.waitNodes(2)

	type req struct {
		name, path, tid, model, node string
		stream                       bool
	}
	const chat, responses = "/v1/chat/completions", "/v1/responses"
	reqs := []req{
		{"json", chat, "4bf92f3577b34da6a3ce929d0e0e4736", "llama3.2:1b", "node-sim", false},
		{"stream", chat, "5bf92f3577b34da6a3ce929d0e0e4737", "llama3.2:1b", "node-sim", true},
		{"openai-backend", chat, "6bf92f3577b34da6a3ce929d0e0e4738", "fake-model", "node-oa", false},
		// The agent translates a Responses request for the simulated backend to chat completions.
		{"responses", responses, "7bf92f3577b34da6a3ce929d0e0e4739", "llama3.2:1b", "node-sim", false},
	}
	const clientSpan = "00f067aa0ba902b7"
	for _, r := range reqs {
		// stream_options only with stream, as OpenAI (and the simulated node) require.
		opts := ""
		if r.stream {
			opts = `"stream_options":{"include_usage":true},`
		}
		body := fmt.Sprintf(`{"model":%q,"max_tokens":8,"stream":%v,%s"messages":[{"role":"user","content":"hi"}]}`, r.model, r.stream, opts)
		if r.path == responses {
			body = fmt.Sprintf(`{"model":%q,"max_output_tokens":8,"stream":%v,"input":"hi"}`, r.model, r.stream)
		}
		hr, _ := http.NewRequest(http.MethodPost, c.url+r.path, strings.NewReader(body))
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("Traceparent", "00-"+r.tid+"-"+clientSpan+"-01")
		resp, err := httpClient().Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Herd-Node") != r.node {
			t.Fatalf("%s: status %d node %q: %s", r.name, resp.StatusCode, resp.Header.Get("X-Herd-Node"), data)
		}
		if r.stream && !bytes.Contains(data, []byte("data: [DONE]")) {
			t.Fatalf("%s: stream did not end: %s", r.name, data)
		}
	}

	// The gateway's spans arrive while it runs.
	// each reports whether every request's trace has at least want spans of service.
	each := func(service string, want int) func() bool {
		return func() bool {
			for _, r := range reqs {
				n := 0
				for _, s := range recv.trace(r.tid) {
					if s.service == service {
						n++
					}
				}
				if n < want {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 30*time.Second, "gateway spans", each("herd-gateway", 3))
	// The agents' spans arrive when they shut down: the exporter is flushed.
	simAgent.stop()
	oaAgent.stop()
	waitFor(t, 30*time.Second, "agent spans flushed at shutdown", each("herd-agent", 2))

	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			spans := recv.trace(r.tid)
			gw := find(t, spans, "herd-gateway", "POST "+r.path)
			sched := find(t, spans, "herd-gateway", "herd.schedule")
			att := find(t, spans, "herd-gateway", "herd.attempt")
			ag := find(t, spans, "herd-agent", "POST "+r.path)
			be := find(t, spans, "herd-agent", "chat "+r.model)

			if parentID(gw) != clientSpan {
				t.Errorf("gateway span's parent %s, want the client's %s", parentID(gw), clientSpan)
			}
			if parentID(sched) != spanID(gw) || parentID(att) != spanID(gw) {
				t.Errorf("schedule/attempt parents %s/%s, want the gateway span %s", parentID(sched), parentID(att), spanID(gw))
			}
			if parentID(ag) != spanID(att) {
				t.Errorf("agent server span's parent %s, want the gateway's attempt span %s", parentID(ag), spanID(att))
			}
			if parentID(be) != spanID(ag) {
				t.Errorf("backend span's parent %s, want the agent server span %s", parentID(be), spanID(ag))
			}
			if gw.span.GetKind() != tracepb.Span_SPAN_KIND_SERVER || att.span.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || ag.span.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("kinds: gateway %v, attempt %v, agent %v", gw.span.GetKind(), att.span.GetKind(), ag.span.GetKind())
			}
			for _, s := range []gotSpan{gw, ag} {
				if s.resource["deployment.environment.name"] != "it" {
					t.Errorf("%s resource lacks OTEL_RESOURCE_ATTRIBUTES: %v", s.service, s.resource)
				}
			}
			stream := fmt.Sprint(r.stream)
			present := []string{"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
				"gen_ai.response.model", "herd.ttft_ms", "herd.queue_wait_ms", "herd.request_id"}
			if r.path == chat {
				// A Responses answer has a status, not finish_reason values.
				present = append(present, "gen_ai.response.finish_reasons")
			}
			wantAttrs(t, gw, map[string]string{
				"gen_ai.operation.name": "chat", "gen_ai.request.model": r.model, "herd.node": r.node,
				"herd.attempts": "1", "gen_ai.request.max_tokens": "8", "gen_ai.request.stream": stream,
				"http.response.status_code": "200", "http.route": r.path,
			}, present...)
			wantAttrs(t, sched, map[string]string{"herd.node": r.node, "herd.policy": "herd"},
				"herd.candidates", "herd.candidate_nodes", "herd.rejected", "herd.score", "herd.queue_wait_ms")
			wantAttrs(t, att, map[string]string{"herd.node": r.node, "herd.attempt": "1", "http.response.status_code": "200"})
			wantAttrs(t, ag, map[string]string{"herd.node": r.node, "gen_ai.request.model": r.model, "http.response.status_code": "200"},
				"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
			wantAttrs(t, ag, map[string]string{"gen_ai.operation.name": "chat", "http.route": r.path})
			wantAttrs(t, be, map[string]string{"gen_ai.operation.name": "chat", "gen_ai.request.model": r.model},
				"gen_ai.provider.name", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
			if len(att.span.GetEvents()) == 0 || att.span.GetEvents()[0].GetName() != "herd.first_token" {
				t.Errorf("attempt span lacks the first-token event: %v", att.span.GetEvents())
			}
			if r.stream {
				wantAttrs(t, gw, nil, "gen_ai.response.time_to_first_chunk")
				// The gateway's span ends with the stream, after the agent has written its last event.
				if gw.span.GetEndTimeUnixNano() < be.span.GetEndTimeUnixNano() {
					t.Errorf("gateway span ended at %d, before the backend span (%d)", gw.span.GetEndTimeUnixNano(), be.span.GetEndTimeUnixNano())
				}
			}
			if r.node == "node-oa" {
				wantAttrs(t, gw, map[string]string{"gen_ai.usage.input_tokens": "11", "gen_ai.usage.output_tokens": "2",
					"gen_ai.response.model": "fake-model-0613", "gen_ai.response.finish_reasons": "stop"})
				backend.mu.Lock()
				got := backend.traceparent
				backend.mu.Unlock()
				want := "00-" + r.tid + "-" + spanID(be) + "-01"
				if len(got) != 1 || got[0] != want {
					t.Errorf("backend received traceparent %v, want [%s]", got, want)
				}
			} else {
				wantAttrs(t, ag, map[string]string{"herd.simulated": "true"})
			}
		})
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.bad) > 0 {
		t.Errorf("receiver refused exports: %v", recv.bad)
	}
}
