package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"

	"github.com/herd-llm/herd/internal/fakeclock"
)

// sharedPair is two gateways' registries on one Redis, each with its own fake clock.
type sharedPair struct {
	a, b       *Registry
	clkA, clkB *fakeclock.Clock
}

func newSharedPair(t *testing.T, url, prefix string) sharedPair {
	t.Helper()
	open := func() (*Registry, *fakeclock.Clock) {
		rs, err := OpenRedis(context.Background(), url, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rs.Close() })
		r, clk := newTestRegistry(t)
		r.Share(rs)
		return r, clk
	}
	var p sharedPair
	p.a, p.clkA = open()
	p.b, p.clkB = open()
	return p
}

func mustAccept(t *testing.T, r *Registry, hb agentapi.Heartbeat) agentapi.HeartbeatReply {
	t.Helper()
	reply, err := r.Accept(context.Background(), hb)
	if err != nil {
		t.Fatalf("Accept(%s): %v", hb.NodeID, err)
	}
	return reply
}

func beatOf(id, instance, addr string) agentapi.Heartbeat {
	hb := beat(id)
	hb.InstanceID = instance
	if addr != "" {
		hb.Address = addr
	}
	return hb
}

func freshIDs(r *Registry) map[string]bool {
	out := map[string]bool{}
	for _, n := range r.Snapshot().Nodes {
		out[n.ID] = !n.Stale
	}
	return out
}

// TestRedisSharedEveryGatewaySeesEveryNode: heartbeats accepted by either gateway reach both,
// drains made on one apply on the other, and the reply tells the agent the registry is shared.
func TestRedisSharedEveryGatewaySeesEveryNode(t *testing.T) {
	p := newSharedPair(t, storetest.StartRedis(t), "see:")
	ctx := context.Background()
	if reply := mustAccept(t, p.a, beatOf("n1", "i1", "")); reply.Registry != agentapi.RegistryShared {
		t.Fatalf("reply registry = %q, want shared", reply.Registry)
	}
	mustAccept(t, p.b, beatOf("n2", "i2", ""))
	p.a.SyncShared(ctx)
	p.b.SyncShared(ctx)
	for name, r := range map[string]*Registry{"a": p.a, "b": p.b} {
		if got := freshIDs(r); !got["n1"] || !got["n2"] || len(got) != 2 {
			t.Fatalf("gateway %s sees %v, want n1 and n2 fresh", name, got)
		}
	}
	hbB, _ := p.b.Node("n1")
	if hbB.Heartbeat.InstanceID != "i1" || hbB.Heartbeat.Slots != 4 || len(hbB.Heartbeat.GPUs) != 1 {
		t.Fatalf("n1 as gateway b sees it: %+v", hbB.Heartbeat)
	}
	if err := p.a.SetDraining("n2", true); err != nil {
		t.Fatal(err)
	}
	p.b.SyncShared(ctx)
	if v, _ := p.b.Node("n2"); !v.Draining {
		t.Fatal("a drain made on gateway a is not seen on gateway b")
	}
	if reply := mustAccept(t, p.b, beatOf("n2", "i2", "")); !reply.Draining {
		t.Fatal("the heartbeat reply of gateway b does not say the node is drained")
	}
	if err := p.b.SetDraining("n2", false); err != nil {
		t.Fatal(err)
	}
	p.a.SyncShared(ctx)
	if v, _ := p.a.Node("n2"); v.Draining {
		t.Fatal("an undrain made on gateway b is not seen on gateway a")
	}
}

// TestRedisSharedNodeIDTakeover: a second agent claiming a live node's ID through the other
// gateway is refused, and so is a new instance at the holder's address (a restart waits for
// the stale window); once the holder is stale, another agent may take the ID.
func TestRedisSharedNodeIDTakeover(t *testing.T) {
	p := newSharedPair(t, storetest.StartRedis(t), "take:")
	ctx := context.Background()
	holder := beatOf("gpu1", "first", "http://10.0.0.1:9090")
	holder.IntervalMS = 50 // stale after 150 ms by Redis's clock
	mustAccept(t, p.a, holder)

	claimant := beatOf("gpu1", "second", "http://10.0.0.2:9090")
	claimant.IntervalMS = 50
	_, err := p.b.Accept(ctx, claimant)
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrNodeIDConflict) {
		t.Fatalf("second agent accepted or wrong error: %v", err)
	}
	if ce.HolderAddress != holder.Address || ce.HolderFingerprint != agentapi.InstanceFingerprint("first") || ce.ClaimantAddress != claimant.Address {
		t.Fatalf("conflict names the wrong agents: %+v", ce)
	}
	p.b.SyncShared(ctx)
	if v, _ := p.b.Node("gpu1"); v.Heartbeat.Address != holder.Address {
		t.Fatalf("gateway b routes gpu1 to %s, want the holder %s", v.Heartbeat.Address, holder.Address)
	}

	restarted := beatOf("gpu1", "first-restarted", holder.Address)
	restarted.IntervalMS = 50
	if _, err := p.b.Accept(ctx, restarted); !errors.Is(err, ErrNodeIDConflict) {
		t.Fatalf("a new instance at the live holder's address was not refused: %v", err)
	}

	// The holder goes silent: past its stale window (measured by Redis) the claimant gets the ID.
	time.Sleep(200 * time.Millisecond)
	mustAccept(t, p.b, claimant)
	p.clkA.Advance(time.Second) // gateway a's clock moves on as Redis's did
	p.a.SyncShared(ctx)
	if v, _ := p.a.Node("gpu1"); v.Heartbeat.Address != claimant.Address || v.Heartbeat.InstanceID != "second" {
		t.Fatalf("after the takeover gateway a has %s (%s)", v.Heartbeat.Address, v.Heartbeat.InstanceID)
	}
	// And now the first agent, come back, is the one refused.
	if _, err := p.a.Accept(ctx, restarted); !errors.Is(err, ErrNodeIDConflict) {
		t.Fatalf("the old holder was not refused after the takeover: %v", err)
	}
}

// TestRedisSharedOutageAndEmptyRestart: while Redis is down a gateway keeps scheduling the nodes
// it last saw (for OutageGrace), then judges staleness as usual; after Redis comes back empty,
// heartbeats refill it, and drains this gateway knew are written back.
func TestRedisSharedOutageAndEmptyRestart(t *testing.T) {
	srv := storetest.StartRedisServer(t)
	p := newSharedPair(t, srv.URL, "")
	ctx := context.Background()
	mustAccept(t, p.a, beatOf("via-a", "ia", ""))
	mustAccept(t, p.b, beatOf("via-b", "ib", ""))
	p.a.SyncShared(ctx)
	if err := p.a.SetDraining("via-a", true); err != nil {
		t.Fatal(err)
	}
	p.a.SyncShared(ctx)

	srv.Kill()
	p.a.SyncShared(ctx) // fails: the hold starts
	p.clkA.Advance(10 * time.Second)
	// via-a keeps heartbeating to gateway a, which records it without Redis.
	reply, err := p.a.Accept(ctx, beatOf("via-a", "ia", ""))
	if err != nil || reply.Registry != agentapi.RegistryLocal {
		t.Fatalf("Accept while Redis is down = %+v, %v; want a local reply", reply, err)
	}
	if got := freshIDs(p.a); !got["via-a"] || !got["via-b"] {
		t.Fatalf("10s into the outage gateway a sees %v; both nodes should still be scheduled", got)
	}
	// A drain cannot be shared now: it is refused rather than applied on one gateway only.
	if err := p.a.SetDraining("via-b", true); !errors.Is(err, ErrSharedUnavailable) {
		t.Fatalf("drain while Redis is down: %v, want ErrSharedUnavailable", err)
	}
	if v, _ := p.a.Node("via-b"); v.Draining {
		t.Fatal("a refused drain was applied locally")
	}
	// A conflicting claimant is still refused, from gateway a's own view.
	if _, err := p.a.Accept(ctx, beatOf("via-a", "other", "http://elsewhere:1")); !errors.Is(err, ErrNodeIDConflict) {
		t.Fatalf("conflict during the outage: %v", err)
	}
	p.clkA.Advance(25 * time.Second) // past the 30s grace
	p.a.SyncShared(ctx)
	if got := freshIDs(p.a); got["via-b"] {
		t.Fatalf("past the outage grace gateway a still schedules via-b, unheard of for 35s: %v", got)
	}

	srv.Restart()
	// via-b heartbeats to gateway b again; gateway a learns it from the new, empty Redis.
	var serr error
	for range 10 { // the clients reconnect by themselves
		if _, serr = p.b.Accept(ctx, beatOf("via-b", "ib", "")); serr == nil {
			break
		}
	}
	if serr != nil {
		t.Fatal(serr)
	}
	if reply := mustAccept(t, p.b, beatOf("via-b", "ib", "")); reply.Registry != agentapi.RegistryShared {
		t.Fatalf("after the restart the reply is %q, want shared", reply.Registry)
	}
	p.a.SyncShared(ctx) // ends gateway a's outage and writes back the drain Redis lost
	if reply := mustAccept(t, p.a, beatOf("via-a", "ia", "")); reply.Registry != agentapi.RegistryShared {
		t.Fatalf("gateway a after the outage replies %q, want shared", reply.Registry)
	}
	p.a.SyncShared(ctx)
	if got := freshIDs(p.a); !got["via-b"] || !got["via-a"] {
		t.Fatalf("after Redis came back gateway a sees %v, want both fresh", got)
	}
	p.b.SyncShared(ctx)
	if v, _ := p.b.Node("via-a"); !v.Draining {
		t.Fatal("the drain of via-a was lost with Redis's data: gateway a did not write it back")
	}
}

// TestObserveNodeIDConflict is the embedded registry's identity check.
func TestObserveNodeIDConflict(t *testing.T) {
	r, clk := newTestRegistry(t)
	first := beatOf("n", "one", "http://a:1")
	if _, err := r.Observe(first); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		advance time.Duration
		hb      agentapi.Heartbeat
		refused bool
		addr    string
	}{
		{"same instance", 0, first, false, "http://a:1"},
		{"another instance elsewhere, holder fresh", time.Second, beatOf("n", "two", "http://b:1"), true, "http://a:1"},
		{"a new instance at the holder's address, holder fresh", 0, beatOf("n", "one-again", "http://a:1"), true, "http://a:1"},
		{"the holder's instance from elsewhere", 0, beatOf("n", "one", "http://b:1"), true, "http://a:1"},
		{"the holder beats", 0, first, false, "http://a:1"},
		{"refused again just inside the stale window", 3 * time.Second, beatOf("n", "two", "http://b:1"), true, "http://a:1"},
		{"holder stale: taken over", time.Millisecond, beatOf("n", "two", "http://b:1"), false, "http://b:1"},
		{"the old holder is refused now", 0, beatOf("n", "one-again", "http://a:1"), true, "http://b:1"},
	} {
		clk.Advance(tc.advance)
		_, err := r.Observe(tc.hb)
		if got := errors.Is(err, ErrNodeIDConflict); got != tc.refused {
			t.Fatalf("%s: refused = %v (%v), want %v", tc.name, got, err, tc.refused)
		}
		if v, _ := r.Node("n"); v.Heartbeat.Address != tc.addr {
			t.Fatalf("%s: node address %s, want %s", tc.name, v.Heartbeat.Address, tc.addr)
		}
	}
}
