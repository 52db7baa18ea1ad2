package registry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// fullBeat is node id's heartbeat from agent instance inst, with its static hash (an agent that
// sends deltas).
func fullBeat(id, inst string) agentapi.Heartbeat {
	hb := beatOf(id, inst, "")
	hb.StaticHash = agentapi.StaticHash(&hb)
	return hb
}

// telemetry is hb's delta with the GPU at util and in_flight requests.
func telemetry(hb agentapi.Heartbeat, util float64, inFlight int) *agentapi.HeartbeatDelta {
	d := agentapi.DeltaOf(&hb)
	d.GPUs[0].UtilizationRatio, d.InFlight = util, inFlight
	return &d
}

func TestAcceptDelta(t *testing.T) {
	ctx := context.Background()
	full := fullBeat("n1", "i1")
	for _, tc := range []struct {
		name string
		// prepare records what the registry holds before the delta, and may move the clock.
		prepare func(t *testing.T, r *Registry, clk interface{ Advance(time.Duration) })
		delta   *agentapi.HeartbeatDelta
		applied bool
	}{
		{"unknown node", func(*testing.T, *Registry, interface{ Advance(time.Duration) }) {}, telemetry(full, 0.9, 1), false},
		{"onto the full heartbeat", func(t *testing.T, r *Registry, _ interface{ Advance(time.Duration) }) {
			mustAccept(t, r, full)
		}, telemetry(full, 0.9, 1), true},
		{"from another instance", func(t *testing.T, r *Registry, _ interface{ Advance(time.Duration) }) {
			mustAccept(t, r, full)
		}, telemetry(fullBeat("n1", "i2"), 0.9, 1), false},
		{"onto an older agent's heartbeat (no static hash)", func(t *testing.T, r *Registry, _ interface{ Advance(time.Duration) }) {
			old := full
			old.StaticHash = ""
			mustAccept(t, r, old)
		}, telemetry(full, 0.9, 1), false},
		{"after the static part changed", func(t *testing.T, r *Registry, _ interface{ Advance(time.Duration) }) {
			changed := full
			changed.Slots = 8
			changed.StaticHash = agentapi.StaticHash(&changed)
			mustAccept(t, r, changed)
		}, telemetry(full, 0.9, 1), false},
		{"onto a stale node of the same instance", func(t *testing.T, r *Registry, clk interface{ Advance(time.Duration) }) {
			mustAccept(t, r, full)
			clk.Advance(5 * time.Second)
		}, telemetry(full, 0.9, 1), true},
		{"onto a forgotten node", func(t *testing.T, r *Registry, clk interface{ Advance(time.Duration) }) {
			mustAccept(t, r, full)
			clk.Advance(11 * time.Minute)
		}, telemetry(full, 0.9, 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newTestRegistry(t)
			tc.prepare(t, r, clk)
			before, _ := r.Node("n1")
			reply, err := r.AcceptDelta(ctx, tc.delta)
			if !tc.applied {
				if !errors.Is(err, ErrNoBase) {
					t.Fatalf("err %v, want ErrNoBase", err)
				}
				if after, _ := r.Node("n1"); after.LastHeartbeat != before.LastHeartbeat {
					t.Fatal("a refused delta changed the node")
				}
				return
			}
			if err != nil || reply.Registry != agentapi.RegistryLocal {
				t.Fatalf("reply %+v, err %v", reply, err)
			}
			v, _ := r.Node("n1")
			if v.Stale || v.Heartbeat.GPUs[0].UtilizationRatio != 0.9 || v.Heartbeat.InFlight != 1 ||
				v.Heartbeat.GPUs[0].UUID != full.GPUs[0].UUID || v.Heartbeat.Models[0].Name != full.Models[0].Name {
				t.Fatalf("node after the delta: %+v (stale %v)", v.Heartbeat, v.Stale)
			}
			if n := snapNode(t, r, "n1"); n.Utilization != 0.9 || n.InFlight != 1 {
				t.Fatalf("snapshot node: utilization %v, in flight %d", n.Utilization, n.InFlight)
			}
			// What was handed out before stays as it was.
			if before.Heartbeat.GPUs[0].UtilizationRatio != full.GPUs[0].UtilizationRatio {
				t.Fatal("the delta changed a node view handed out earlier")
			}
		})
	}
}

// TestAcceptDeltaShared: with Redis, a delta is applied onto a base read from the shared table
// as well as onto one this gateway accepted (another gateway, a restarted one once it has read
// the table), and the table holds the merged heartbeat, so every gateway sees the telemetry.
func TestAcceptDeltaShared(t *testing.T) {
	url := storetest.StartRedis(t)
	p := newSharedPair(t, url, "delta:")
	ctx := context.Background()
	full := fullBeat("n1", "i1")
	mustAccept(t, p.a, full)
	if _, err := p.b.AcceptDelta(ctx, telemetry(full, 0.7, 2)); !errors.Is(err, ErrNoBase) {
		t.Fatalf("gateway b before reading the table: %v, want ErrNoBase", err)
	}
	p.b.SyncShared(ctx)
	reply, err := p.b.AcceptDelta(ctx, telemetry(full, 0.7, 2))
	if err != nil || reply.Registry != agentapi.RegistryShared {
		t.Fatalf("gateway b, base from the table: reply %+v, err %v", reply, err)
	}
	p.clkA.Advance(time.Second) // gateway a keeps a record only when it is newer than its own
	p.a.SyncShared(ctx)
	if v, _ := p.a.Node("n1"); v.Heartbeat.GPUs[0].UtilizationRatio != 0.7 || v.Heartbeat.InFlight != 2 ||
		v.Heartbeat.StaticHash != full.StaticHash || v.Heartbeat.GPUs[0].UUID != full.GPUs[0].UUID {
		t.Fatalf("gateway a reads back %+v", v.Heartbeat)
	}

	// The table holds the delta as it came beside the full heartbeat it applies to.
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	rec, err := rc.HGetAll(ctx, "delta:node:n1").Result()
	if err != nil || rec["tel"] == "" || rec["sh"] != full.StaticHash || !strings.Contains(rec["hb"], `"utilization_ratio":0.5`) {
		t.Fatalf("record after a delta: %v (%v)", rec, err)
	}

	// A gateway that restarts reads the table first (the base decoded, the delta applied onto
	// it): it sees the telemetry, and the agent's deltas go on being applied.
	restarted := newSharedPair(t, url, "delta:").a
	restarted.SyncShared(ctx)
	if v, _ := restarted.Node("n1"); v.Heartbeat.GPUs[0].UtilizationRatio != 0.7 || v.Heartbeat.InFlight != 2 ||
		v.Heartbeat.Hostname != full.Hostname || v.Heartbeat.Models[0].Name != full.Models[0].Name {
		t.Fatalf("a restarted gateway reads %+v", v.Heartbeat)
	}
	if _, err := restarted.AcceptDelta(ctx, telemetry(full, 0.3, 0)); err != nil {
		t.Fatalf("restarted gateway: %v", err)
	}

	// A full heartbeat replaces the record whole.
	changed := full
	changed.Slots = 8
	changed.StaticHash = agentapi.StaticHash(&changed)
	mustAccept(t, p.b, changed)
	if rec, _ := rc.HGetAll(ctx, "delta:node:n1").Result(); rec["tel"] != "" || rec["sh"] != changed.StaticHash {
		t.Fatalf("record after a full heartbeat: %v", rec)
	}

	// Redis lost its data: a delta onto the base a gateway holds is written merged, in full.
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p.b.SyncShared(ctx)
	if _, err := p.b.AcceptDelta(ctx, telemetry(changed, 0.4, 1)); err != nil {
		t.Fatalf("delta after Redis lost its data: %v", err)
	}
	if rec, _ := rc.HGetAll(ctx, "delta:node:n1").Result(); rec["tel"] != "" || rec["sh"] != changed.StaticHash ||
		!strings.Contains(rec["hb"], `"utilization_ratio":0.4`) || !strings.Contains(rec["hb"], `"slots":8`) {
		t.Fatalf("record written after Redis lost its data: %v", rec)
	}
}
