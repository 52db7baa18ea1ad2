package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/internal/golden"
)

func TestRunScenarioUnknown(t *testing.T) {
	if _, err := RunScenario(context.Background(), "nope", ScenarioOptions{}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("err %v", err)
	}
	if _, err := RunScenario(context.Background(), ScenarioHetero, ScenarioOptions{KillNodeAt: time.Second, KillNode: "ghost"}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("unknown kill node: err %v", err)
	}
}

func TestHeteroReportShape(t *testing.T) {
	rr, h := fixtureReport("round_robin", 80*time.Millisecond), fixtureReport("herd", 0)
	rep := &HeteroReport{Scenario: "hetero", Simulated: true, GPUs: "t4,a40", Nodes: []string{"sim1-t4", "sim2-a40"},
		Model: DefaultModel, Workload: string(WorkloadSharedPrefix), Stream: true, Mode: ModeOpenLoop, RPS: 10,
		DurationS: 6, SimSpeed: 2, Seed: 42, SLO: SLO{TTFTMs: 200, TPOTMs: 18}}
	for _, r := range []*Report{rr, h} {
		pr := policyResult(r.Label, r)
		pr.Fault = faultReport(r, "sim2-a40")
		rep.Policies = append(rep.Policies, pr)
	}
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Simulated bool `json:"simulated"`
		Policies  []map[string]any
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.Simulated || len(doc.Policies) != 2 {
		t.Fatalf("doc %+v", doc)
	}
	for _, k := range []string{"name", "goodput_rps", "throughput_tok_s", "ttft_p50_ms", "ttft_p99_ms", "errors", "fault", "run"} {
		if _, ok := doc.Policies[0][k]; !ok {
			t.Errorf("policy lacks %q", k)
		}
	}
	f := rep.Policies[1].Fault
	if f.AtS != 3 || f.Before.Requests+f.After.Requests != 60 || f.Before.Requests != 30 {
		t.Errorf("fault split %+v", f)
	}
	var txt bytes.Buffer
	if err := rep.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/hetero.golden.txt", txt.Bytes())
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
}

func TestOverheadReportShape(t *testing.T) {
	rep := &OverheadReport{Scenario: ScenarioOverhead, Backend: "fake", Chunks: 20, Rounds: 3, RoundS: 5, CPUs: 16,
		CPUScope: map[string]string{"direct": "loadtest process", "herd": "gateway + agent"}}
	rep.Direct.NonstreamC50 = OverheadCase{RPS: 9000, P50Ms: 4, P99Ms: 12, CPUUsPerReq: 90, RSSMiB: 40, Requests: 135000}
	rep.Herd.NonstreamC50 = OverheadCase{RPS: 6000, P50Ms: 7, P99Ms: 20, CPUUsPerReq: 150, RSSMiB: 80, GatewayCPUUsPerReq: 100,
		AgentCPUUsPerReq: 50, GatewayRSSMiB: 50, AgentRSSMiB: 30, LoadtestCPUUsPerReq: 60, Requests: 90000}
	rep.AddedP50Ms.NonstreamC50, rep.AddedP99Ms.NonstreamC50 = 3, 8
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/overhead.golden.json", b.Bytes())
	var doc map[string]map[string]map[string]any
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	doc = map[string]map[string]map[string]any{}
	for _, side := range []string{"direct", "herd"} {
		var m map[string]map[string]any
		if err := json.Unmarshal(raw[side], &m); err != nil {
			t.Fatal(err)
		}
		doc[side] = m
		for _, c := range []string{"nonstream_c50", "stream_c50", "nonstream_r200"} {
			for _, k := range []string{"rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mib"} {
				if _, ok := m[c][k]; !ok {
					t.Errorf("%s.%s lacks %s", side, c, k)
				}
			}
		}
	}
	var txt bytes.Buffer
	if err := rep.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(txt.String(), "+3.000") || !strings.Contains(txt.String(), "100 + 50 µs") {
		t.Errorf("text:\n%s", txt.String())
	}
}

// The tests below start herd processes (HERD_BIN).

func TestStartSimCluster(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := StartSimCluster(ctx, SimClusterOptions{Binary: bin, GPUs: "2xt4,a40", SimSpeed: 50, Models: []string{"llama3.2:3b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	ids, err := c.Nodes(ctx)
	if err != nil || !slices.Contains(ids, "sim1-2xt4") || !slices.Contains(ids, "sim2-a40") {
		t.Fatalf("nodes %v %v", ids, err)
	}
	if len(c.PIDs()) != 3 || c.Agent("sim1-2xt4") == nil {
		t.Errorf("pids %v", c.PIDs())
	}
	resp, err := http.Post(c.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"llama3.2:3b","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !slices.Contains(ids, resp.Header.Get(HeaderNode)) {
		t.Errorf("status %d node %q", resp.StatusCode, resp.Header.Get(HeaderNode))
	}
	if err := c.KillNode("sim2-a40"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Agent("sim2-a40").Exited(); !ok {
		t.Error("killed agent still running")
	}
	gw := c.Gateway
	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if ok, _ := gw.Exited(); !ok {
		t.Error("gateway still running after Stop")
	}
}

func TestScenarioHeteroShort(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sr, err := RunScenario(ctx, ScenarioHetero, ScenarioOptions{
		Binary: bin, Policies: []string{"round_robin", "herd"}, SimSpeed: 20,
		Load: Options{Duration: 3 * time.Second, RPS: 6, Stream: true, Seed: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*HeteroReport)
	if !rep.Simulated || len(rep.Policies) != 2 || rep.Workload != string(WorkloadSharedPrefix) {
		t.Fatalf("report %+v", rep)
	}
	for _, p := range rep.Policies {
		if p.Requests == 0 || p.Succeeded == 0 || p.TTFTP50Ms <= 0 || len(p.Nodes) == 0 {
			t.Errorf("policy %s: %+v", p.Name, p)
		}
	}
	// Same seed, same workload: both policies were offered the same requests.
	if rep.Policies[0].Requests != rep.Policies[1].Requests {
		t.Errorf("policies got %d and %d requests", rep.Policies[0].Requests, rep.Policies[1].Requests)
	}
	var txt, svg bytes.Buffer
	if err := sr.WriteText(&txt); err != nil || !strings.Contains(txt.String(), "SIMULATED") {
		t.Errorf("text %v:\n%s", err, txt.String())
	}
	if err := sr.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
	t.Logf("\n%s", txt.String())
}

func TestScenarioFaultShort(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sr, err := RunScenario(ctx, ScenarioFault, ScenarioOptions{
		Binary: bin, GPUs: "a40,3090", SimSpeed: 20, KillNodeAt: 1500 * time.Millisecond,
		Load: Options{Duration: 4 * time.Second, RPS: 8, Stream: true, Seed: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*HeteroReport)
	if len(rep.Policies) != 1 || rep.Policies[0].Name != "herd" {
		t.Fatalf("policies %+v", rep.Policies)
	}
	f := rep.Policies[0].Fault
	if f == nil || f.Node != "sim2-3090" || f.KillError != "" || f.AtS < 1.5 {
		t.Fatalf("fault %+v", f)
	}
	if f.Before.Requests == 0 || f.After.Requests == 0 || f.After.Succeeded == 0 {
		t.Errorf("before %+v after %+v", f.Before, f.After)
	}
	var txt bytes.Buffer
	_ = sr.WriteText(&txt)
	t.Logf("\n%s", txt.String())
}

func TestScenarioOverheadShort(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sr, err := RunScenario(ctx, ScenarioOverhead, ScenarioOptions{Binary: bin, Rounds: 1, RoundDuration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*OverheadReport)
	for _, key := range overheadCaseKeys {
		d, h := rep.Direct.get(key), rep.Herd.get(key)
		if d.RPS <= 0 || h.RPS <= 0 || d.Errors != 0 || h.Errors != 0 || h.RSSMiB <= 0 || h.CPUUsPerReq <= 0 || d.RSSMiB <= 0 {
			t.Errorf("%s: direct %+v herd %+v", key, d, h)
		}
	}
	var txt bytes.Buffer
	_ = sr.WriteText(&txt)
	var svg bytes.Buffer
	if err := sr.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
	t.Logf("\n%s", txt.String())
}

// TestScenarioStreamsShort holds 500 slow streams through a real gateway and agent for a few
// seconds (about 10 s in all): every stream opens, the probe runs on both sides, and the gateway
// holds one socket per client stream but only a few towards the agent (h2c multiplexes them).
func TestScenarioStreamsShort(t *testing.T) {
	bin := needHerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 500
	sr, err := RunScenario(ctx, ScenarioStreams, ScenarioOptions{Binary: bin, Streams: n, Rounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	rep := sr.(*StreamsReport)
	if rep.Open != n || rep.Failed != 0 || rep.Probe.Errors != 0 {
		t.Errorf("open %d failed %d probe errors %d (%v), want %d open", rep.Open, rep.Failed, rep.Probe.Errors, rep.ErrorKinds, n)
	}
	// One HTTP/1.1 connection per stream to the agent would add n sockets to the gateway's n.
	if rep.Gateway.OpenFiles < n || rep.Gateway.OpenFiles > n+64 {
		t.Errorf("gateway open files %d with %d client streams: gateway↔agent not multiplexed", rep.Gateway.OpenFiles, n)
	}
	if rep.Gateway.GoroutinesPerStream <= 0 || rep.Agent.GoroutinesPerStream <= 0 || rep.KiBPerStream <= 0 || rep.Probe.HerdP99Ms <= 0 {
		t.Errorf("per-stream figures missing: %+v", rep)
	}
	var txt, js bytes.Buffer
	_ = sr.WriteText(&txt)
	if err := sr.WriteJSON(&js); err != nil || !json.Valid(js.Bytes()) {
		t.Errorf("JSON report: %v", err)
	}
	var svg bytes.Buffer
	if err := sr.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg.Bytes())
	t.Logf("\n%s", txt.String())
}
