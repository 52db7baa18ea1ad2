package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// fleetBeats builds n realistic heartbeats (8 GPUs, 10 models each), already encoded: in full
// (JSON, with their StaticHash) and as deltas (agentapi.HeartbeatDelta) of the same telemetry.
func fleetBeats(n int) (full, delta [][]byte) {
	full, delta = make([][]byte, n), make([][]byte, n)
	now := time.Now()
	for i := range full {
		id := fmt.Sprintf("fleet-%04d", i)
		hb := agentapi.Heartbeat{NodeID: id, InstanceID: "inst-" + id, Address: "http://127.0.0.1:1/n/" + id,
			Backend: "openai", Version: "bench", Slots: 4, IntervalMS: 1000, SentAt: now, StartedAt: now}
		for g := range 8 {
			hb.GPUs = append(hb.GPUs, agentapi.GPU{Index: g, Name: "NVIDIA A40", UUID: fmt.Sprintf("GPU-%s-%d", id, g),
				MemoryTotalBytes: 48 << 30, MemoryUsedBytes: 20 << 30, UtilizationRatio: 0.4, TemperatureCelsius: 55,
				PowerWatts: 180, PowerLimitWatts: 300, SMClockMHz: 1740, ThrottleReasons: []string{}, Healthy: true})
		}
		for m := range 10 {
			hb.Models = append(hb.Models, agentapi.Model{Name: fmt.Sprintf("fleet-model-%03d", (i*7+m*13)%200), OnDisk: true,
				Resident: m < 3, SizeBytes: 5 << 30, VRAMBytes: 6 << 30, TokensPerSecond: 60, PrefillTokensPerSecond: 2000, Concurrency: 1})
		}
		hb.StaticHash = agentapi.StaticHash(&hb)
		full[i], _ = json.Marshal(hb)
		d := agentapi.DeltaOf(&hb)
		delta[i], _ = d.AppendBinary(nil)
	}
	return full, delta
}

// BenchmarkHeartbeatFleet posts a 1,000-node fleet's heartbeats to a real gateway over loopback
// HTTP, one after another: ns/op is the round trip of one heartbeat, and a CPU profile
// (-cpuprofile) shows where the gateway spends it. full: every heartbeat in full (JSON, as
// agents before delta heartbeats sent them); delta: the full ones once, then deltas.
func BenchmarkHeartbeatFleet(b *testing.B) {
	b.Run("full", func(b *testing.B) { benchmarkHeartbeatFleet(b, false) })
	b.Run("delta", func(b *testing.B) { benchmarkHeartbeatFleet(b, true) })
}

func benchmarkHeartbeatFleet(b *testing.B, deltas bool) {
	u := benchGateway(b) + agentapi.PathHeartbeat
	beats, deltaBeats := fleetBeats(1000)
	hc := agentapi.DefaultHTTPClient()
	ct := "application/json"
	post := func(body []byte) {
		req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		req.Header.Set("Content-Type", ct)
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var buf [512]byte
		for {
			if _, err := resp.Body.Read(buf[:]); err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("HTTP %d", resp.StatusCode)
		}
	}
	for _, body := range beats {
		post(body)
	}
	if deltas {
		beats, ct = deltaBeats, agentapi.ContentTypeHeartbeatDelta
	}
	size := 0
	for _, body := range beats {
		size += len(body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		post(beats[i%len(beats)])
	}
	b.ReportMetric(float64(size)/float64(len(beats)), "body-bytes")
}

// benchGateway serves a real gateway with the default config (cluster token e2eToken, no log) on
// a loopback port until the benchmark ends, and returns its base URL.
func benchGateway(b *testing.B) string {
	b.Helper()
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
	b.Cleanup(cancel)
	go func() { _ = gw.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String()
}
