package gateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/herd-llm/herd/gateway"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// BenchmarkMetricsScrapeFleet measures one /metrics scrape of a real gateway that knows a
// 1,000-node fleet (8 GPUs and 10 models a node, fleetBeats): B/op is what a scrape allocates,
// which is held at once while client_golang gathers every series before writing them, and so
// sets the gateway's peak heap (and its RSS) at that fleet size; body-B is the exposition's size.
func BenchmarkMetricsScrapeFleet(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Listen, cfg.DataDir, cfg.ClusterToken = ln.Addr().String(), b.TempDir(), e2eToken
	gw, err := gateway.New(cfg, gateway.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = gw.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	hc := agentapi.DefaultHTTPClient()
	full, _ := fleetBeats(1000)
	for _, body := range full {
		req, _ := http.NewRequest(http.MethodPost, base+agentapi.PathHeartbeat, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("heartbeat: HTTP %d", resp.StatusCode)
		}
	}
	b.ReportAllocs()
	var size int64
	for b.Loop() {
		resp, err := hc.Get(base + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		size, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("/metrics: HTTP %d", resp.StatusCode)
		}
	}
	b.ReportMetric(float64(size), "body-B")
}
