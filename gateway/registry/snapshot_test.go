package registry

import (
	"testing"
	"time"

	"github.com/herd-llm/herd/scheduler"
)

// TestBuildNode checks one node's build on its own: the fields filled in at build time and the
// instant at which time alone changes the node (expires), which the cached snapshot must not
// outlive.
func TestBuildNode(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	horizon := time.Second // the build's own bound: one heartbeat interval
	type want struct {
		inFlight, queued           int
		draining, stale, circuitOn bool
		loading                    bool
		expires                    time.Duration // from now
	}
	for _, tc := range []struct {
		name  string
		setup func(n *node, now time.Time)
		age   time.Duration // since the last heartbeat
		want  want
	}{
		{"fresh and idle", func(*node, time.Time) {}, 0, want{expires: horizon}},
		{"stale soon: expires then", func(*node, time.Time) {}, 2500 * time.Millisecond,
			want{expires: 500*time.Millisecond + 1}},
		{"stale: nothing due but the forget window", func(*node, time.Time) {}, time.Minute,
			want{stale: true, expires: horizon}},
		{"forgotten soon: expires then", func(*node, time.Time) {}, 10*time.Minute - time.Millisecond,
			want{stale: true, expires: time.Millisecond + 1}},
		{"busy beyond its slots", func(n *node, _ time.Time) {
			for range 6 {
				n.slots.acquire()
			}
		}, 0, want{inFlight: 4, queued: 2, expires: horizon}},
		{"draining", func(n *node, _ time.Time) { n.draining = true }, 0, want{draining: true, expires: horizon}},
		{"circuit open until soon", func(n *node, now time.Time) {
			for range 3 {
				n.breaker.failure(now.Add(-9800*time.Millisecond), 3, 10*time.Second)
			}
		}, 0, want{circuitOn: true, expires: 200 * time.Millisecond}},
		{"half-open with its probe out", func(n *node, now time.Time) {
			for range 3 {
				n.breaker.failure(now.Add(-time.Minute), 3, 10*time.Second)
			}
			n.breaker.acquire(now)
		}, 0, want{circuitOn: true, expires: horizon}},
		{"a load under way ends soon", func(n *node, now time.Time) {
			n.loads = loads{"other:1b": now.Add(100 * time.Millisecond)}
		}, 0, want{loading: true, expires: 100 * time.Millisecond}},
		{"an expired load is dropped", func(n *node, now time.Time) {
			n.loads = loads{"other:1b": now}
		}, 0, want{expires: horizon}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(tc.age)
			live := liveness{cfg: Config{}.withDefaults()}
			hb := beat("a")
			hb.Slots = 4
			n := &node{id: "a", hb: hb, base: baseNode(&hb), seen: seen{at: t0, interval: time.Second}}
			n.base.Models = append(n.base.Models, scheduler.NodeModel{Name: "other:1b", OnDisk: true})
			tc.setup(n, now)
			var sn scheduler.Node
			expires := buildNode(&sn, n, &live, now, now.Add(horizon))
			got := want{inFlight: sn.InFlight, queued: sn.Queued, draining: sn.Draining, stale: sn.Stale,
				circuitOn: sn.CircuitOpen, loading: sn.Models[1].Loading, expires: expires.Sub(now)}
			if got != tc.want {
				t.Errorf("built %+v, want %+v", got, tc.want)
			}
			if n.base.Models[1].Loading {
				t.Error("the build wrote Loading into the registry's base")
			}
			if sn.ID != "a" || sn.Address != hb.Address || !sn.Healthy {
				t.Errorf("heartbeat fields lost: %+v", sn)
			}
		})
	}
}
