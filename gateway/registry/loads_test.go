package registry

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/herd-llm/herd/scheduler"
)

// TestLoads checks which models a build marks Loading, which loads it drops, and the deadline it
// returns; and that a heartbeat showing a model resident ends its load.
func TestLoads(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	models := []scheduler.NodeModel{{Name: "a:1b", Resident: true}, {Name: "b:1b", OnDisk: true}, {Name: "c:1b"}}
	for _, tc := range []struct {
		name        string
		loads       loads
		wantLoading []string
		wantKept    []string
		wantNext    time.Duration // 0: none
	}{
		{"none", nil, nil, nil, 0},
		{"one under way", loads{"b:1b": now.Add(time.Minute)}, []string{"b:1b"}, []string{"b:1b"}, time.Minute},
		{"earliest of two", loads{"b:1b": now.Add(time.Minute), "c:1b": now.Add(time.Second)},
			[]string{"b:1b", "c:1b"}, []string{"b:1b", "c:1b"}, time.Second},
		{"expired: dropped", loads{"b:1b": now}, nil, []string{}, 0},
		{"resident: not loading", loads{"a:1b": now.Add(time.Minute)}, nil, []string{"a:1b"}, 0},
		{"a model the node does not list", loads{"z:1b": now.Add(time.Minute)}, nil, []string{"z:1b"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sn := scheduler.Node{Models: slices.Clone(models)}
			base := sn.Models
			next := tc.loads.mark(&sn, now)
			var loading []string
			for _, m := range sn.Models {
				if m.Loading {
					loading = append(loading, m.Name)
				}
			}
			if !slices.Equal(loading, tc.wantLoading) {
				t.Errorf("loading %v, want %v", loading, tc.wantLoading)
			}
			if slices.ContainsFunc(base, func(m scheduler.NodeModel) bool { return m.Loading }) {
				t.Error("mark wrote into the models it was given")
			}
			if tc.loads != nil {
				if kept := slices.Sorted(maps.Keys(tc.loads)); !slices.Equal(kept, tc.wantKept) {
					t.Errorf("kept %v, want %v", kept, tc.wantKept)
				}
			}
			var got time.Duration // zero: no deadline
			if !next.IsZero() {
				got = next.Sub(now)
			}
			if got != tc.wantNext {
				t.Errorf("next %v, want %v", got, tc.wantNext)
			}
		})
	}
	l := loads{"a:1b": now.Add(time.Minute), "b:1b": now.Add(time.Minute)}
	l.confirm(models)
	if _, ok := l["a:1b"]; ok || len(l) != 1 {
		t.Errorf("after a heartbeat with a:1b resident: %v, want only b:1b", l)
	}
	loads(nil).confirm(models) // nil is empty, not a panic
}
