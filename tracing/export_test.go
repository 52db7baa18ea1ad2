package tracing

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
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

// grpcCollector implements the OTLP trace service.
type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	got *collected
}

func (g grpcCollector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.got.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestExportEachProtocol sends one span with each protocol to a collector on loopback; Shutdown
// must have delivered it (the batch processor's delay is far longer than the test).
func TestExportEachProtocol(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	for _, protocol := range []string{ProtocolHTTPProtobuf, ProtocolHTTPJSON, ProtocolGRPC} {
		t.Run(protocol, func(t *testing.T) {
			got := &collected{}
			var endpoint string
			if protocol == ProtocolGRPC {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv := grpc.NewServer()
				coltracepb.RegisterTraceServiceServer(srv, grpcCollector{got: got})
				go srv.Serve(ln)
				t.Cleanup(srv.Stop)
				endpoint = "http://" + ln.Addr().String()
			} else {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					var req coltracepb.ExportTraceServiceRequest
					var err error
					if protocol == ProtocolHTTPJSON {
						err = protojson.Unmarshal(body, &req)
					} else {
						err = proto.Unmarshal(body, &req)
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
				endpoint = srv.URL
			}
			p, err := Setup(context.Background(), Config{Endpoint: endpoint, Protocol: protocol}, Process{ServiceName: "herd-test"})
			if err != nil {
				t.Fatal(err)
			}
			_, sp := p.TracerProvider().Tracer("test").Start(context.Background(), "one span")
			sp.End()
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			got.mu.Lock()
			defer got.mu.Unlock()
			if len(got.spans) != 1 || got.spans[0] != "one span" || len(got.services) != 1 || got.services[0] != "from-env" {
				t.Fatalf("collector got spans %v of services %v", got.spans, got.services)
			}
		})
	}
}
