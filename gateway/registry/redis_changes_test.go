package registry

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func openShared(t *testing.T, url, prefix string) *RedisShared {
	t.Helper()
	rs, err := OpenRedis(context.Background(), url, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

func mustPut(t *testing.T, s *RedisShared, hb agentapi.Heartbeat, forget time.Duration) {
	t.Helper()
	if err := s.Put(context.Background(), hb, min(3*time.Second, forget), forget); err != nil {
		t.Fatalf("Put(%s): %v", hb.NodeID, err)
	}
}

func mustLoad(t *testing.T, s *RedisShared) SharedTable {
	t.Helper()
	tab, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// loaded is the IDs a Load returned, sorted.
func loaded(tab SharedTable) []string {
	var ids []string
	for _, n := range tab.Nodes {
		ids = append(ids, n.Heartbeat.NodeID)
	}
	slices.Sort(ids)
	return ids
}

// TestRedisLoadReadsOnlyOthersChanges: after a first full read, a Load returns the nodes the
// other gateway wrote since the previous Load, never the ones this one wrote itself, and
// nothing at all when nothing changed; drains come with every Load.
func TestRedisLoadReadsOnlyOthersChanges(t *testing.T) {
	url := storetest.StartRedis(t)
	a, b := openShared(t, url, "chg:"), openShared(t, url, "chg:")
	mustPut(t, a, beatOf("a1", "ia1", ""), time.Minute)
	mustPut(t, b, beatOf("b1", "ib1", ""), time.Minute)

	if tab := mustLoad(t, a); !tab.Full || !slices.Equal(loaded(tab), []string{"a1", "b1"}) {
		t.Fatalf("first Load: full=%v nodes=%v, want a full read of a1 and b1", tab.Full, loaded(tab))
	}
	if tab := mustLoad(t, a); tab.Full || len(tab.Nodes) != 0 {
		t.Fatalf("Load with nothing changed: full=%v nodes=%v, want nothing", tab.Full, loaded(tab))
	}
	mustPut(t, a, beatOf("a1", "ia1", ""), time.Minute)
	changed := beatOf("b1", "ib1", "")
	changed.Slots = 9
	mustPut(t, b, changed, time.Minute)
	mustPut(t, b, beatOf("b2", "ib2", ""), time.Minute)
	if err := b.SetDraining(context.Background(), "a1", true); err != nil {
		t.Fatal(err)
	}
	tab := mustLoad(t, a)
	if tab.Full || !slices.Equal(loaded(tab), []string{"b1", "b2"}) {
		t.Fatalf("Load after changes: full=%v nodes=%v, want only b1 and b2 (a1 is a's own write)", tab.Full, loaded(tab))
	}
	for _, n := range tab.Nodes {
		if n.Heartbeat.NodeID == "b1" && n.Heartbeat.Slots != 9 {
			t.Fatalf("b1 read back with %d slots, want the changed 9", n.Heartbeat.Slots)
		}
		if n.Age < 0 || n.Age > 5*time.Second {
			t.Fatalf("%s age %s", n.Heartbeat.NodeID, n.Age)
		}
	}
	if !tab.Draining["a1"] || len(tab.Draining) != 1 {
		t.Fatalf("drains = %v, want a1", tab.Draining)
	}
	// b's first Load is full and holds a's writes; its next one holds only a's.
	if tab := mustLoad(t, b); !tab.Full || !slices.Equal(loaded(tab), []string{"a1", "b1", "b2"}) {
		t.Fatalf("b's first Load: full=%v nodes=%v", tab.Full, loaded(tab))
	}
	mustPut(t, a, beatOf("a1", "ia1", ""), time.Minute)
	mustPut(t, b, beatOf("b1", "ib1", ""), time.Minute)
	if tab := mustLoad(t, b); tab.Full || !slices.Equal(loaded(tab), []string{"a1"}) {
		t.Fatalf("b's Load after changes: full=%v nodes=%v, want a1", tab.Full, loaded(tab))
	}
}

// TestRedisLoadFullReadFallback: the next Load reads everything after Redis lost its data (even
// once the new counter passed the old cursor), after a failed Load, and every fullReadEvery
// Loads, which also sweeps nodes whose hash expired out of the sets.
func TestRedisLoadFullReadFallback(t *testing.T) {
	url := storetest.StartRedis(t)
	a, b := openShared(t, url, "full:"), openShared(t, url, "full:")
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(opts)
	t.Cleanup(func() { raw.Close() })
	ctx := context.Background()

	mustPut(t, b, beatOf("old", "io", ""), time.Minute)
	mustLoad(t, a) // cursor at seq 1
	if err := raw.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the new table's counter passes a's cursor
		mustPut(t, b, beatOf("new", "in", ""), time.Minute)
	}
	mustPut(t, a, beatOf("mine", "im", ""), time.Minute)
	if tab := mustLoad(t, a); !tab.Full || !slices.Equal(loaded(tab), []string{"mine", "new"}) {
		t.Fatalf("Load after Redis lost its data: full=%v nodes=%v, want a full read of mine and new", tab.Full, loaded(tab))
	}

	// A failed Load: the next one is full.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Load(cctx); err == nil {
		t.Fatal("Load with a cancelled context succeeded")
	}
	if tab := mustLoad(t, a); !tab.Full || !slices.Equal(loaded(tab), []string{"mine", "new"}) {
		t.Fatalf("Load after a failed one: full=%v nodes=%v, want full", tab.Full, loaded(tab))
	}

	// A node whose hash expires (its forget window passed) leaves the sets at the next full read.
	mustPut(t, b, beatOf("brief", "ib", ""), 50*time.Millisecond)
	if tab := mustLoad(t, a); tab.Full || !slices.Equal(loaded(tab), []string{"brief"}) {
		t.Fatalf("Load: full=%v nodes=%v, want brief", tab.Full, loaded(tab))
	}
	time.Sleep(150 * time.Millisecond)
	fulls := 0
	for range fullReadEvery {
		if mustLoad(t, a).Full {
			fulls++
		}
	}
	if fulls != 1 {
		t.Fatalf("%d full reads in %d Loads, want 1", fulls, fullReadEvery)
	}
	for _, key := range []string{"full:nodes", "full:nodes:changes"} {
		if err := raw.ZScore(ctx, key, "brief").Err(); err != redis.Nil {
			t.Fatalf("the expired node is still in %s: %v", key, err)
		}
		if n := raw.ZCard(ctx, key).Val(); n != 2 {
			t.Fatalf("%s holds %d nodes, want 2", key, n)
		}
	}
}

// TestRedisSharedChangesAndRemovals: two registries on one Redis see each other's new nodes,
// changed heartbeats and drains through reads of changes only, and forget a node that went
// silent; a node this gateway accepted is not read back.
func TestRedisSharedChangesAndRemovals(t *testing.T) {
	p := newSharedPair(t, storetest.StartRedis(t), "rm:")
	ctx := context.Background()
	mustAccept(t, p.a, beatOf("n1", "i1", ""))
	p.a.SyncShared(ctx)
	p.b.SyncShared(ctx) // full
	mustAccept(t, p.b, beatOf("n2", "i2", ""))
	changed := beatOf("n1", "i1", "")
	changed.Models = append(changed.Models, agentapi.Model{Name: "qwen3:4b", Resident: true, OnDisk: true})
	mustAccept(t, p.a, changed)
	p.clkB.Advance(time.Second) // gateway b's clock moves on as Redis's did
	p.a.SyncShared(ctx)
	p.b.SyncShared(ctx)
	for name, r := range map[string]*Registry{"a": p.a, "b": p.b} {
		if got := freshIDs(r); !got["n1"] || !got["n2"] || len(got) != 2 {
			t.Fatalf("gateway %s sees %v, want n1 and n2 fresh", name, got)
		}
		if v, _ := r.Node("n1"); len(v.Heartbeat.Models) != 2 {
			t.Fatalf("gateway %s has n1 with models %v, want the changed two", name, v.Heartbeat.Models)
		}
	}
	if err := p.b.SetDraining("n1", true); err != nil {
		t.Fatal(err)
	}
	p.a.SyncShared(ctx)
	if v, _ := p.a.Node("n1"); !v.Draining {
		t.Fatal("gateway a does not see the drain made on b")
	}
	// n2 goes silent; n1 goes on beating through a. Past the forget window both gateways drop
	// n2 and keep n1.
	for range 3 {
		p.clkA.Advance(4 * time.Minute)
		p.clkB.Advance(4 * time.Minute)
		mustAccept(t, p.a, beatOf("n1", "i1", ""))
		p.a.SyncShared(ctx)
		p.b.SyncShared(ctx)
	}
	for name, r := range map[string]*Registry{"a": p.a, "b": p.b} {
		if got := freshIDs(r); !got["n1"] || len(got) != 1 {
			t.Fatalf("gateway %s sees %v after n2's silence, want n1 only", name, got)
		}
	}
}
