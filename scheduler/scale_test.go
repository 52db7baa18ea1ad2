package scheduler

import (
	"testing"
	"time"
)

func TestScale(t *testing.T) {
	s := mustNew(t, DefaultConfig())
	replica := func(id string, inFlight int, lastUsed time.Duration) Node {
		n := fleetNode(id, []string{"x"})
		n.Models[0].InFlight = inFlight
		n.Models[0].LastUsed = t0.Add(-lastUsed)
		return n
	}
	spare := fleetNode("spare", nil, "x")
	for _, tc := range []struct {
		name    string
		bounds  ReplicaBounds
		nodes   []Node
		waiting int
		target  int
		drop    string
	}{
		{"no replica, no demand", ReplicaBounds{0, 3}, []Node{spare}, 0, 0, ""},
		{"no replica, a request waits", ReplicaBounds{0, 3}, []Node{spare}, 1, 1, ""},
		{"below min", ReplicaBounds{2, 3}, []Node{replica("a", 0, 0), spare}, 0, 2, ""},
		{"queue building: add", ReplicaBounds{1, 3}, []Node{replica("a", 2, 0), spare}, 3, 2, ""},
		{"full but not queueing: hold", ReplicaBounds{1, 3}, []Node{replica("a", 2, 0), spare}, 0, 1, ""},
		{"at max: hold", ReplicaBounds{1, 1}, []Node{replica("a", 2, 0), spare}, 9, 1, ""},
		{"idle surplus: drop the least recently used idle", ReplicaBounds{1, 3},
			[]Node{replica("a", 1, 0), replica("b", 0, time.Minute), replica("c", 0, time.Hour)}, 0, 2, "c"},
		{"busy surplus: hold", ReplicaBounds{1, 3}, []Node{replica("a", 2, 0), replica("b", 2, 0)}, 0, 2, ""},
		{"never below min", ReplicaBounds{2, 3}, []Node{replica("a", 0, 0), replica("b", 0, 0)}, 0, 2, ""},
		{"loading counts as a replica", ReplicaBounds{0, 3}, []Node{func() Node { n := fleetNode("l", nil, "x"); n.Models[0].Loading = true; return n }()}, 1, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.Scale(map[string]ReplicaBounds{"x": tc.bounds}, map[string]int{"x": tc.waiting}, &Snapshot{Now: t0, Nodes: tc.nodes})
			if len(got) != 1 || got[0].Target != tc.target || got[0].Drop != tc.drop {
				t.Fatalf("Scale = %+v, want target %d drop %q", got, tc.target, tc.drop)
			}
		})
	}
}
