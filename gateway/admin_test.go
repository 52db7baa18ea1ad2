package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/admin"
	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/agents"

	"github.com/herd-llm/herd/gateway/api"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"

	"github.com/herd-llm/herd/internal/fakeclock"
	"github.com/herd-llm/herd/internal/golden"
)

const testToken = "cluster-secret"

// adminEnv is a gateway with only the admin, internal and metrics routes, built without New.
type adminEnv struct {
	t     *testing.T
	clock *stepClock
	reg   *registry.Registry
	srv   *Server
	http  *httptest.Server
	queue *stubQueue
}

// stubQueue is a gateway queue with set depths.
type stubQueue struct{ depths []admission.QueueDepth }

func (q *stubQueue) QueueDepths() []admission.QueueDepth { return q.depths }

var _ queueSource = (*stubQueue)(nil)

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	quiet := slog.New(slog.DiscardHandler)
	clk := &stepClock{fakeclock.New(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))}
	reg := registry.New(registry.Config{}, clk)
	reg.SetLogger(quiet)
	sched, err := scheduler.New(scheduler.Config{Policy: scheduler.PolicyHerd})
	if err != nil {
		t.Fatal(err)
	}
	queue := &stubQueue{}
	s := &Server{cfg: Config{ClusterToken: testToken}, log: quiet, registry: reg, sched: sched, metrics: newMetrics(reg, queue, clk.Now),
		agents: agents.NewPool(testToken, reg.Nodes)}
	e := gin.New()
	admin.New(reg, sched, s.agents, quiet).WithClock(clk.Now, time.Second).Register(e.Group("/admin/v1"))
	s.registerInternalRoutes(e.Group("/internal/v1"))
	s.core.clock = clk
	e.GET("/metrics", gin.WrapH(s.metrics.handler()))
	s.engine = e
	hs := httptest.NewServer(e)
	t.Cleanup(hs.Close)
	return &adminEnv{t: t, clock: clk, reg: reg, srv: s, http: hs, queue: queue}
}

// do sends a request to the gateway and returns the status and body.
func (e *adminEnv) do(method, path, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// wantError checks an OpenAI-shaped error answer.
func wantError(t *testing.T, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d (body %s)", status, wantStatus, body)
	}
	var eb struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %s is not JSON: %v", body, err)
	}
	if eb.Error.Message == "" || eb.Error.Type == "" {
		t.Errorf("error body %s lacks message or type", body)
	}
	if wantCode != "" && (eb.Error.Code == nil || *eb.Error.Code != wantCode) {
		t.Errorf("error code %v, want %q (body %s)", eb.Error.Code, wantCode, body)
	}
}

// fakeAgent implements the agent routes the admin API calls.
type fakeAgent struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	calls []agentCall
	// status makes a route answer with an error status instead (path → status).
	status map[string]int
	// progress is streamed by pull and copy, line by line with a flush after each.
	progress []agentapi.Progress
	// gate, when set, is waited on after the first progress line.
	gate chan struct{}
}

type agentCall struct {
	Path string
	Body string
}

func newFakeAgent(t *testing.T) *fakeAgent {
	a := &fakeAgent{t: t, status: map[string]int{}, progress: []agentapi.Progress{
		{Status: "pulling manifest"},
		{Status: "downloading", Digest: "sha256:aa", Total: 100, Completed: 50},
		{Status: "downloading", Digest: "sha256:aa", Total: 100, Completed: 100},
		{Status: "success"},
	}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		http.Error(w, `{"error":{"message":"bad token","type":"authentication_error"}}`, http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.calls = append(a.calls, agentCall{Path: r.URL.Path, Body: string(body)})
	status := a.status[r.URL.Path]
	progress, gate := slices.Clone(a.progress), a.gate
	a.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(agentapi.ErrorBody{Error: agentapi.ErrorDetail{Message: "agent says " + http.StatusText(status), Type: "invalid_request_error"}})
		return
	}
	switch r.URL.Path {
	case agentapi.PathModelPull, agentapi.PathModelCopy:
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl := w.(http.Flusher)
		enc := json.NewEncoder(w)
		for i, p := range progress {
			_ = enc.Encode(p)
			fl.Flush()
			if i == 0 && gate != nil {
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
			}
		}
	case agentapi.PathModelLoad, agentapi.PathModelUnload, agentapi.PathModelDelete, agentapi.PathSimFault:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	default:
		http.NotFound(w, r)
	}
}

func (a *fakeAgent) Calls() []agentCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// nodeBeat is a heartbeat for a node served by agent (nil: an address nobody listens on).
func nodeBeat(id string, agent *fakeAgent) agentapi.Heartbeat {
	addr := "http://127.0.0.1:1"
	if agent != nil {
		addr = agent.srv.URL
	}
	return agentapi.Heartbeat{
		NodeID: id, Address: addr, Backend: agentapi.BackendSim, Simulated: true, Version: "0.1.0",
		IntervalMS: 1000, Slots: 4,
		StartedAt: time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC),
		GPUs: []agentapi.GPU{{
			Index: 0, Name: "Tesla T4", UUID: "GPU-" + id, MemoryTotalBytes: 16 << 30, MemoryUsedBytes: 6 << 30,
			UtilizationRatio: 0.5, TemperatureCelsius: 61, PowerWatts: 52, PowerLimitWatts: 70,
			Healthy: true, Simulated: true,
		}},
		Models: []agentapi.Model{{Name: "llama3.1:8b", Resident: true, OnDisk: true, VRAMBytes: 5 << 30, SizeBytes: 4920 << 20, TokensPerSecond: 38}},
	}
}

func TestAdminNodesGolden(t *testing.T) {
	env := newAdminEnv(t)
	a := nodeBeat("node-a", nil)
	a.Address = "http://10.0.0.5:9090"
	a.Hostname = "gpu-a"
	a.InFlight, a.Queued = 1, 2
	a.GPUs = append(a.GPUs, agentapi.GPU{
		Index: 1, Name: "Tesla T4", UUID: "GPU-node-a-1", MemoryTotalBytes: 16 << 30, MemoryUsedBytes: 1 << 30,
		UtilizationRatio: 0.95, TemperatureCelsius: 91, PowerWatts: 70, PowerLimitWatts: 70,
		ThrottleReasons: []string{agentapi.ThrottleHWThermal}, ECCUncorrected: 2, Healthy: false,
		HealthReason: "ECC uncorrectable errors: 2", Simulated: true,
	})
	a.Models = append(a.Models, agentapi.Model{Name: "qwen2.5", OnDisk: true, SizeBytes: 4 << 30, ParameterSize: "7.6B", Quantization: "Q4_K_M"})
	b := agentapi.Heartbeat{
		NodeID: "node-b", Address: "http://10.0.0.6:9090", Backend: agentapi.BackendOllama, Version: "0.1.0",
		IntervalMS: 1000, Slots: 1, TelemetryError: "NVML not available: driver not loaded",
		StartedAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC),
	}
	env.reg.Observe(b)
	env.clock.Advance(5 * time.Second) // node-b goes stale
	env.reg.Observe(a)
	if err := env.reg.SetDraining("node-a", true); err != nil {
		t.Fatal(err)
	}
	env.reg.Acquire("node-a")
	env.reg.Acquire("node-a")
	env.reg.Acquire("node-a")                  // 3 of this gateway's in flight on top of the heartbeat's 1 + 2 queued: in_flight 4 (the slots), queued 2
	env.clock.Advance(1200 * time.Millisecond) // node-a's heartbeat is 1.2 s old: up; node-b's 6.2 s: down

	status, body := env.do(http.MethodGet, "/admin/v1/nodes", "")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, body, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	golden.Check(t, "testdata/admin_nodes.golden.json", pretty.Bytes())

	status, body = env.do(http.MethodGet, "/admin/v1/nodes/node-b", "")
	if status != http.StatusOK {
		t.Fatalf("GET node-b: %d %s", status, body)
	}
	var one api.Node
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatal(err)
	}
	if one.ID != "node-b" || !one.Stale || one.TelemetryError == "" || len(one.GPUs) != 0 {
		t.Errorf("GET node-b = %+v", one)
	}
	status, body = env.do(http.MethodGet, "/admin/v1/nodes/nope", "")
	wantError(t, status, body, http.StatusNotFound, "node_not_found")
}

func TestAdminDrainUndrain(t *testing.T) {
	env := newAdminEnv(t)
	env.reg.Observe(nodeBeat("a", nil))
	for _, tc := range []struct {
		path     string
		draining bool
	}{
		{"/admin/v1/nodes/a/drain", true},
		{"/admin/v1/nodes/a/drain", true}, // idempotent
		{"/admin/v1/nodes/a/undrain", false},
		{"/admin/v1/nodes/a/drain", true},
	} {
		status, body := env.do(http.MethodPost, tc.path, "")
		if status != http.StatusOK {
			t.Fatalf("POST %s: %d %s", tc.path, status, body)
		}
		var n api.Node
		if err := json.Unmarshal(body, &n); err != nil {
			t.Fatal(err)
		}
		if n.Draining != tc.draining {
			t.Errorf("POST %s: draining %v, want %v", tc.path, n.Draining, tc.draining)
		}
		if got := env.reg.Snapshot().Nodes[0].Draining; got != tc.draining {
			t.Errorf("POST %s: snapshot draining %v", tc.path, got)
		}
		// The agent learns it from the reply to its next heartbeat.
		status, body = env.do(http.MethodPost, "/internal/v1/heartbeat", mustJSON(t, nodeBeat("a", nil)))
		if status != http.StatusOK || !strings.Contains(string(body), `"draining":`+map[bool]string{true: "true", false: "false"}[tc.draining]) {
			t.Errorf("heartbeat reply %d %s, want draining %v", status, body, tc.draining)
		}
	}
	for _, p := range []string{"/admin/v1/nodes/zz/drain", "/admin/v1/nodes/zz/undrain"} {
		status, body := env.do(http.MethodPost, p, "")
		wantError(t, status, body, http.StatusNotFound, "node_not_found")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAdminModels(t *testing.T) {
	env := newAdminEnv(t)
	a := nodeBeat("a", nil)
	a.Models = []agentapi.Model{
		{Name: "llama3.1:8b", Resident: true, OnDisk: true, VRAMBytes: 5 << 30, SizeBytes: 4 << 30},
		{Name: "qwen2.5", OnDisk: true, SizeBytes: 3 << 30},
	}
	b := nodeBeat("b", nil)
	b.Models = []agentapi.Model{
		{Name: "qwen2.5:latest", Resident: true, OnDisk: true, VRAMBytes: 4 << 30, SizeBytes: 3 << 30},
		{Name: "Qwen2.5", OnDisk: true, SizeBytes: 3 << 30}, // same model, another spelling
	}
	env.reg.Observe(b)
	env.reg.Observe(a)
	env.reg.Observe(nodeBeat("c", nil))
	c := nodeBeat("c", nil)
	c.Models = nil
	env.reg.Observe(c)

	status, body := env.do(http.MethodGet, "/admin/v1/models", "")
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var got api.ModelList
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := api.ModelList{Models: []api.ClusterModel{
		{Name: "llama3.1:8b", Nodes: []api.ModelOnNode{{Node: "a", Resident: true, OnDisk: true, VRAMBytes: 5 << 30, SizeBytes: 4 << 30}}},
		{Name: "qwen2.5:latest", Nodes: []api.ModelOnNode{
			{Node: "a", OnDisk: true, SizeBytes: 3 << 30},
			{Node: "b", Resident: true, OnDisk: true, VRAMBytes: 4 << 30, SizeBytes: 3 << 30},
		}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /admin/v1/models\n got %+v\nwant %+v", got, want)
	}
	// The wire keys operators' tools read.
	for _, key := range []string{`"models":[`, `"name":"llama3.1:8b"`, `"nodes":[`, `"node":"a"`, `"resident":true`, `"on_disk":true`, `"vram_bytes":5368709120`} {
		if !bytes.Contains(body, []byte(key)) {
			t.Errorf("body lacks %s: %s", key, body)
		}
	}
}

// readProgress reads NDJSON progress lines from the gateway.
func readProgressLines(t *testing.T, r io.Reader) []agentapi.Progress {
	t.Helper()
	var out []agentapi.Progress
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var p agentapi.Progress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("bad NDJSON line %q: %v", sc.Text(), err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// finals returns each node's final line, failing the test if a node has none or several, or
// a line comes after it.
func finals(t *testing.T, lines []agentapi.Progress) map[string]agentapi.Progress {
	t.Helper()
	out := map[string]agentapi.Progress{}
	for _, p := range lines {
		if p.Node == "" {
			t.Errorf("line without node: %+v", p)
		}
		if _, done := out[p.Node]; done {
			t.Errorf("line after node %s's final line: %+v", p.Node, p)
		}
		if p.Status == "success" || p.Status == "error" {
			out[p.Node] = p
		}
	}
	return out
}

func TestAdminPullStreams(t *testing.T) {
	env := newAdminEnv(t)
	agentA, agentB := newFakeAgent(t), newFakeAgent(t)
	agentB.status[agentapi.PathModelPull] = http.StatusInternalServerError
	gate := make(chan struct{})
	agentA.gate = gate
	env.reg.Observe(nodeBeat("a", agentA))
	env.reg.Observe(nodeBeat("b", agentB))

	// The deadline only turns a gateway that buffers the stream (a hang) into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.http.URL+"/admin/v1/models/pull", strings.NewReader(`{"model":"qwen2.5:7b"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Agent a holds its stream after its first line until we have read that line through the
	// gateway: only a gateway that flushes each line gets us here.
	br := bufio.NewReader(resp.Body)
	var first []agentapi.Progress
	for len(first) == 0 || !slices.ContainsFunc(first, func(p agentapi.Progress) bool { return p.Node == "a" }) {
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("stream ended before node a's first line: %v", err)
		}
		var p agentapi.Progress
		if err := json.Unmarshal(line, &p); err != nil {
			t.Fatal(err)
		}
		first = append(first, p)
	}
	close(gate)
	lines := append(first, readProgressLines(t, br)...)
	f := finals(t, lines)
	if got := f["a"]; got.Status != "success" {
		t.Errorf("node a final line %+v, want success", got)
	}
	if got := f["b"]; got.Status != "error" || !strings.Contains(got.Error, "500") {
		t.Errorf("node b final line %+v, want an error naming the 500", got)
	}
	var aLines int
	for _, p := range lines {
		if p.Node == "a" {
			aLines++
		}
	}
	if aLines != len(agentA.progress) {
		t.Errorf("node a: %d lines, want all %d of the agent's", aLines, len(agentA.progress))
	}
	if calls := agentA.Calls(); len(calls) != 1 || !strings.Contains(calls[0].Body, `"model":"qwen2.5:7b"`) {
		t.Errorf("agent a calls %+v", calls)
	}
}

func TestAdminPullSelectedNodesAndErrors(t *testing.T) {
	env := newAdminEnv(t)
	agentA, agentB := newFakeAgent(t), newFakeAgent(t)
	agentA.progress = []agentapi.Progress{{Status: "pulling"}, {Error: "manifest not found"}}
	env.reg.Observe(nodeBeat("a", agentA))
	env.reg.Observe(nodeBeat("b", agentB))

	status, body := env.do(http.MethodPost, "/admin/v1/models/pull", `{"model":"nope:1b","nodes":["a"]}`)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	lines := readProgressLines(t, bytes.NewReader(body))
	f := finals(t, lines)
	if len(f) != 1 || f["a"].Status != "error" || f["a"].Error != "manifest not found" {
		t.Errorf("finals %+v, want only a with the agent's error", f)
	}
	if n := len(agentB.Calls()); n != 0 {
		t.Errorf("agent b called %d times, want 0", n)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"no model", `{"nodes":["a"]}`, 400, "missing_model"},
		{"bad json", `{"model":`, 400, "invalid_json"},
		{"unknown field", `{"model":"m","node":"a"}`, 400, "invalid_json"},
		{"unknown node", `{"model":"m","nodes":["a","zz"]}`, 404, "node_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := env.do(http.MethodPost, "/admin/v1/models/pull", tc.body)
			wantError(t, status, body, tc.status, tc.code)
		})
	}

	empty := newAdminEnv(t)
	status, body = empty.do(http.MethodPost, "/admin/v1/models/pull", `{"model":"m"}`)
	wantError(t, status, body, http.StatusServiceUnavailable, "no_node_available")
}

func TestAdminCopy(t *testing.T) {
	env := newAdminEnv(t)
	agentA, agentB := newFakeAgent(t), newFakeAgent(t)
	agentB.progress = []agentapi.Progress{
		{Status: "fetching manifest"},
		{Status: "copying", Digest: "sha256:bb", Total: 10, Completed: 10},
		{Status: "success"},
	}
	a := nodeBeat("a", agentA)
	b := nodeBeat("b", agentB)
	b.Models = nil
	env.reg.Observe(a)
	env.reg.Observe(b)

	status, body := env.do(http.MethodPost, "/admin/v1/models/copy", `{"model":"llama3.1:8b","from":"a","to":"b"}`)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	lines := readProgressLines(t, bytes.NewReader(body))
	if len(lines) != 3 || finals(t, lines)["b"].Status != "success" {
		t.Errorf("copy stream %+v", lines)
	}
	calls := agentB.Calls()
	if len(calls) != 1 || calls[0].Path != agentapi.PathModelCopy {
		t.Fatalf("agent b calls %+v", calls)
	}
	var cr agentapi.CopyRequest
	if err := json.Unmarshal([]byte(calls[0].Body), &cr); err != nil {
		t.Fatal(err)
	}
	if cr != (agentapi.CopyRequest{Model: "llama3.1:8b", From: agentA.srv.URL}) {
		t.Errorf("copy request %+v, want From = node a's address", cr)
	}
	if n := len(agentA.Calls()); n != 0 {
		t.Errorf("source agent called %d times by the gateway, want 0 (the target fetches)", n)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"same node", `{"model":"llama3.1:8b","from":"a","to":"a"}`, 400, "invalid_node"},
		{"missing to", `{"model":"llama3.1:8b","from":"a"}`, 400, "missing_node"},
		{"unknown from", `{"model":"llama3.1:8b","from":"zz","to":"b"}`, 404, "node_not_found"},
		{"unknown to", `{"model":"llama3.1:8b","from":"a","to":"zz"}`, 404, "node_not_found"},
		{"model not on source", `{"model":"mistral:7b","from":"a","to":"b"}`, 404, "model_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := env.do(http.MethodPost, "/admin/v1/models/copy", tc.body)
			wantError(t, status, body, tc.status, tc.code)
		})
	}
}

func TestAdminLoadUnloadDelete(t *testing.T) {
	env := newAdminEnv(t)
	agentA, agentB, agentC := newFakeAgent(t), newFakeAgent(t), newFakeAgent(t)
	a := nodeBeat("a", agentA)
	a.Models = []agentapi.Model{{Name: "qwen2.5:7b", OnDisk: true, SizeBytes: 4 << 30}}
	a.GPUs[0].MemoryUsedBytes = 10 << 30
	b := nodeBeat("b", agentB) // most free VRAM and the weights on disk: the planner's choice
	b.Models = []agentapi.Model{{Name: "qwen2.5:7b", OnDisk: true, SizeBytes: 4 << 30}, {Name: "llama3.1:8b", Resident: true, OnDisk: true, VRAMBytes: 5 << 30}}
	b.GPUs[0].MemoryUsedBytes = 5 << 30
	c := nodeBeat("c", agentC) // empty but without the weights
	c.Models = nil
	c.GPUs[0].MemoryUsedBytes = 0
	for _, hb := range []agentapi.Heartbeat{a, b, c} {
		env.reg.Observe(hb)
	}

	status, body := env.do(http.MethodPost, "/admin/v1/models/load", `{"model":"qwen2.5:7b"}`)
	if status != http.StatusOK {
		t.Fatalf("load: %d %s", status, body)
	}
	var lr api.LoadResponse
	if err := json.Unmarshal(body, &lr); err != nil {
		t.Fatal(err)
	}
	if lr.Node != "b" || lr.Status != "loaded" {
		t.Errorf("load picked %+v, want node b", lr)
	}
	if calls := agentB.Calls(); len(calls) != 1 || calls[0].Path != agentapi.PathModelLoad || !strings.Contains(calls[0].Body, `"model":"qwen2.5:7b"`) {
		t.Errorf("agent b calls %+v", calls)
	}
	if n := len(agentA.Calls()) + len(agentC.Calls()); n != 0 {
		t.Errorf("other agents called %d times", n)
	}

	status, body = env.do(http.MethodPost, "/admin/v1/models/load", `{"model":"qwen2.5:7b","node":"a","keep_alive":"-1"}`)
	if status != http.StatusOK || !strings.Contains(string(body), `"node":"a"`) {
		t.Fatalf("load on a: %d %s", status, body)
	}
	if calls := agentA.Calls(); len(calls) != 1 || !strings.Contains(calls[0].Body, `"keep_alive":"-1"`) {
		t.Errorf("agent a calls %+v", calls)
	}

	status, body = env.do(http.MethodPost, "/admin/v1/models/load", `{"model":"mistral:7b"}`)
	wantError(t, status, body, http.StatusNotFound, "model_not_found")
	status, body = env.do(http.MethodPost, "/admin/v1/models/load", `{"model":"qwen2.5:7b","node":"zz"}`)
	wantError(t, status, body, http.StatusNotFound, "node_not_found")

	// Unload without a node: wherever resident (only b has llama3.1 resident).
	status, body = env.do(http.MethodPost, "/admin/v1/models/unload", `{"model":"llama3.1:8b"}`)
	if status != http.StatusOK || !strings.Contains(string(body), `"nodes":["b"]`) {
		t.Fatalf("unload: %d %s", status, body)
	}
	if calls := agentB.Calls(); calls[len(calls)-1].Path != agentapi.PathModelUnload {
		t.Errorf("agent b last call %+v", calls[len(calls)-1])
	}
	status, body = env.do(http.MethodPost, "/admin/v1/models/unload", `{"model":"mistral:7b"}`)
	wantError(t, status, body, http.StatusNotFound, "model_not_resident")

	// Delete needs a node; a name with slashes survives the path.
	status, body = env.do(http.MethodDelete, "/admin/v1/models/hf.co/org/repo:Q4_K_M?node=c", "")
	if status != http.StatusOK {
		t.Fatalf("delete: %d %s", status, body)
	}
	if calls := agentC.Calls(); len(calls) != 1 || calls[0].Path != agentapi.PathModelDelete || !strings.Contains(calls[0].Body, `"model":"hf.co/org/repo:Q4_K_M"`) {
		t.Errorf("agent c calls %+v", calls)
	}
	status, body = env.do(http.MethodDelete, "/admin/v1/models/qwen2.5:7b", "")
	wantError(t, status, body, http.StatusBadRequest, "missing_node")

	// Agent errors: a 404 passes through, an unreachable agent is a 502.
	agentC.mu.Lock()
	agentC.status[agentapi.PathModelDelete] = http.StatusNotFound
	agentC.mu.Unlock()
	status, body = env.do(http.MethodDelete, "/admin/v1/models/qwen2.5:7b?node=c", "")
	wantError(t, status, body, http.StatusNotFound, "not_found")
	env.reg.Observe(nodeBeat("dead", nil))
	status, body = env.do(http.MethodPost, "/admin/v1/models/load", `{"model":"llama3.1:8b","node":"dead"}`)
	wantError(t, status, body, http.StatusBadGateway, "agent_error")
}

func TestAdminFault(t *testing.T) {
	env := newAdminEnv(t)
	sim, real := newFakeAgent(t), newFakeAgent(t)
	real.status[agentapi.PathSimFault] = http.StatusNotImplemented
	env.reg.Observe(nodeBeat("sim", sim))
	env.reg.Observe(nodeBeat("real", real))

	status, body := env.do(http.MethodPost, "/admin/v1/nodes/sim/fault", `{"gpu":1,"kind":"ecc"}`)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	if calls := sim.Calls(); len(calls) != 1 || calls[0].Path != agentapi.PathSimFault || calls[0].Body != `{"gpu":1,"kind":"ecc"}` {
		t.Errorf("sim agent calls %+v", calls)
	}
	status, body = env.do(http.MethodPost, "/admin/v1/nodes/real/fault", `{"gpu":0,"kind":"xid"}`)
	wantError(t, status, body, http.StatusNotImplemented, "not_supported")
	status, body = env.do(http.MethodPost, "/admin/v1/nodes/sim/fault", `{"gpu":0}`)
	wantError(t, status, body, http.StatusBadRequest, "missing_kind")
	status, body = env.do(http.MethodPost, "/admin/v1/nodes/zz/fault", `{"gpu":0,"kind":"ecc"}`)
	wantError(t, status, body, http.StatusNotFound, "node_not_found")
}

func TestAdminExplain(t *testing.T) {
	env := newAdminEnv(t)
	env.reg.Observe(nodeBeat("a", nil))
	env.reg.Observe(nodeBeat("b", nil))
	noModel := nodeBeat("c", nil)
	noModel.Models = nil
	noModel.Backend = agentapi.BackendOpenAI
	env.reg.Observe(noModel)
	if err := env.reg.SetDraining("b", true); err != nil {
		t.Fatal(err)
	}

	status, body := env.do(http.MethodGet, "/admin/v1/explain?model=llama3.1:8b&prompt_tokens=100&max_tokens=200", "")
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var ex scheduler.Explanation
	if err := json.Unmarshal(body, &ex); err != nil {
		t.Fatal(err)
	}
	if ex.Model != "llama3.1:8b" || !reflect.DeepEqual(ex.Order, []string{"a"}) || len(ex.Nodes) != 3 {
		t.Fatalf("explanation %+v", ex)
	}
	byNode := map[string]scheduler.NodeExplanation{}
	for _, n := range ex.Nodes {
		byNode[n.Node] = n
	}
	if n := byNode["a"]; !n.Eligible || n.Rank != 1 {
		t.Errorf("node a %+v, want eligible rank 1", n)
	}
	if n := byNode["b"]; n.Eligible || n.ReasonCode != "draining" {
		t.Errorf("node b %+v, want refused as draining", n)
	}
	if n := byNode["c"]; n.Eligible || n.Reason == "" {
		t.Errorf("node c %+v, want refused with a reason", n)
	}

	for _, q := range []string{"", "?model=m&class=bulk", "?model=m&max_tokens=-1", "?model=m&seed=x"} {
		status, body := env.do(http.MethodGet, "/admin/v1/explain"+q, "")
		wantError(t, status, body, http.StatusBadRequest, "")
	}
}
