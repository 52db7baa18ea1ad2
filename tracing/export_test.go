package tracing

import (
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// collected holds what a test collector received.
type collected struct {
	mu       sync.Mutex
	services []string
	spans    []string
}

func (c *collected) add(req *coltracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				c.services = append(c.services, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				c.spans = append(c.spans, sp.GetName())
			}
		}
	}
}

// TestExportEachProtocol sends one span with each protocol to a collector on loopback; Shutdown
// must have delivered it (the batch processor's delay is far longer than the test). The span is
// a child of a remote parent, so the IDs, the parent and the flags are checked as a collector
// reads them (OTLP/JSON: IDs in hex).
func TestExportEachProtocol(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=se%20cret,x-other=1")
	for _, tc := range []struct {
		protocol, compression string
	}{{ProtocolHTTPProtobuf, ""}, {ProtocolHTTPJSON, ""}, {ProtocolHTTPProtobuf, "gzip"}} {
		t.Run(tc.protocol+tc.compression, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", tc.compression)
			got := &collected{}
			var ids []string // trace, span, parent as the collector read them, in hex
			var flags uint32
			var tries atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tries.Add(1) == 1 && tc.protocol == ProtocolHTTPProtobuf && tc.compression == "" {
					// The first try is refused as an overloaded collector would: the exporter
					// retries (once in the test: each retry waits a second).
					w.Header().Set("Retry-After", "1")
					http.Error(w, "busy", http.StatusServiceUnavailable)
					return
				}
				var body io.Reader = r.Body
				if r.Header.Get("Content-Encoding") == "gzip" {
					zr, err := gzip.NewReader(r.Body)
					if err != nil {
						t.Errorf("gzip: %v", err)
						return
					}
					body = zr
				} else if tc.compression != "" {
					t.Errorf("Content-Encoding %q, want gzip", r.Header.Get("Content-Encoding"))
				}
				raw, _ := io.ReadAll(body)
				if r.Header.Get("X-Api-Key") != "se cret" || r.Header.Get("X-Other") != "1" {
					t.Errorf("headers %v: want those of OTEL_EXPORTER_OTLP_HEADERS", r.Header)
				}
				var req coltracepb.ExportTraceServiceRequest
				var err error
				if tc.protocol == ProtocolHTTPJSON {
					if ct := r.Header.Get("Content-Type"); ct != "application/json" {
						t.Errorf("Content-Type %q", ct)
					}
					var doc struct {
						ResourceSpans []struct {
							ScopeSpans []struct {
								Spans []struct {
									TraceID      string `json:"traceId"`
									SpanID       string `json:"spanId"`
									ParentSpanID string `json:"parentSpanId"`
									Kind         int    `json:"kind"`
									Flags        uint32 `json:"flags"`
								} `json:"spans"`
							} `json:"scopeSpans"`
						} `json:"resourceSpans"`
					}
					if err = json.Unmarshal(raw, &doc); err == nil && len(doc.ResourceSpans) == 1 && len(doc.ResourceSpans[0].ScopeSpans) == 1 {
						for _, sp := range doc.ResourceSpans[0].ScopeSpans[0].Spans {
							ids, flags = []string{sp.TraceID, sp.SpanID, sp.ParentSpanID}, sp.Flags
							if sp.Kind != 3 {
								t.Errorf("kind %d, want 3 (client) as a number", sp.Kind)
							}
						}
					}
					// The IDs are hex, not protojson's base64: read the rest with them blanked.
					err = protojson.Unmarshal(hexToB64(raw), &req)
				} else {
					if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
						t.Errorf("Content-Type %q", ct)
					}
					if err = proto.Unmarshal(raw, &req); err == nil {
						sp := req.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()[0]
						ids = []string{hex.EncodeToString(sp.GetTraceId()), hex.EncodeToString(sp.GetSpanId()), hex.EncodeToString(sp.GetParentSpanId())}
						flags = sp.GetFlags()
					}
				}
				if r.URL.Path != "/v1/traces" || err != nil {
					t.Errorf("export to %s: %v", r.URL.Path, err)
					http.Error(w, "bad export", http.StatusBadRequest)
					return
				}
				got.add(&req)
				w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
			}))
			t.Cleanup(srv.Close)
			p, err := Setup(context.Background(), Config{Endpoint: srv.URL, Protocol: tc.protocol}, Process{ServiceName: "herd-test"})
			if err != nil {
				t.Fatal(err)
			}
			parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6},
				TraceFlags: trace.FlagsSampled, Remote: true})
			_, sp := p.TracerProvider().Tracer("test").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent),
				"one span", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.StringSlice("s", []string{"a", "b"}), attribute.Int("n", 7)))
			sp.End()
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			got.mu.Lock()
			defer got.mu.Unlock()
			if len(got.spans) != 1 || got.spans[0] != "one span" || len(got.services) != 1 || got.services[0] != "from-env" {
				t.Fatalf("collector got spans %v of services %v", got.spans, got.services)
			}
			want := []string{parent.TraceID().String(), sp.SpanContext().SpanID().String(), parent.SpanID().String()}
			if strings.Join(ids, " ") != strings.Join(want, " ") {
				t.Errorf("trace, span, parent IDs %v, want %v", ids, want)
			}
			if flags != 0x301 {
				t.Errorf("flags %#x, want 0x301 (sampled, parent known to be remote)", flags)
			}
			wantTries := int32(1)
			if tc.protocol == ProtocolHTTPProtobuf && tc.compression == "" {
				wantTries = 2 // the first refused with 503
			}
			if n := tries.Load(); n != wantTries {
				t.Errorf("%d tries, want %d", n, wantTries)
			}
		})
	}
}

// hexToB64 turns the hex IDs of an OTLP/JSON body into base64, which protojson reads.
func hexToB64(raw []byte) []byte {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return raw
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "traceId" || k == "spanId" || k == "parentSpanId") {
					b, _ := hex.DecodeString(s)
					v[k] = base64.StdEncoding.EncodeToString(b)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	out, _ := json.Marshal(v)
	return out
}
