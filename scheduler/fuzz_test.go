package scheduler

import (
	"encoding/json"
	"testing"
)

func roundTrip[T any](t testing.TB, v *T) *T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzPick builds a request and a snapshot from the input and checks Pick's invariants under
// every policy: no filtered node among the candidates, every node accounted for once, scores in
// [0,1] sorted best first, and the same decision on replay. Explain must agree with Pick.
func FuzzPick(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 4})
	f.Add([]byte("herd scheduler fuzz seed with a few nodes in it, all sorts of flags"))
	f.Add([]byte{1, 255, 255, 7, 200, 3, 9, 9, 1, 32, 0x20, 4, 3, 2, 1, 40, 40, 128, 200, 0x07, 5, 5, 200, 0x03, 4, 4, 4, 4, 4})
	scheds := make([]*Scheduler, len(policies))
	for i, p := range policies {
		scheds[i] = mustNew(f, policy(p))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, snap := snapshotFromBytes(b)
		for _, s := range scheds {
			var d Decision
			s.Pick(req, snap, &d)
			checkDecision(t, s, req, snap, &d)
			ex := s.Explain(req, snap)
			if len(ex.Order) != len(d.Candidates) || len(ex.Nodes) != len(snap.Nodes) {
				t.Fatalf("explain has %d/%d, pick %d/%d", len(ex.Order), len(ex.Nodes), len(d.Candidates), len(snap.Nodes))
			}
			for i, c := range d.Candidates[:d.Ranked] {
				if ex.Order[i] != snap.Nodes[c.Node].ID || ex.Nodes[c.Node].Rank != i+1 || !ex.Nodes[c.Node].Eligible {
					t.Fatalf("explain disagrees with pick at rank %d", i+1)
				}
			}
			for _, r := range d.Rejections {
				if ex.Nodes[r.Node].Eligible || ex.Nodes[r.Node].ReasonCode != r.Reason.Code() {
					t.Fatalf("explain disagrees with pick on %s", snap.Nodes[r.Node].ID)
				}
			}
		}
	})
}
