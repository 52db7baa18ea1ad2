package doctor_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/backend"
	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
	"github.com/herd-llm/herd/nodeagent/doctor"
	"github.com/herd-llm/herd/nodeagent/telemetry"
)

// healthyGPUs is go-nvml's DGX A100 mock with every reading the telemetry source makes answering
// like a healthy GPU; fail, when not nil, changes one device.
func healthyGPUs(t *testing.T, fail func(i int, d *server.Device)) *server.Server {
	t.Helper()
	s := dgxa100.New()
	// No XID events arrive during a test: the event set waits out its timeout.
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
				time.Sleep(time.Duration(min(ms, 50)) * time.Millisecond)
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	s.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 10}, nvml.SUCCESS }
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 45, nvml.SUCCESS }
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 100_000, nvml.SUCCESS }
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 400_000, nvml.SUCCESS }
		dev.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return 1410, nvml.SUCCESS }
		dev.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return nvml.ClocksEventReasonNone, nvml.SUCCESS }
		dev.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) { return nvml.ClocksEventReasonNone, nvml.SUCCESS }
		dev.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) { return 0, nvml.SUCCESS }
		if fail != nil {
			fail(i, dev)
		}
	}
	return s
}

// newNode is what one doctor run checks: a fake Ollama recorded from the real one, the NVML
// mock through the agent's own telemetry source, and a gateway's /healthz.
func newNode(t *testing.T, lib *server.Server, ollamaURL, modelsDir string) doctor.Config {
	t.Helper()
	b, err := backend.NewOllama(backend.OllamaConfig{URL: ollamaURL, ModelsDir: modelsDir})
	if err != nil {
		t.Fatal(err)
	}
	ts := telemetry.NewNVML(lib, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { ts.Close() })
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(gw.Close)
	return doctor.Config{
		Backend: b, BackendURL: ollamaURL, GPUs: ts, Driver: lib, NoGPUReason: ts.Reason,
		Gateways:  []string{gw.URL},
		FreeBytes: func(string) (uint64, error) { return 500 << 30, nil },
	}
}

// find returns the findings whose check starts with prefix.
func find(r doctor.Report, prefix string) []doctor.Finding {
	var out []doctor.Finding
	for _, f := range r.Findings {
		if strings.HasPrefix(f.Check, prefix) {
			out = append(out, f)
		}
	}
	return out
}

func dump(t *testing.T, r doctor.Report) {
	t.Helper()
	for _, f := range r.Findings {
		t.Logf("%-5s %-10s %s | %s", f.Status, f.Check, f.Detail, f.Fix)
	}
}

func TestHealthyNode(t *testing.T) {
	fake := ollamatest.NewFake(t)
	cfg := newNode(t, healthyGPUs(t, nil), fake.URL, fake.ModelsDir)
	r := doctor.Run(context.Background(), cfg)
	dump(t, r)
	if r.Failed() {
		t.Fatal("a healthy node failed")
	}
	for _, f := range r.Findings {
		if f.Status != doctor.OK {
			t.Errorf("%s: %s %s", f.Check, f.Status, f.Detail)
		}
		if f.Status == doctor.OK && f.Fix != "" {
			t.Errorf("%s is ok but says to fix: %s", f.Check, f.Fix)
		}
	}
	want := map[string]string{
		"nvml":       "NVIDIA driver 550.54.15, NVML 12.550.54.15, 8 GPU(s)",
		"backend":    "ollama at " + fake.URL + " 0.",
		"models":     "tiny:latest",
		"models dir": fake.ModelsDir,
		"disk":       "500.0 GiB free",
		"gateway":    "answers",
		"clock":      "within 2s",
	}
	for check, text := range want {
		fs := find(r, check)
		if len(fs) == 0 || !strings.Contains(fs[0].Detail, text) {
			t.Errorf("%s: %+v, want a detail with %q", check, fs, text)
		}
	}
	if n := len(find(r, "gpu ")); n != 8 {
		t.Errorf("%d GPU findings, want 8", n)
	}
}

func TestBackendDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := newNode(t, healthyGPUs(t, nil), dead, t.TempDir())
	r := doctor.Run(context.Background(), cfg)
	dump(t, r)
	if !r.Failed() {
		t.Fatal("a node whose backend is down passed")
	}
	b := find(r, "backend")
	if len(b) != 1 || b[0].Status != doctor.Fail || !strings.Contains(b[0].Detail, dead) || !strings.Contains(b[0].Fix, "systemctl start ollama") {
		t.Errorf("backend finding %+v", b)
	}
	if len(find(r, "models")) != 1 { // only the models dir: no model list without a backend
		t.Errorf("models findings %+v", find(r, "models"))
	}
	for _, f := range find(r, "gpu ") {
		if f.Status != doctor.OK {
			t.Errorf("%s: %s with healthy GPUs", f.Check, f.Status)
		}
	}
}

func TestFailingGPU(t *testing.T) {
	fake := ollamatest.NewFake(t)
	lib := healthyGPUs(t, func(i int, d *server.Device) {
		switch i {
		case 2:
			d.GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
				if typ == nvml.MEMORY_ERROR_TYPE_UNCORRECTED {
					return 3, nvml.SUCCESS
				}
				return 17, nvml.SUCCESS
			}
		case 5:
			d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 91, nvml.SUCCESS }
			d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
				return nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS
			}
			d.GetCurrentClocksThrottleReasonsFunc = d.GetCurrentClocksEventReasonsFunc
		}
	})
	cfg := newNode(t, lib, fake.URL, fake.ModelsDir)
	r := doctor.Run(context.Background(), cfg)
	dump(t, r)
	if !r.Failed() {
		t.Fatal("a node with uncorrected ECC errors passed")
	}
	tests := []struct {
		check  string
		status doctor.Status
		detail string
		fix    string
	}{
		{"gpu 2", doctor.Fail, "3 uncorrected ECC error(s)", "nvidia-smi -r -i 2"},
		{"gpu 5", doctor.Warn, "thermal throttling (hw_thermal_slowdown) at 91 °C", "fans"},
		{"gpu 0", doctor.OK, "healthy", ""},
	}
	for _, tc := range tests {
		fs := find(r, tc.check)
		if len(fs) != 1 {
			t.Fatalf("%s: %+v", tc.check, fs)
		}
		f := fs[0]
		if f.Status != tc.status || !strings.Contains(f.Detail, tc.detail) || !strings.Contains(f.Fix, tc.fix) {
			t.Errorf("%s: %+v, want %s with %q, fix %q", tc.check, f, tc.status, tc.detail, tc.fix)
		}
	}
}

func TestNoDriver(t *testing.T) {
	fake := ollamatest.NewFake(t)
	lib := healthyGPUs(t, nil)
	lib.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	cfg := newNode(t, lib, fake.URL, fake.ModelsDir)
	r := doctor.Run(context.Background(), cfg)
	dump(t, r)
	n := find(r, "nvml")
	if len(n) != 1 || n[0].Status != doctor.Warn || !strings.Contains(n[0].Detail, "no NVIDIA driver") || !strings.Contains(n[0].Fix, "install the NVIDIA driver") {
		t.Errorf("nvml finding %+v", n)
	}
	if r.Failed() {
		t.Error("no driver is a warning (the agent serves without GPUs), not a failure")
	}
}

func TestClockSkewAndLowDisk(t *testing.T) {
	fake := ollamatest.NewFake(t)
	tests := []struct {
		name   string
		offset time.Duration
		status doctor.Status
		detail string
	}{
		{"in step", 0, doctor.OK, "within 2s"},
		{"ahead", 8 * time.Second, doctor.Warn, "ahead of the gateway's"},
		{"far behind", -5 * time.Minute, doctor.Fail, "behind the gateway's"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newNode(t, healthyGPUs(t, nil), fake.URL, fake.ModelsDir)
			cfg.Now = func() time.Time { return time.Now().Add(tc.offset) }
			cfg.FreeBytes = func(string) (uint64, error) { return 3 << 30, nil }
			r := doctor.Run(context.Background(), cfg)
			c := find(r, "clock")
			if len(c) != 1 || c[0].Status != tc.status || !strings.Contains(c[0].Detail, tc.detail) {
				dump(t, r)
				t.Errorf("clock finding %+v, want %s %q", c, tc.status, tc.detail)
			}
			if tc.status != doctor.OK && !strings.Contains(c[0].Fix, "NTP") {
				t.Errorf("clock fix %q", c[0].Fix)
			}
			d := find(r, "disk")
			if len(d) != 1 || d[0].Status != doctor.Warn || !strings.Contains(d[0].Detail, "3.0 GiB free") {
				t.Errorf("disk finding %+v", d)
			}
		})
	}
}

func TestGatewayUnreachable(t *testing.T) {
	fake := ollamatest.NewFake(t)
	cfg := newNode(t, healthyGPUs(t, nil), fake.URL, fake.ModelsDir)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	cfg.Gateways = []string{"http://" + ln.Addr().String()}
	ln.Close()
	r := doctor.Run(context.Background(), cfg)
	g := find(r, "gateway")
	if len(g) != 1 || g[0].Status != doctor.Fail || !strings.Contains(g[0].Fix, "firewall") || len(find(r, "clock")) != 0 {
		dump(t, r)
		t.Errorf("gateway finding %+v", g)
	}
}

func TestMembership(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		m      doctor.Membership
		status doctor.Status
		detail string
		fix    string
	}{
		{"joined", doctor.Membership{Dir: "/d", NodeID: "n1", NotAfter: now.Add(500 * time.Hour)}, doctor.OK, "joined as n1", ""},
		{"renewal overdue", doctor.Membership{Dir: "/d", NodeID: "n1", NotAfter: now.Add(10 * time.Hour)}, doctor.Warn, "10h0m0s left", "renews at two thirds"},
		{"expired", doctor.Membership{Dir: "/d", NodeID: "n1", NotAfter: now.Add(-time.Hour)}, doctor.Fail, "joined as n1", "join again with a new token"},
		{"not joined yet", doctor.Membership{Dir: "/d", Join: "auto"}, doctor.Warn, "not joined yet", "--join auto --token TOKEN"},
		{"lab mode", doctor.Membership{Dir: "/d", ClusterToken: true}, doctor.Warn, "lab mode", "in the clear"},
		{"nothing", doctor.Membership{Dir: "/d"}, doctor.Fail, "no gateway will accept", "herd nodes join-token"},
		{"unreadable", doctor.Membership{Dir: "/d", LoadErr: errors.New("permission denied")}, doctor.Fail, "cannot be read: permission denied", "owner and mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := doctor.Run(context.Background(), doctor.Config{Membership: &tc.m, Now: func() time.Time { return now }})
			f := find(r, "tls")
			if len(f) != 1 || f[0].Status != tc.status || !strings.Contains(f[0].Detail, tc.detail) || !strings.Contains(f[0].Fix, tc.fix) {
				t.Errorf("%+v, want %s %q fix %q", f, tc.status, tc.detail, tc.fix)
			}
		})
	}
}

// TestXIDFromRunningAgent: XID events are seen only by a process watching when they happen; the
// running agent's counts (its /agent/v1/info, the heartbeat's wire type) fail the GPU.
func TestXIDFromRunningAgent(t *testing.T) {
	fake := ollamatest.NewFake(t)
	lib := healthyGPUs(t, nil)
	uuid, _ := lib.Devices[4].GetUUID()
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != agentapi.PathInfo || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(agentapi.Heartbeat{NodeID: "n", GPUs: []agentapi.GPU{{Index: 4, UUID: uuid, XIDEvents: 2, LastXID: 79, Healthy: false}}})
	}))
	defer agent.Close()
	cfg := newNode(t, lib, fake.URL, fake.ModelsDir)
	cfg.Agent = agentapi.NewClient(agent.URL, "tok", nil)
	r := doctor.Run(context.Background(), cfg)
	g := find(r, "gpu 4")
	if len(g) != 1 || g[0].Status != doctor.Fail || !strings.Contains(g[0].Detail, "2 critical XID event(s), last XID 79") || !strings.Contains(g[0].Fix, "XID 79") {
		dump(t, r)
		t.Fatalf("gpu 4: %+v", g)
	}
	if g := find(r, "gpu 3"); len(g) != 1 || g[0].Status != doctor.OK {
		t.Errorf("gpu 3: %+v", g)
	}
	// An agent that does not answer is a warning: XID counts are then unknown.
	cfg.Agent = agentapi.NewClient(agent.URL, "wrong", nil)
	if a := find(doctor.Run(context.Background(), cfg), "agent"); len(a) != 1 || a[0].Status != doctor.Warn {
		t.Errorf("agent finding with a wrong token: %+v", a)
	}
}
