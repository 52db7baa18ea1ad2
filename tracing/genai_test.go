package tracing

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestScanResponse(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		want Response
	}{
		{name: "chat completion", body: `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4-0613","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":9,"total_tokens":34}}`,
			want: Response{InputTokens: 25, OutputTokens: 9, HasInput: true, HasOutput: true, Model: "gpt-4-0613", FinishReasons: []string{"stop"}}},
		{name: "stream with usage", body: "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n" +
			"data: {\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n" +
			"data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\": 5, \"completion_tokens\" : 2}}\n\ndata: [DONE]\n\n",
			want: Response{InputTokens: 5, OutputTokens: 2, HasInput: true, HasOutput: true, Model: "m", FinishReasons: []string{"length"}}},
		{name: "n=2 finish reasons", body: `{"model":"m","choices":[{"finish_reason":"stop"},{"finish_reason":"length"},{"finish_reason":"stop"}]}`,
			want: Response{Model: "m", FinishReasons: []string{"stop", "length"}}},
		{name: "embeddings", body: `{"object":"list","data":[{"embedding":[0.1]}],"model":"nomic","usage":{"prompt_tokens":2,"total_tokens":2}}`,
			want: Response{InputTokens: 2, HasInput: true, Model: "nomic"}},
		{name: "keys quoted inside content are not keys", body: `{"choices":[{"message":{"content":"say \"prompt_tokens\": 99 and \"model\": \"x\""}}]}`,
			want: Response{}},
		{name: "no usage", body: `data: {"choices":[{"delta":{"content":"a"}}]}`, want: Response{}},
		{name: "negative and huge numbers", body: `{"usage":{"prompt_tokens":-1,"completion_tokens":99999999999999999999999}}`,
			want: Response{OutputTokens: 999999999999999999, HasOutput: true}},
		{name: "empty", body: ``, want: Response{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := ScanResponse([]byte(tt.body))
			if got.InputTokens != tt.want.InputTokens || got.OutputTokens != tt.want.OutputTokens || got.HasInput != tt.want.HasInput ||
				got.HasOutput != tt.want.HasOutput || got.Model != tt.want.Model || !slices.Equal(got.FinishReasons, tt.want.FinishReasons) {
				t.Fatalf("ScanResponse = %+v, want %+v", got, tt.want)
			}
			if n := len(got.Attributes()); n > 5 {
				t.Fatalf("%d attributes", n)
			}
		})
	}
}

func TestOperation(t *testing.T) {
	for path, want := range map[string]string{
		"/v1/chat/completions": "chat", "/v1/responses": "chat", "/api/chat": "chat",
		"/v1/completions": "text_completion", "/api/generate": "text_completion",
		"/v1/embeddings": "embeddings", "/api/embed": "embeddings", "/api/embeddings": "embeddings",
	} {
		if op, ok := Operation(path); !ok || op.Value.AsString() != want || op.Key != KeyOperation {
			t.Errorf("Operation(%q) = %v %v", path, op, ok)
		}
	}
	if _, ok := Operation("/v1/models"); ok {
		t.Error("/v1/models is not an inference operation")
	}
}

func TestSpanName(t *testing.T) {
	chat, _ := Operation("/v1/responses")
	for _, tt := range []struct {
		op          attribute.KeyValue
		model, want string
	}{
		{chat, "llama3.2:1b", "chat llama3.2:1b"},
		{chat, "", "chat"},
		{attribute.KeyValue{}, "llama3.2:1b", "llama3.2:1b"},
		{attribute.KeyValue{}, "", "inference"},
	} {
		if got := SpanName(tt.op, tt.model); got != tt.want {
			t.Errorf("SpanName(%v, %q) = %q, want %q", tt.op.Value.AsString(), tt.model, got, tt.want)
		}
	}
}

func TestSetupOffIsNoop(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	p, err := Setup(context.Background(), Config{}, Process{ServiceName: "herd-test"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() {
		t.Fatal("tracing on with nothing configured")
	}
	if _, ok := p.TracerProvider().(noop.TracerProvider); !ok {
		t.Fatalf("provider %T, want the no-op one", p.TracerProvider())
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSetupOn(t *testing.T) {
	for _, proto := range []string{ProtocolHTTPProtobuf, ProtocolHTTPJSON} {
		t.Run(proto, func(t *testing.T) {
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "team=infra,broken")
			p, err := Setup(context.Background(), Config{Endpoint: "http://127.0.0.1:1", Protocol: proto,
				ServiceName: "svc", ResourceAttributes: map[string]string{"deployment.environment.name": "test"}}, Process{ServiceName: "herd-test", Version: "v1"})
			if err != nil {
				t.Fatal(err)
			}
			if !p.Enabled() || p.Settings().Protocol != proto {
				t.Fatalf("enabled %v protocol %q", p.Enabled(), p.Settings().Protocol)
			}
			if w := strings.Join(p.Settings().Warnings, ";"); !strings.Contains(w, "OTEL_RESOURCE_ATTRIBUTES") {
				t.Errorf("malformed OTEL_RESOURCE_ATTRIBUTES not reported: %q", w)
			}
			// Nothing was recorded, so shutdown has nothing to send to the closed port.
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// FuzzScanResponse checks that the scanner of answers from the outside never panics and only
// reports what is there.
func FuzzScanResponse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "nodeagent", "testdata", "*.sse"))
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"model":"m","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`))
	f.Add([]byte(`"finish_reason":`))
	f.Add([]byte(`\"model\":"x"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := ScanResponse(b)
		if r.InputTokens < 0 || r.OutputTokens < 0 || len(r.FinishReasons) > 8 {
			t.Fatalf("%+v", r)
		}
		if r.Model != "" && !bytes.Contains(b, []byte(r.Model)) {
			t.Fatalf("model %q not in input", r.Model)
		}
		for _, fr := range r.FinishReasons {
			if fr == "" || !bytes.Contains(b, []byte(fr)) {
				t.Fatalf("finish reason %q not in input", fr)
			}
		}
	})
}
