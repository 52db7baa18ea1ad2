package admin

import (
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

func TestLiveness(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		age        time.Duration
		intervalMS int64
		stale      bool
		want       string
	}{
		{"fresh", 400 * time.Millisecond, 1000, false, api.NodeUp},
		{"a beat late", 1600 * time.Millisecond, 1000, false, api.NodeLate},
		{"agent's own interval", 1600 * time.Millisecond, 2000, false, api.NodeUp},
		{"gateway's interval when the agent sends none", 2 * time.Second, 0, false, api.NodeLate},
		{"stale is down", 12 * time.Second, 1000, true, api.NodeDown},
		{"clock behind the heartbeat", -time.Second, 1000, false, api.NodeUp},
	} {
		v := registry.NodeView{Heartbeat: agentapi.Heartbeat{IntervalMS: tc.intervalMS}, Stale: tc.stale, LastHeartbeat: now.Add(-tc.age)}
		age, status := liveness(v, now, time.Second)
		if status != tc.want || age != max(tc.age, 0).Seconds() {
			t.Errorf("%s: %v %s, want %v %s", tc.name, age, status, max(tc.age, 0).Seconds(), tc.want)
		}
	}
}

type fixedQueue api.Queue

func (q fixedQueue) Queue() api.Queue { return api.Queue(q) }

type fixedHistory api.History

func (h fixedHistory) History() api.History { return api.History(h) }

// TestNodesDatedAndQueue: nodes carry their age on the injected clock; /queue and /history are
// served only when given, through the typed client.
func TestNodesDatedAndQueue(t *testing.T) {
	gin.SetMode(gin.TestMode)
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	reg := &fakeRegistry{views: []registry.NodeView{
		{Heartbeat: agentapi.Heartbeat{NodeID: "a", IntervalMS: 1000}, Healthy: true, LastHeartbeat: now.Add(-300 * time.Millisecond)},
		{Heartbeat: agentapi.Heartbeat{NodeID: "b", IntervalMS: 1000}, Healthy: true, Stale: true, LastHeartbeat: now.Add(-12 * time.Second)},
	}}
	sched, err := scheduler.New(scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	q := fixedQueue{Interactive: 3, Models: []api.QueueDepth{{Model: "m", Class: "interactive", Waiting: 3, Capacity: 256}}}
	h := fixedHistory{IntervalSeconds: 5, WindowSeconds: 600, Samples: []api.HistorySample{{Time: now}}}
	e := gin.New()
	New(reg, sched, noAgents{t}, slog.New(slog.DiscardHandler)).WithClock(func() time.Time { return now }, time.Second).
		WithQueue(q, h).Register(e.Group("/admin/v1"))
	srv := httptest.NewServer(e)
	defer srv.Close()
	c := api.NewClient(srv.URL, "")
	nodes, err := c.Nodes(t.Context())
	if err != nil || len(nodes) != 2 {
		t.Fatal(nodes, err)
	}
	if a, b := nodes[0], nodes[1]; a.Status != api.NodeUp || a.LastSeenSeconds != 0.3 || !a.Current() ||
		b.Status != api.NodeDown || b.LastSeenSeconds != 12 || b.Current() {
		t.Fatalf("nodes %+v %+v", a, b)
	}
	gotQ, err := c.Queue(t.Context())
	if err != nil || gotQ.Interactive != 3 || len(gotQ.Models) != 1 || gotQ.Models[0].Capacity != 256 {
		t.Fatalf("queue %+v %v", gotQ, err)
	}
	gotH, err := c.History(t.Context())
	if err != nil || len(gotH.Samples) != 1 || gotH.IntervalSeconds != 5 {
		t.Fatalf("history %+v %v", gotH, err)
	}
	// Without a queue and history they are not routes.
	bare := newTestServer(t, reg)
	if _, err := api.NewClient(bare.URL, "").Queue(t.Context()); !isAPIError(err, 404, "") {
		t.Fatalf("queue without WithQueue: %v", err)
	}
}
