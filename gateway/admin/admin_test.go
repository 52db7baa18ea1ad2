package admin

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// fakeRegistry is a fixed set of nodes whose drain flag the handlers may change.
type fakeRegistry struct{ views []registry.NodeView }

func (f *fakeRegistry) Nodes() []registry.NodeView { return slices.Clone(f.views) }
func (f *fakeRegistry) Node(id string) (registry.NodeView, bool) {
	for _, v := range f.views {
		if v.Heartbeat.NodeID == id {
			return v, true
		}
	}
	return registry.NodeView{}, false
}
func (f *fakeRegistry) SetDraining(id string, on bool) error {
	for i := range f.views {
		if f.views[i].Heartbeat.NodeID == id {
			f.views[i].Draining = on
			return nil
		}
	}
	return fmt.Errorf("%w: %q", registry.ErrUnknownNode, id)
}
func (f *fakeRegistry) Snapshot() *scheduler.Snapshot { return &scheduler.Snapshot{} }

// noAgents fails the test if a handler reaches for an agent.
type noAgents struct{ t *testing.T }

func (a noAgents) For(v registry.NodeView) *agentapi.Client {
	a.t.Errorf("unexpected agent call to %s", v.Heartbeat.NodeID)
	return agentapi.NewClient("http://127.0.0.1:1", "", http.DefaultClient)
}

var _ Registry = (*fakeRegistry)(nil)

func newTestServer(t *testing.T, reg *fakeRegistry) *httptest.Server {
	gin.SetMode(gin.TestMode)
	sched, err := scheduler.New(scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e := gin.New()
	New(reg, sched, noAgents{t}, slog.New(slog.DiscardHandler)).Register(e.Group("/admin/v1"))
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv
}

func TestHandlersOverInterfaces(t *testing.T) {
	reg := &fakeRegistry{views: []registry.NodeView{
		{Heartbeat: agentapi.Heartbeat{NodeID: "a", Address: "http://a", Models: []agentapi.Model{
			{Name: "llama3", Resident: true, OnDisk: true, VRAMBytes: 5 << 30},
			{Name: "llama3:latest", OnDisk: true, SizeBytes: 4 << 30},
		}}, Healthy: true},
		{Heartbeat: agentapi.Heartbeat{NodeID: "b", Address: "http://b"}, Healthy: true, Stale: true},
	}}
	srv := newTestServer(t, reg)
	c := api.NewClient(srv.URL, "")
	ctx := t.Context()

	n, err := c.SetDraining(ctx, "a", true)
	if err != nil || n.ID != "a" || !n.Draining || !reg.views[0].Draining {
		t.Fatalf("drain a = %+v, %v", n, err)
	}
	if len(n.GPUs) != 0 || n.GPUs == nil || len(n.Models) != 2 {
		t.Fatalf("node a = %+v: gpus must be [] not null, models listed", n)
	}
	if _, err := c.SetDraining(ctx, "nope", true); !isAPIError(err, http.StatusNotFound, "node_not_found") {
		t.Fatalf("drain of an unknown node: %v", err)
	}
	ms, err := c.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Two spellings of one model on one node are one entry, under the normalised name.
	if len(ms) != 1 || ms[0].Name != "llama3:latest" || len(ms[0].Nodes) != 1 {
		t.Fatalf("models = %+v", ms)
	}
	on := ms[0].Nodes[0]
	if on.Node != "a" || !on.Resident || !on.OnDisk || on.VRAMBytes != 5<<30 || on.SizeBytes != 4<<30 {
		t.Fatalf("llama3 on a = %+v", on)
	}
	var raw map[string]any
	if err := c.GetJSON(ctx, "/admin/v1/explain?model=llama3", &raw); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Explain(ctx, "", nil); !isAPIError(err, http.StatusBadRequest, "missing_model") {
		t.Fatalf("explain without a model: %v", err)
	}
	for _, body := range []string{`{"model":"m","bogus":1}`, `{"node":"a"}`} {
		resp, err := http.Post(srv.URL+"/admin/v1/models/unload", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var eb api.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || eb.Error.Code == nil {
			t.Fatalf("unload %s: %d %+v, want a 400 in the OpenAI shape", body, resp.StatusCode, eb)
		}
	}
}

func isAPIError(err error, status int, code string) bool {
	e, ok := err.(*api.Error)
	return ok && e.Status == status && e.Code == code
}
