package history

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"

	"github.com/herd-llm/herd/internal/golden"
)

func TestRing(t *testing.T) {
	r := New(5*time.Second, 15*time.Second) // three samples
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	gpu := func(util, watts float64, used uint64) agentapi.GPU {
		return agentapi.GPU{UtilizationRatio: util, PowerWatts: watts, MemoryUsedBytes: used, MemoryTotalBytes: 16 << 30, Simulated: true}
	}
	// In flight is the scheduler's count (the view's InFlight), not the heartbeat's: sim1-t4 has
	// 3 (its heartbeat's 2 plus one of this gateway's sent since), cpu-1 this gateway's 1.
	up := registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: "sim1-t4", Simulated: true, InFlight: 2,
		GPUs: []agentapi.GPU{gpu(0.5, 50, 4<<30), gpu(1, 70, 8<<30)}}, GatewayInFlight: 1, InFlight: 3}
	down := registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: "gpu-2", InFlight: 9,
		GPUs: []agentapi.GPU{{UtilizationRatio: 1, PowerWatts: 333, MemoryTotalBytes: 48 << 30}}}, Stale: true}
	noGPU := registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: "cpu-1"}, GatewayInFlight: 1, InFlight: 1}
	queue := []admission.QueueDepth{{Model: "m", Class: "interactive", Waiting: 3}, {Model: "m", Class: "batch", Waiting: 40}, {Model: "n", Class: "interactive", Waiting: 1}}
	for i := range 4 {
		r.AddTokens(int64(100 * i))
		r.Sample(t0.Add(time.Duration(i)*5*time.Second), []registry.NodeView{up, down, noGPU}, queue)
	}
	body, err := json.MarshalIndent(r.History(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	body = append(body, '\n')
	// Oldest first, the first sample dropped; 300 tokens over the last 5 s are 60/s; the down node
	// has no figures (not its last ones carried forward).
	golden.Check(t, "testdata/history.golden.json", body)
	if got := r.Samples(); len(got) != 3 || !got[0].Time.Equal(t0.Add(5*time.Second)) || got[2].TokensPerSecond != 60 {
		t.Fatalf("samples %+v", got)
	}
	if empty := New(time.Second, time.Second).Samples(); len(empty) != 0 {
		t.Fatalf("an empty history has %d samples", len(empty))
	}
	if n := len(New(time.Millisecond, time.Hour).ring); n != MaxSamples {
		t.Fatalf("ring of %d samples, want the bound %d", n, MaxSamples)
	}
}
