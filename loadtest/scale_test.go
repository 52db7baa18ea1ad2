package loadtest

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"
)

func TestFleetLayout(t *testing.T) {
	o := FleetOptions{Nodes: 300, Seed: 1}.withDefaults()
	a, b := fleetLayout(o), fleetLayout(o)
	count := map[int]int{}
	for i := range a {
		if len(a[i]) != FleetDefaultModelsPerNode {
			t.Fatalf("node %d holds %d models", i, len(a[i]))
		}
		seen := map[int]bool{}
		for j, m := range a[i] {
			if m != b[i][j] {
				t.Fatal("the layout is not a function of the seed")
			}
			if seen[m] || m < 0 || m >= FleetDefaultModels {
				t.Fatalf("node %d: model %d repeated or out of range", i, m)
			}
			seen[m] = true
			count[m]++
		}
	}
	// Zipf popularity: the head model sits on far more nodes than a tail one.
	if count[0] < 10*max(count[150], 1) {
		t.Errorf("model 0 on %d nodes, model 150 on %d: not Zipf-shaped", count[0], count[150])
	}
}

const scaleMetricsText = `# HELP herd_scheduler_pick_seconds x
# TYPE herd_scheduler_pick_seconds histogram
herd_scheduler_pick_seconds_bucket{le="1e-05"} 10
herd_scheduler_pick_seconds_bucket{le="2e-05"} 60
herd_scheduler_pick_seconds_bucket{le="5e-05"} 100
herd_scheduler_pick_seconds_bucket{le="+Inf"} 100
herd_scheduler_pick_seconds_sum 0.002
herd_scheduler_pick_seconds_count 100
herd_registry_snapshot_build_seconds_bucket{le="0.001"} 4
herd_registry_snapshot_build_seconds_bucket{le="+Inf"} 5
herd_registry_snapshot_build_seconds_count 5
herd_heartbeats_total 1234
herd_heartbeats_refused_total{node="x"} 7
`

func TestParseScaleMetrics(t *testing.T) {
	m := parseScaleMetrics([]byte(scaleMetricsText))
	if m.heartbeats != 1234 {
		t.Errorf("heartbeats %v, want 1234 (refusals are not heartbeats)", m.heartbeats)
	}
	if m.pick.count != 100 || len(m.pick.le) != 4 || m.snapshot.count != 5 {
		t.Fatalf("parsed %+v", m)
	}
	for _, tc := range []struct{ q, want float64 }{
		{0.05, 5e-6},     // within the first bucket, from 0
		{0.5, 18e-6},     // 40 of 50 into (10µs, 20µs]
		{0.99, 49.25e-6}, // 39 of 40 into (20µs, 50µs]
	} {
		if got := m.pick.quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("q%.2f = %g, want %g", tc.q, got, tc.want)
		}
	}
	if got := m.snapshot.quantile(0.99); got != 0.001 {
		t.Errorf("a quantile in +Inf is the largest finite bound: %g", got)
	}
	d := m.pick.sub(parseScaleMetrics([]byte(`herd_scheduler_pick_seconds_bucket{le="1e-05"} 10
herd_scheduler_pick_seconds_count 10`)).pick)
	if d.count != 90 || d.cum[0] != 0 {
		t.Errorf("difference %+v", d)
	}
}

// FuzzParseScaleMetrics feeds the /metrics reader what a gateway (or anything on the port) might
// send: it must never panic, and quantiles stay finite.
func FuzzParseScaleMetrics(f *testing.F) {
	f.Add([]byte(scaleMetricsText))
	f.Add([]byte("herd_scheduler_pick_seconds_bucket{le=\"NaN\"} 1\nherd_scheduler_pick_seconds_count -3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := parseScaleMetrics(b)
		for _, h := range []hist{m.pick, m.snapshot} {
			_ = h.quantile(0.5)
			_ = h.sub(h).quantile(0.99)
		}
	})
}

// TestScaleScenarioTiny runs the scale scenario end to end on the real herd binary with a small
// fleet and short windows: it checks the machinery (the fleet process registers, heartbeats are
// counted, requests reach the fleet's models, the gateway's histograms are read), not the figures.
func TestScaleScenarioTiny(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sr, err := RunScenario(ctx, ScenarioScale, ScenarioOptions{
		Binary: bin, Nodes: []int{5, 20}, HeartbeatWindow: 2 * time.Second,
		Load: Options{Duration: 2 * time.Second, Concurrency: 4, Seed: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*ScaleReport)
	if len(rep.Fleets) != 2 || rep.Fleets[1].Nodes != 20 {
		t.Fatalf("fleets %+v", rep.Fleets)
	}
	for _, f := range rep.Fleets {
		if f.HeartbeatsPerS < float64(f.Nodes)/2 || f.HeartbeatCPUPct < 0 || f.RSSMiB <= 0 {
			t.Errorf("heartbeat phase %+v", f)
		}
		if f.Requests == 0 || f.Errors != 0 || f.PickP50US <= 0 || f.PickP99US < f.PickP50US || f.AdminNodesP50Ms <= 0 {
			t.Errorf("request phase %+v", f)
		}
	}
	var txt bytes.Buffer
	if err := sr.WriteText(&txt); err != nil || !strings.Contains(txt.String(), "pick p99") {
		t.Errorf("text %v:\n%s", err, txt.String())
	}
}
