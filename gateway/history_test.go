package gateway

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// checkGolden compares a JSON body, indented, with testdata/name (-update rewrites it).
func checkGolden(t *testing.T, name string, body []byte) {
	t.Helper()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, body, "", "  "); err != nil {
		t.Fatalf("%s: %v: %s", name, err, body)
	}
	pretty.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("%s differs:\n%s", path, pretty.String())
	}
}

func TestHistoryRing(t *testing.T) {
	h := newHistory(5*time.Second, 15*time.Second) // three samples
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	gpu := func(util, watts float64, used uint64) agentapi.GPU {
		return agentapi.GPU{UtilizationRatio: util, PowerWatts: watts, MemoryUsedBytes: used, MemoryTotalBytes: 16 << 30, Simulated: true}
	}
	up := registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: "sim1-t4", Simulated: true, InFlight: 2,
		GPUs: []agentapi.GPU{gpu(0.5, 50, 4<<30), gpu(1, 70, 8<<30)}}}
	down := registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: "gpu-2", InFlight: 9,
		GPUs: []agentapi.GPU{{UtilizationRatio: 1, PowerWatts: 333, MemoryTotalBytes: 48 << 30}}}, Stale: true}
	noGPU := registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: "cpu-1"}, GatewayInFlight: 1}
	queue := []queueDepth{{Model: "m", Class: "interactive", Waiting: 3}, {Model: "m", Class: "batch", Waiting: 40}, {Model: "n", Class: "interactive", Waiting: 1}}
	for i := range 4 {
		h.addTokens(int64(100 * i))
		h.sample(t0.Add(time.Duration(i)*5*time.Second), []registry.NodeView{up, down, noGPU}, queue)
	}
	body, err := json.Marshal(h.body())
	if err != nil {
		t.Fatal(err)
	}
	// Oldest first, the first sample dropped; 300 tokens over the last 5 s are 60/s; the down node
	// has no figures (not its last ones carried forward).
	checkGolden(t, "admin_history.golden.json", body)
	if got := h.samples(); len(got) != 3 || !got[0].Time.Equal(t0.Add(5*time.Second)) || got[2].TokensPerSecond != 60 {
		t.Fatalf("samples %+v", got)
	}
	if empty := newHistory(time.Second, time.Second).samples(); len(empty) != 0 {
		t.Fatalf("an empty history has %d samples", len(empty))
	}
}
