package gateway_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// BenchmarkMetricsScrapeFleet measures one /metrics scrape of a real gateway that knows a
// 1,000-node fleet (8 GPUs and 10 models a node, fleetBeats): B/op is what a scrape allocates
// (the per-node series are written straight to the response, so it no longer grows with the
// body, which client_golang's gathering made the gateway's peak heap); body-B is the exposition's
// size.
func BenchmarkMetricsScrapeFleet(b *testing.B) {
	base := benchGateway(b)
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
