package registry

import (
	"errors"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"

	"github.com/herd-llm/herd/internal/fakeclock"
)

func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
}

const gib = 1 << 30

// beat is a heartbeat of a node with one healthy simulated T4 and one resident model.
func beat(id string) agentapi.Heartbeat {
	return agentapi.Heartbeat{
		NodeID:     id,
		Address:    "http://" + id + ".lan:9090",
		Backend:    agentapi.BackendSim,
		Simulated:  true,
		Version:    "test",
		IntervalMS: 1000,
		Slots:      4,
		GPUs: []agentapi.GPU{{
			Index: 0, Name: "Tesla T4", UUID: "GPU-" + id,
			MemoryTotalBytes: 16 * gib, MemoryUsedBytes: 6 * gib,
			UtilizationRatio: 0.5, TemperatureCelsius: 60, PowerWatts: 50, PowerLimitWatts: 70,
			Healthy: true, Simulated: true,
		}},
		Models: []agentapi.Model{{Name: "llama3.1:8b", Resident: true, OnDisk: true, VRAMBytes: 5 * gib, SizeBytes: 4 * gib, TokensPerSecond: 38}},
	}
}

func newTestRegistry(t testing.TB) (*Registry, *fakeclock.Clock) {
	t.Helper()
	clk := newFakeClock()
	r := New(Config{}, clk)
	r.SetLogger(quiet)
	return r, clk
}

var quiet = slog.New(slog.DiscardHandler)

func snapNode(t *testing.T, r *Registry, id string) scheduler.Node {
	t.Helper()
	for _, n := range r.Snapshot().Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("node %q not in snapshot", id)
	return scheduler.Node{}
}

func TestConfigDefaultsAndValidate(t *testing.T) {
	r := New(Config{}, nil)
	if r.cfg != DefaultConfig() {
		t.Fatalf("zero config = %+v, want defaults %+v", r.cfg, DefaultConfig())
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config invalid: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, c := range []Config{
		{HeartbeatInterval: -1}, {StaleAfterBeats: -1}, {CircuitFailures: -1}, {CircuitOpenFor: -1}, {ForgetAfter: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", c)
		}
	}
}

func TestStaleness(t *testing.T) {
	for _, tc := range []struct {
		name       string
		intervalMS int64
		cfg        time.Duration
		after      time.Duration
		stale      bool
	}{
		{"fresh", 1000, 0, 0, false},
		{"two intervals", 1000, 0, 2 * time.Second, false},
		{"exactly three intervals", 1000, 0, 3 * time.Second, false},
		{"just past three intervals", 1000, 0, 3*time.Second + time.Millisecond, true},
		{"agent interval wins over config", 5000, time.Second, 10 * time.Second, false},
		{"agent interval past three", 5000, time.Second, 15*time.Second + time.Millisecond, true},
		{"config interval when agent sends none", 0, 2 * time.Second, 6*time.Second + 1, true},
		{"config interval not yet", 0, 2 * time.Second, 5 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			r := New(Config{HeartbeatInterval: tc.cfg}, clk)
			r.SetLogger(quiet)
			hb := beat("a")
			hb.IntervalMS = tc.intervalMS
			r.Observe(hb)
			// Build and cache a snapshot before time passes: staleness must show up without any
			// further event.
			if n := snapNode(t, r, "a"); n.Stale {
				t.Fatal("node stale right after its heartbeat")
			}
			clk.Advance(tc.after)
			if got := snapNode(t, r, "a").Stale; got != tc.stale {
				t.Errorf("snapshot Stale = %v, want %v", got, tc.stale)
			}
			v, ok := r.Node("a")
			if !ok || v.Stale != tc.stale {
				t.Errorf("Node view = %+v, %v; want Stale %v", v.Stale, ok, tc.stale)
			}
			// A new heartbeat makes it fresh again.
			r.Observe(hb)
			if snapNode(t, r, "a").Stale {
				t.Error("node still stale after a new heartbeat")
			}
		})
	}
}

func TestForgetSilentNode(t *testing.T) {
	r, clk := newTestRegistry(t)
	r.Observe(beat("a"))
	r.Observe(beat("b"))
	clk.Advance(9 * time.Minute)
	r.Observe(beat("b"))
	if got := len(r.Nodes()); got != 2 {
		t.Fatalf("after 9 min: %d nodes, want 2 (a stale but listed)", got)
	}
	clk.Advance(time.Minute + time.Millisecond)
	nodes := r.Nodes()
	if len(nodes) != 1 || nodes[0].Heartbeat.NodeID != "b" {
		t.Fatalf("after 10 min: nodes = %v, want only b", nodes)
	}
	if _, ok := r.Node("a"); ok {
		t.Error("Node(a) found after it was forgotten")
	}
	if s := r.Snapshot(); len(s.Nodes) != 1 || s.Nodes[0].ID != "b" {
		t.Errorf("snapshot nodes = %+v, want only b", s.Nodes)
	}
	if err := r.SetDraining("a", true); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("SetDraining(forgotten) = %v, want ErrUnknownNode", err)
	}
	// Counters on a forgotten node are no-ops, not panics.
	r.Acquire("a")
	r.Release("a")
	r.ReportFailure("a")
	r.ReportSuccess("a")
}

func TestDrain(t *testing.T) {
	r, _ := newTestRegistry(t)
	if reply, _ := r.Observe(beat("a")); reply.Draining {
		t.Fatal("new node draining")
	}
	if err := r.SetDraining("a", true); err != nil {
		t.Fatal(err)
	}
	if !snapNode(t, r, "a").Draining {
		t.Error("snapshot not draining after SetDraining(true)")
	}
	// Drain is the gateway's: a heartbeat does not clear it, and its reply reports it.
	if reply, _ := r.Observe(beat("a")); !reply.Draining {
		t.Error("heartbeat reply does not say draining")
	}
	if v, _ := r.Node("a"); !v.Draining {
		t.Error("view not draining after a heartbeat")
	}
	if err := r.SetDraining("a", false); err != nil {
		t.Fatal(err)
	}
	if snapNode(t, r, "a").Draining {
		t.Error("snapshot draining after undrain")
	}
	if reply, _ := r.Observe(beat("a")); reply.Draining {
		t.Error("heartbeat reply draining after undrain")
	}
	err := r.SetDraining("nope", true)
	if !errors.Is(err, ErrUnknownNode) {
		t.Errorf("SetDraining(unknown) = %v, want ErrUnknownNode", err)
	}
}

func TestCircuitBreaker(t *testing.T) {
	type step struct {
		do      string // fail, ok, acquire, release, wait
		wait    time.Duration
		circuit string // view after the step
		open    bool   // snapshot CircuitOpen after the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"opens after three consecutive failures", []step{
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitOpen, open: true},
		}},
		{"success resets the count", []step{
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "ok", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitOpen, open: true},
		}},
		{"half-open after the open period, probe closes it", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail", circuit: CircuitOpen, open: true},
			{do: "wait", wait: 10*time.Second - time.Millisecond, circuit: CircuitOpen, open: true},
			{do: "ok", circuit: CircuitOpen, open: true}, // a late success while open is ignored
			{do: "wait", wait: time.Millisecond, circuit: CircuitHalfOpen, open: false},
			{do: "acquire", circuit: CircuitHalfOpen, open: true}, // the probe is out: nobody else
			{do: "ok", circuit: CircuitClosed, open: false},
			{do: "release", circuit: CircuitClosed, open: false},
		}},
		{"failed probe re-opens at once", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail", circuit: CircuitOpen, open: true},
			{do: "wait", wait: 10 * time.Second, circuit: CircuitHalfOpen},
			{do: "acquire", circuit: CircuitHalfOpen, open: true},
			{do: "fail", circuit: CircuitOpen, open: true},
			{do: "release", circuit: CircuitOpen, open: true},
			{do: "wait", wait: 10 * time.Second, circuit: CircuitHalfOpen, open: false},
		}},
		{"half-open without a probe shows closed until a failure", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail"},
			{do: "wait", wait: 11 * time.Second, circuit: CircuitHalfOpen, open: false},
			{do: "fail", circuit: CircuitOpen, open: true},
		}},
		{"probe released without verdict lets another probe", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail"},
			{do: "wait", wait: 10 * time.Second},
			{do: "acquire", circuit: CircuitHalfOpen, open: true},
			{do: "release", circuit: CircuitHalfOpen, open: false},
			{do: "acquire", circuit: CircuitHalfOpen, open: true},
			{do: "ok", circuit: CircuitClosed, open: false},
			{do: "release", circuit: CircuitClosed, open: false},
		}},
		{"late failures while open do not extend it", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail"},
			{do: "wait", wait: 9 * time.Second},
			{do: "fail", circuit: CircuitOpen, open: true},
			{do: "wait", wait: time.Second, circuit: CircuitHalfOpen, open: false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newTestRegistry(t)
			r.Observe(beat("a"))
			for i, s := range tc.steps {
				switch s.do {
				case "fail":
					r.ReportFailure("a")
				case "ok":
					r.ReportSuccess("a")
				case "acquire":
					r.Acquire("a")
				case "release":
					r.Release("a")
				case "wait":
					clk.Advance(s.wait)
				default:
					t.Fatalf("bad step %q", s.do)
				}
				if s.circuit == "" {
					continue
				}
				v, _ := r.Node("a")
				if v.Circuit != s.circuit {
					t.Errorf("step %d (%s): circuit %q, want %q", i, s.do, v.Circuit, s.circuit)
				}
				if got := snapNode(t, r, "a").CircuitOpen; got != s.open {
					t.Errorf("step %d (%s): snapshot CircuitOpen %v, want %v", i, s.do, got, s.open)
				}
			}
		})
	}
}

func TestGPUHealthAndThrottle(t *testing.T) {
	for _, tc := range []struct {
		name      string
		gpus      []agentapi.GPU
		healthy   bool
		reason    string
		throttled bool
	}{
		{"healthy", []agentapi.GPU{{Index: 0, Healthy: true}, {Index: 1, Healthy: true}}, true, "", false},
		{"no GPU is healthy (CPU node)", nil, true, "", false},
		{"one unhealthy GPU", []agentapi.GPU{{Index: 0, Healthy: true}, {Index: 1, Healthy: false, HealthReason: "ECC uncorrectable errors: 2"}}, false, "ECC uncorrectable errors: 2", false},
		{"first unhealthy reason wins", []agentapi.GPU{{Index: 0, Healthy: false, HealthReason: "XID 79"}, {Index: 1, Healthy: false, HealthReason: "hot"}}, false, "XID 79", false},
		{"unhealthy without reason", []agentapi.GPU{{Index: 3, Healthy: false}}, false, "GPU 3 unhealthy", false},
		{"idle is not throttling", []agentapi.GPU{{Healthy: true, ThrottleReasons: []string{agentapi.ThrottleGPUIdle, agentapi.ThrottleApplicationClock}}}, true, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			hb := beat("a")
			hb.GPUs = tc.gpus
			r.Observe(hb)
			n := snapNode(t, r, "a")
			if n.Healthy != tc.healthy || n.UnhealthyReason != tc.reason || n.Throttled != tc.throttled {
				t.Errorf("got healthy=%v reason=%q throttled=%v, want %v %q %v", n.Healthy, n.UnhealthyReason, n.Throttled, tc.healthy, tc.reason, tc.throttled)
			}
			v, _ := r.Node("a")
			if v.Healthy != tc.healthy || v.UnhealthyReason != tc.reason {
				t.Errorf("view healthy=%v reason=%q, want %v %q", v.Healthy, v.UnhealthyReason, tc.healthy, tc.reason)
			}
		})
	}
	for _, reason := range []string{agentapi.ThrottleSWThermal, agentapi.ThrottleHWThermal, agentapi.ThrottleHWSlowdown, agentapi.ThrottleHWPowerBrake, agentapi.ThrottleSWPowerCap} {
		t.Run("throttle "+reason, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			hb := beat("a")
			hb.GPUs = append(hb.GPUs, agentapi.GPU{Index: 1, Healthy: true, ThrottleReasons: []string{agentapi.ThrottleGPUIdle, reason}})
			r.Observe(hb)
			if !snapNode(t, r, "a").Throttled {
				t.Errorf("%s does not count as throttling", reason)
			}
		})
	}
}

func TestSnapshotDerivedFields(t *testing.T) {
	r, _ := newTestRegistry(t)
	last := time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC)
	hb := agentapi.Heartbeat{
		NodeID: "a", Address: "http://a:9090", Backend: agentapi.BackendOllama,
		InFlight: 3, Queued: 2, Slots: 4, IntervalMS: 1000,
		GPUs: []agentapi.GPU{
			{Index: 0, Name: "NVIDIA A40", MemoryTotalBytes: 48 * gib, MemoryUsedBytes: 10 * gib, UtilizationRatio: 0.2, Healthy: true},
			{Index: 1, Name: "Tesla T4", MemoryTotalBytes: 16 * gib, MemoryUsedBytes: 2 * gib, UtilizationRatio: 0.6, Healthy: true},
		},
		Models: []agentapi.Model{
			{Name: "Llama3", Resident: false, OnDisk: true, SizeBytes: 4 * gib},
			{Name: "llama3:latest", Resident: true, VRAMBytes: 5 * gib, TokensPerSecond: 80, InFlight: 1, LastUsed: last},
			{Name: "qwen2.5:7b", OnDisk: true, TokensPerSecond: 50, InFlight: 2},
		},
	}
	r.Observe(hb)
	got := snapNode(t, r, "a")
	want := scheduler.Node{
		ID: "a", Address: "http://a:9090", Backend: agentapi.BackendOllama,
		Healthy: true, CanLoad: true, InFlight: 3, Queued: 2, Slots: 4,
		VRAMTotalBytes: 64 * gib, VRAMUsedBytes: 12 * gib, Utilization: 0.4,
		MemoryBandwidthGBs: 696,
		Models: []scheduler.NodeModel{
			{Name: "llama3:latest", Resident: true, OnDisk: true, VRAMBytes: 5 * gib, SizeBytes: 4 * gib, TokensPerSecond: 80, InFlight: 1, LastUsed: last},
			{Name: "qwen2.5:7b", OnDisk: true, TokensPerSecond: 50, InFlight: 2},
		},
	}
	if math.Abs(got.Utilization-want.Utilization) < 1e-9 {
		got.Utilization = want.Utilization
	}
	// Every measured speed goes through the learner: one measurement at concurrency 1 (none
	// reported) is that single-stream speed at the prior contention.
	for i := range got.Models {
		l := got.Models[i].Learned
		if l.Samples != 1 || math.Abs(l.DecodeTPS-got.Models[i].TokensPerSecond) > 1e-6 || math.Abs(l.Contention-scheduler.DefaultConfig().SlotContention) > 1e-9 {
			t.Errorf("model %s learned %+v", got.Models[i].Name, l)
		}
		got.Models[i].Learned = scheduler.Speed{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot node\n got %+v\nwant %+v", got, want)
	}

	for backend, canLoad := range map[string]bool{agentapi.BackendOllama: true, agentapi.BackendSim: true, agentapi.BackendOpenAI: false} {
		hb := beat("b")
		hb.Backend = backend
		r.Observe(hb)
		if got := snapNode(t, r, "b").CanLoad; got != canLoad {
			t.Errorf("backend %s: CanLoad %v, want %v", backend, got, canLoad)
		}
	}
}

func TestSnapshotSortedByID(t *testing.T) {
	r, _ := newTestRegistry(t)
	for _, id := range []string{"c", "a", "d", "b"} {
		r.Observe(beat(id))
	}
	var ids []string
	for _, n := range r.Snapshot().Nodes {
		ids = append(ids, n.ID)
	}
	if !reflect.DeepEqual(ids, []string{"a", "b", "c", "d"}) {
		t.Errorf("snapshot order %v", ids)
	}
	var vids []string
	for _, v := range r.Nodes() {
		vids = append(vids, v.Heartbeat.NodeID)
	}
	if !reflect.DeepEqual(vids, ids) {
		t.Errorf("Nodes order %v", vids)
	}
}

// TestInFlightLocalPlusOther checks the in-flight accounting: this gateway's own count is exact
// at once, and a heartbeat adds only the work this gateway did not send, so a node does not look
// busy after its requests ended just because its last heartbeat is older than their end.
func TestInFlightLocalPlusOther(t *testing.T) {
	r, _ := newTestRegistry(t)
	type step struct {
		acquire, release int
		beat             int // >= 0: a heartbeat reporting this many in flight (after acquire/release)
		queued           int // the heartbeat's queued count
		want, wantQ      int
		local            int
	}
	for i, tc := range []step{
		{beat: 2, want: 2, local: 0},                                  // two requests of another gateway
		{acquire: 1, beat: -1, want: 3, local: 1},                     // ours adds to theirs at once
		{beat: 3, want: 3, local: 1},                                  // the heartbeat now counts ours too: no double count
		{release: 1, beat: -1, want: 2, local: 0},                     // ours ended: gone at once, not a second later
		{beat: 0, want: 0, local: 0},                                  // theirs ended
		{acquire: 3, beat: -1, want: 3, local: 3},                     //
		{beat: 1, want: 3, local: 3},                                  // an older sample saw fewer of ours: never below ours
		{release: 3, beat: -1, want: 0, local: 0},                     // no stale heartbeat keeps the node busy
		{acquire: 6, beat: -1, want: 4, wantQ: 2, local: 6},           // beyond Slots (4): queued
		{release: 6, beat: 1, queued: 2, want: 1, wantQ: 2, local: 0}, // the node's own split of other work
		{release: 2, beat: -1, want: 1, wantQ: 2, local: 0},           // extra releases never take the count below zero
	} {
		for range tc.acquire {
			r.Acquire("a")
		}
		for range tc.release {
			r.Release("a")
		}
		if tc.beat >= 0 {
			hb := beat("a")
			hb.Slots, hb.InFlight, hb.Queued = 4, tc.beat, tc.queued
			r.Observe(hb)
		}
		n := snapNode(t, r, "a")
		if n.InFlight != tc.want || n.Queued != tc.wantQ {
			t.Errorf("row %d: InFlight %d Queued %d, want %d and %d", i, n.InFlight, n.Queued, tc.want, tc.wantQ)
		}
		v, _ := r.Node("a")
		if v.GatewayInFlight != tc.local {
			t.Errorf("row %d: GatewayInFlight %d, want %d", i, v.GatewayInFlight, tc.local)
		}
		// The admin view shows the scheduler's counts.
		if v.InFlight != n.InFlight || v.Queued != n.Queued {
			t.Errorf("row %d: view InFlight %d Queued %d, snapshot %d and %d", i, v.InFlight, v.Queued, n.InFlight, n.Queued)
		}
		if vs := r.Nodes(); len(vs) != 1 || vs[0].InFlight != n.InFlight || vs[0].Queued != n.Queued {
			t.Errorf("row %d: Nodes() view differs from the snapshot", i)
		}
	}
}

// TestLoadOnlyRebuildKeepsOldSnapshots checks that a snapshot rebuilt because only in-flight
// counts moved is a new value: the one handed out before is not written.
func TestLoadOnlyRebuildKeepsOldSnapshots(t *testing.T) {
	r, _ := newTestRegistry(t)
	r.Observe(beat("a"))
	r.Observe(beat("b"))
	s1 := r.Snapshot()
	c1 := deepCopySnapshot(s1)
	r.Acquire("b")
	s2 := r.Snapshot()
	if s2 == s1 {
		t.Fatal("no new snapshot after Acquire")
	}
	if !reflect.DeepEqual(s1, c1) {
		t.Errorf("the earlier snapshot changed:\n got %+v\nwant %+v", s1, c1)
	}
	if s2.Nodes[1].InFlight != 1 || s2.Nodes[0].InFlight != 0 {
		t.Errorf("after Acquire(b): in flight a=%d b=%d, want 0 and 1", s2.Nodes[0].InFlight, s2.Nodes[1].InFlight)
	}
	r.Release("b")
	if n := r.Snapshot().Nodes[1]; n.InFlight != 0 {
		t.Errorf("after Release(b): in flight %d", n.InFlight)
	}
}

func deepCopySnapshot(s *scheduler.Snapshot) *scheduler.Snapshot {
	c := &scheduler.Snapshot{Now: s.Now, Nodes: make([]scheduler.Node, len(s.Nodes))}
	for i, n := range s.Nodes {
		n.Models = append([]scheduler.NodeModel(nil), n.Models...)
		c.Nodes[i] = n
	}
	if s.ByModel != nil {
		c.ByModel = make(map[string][]scheduler.ModelRef, len(s.ByModel))
		for k, v := range s.ByModel {
			c.ByModel[k] = slices.Clone(v)
		}
	}
	return c
}

func TestSnapshotImmutableAndCached(t *testing.T) {
	r, clk := newTestRegistry(t)
	r.Observe(beat("a"))
	r.Observe(beat("b"))
	s1 := r.Snapshot()
	if s2 := r.Snapshot(); s2 != s1 {
		t.Error("unchanged registry rebuilt its snapshot")
	}
	frozen := deepCopySnapshot(s1)

	hb := beat("a")
	hb.Models[0].Resident = false
	hb.Models[0].Name = "other:1b"
	hb.GPUs[0].Healthy = false
	r.Observe(hb)
	r.Acquire("b")
	_ = r.SetDraining("b", true)
	for range 3 {
		r.ReportFailure("a")
	}
	clk.Advance(time.Hour) // everything stale
	s3 := r.Snapshot()
	if s3 == s1 {
		t.Fatal("snapshot not rebuilt after changes")
	}
	if !reflect.DeepEqual(s1, frozen) {
		t.Errorf("an earlier snapshot changed:\n got %+v\nwant %+v", s1, frozen)
	}
	r.Release("b")
}

func TestObserveCopiesHeartbeat(t *testing.T) {
	r, _ := newTestRegistry(t)
	hb := beat("a")
	hb.GPUs[0].ThrottleReasons = []string{agentapi.ThrottleGPUIdle}
	r.Observe(hb)
	hb.GPUs[0].Healthy = false
	hb.GPUs[0].ThrottleReasons[0] = agentapi.ThrottleHWThermal
	hb.Models[0].Name = "changed"
	v, _ := r.Node("a")
	if !v.Heartbeat.GPUs[0].Healthy || v.Heartbeat.GPUs[0].ThrottleReasons[0] != agentapi.ThrottleGPUIdle || v.Heartbeat.Models[0].Name != "llama3.1:8b" {
		t.Errorf("registry shares the caller's slices: %+v", v.Heartbeat)
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestChanged(t *testing.T) {
	r, _ := newTestRegistry(t)
	r.Observe(beat("a"))
	for _, tc := range []struct {
		name   string
		do     func()
		signal bool
	}{
		{"observe", func() { r.Observe(beat("a")) }, true},
		{"acquire", func() { r.Acquire("a") }, false},
		{"release", func() { r.Release("a") }, true},
		{"drain", func() { _ = r.SetDraining("a", true) }, true},
		{"undrain", func() { _ = r.SetDraining("a", false) }, true},
		{"undrain again (no change)", func() { _ = r.SetDraining("a", false) }, false},
		{"snapshot", func() { r.Snapshot() }, false},
	} {
		ch := r.Changed()
		if closed(ch) {
			t.Fatalf("%s: channel closed before the event", tc.name)
		}
		tc.do()
		if got := closed(ch); got != tc.signal {
			t.Errorf("%s: signalled %v, want %v", tc.name, got, tc.signal)
		}
	}
	// A fresh channel after a signal is open again.
	ch := r.Changed()
	if closed(ch) {
		t.Error("new channel already closed")
	}
}

// TestChangedNoLostWakeup has a waiter that wants node a's local in-flight count back at zero
// while other goroutines acquire and release; it must always wake up.
func TestChangedNoLostWakeup(t *testing.T) {
	r, _ := newTestRegistry(t)
	r.Observe(beat("a"))
	const rounds = 200
	for range rounds {
		r.Acquire("a")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				ch := r.Changed()
				if v, _ := r.Node("a"); v.GatewayInFlight == 0 {
					return
				}
				<-ch
			}
		}()
		r.Release("a")
		select {
		case <-done:
		case <-time.After(time.Minute): // only a lost wake-up gets here
			t.Fatal("waiter never woke up after the release")
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	r, _ := newTestRegistry(t)
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		r.Observe(beat(id))
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			id := ids[w%len(ids)]
			for i := range 500 {
				r.Acquire(id)
				s := r.Snapshot()
				if len(s.Nodes) != len(ids) {
					t.Errorf("snapshot has %d nodes", len(s.Nodes))
					return
				}
				if i%50 == 0 {
					r.Observe(beat(id))
					r.ReportFailure(id)
					_ = r.SetDraining(id, i%100 == 0)
					r.Nodes()
				}
				r.ReportSuccess(id)
				r.Release(id)
			}
		})
	}
	wg.Wait()
	for _, v := range r.Nodes() {
		if v.GatewayInFlight != 0 {
			t.Errorf("node %s: %d in flight after every request ended", v.Heartbeat.NodeID, v.GatewayInFlight)
		}
	}
	for _, n := range r.Snapshot().Nodes {
		if n.InFlight != 0 {
			t.Errorf("snapshot node %s: InFlight %d after every request ended", n.ID, n.InFlight)
		}
	}
}

func BenchmarkSnapshotAcquireRelease(b *testing.B) {
	r := New(Config{}, nil)
	r.SetLogger(quiet)
	ids := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"}
	for _, id := range ids {
		r.Observe(beat(id))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s := r.Snapshot()
			id := s.Nodes[i%len(s.Nodes)].ID
			r.Acquire(id)
			r.ReportSuccess(id)
			r.Release(id)
			i++
		}
	})
}

func BenchmarkSnapshotUnchanged(b *testing.B) {
	r := New(Config{}, nil)
	r.SetLogger(quiet)
	for _, id := range []string{"n1", "n2", "n3", "n4"} {
		r.Observe(beat(id))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = r.Snapshot()
		}
	})
}

// TestModelIndexFollowsModels holds that the snapshot's model index is reused while only
// telemetry moves, and rebuilt when a node's models change or a node joins.
func TestModelIndexFollowsModels(t *testing.T) {
	r, _ := newTestRegistry(t)
	r.Observe(beat("a"))
	r.Observe(beat("b"))
	s1 := r.Snapshot()
	if got := s1.ByModel["llama3.1:8b"]; len(got) != 2 {
		t.Fatalf("index of llama3.1:8b: %v, want both nodes", got)
	}
	hb := beat("a")
	hb.GPUs[0].UtilizationRatio = 0.9
	r.Observe(hb)
	s2 := r.Snapshot()
	if s2 == s1 {
		t.Fatal("a heartbeat did not rebuild the snapshot")
	}
	if reflect.ValueOf(s2.ByModel).UnsafePointer() != reflect.ValueOf(s1.ByModel).UnsafePointer() {
		t.Error("a telemetry-only heartbeat rebuilt the model index")
	}
	hb.Models = append(hb.Models, agentapi.Model{Name: "qwen2.5:7b", OnDisk: true})
	r.Observe(hb)
	s3 := r.Snapshot()
	if got := s3.ByModel["qwen2.5:7b"]; len(got) != 1 || s3.Nodes[got[0].Node].ID != "a" {
		t.Errorf("index after a new model: %v", s3.ByModel)
	}
	r.Observe(beat("c"))
	if got := r.Snapshot().ByModel["llama3.1:8b"]; len(got) != 3 {
		t.Errorf("index after a join: %v", got)
	}
}
