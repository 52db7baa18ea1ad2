package loadtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/internal/golden"
)

// fixtureCapacity is a fixed capacity report of three policies, the last one only a lower bound.
func fixtureCapacity() *CapacityReport {
	pt := func(rate, att float64, pass bool) CapacityPoint {
		return CapacityPoint{RateRPS: rate, Pass: pass, Attainment: att, Requests: 100, Good: int(att * 100), TokS: rate * 100,
			ThroughputRPS: rate, TTFT: Quantiles{P50: 150, P90: 900, P99: 1800}, TPOT: Quantiles{P50: 15, P90: 40, P99: 45}}
	}
	rr := CapacityResult{Policy: "round_robin", CapacityRPS: 2.5, FailRPS: 3, Bounded: true, TokS: 221, ThroughputRPS: 2.4, Attainment: 0.956,
		TTFT: Quantiles{P50: 136, P90: 1331, P99: 2341}, TPOT: Quantiles{P50: 14.1, P90: 44.6, P99: 44.7}, Nodes: map[string]int{"sim1-t4": 25},
		PrefillTokens: 151234, CachedTokens: 98000, ModelLoads: 3, PrefillPerRequest: 1512.3, LoadsPer1k: 30,
		Probes: []CapacityPoint{pt(2, 1, true), pt(4, 0.6, false), pt(3, 0.85, false), pt(2.5, 0.956, true)}}
	li := CapacityResult{Policy: "least_inflight", CapacityRPS: 3, FailRPS: 3.5, Bounded: true, TokS: 300, Attainment: 0.93,
		Probes: []CapacityPoint{pt(2, 1, true), pt(4, 0.7, false), pt(3, 0.93, true), pt(3.5, 0.88, false)}}
	h := CapacityResult{Policy: "herd", CapacityRPS: 8, TokS: 800, Attainment: 1,
		Probes: []CapacityPoint{pt(2, 1, true), pt(4, 1, true), pt(8, 0.99, true)}}
	rep := &CapacityReport{Scenario: ScenarioCapacity, Simulated: true, GPUs: "t4,a40,3090", Model: DefaultModel,
		Workload: string(WorkloadSharedPrefix), Engine: "ollama", Stream: true, Seed: 1, SimSpeed: 4, SLO: SLO{TTFTMs: 2000, TPOTMs: 100},
		Attainment: 0.9, ProbeDurationS: 30, MaxProbes: 7, Tolerance: 0.1, Policies: []CapacityResult{rr, li, h}}
	rep.Ratios = capacityRatios(rep.Policies)
	return rep
}

func TestCapacityReportGolden(t *testing.T) {
	rep := fixtureCapacity()
	if len(rep.Ratios) != 2 || rep.Ratios[0].Ratio != 3.2 || rep.Ratios[1].Ratio != 2.667 {
		t.Fatalf("ratios %+v", rep.Ratios)
	}
	var txt, js, svg bytes.Buffer
	if err := rep.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/capacity.golden.md", txt.Bytes())
	for _, want := range []string{"SIMULATED", "| herd | ≥ 8.00 |", "capacity herd ÷ round_robin = 3.20×"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/capacity.golden.json", js.Bytes())
	var doc struct {
		Simulated bool `json:"simulated"`
		Policies  []struct {
			Policy      string          `json:"policy"`
			CapacityRPS float64         `json:"capacity_rps"`
			Probes      []CapacityPoint `json:"probes"`
		} `json:"policies"`
		Ratios []CapacityRatio `json:"ratios"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || !doc.Simulated || len(doc.Policies) != 3 || len(doc.Policies[0].Probes) != 4 {
		t.Fatalf("JSON %+v (%v)", doc, err)
	}
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
	golden.Check(t, "testdata/capacity.golden.svg", svg.Bytes())
	if !strings.Contains(svg.String(), "SIMULATED") || strings.Contains(svg.String(), "NaN") {
		t.Error("SVG not labelled simulated, or has NaN")
	}
}

func TestCapacityRatiosWithoutHerd(t *testing.T) {
	if r := capacityRatios([]CapacityResult{{Policy: "round_robin", CapacityRPS: 2}}); r != nil {
		t.Errorf("ratios without herd: %+v", r)
	}
	if r := capacityRatios([]CapacityResult{{Policy: "herd", CapacityRPS: 2}, {Policy: "round_robin"}}); len(r) != 0 {
		t.Errorf("a baseline with no capacity has no ratio: %+v", r)
	}
}

func TestCapacityPointScalesToSimulatedTime(t *testing.T) {
	ms := time.Millisecond
	var samples []Sample
	for i := range 10 {
		s := Sample{Index: uint64(i), Start: time.Duration(i) * 100 * ms, Streamed: true, TTFT: 100 * ms, OutputTokens: 11, Status: 200}
		s.Latency = s.TTFT + 10*20*ms // TPOT 20ms wall
		if i == 9 {
			s.TTFT, s.Latency = 700*ms, 900*ms // misses a 500ms wall TTFT SLO
		}
		samples = append(samples, s)
	}
	// At sim speed 4, an SLO of 2s simulated is 500ms of wall time.
	o := Options{Target: "http://x", RPS: 8, Stream: true, SLOTTFT: 500 * ms, SLOTPOT: 25 * ms}
	r := summarize(samples, time.Second, o)
	pt := capacityPoint(r, 2, 4, 0.9)
	if pt.Requests != 10 || pt.Good != 9 || pt.Attainment != 0.9 || !pt.Pass {
		t.Fatalf("point %+v", pt)
	}
	if pt.TTFT.P50 != 400 || pt.TPOT.P50 != 80 || pt.ThroughputRPS != 2.5 || pt.TokS != 27.5 {
		t.Errorf("not scaled to simulated units: TTFT %v TPOT %v req/s %v tok/s %v", pt.TTFT, pt.TPOT, pt.ThroughputRPS, pt.TokS)
	}
	if capacityPoint(r, 2, 4, 0.95).Pass {
		t.Error("90% attainment passed a 95% target")
	}
	if heartbeatFor(4) != 250*time.Millisecond || heartbeatFor(100) != 100*time.Millisecond {
		t.Errorf("heartbeat %s %s", heartbeatFor(4), heartbeatFor(100))
	}
}

func TestBatchCompletedBetween(t *testing.T) {
	b := &BatchReport{SubmittedAtS: 1, Progress: []BatchPoint{{AtS: 2, Completed: 10}, {AtS: 4, Completed: 30}, {AtS: 5, Completed: 30}}}
	for _, tc := range []struct{ from, to, want float64 }{
		{0, 1, 0}, {1, 2, 10}, {2, 4, 20}, {3, 4, 10}, {1.5, 3, 5 + 10}, {4, 9, 0}, {0, 9, 30},
	} {
		if got := b.CompletedBetween(tc.from, tc.to); got != tc.want {
			t.Errorf("CompletedBetween(%v, %v) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
	if (&BatchReport{}).CompletedBetween(0, 10) != 0 {
		t.Error("no polls, no lines")
	}
}

func TestBatchMixReportGolden(t *testing.T) {
	idle := BatchMixRun{Name: "idle", WindowFromS: 5, WindowToS: 40, Requests: 104, WithinSLO: 1, TTFT: Quantiles{P50: 80, P90: 120, P99: 160},
		TPOT: Quantiles{P50: 12, P99: 30}, InteractiveTokS: 190}
	with := BatchMixRun{Name: "with_batch", WindowFromS: 5, WindowToS: 40, Requests: 104, WithinSLO: 0.98, TTFT: Quantiles{P50: 95, P90: 300, P99: 900},
		TPOT: Quantiles{P50: 20, P99: 45}, InteractiveTokS: 188, BatchLinesDone: 140, BatchTokS: 256, BatchShare: 0.577,
		Batch: &BatchReport{Lines: 2000, Completed: 170, Total: 2000, Status: "in_progress", Error: "batch not finished"}}
	rep := &BatchMixReport{Scenario: ScenarioBatchMix, Simulated: true, GPUs: "t4,a40,3090", Policy: "herd", Model: DefaultModel,
		Workload: "chat-short", RPS: 3, DurationS: 40, SimSpeed: 4, Seed: 1, SLO: SLO{TTFTMs: 2000, TPOTMs: 100}, BatchLines: 2000, BatchMax: 64,
		Idle: idle, WithBatch: with, TTFTP99Ratio: 5.625}
	var txt bytes.Buffer
	if err := rep.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/batchmix.golden.md", txt.Bytes())
	if !strings.Contains(txt.String(), "SIMULATED") || !strings.Contains(txt.String(), "57.7%") {
		t.Errorf("table:\n%s", txt.String())
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
}

func TestBatchMixRunShares(t *testing.T) {
	ms := time.Millisecond
	var samples []Sample
	for i := range 20 {
		s := Sample{Index: uint64(i), Start: time.Duration(i) * 250 * ms, Streamed: true, TTFT: 50 * ms, Latency: 200 * ms, OutputTokens: 64, Status: 200}
		samples = append(samples, s)
	}
	r := summarize(samples, 5*time.Second, Options{Target: "http://x", RPS: 4, Stream: true})
	r.samples = samples
	// 10 lines of 64 tokens in the wall window [1s, 4s) at speed 2 = 6 simulated seconds.
	r.Batch = &BatchReport{SubmittedAtS: 0.5, Progress: []BatchPoint{{AtS: 1, Completed: 0}, {AtS: 4, Completed: 10}}}
	br := batchMixRun("with_batch", r, time.Second, 4*time.Second, 2, 64)
	if br.Requests != 12 || br.BatchLinesDone != 10 {
		t.Fatalf("run %+v", br)
	}
	wantBatch := 10 * 64 / 6.0
	wantInter := 12 * 64 / 6.0
	if !nearly(br.BatchTokS, wantBatch) || !nearly(br.InteractiveTokS, wantInter) || !nearly(br.BatchShare, wantBatch/(wantBatch+wantInter)) {
		t.Errorf("batch %v interactive %v share %v", br.BatchTokS, br.InteractiveTokS, br.BatchShare)
	}
	if br.TTFT.P50 != 100 {
		t.Errorf("TTFT p50 %v, want 100 simulated ms", br.TTFT.P50)
	}
}

func nearly(a, b float64) bool { return a-b < 0.001 && b-a < 0.001 }
