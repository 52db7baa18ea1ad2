package registry

import "testing"

// TestSlotsSplit checks how a node's load is counted from this gateway's requests and the other
// work its last heartbeat reported.
func TestSlotsSplit(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		localAtBeat             int // this gateway's requests when the heartbeat arrived
		hbInFlight, hbQueued    int
		localNow, capacity      int
		wantInFlight, wantQueue int
	}{
		{"idle", 0, 0, 0, 0, 4, 0, 0},
		{"another gateway's work", 0, 2, 0, 0, 4, 2, 0},
		{"ours counted once", 1, 3, 0, 1, 4, 3, 0},
		{"ours ended since the heartbeat", 1, 3, 0, 0, 4, 2, 0},
		{"an old sample saw fewer of ours", 3, 1, 0, 3, 4, 3, 0},
		{"beyond the slots waits", 0, 0, 0, 6, 4, 4, 2},
		{"the node's own split of other work", 0, 1, 2, 0, 4, 1, 2},
		{"the others' work is taken as queued first", 2, 1, 2, 2, 4, 2, 1},
		{"negative counts are none", 0, -5, -1, 1, 4, 1, 0},
		{"no slots: unbounded", 0, 10, 0, 5, 0, 15, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s slots
			for range tc.localAtBeat {
				s.acquire()
			}
			s.heartbeat(tc.hbInFlight, tc.hbQueued)
			for s.mine() > tc.localNow {
				s.release()
			}
			for s.mine() < tc.localNow {
				s.acquire()
			}
			f, q := s.split(s.mine(), tc.capacity)
			if f != tc.wantInFlight || q != tc.wantQueue {
				t.Errorf("split = %d in flight, %d queued; want %d and %d", f, q, tc.wantInFlight, tc.wantQueue)
			}
		})
	}
}

// TestSlotsReleaseNeverBelowZero checks that releases without acquires (a node forgotten and
// re-added between the two) leave the count at zero.
func TestSlotsReleaseNeverBelowZero(t *testing.T) {
	var s slots
	s.acquire()
	for range 3 {
		s.release()
	}
	if got := s.mine(); got != 0 {
		t.Errorf("mine() = %d after more releases than acquires, want 0", got)
	}
}
