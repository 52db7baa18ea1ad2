package replicas

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// fakeRegistry is a fixed cluster.
type fakeRegistry struct {
	snap  *scheduler.Snapshot
	views map[string]registry.NodeView
}

func (f *fakeRegistry) Snapshot() *scheduler.Snapshot { return f.snap }
func (f *fakeRegistry) Node(id string) (registry.NodeView, bool) {
	v, ok := f.views[id]
	return v, ok
}

// fakeAgents hands out clients of one httptest agent.
type fakeAgents struct{ url string }

func (f fakeAgents) For(registry.NodeView) *agentapi.Client {
	return agentapi.NewClient(f.url, "tok", http.DefaultClient)
}

var (
	_ Registry = (*fakeRegistry)(nil)
	_ Agents   = fakeAgents{}
)

func TestReconcileLoadsOnANodeWithTheWeights(t *testing.T) {
	var mu sync.Mutex
	var loads []agentapi.ModelRequest
	loaded := make(chan struct{}, 4)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != agentapi.PathModelLoad {
			t.Errorf("agent got %s %s, want only loads", r.Method, r.URL.Path)
			http.NotFound(w, r)
			return
		}
		var req agentapi.ModelRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		loads = append(loads, req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
		loaded <- struct{}{}
	}))
	defer agent.Close()

	node := func(id string, onDisk bool) scheduler.Node {
		n := scheduler.Node{ID: id, Address: agent.URL, Healthy: true, CanLoad: true, Slots: 1, VRAMTotalBytes: 24 << 30}
		if onDisk {
			n.Models = []scheduler.NodeModel{{Name: "m:latest", OnDisk: true, VRAMBytes: 4 << 30, SizeBytes: 4 << 30}}
		}
		return n
	}
	reg := &fakeRegistry{
		snap:  &scheduler.Snapshot{Now: time.Unix(1000, 0), Nodes: []scheduler.Node{node("a", true), node("b", false)}},
		views: map[string]registry.NodeView{"a": {}, "b": {}},
	}
	sched, err := scheduler.New(scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := New(reg, sched, fakeAgents{agent.URL}, slog.New(slog.DiscardHandler), map[string]int{"m": 1}, 0)
	var pending sync.Map
	plans := c.Reconcile(context.Background(), &pending)
	if len(plans) != 1 || plans[0].Node != "a" || plans[0].Model != "m:latest" {
		t.Fatalf("plans = %+v, want one load of m:latest on a (the node with the weights)", plans)
	}
	select {
	case <-loaded:
	case <-time.After(20 * time.Second): // a guard against a hang, not a timing assertion
		t.Fatal("the agent got no load")
	}
	mu.Lock()
	got := loads[0]
	mu.Unlock()
	if got.Model != "m:latest" || got.KeepAlive != "-1" {
		t.Fatalf("load = %+v, want m:latest kept alive forever", got)
	}
}

// TestRunJoinsItsLoads: when the gateway shuts down (ctx done), Run returns only after the loads
// it started have ended, so nothing of the controller outlives the gateway's Run.
func TestRunJoinsItsLoads(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer agent.Close()
	defer close(release) // before the server closes: it waits for its handlers
	n := scheduler.Node{ID: "a", Address: agent.URL, Healthy: true, CanLoad: true, Slots: 1, VRAMTotalBytes: 24 << 30,
		Models: []scheduler.NodeModel{{Name: "m:latest", OnDisk: true, VRAMBytes: 4 << 30, SizeBytes: 4 << 30}}}
	reg := &fakeRegistry{
		snap:  &scheduler.Snapshot{Now: time.Unix(1000, 0), Nodes: []scheduler.Node{n}},
		views: map[string]registry.NodeView{"a": {}},
	}
	sched, err := scheduler.New(scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The cancelled load logs its failure; this log takes a moment to write, so a load goroutine
	// still runs for that moment after the context ended.
	logged := &slowLog{}
	c := New(reg, sched, fakeAgents{agent.URL}, slog.New(logged), map[string]int{"m": 1}, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	select {
	case <-started:
	case <-time.After(20 * time.Second): // a guard against a hang
		t.Fatal("the agent got no load")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if !logged.wrote("min_replicas: load failed") {
		t.Fatal("Run returned while a load it started was still running")
	}
}

// slowLog is a slog handler that takes 100ms to write a record and remembers the messages.
type slowLog struct {
	mu   sync.Mutex
	msgs []string
}

func (*slowLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *slowLog) Handle(_ context.Context, r slog.Record) error {
	time.Sleep(100 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *slowLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *slowLog) WithGroup(string) slog.Handler      { return l }

func (l *slowLog) wrote(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.msgs, msg)
}
