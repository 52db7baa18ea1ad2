package registry

import (
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// TestLiveness checks the stale and forget windows of one node, with and without the hold of an
// outage of the shared table, at offsets from its last heartbeat.
func TestLiveness(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		interval    time.Duration
		outageAt    time.Duration // > 0: the table became unreachable then (last read at t0)
		at          time.Duration
		stale       bool
		forgotten   bool
		wantStaleAt time.Duration // the stale instant seen at `at`, from t0
	}{
		{"fresh", time.Second, 0, 0, false, false, 3*time.Second + 1},
		{"at the window", time.Second, 0, 3 * time.Second, false, false, 3*time.Second + 1},
		{"past the window", time.Second, 0, 3*time.Second + 1, true, false, 3*time.Second + 1},
		{"slow agent", 5 * time.Second, 0, 10 * time.Second, false, false, 15*time.Second + 1},
		{"listed at ten minutes", time.Second, 0, 10 * time.Minute, true, false, 3*time.Second + 1},
		{"forgotten past ten minutes", time.Second, 0, 10*time.Minute + 1, true, true, 3*time.Second + 1},
		{"forget window is two stale windows at least", 5 * time.Minute, 0, 20 * time.Minute, true, false, 15*time.Minute + 1},
		{"held: judged at the last read", time.Second, 2 * time.Second, 20 * time.Second, false, false, 30 * time.Second},
		{"hold ends after the grace", time.Second, 2 * time.Second, 30 * time.Second, true, false, 3*time.Second + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := liveness{cfg: Config{}.withDefaults()}
			l.loaded(t0)
			if tc.outageAt > 0 {
				if !l.startOutage(t0.Add(tc.outageAt)) {
					t.Fatal("startOutage = false on the first failure")
				}
				if l.startOutage(t0.Add(tc.outageAt + time.Second)) {
					t.Fatal("startOutage = true during an outage")
				}
			}
			s := seen{at: t0, interval: tc.interval}
			now := t0.Add(tc.at)
			if got := l.stale(s, now); got != tc.stale {
				t.Errorf("stale = %v, want %v", got, tc.stale)
			}
			if got := l.forgotten(s, now); got != tc.forgotten {
				t.Errorf("forgotten = %v, want %v", got, tc.forgotten)
			}
			if got := l.staleAt(s, now).Sub(t0); got != tc.wantStaleAt {
				t.Errorf("staleAt = t0+%v, want t0+%v", got, tc.wantStaleAt)
			}
			// forgetAt is the first instant forgotten is true.
			if at := l.forgetAt(s); l.forgotten(s, at.Add(-1)) || !l.forgotten(s, at) {
				t.Errorf("forgetAt %v is not where forgotten turns true", at.Sub(t0))
			}
		})
	}
}

// TestLivenessHoldAfterOutage checks that the table answering again ends the outage but keeps the
// hold a few intervals more, and that a read with no outage changes nothing.
func TestLivenessHoldAfterOutage(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	l := liveness{cfg: Config{}.withDefaults()}
	if l.loaded(t0) {
		t.Fatal("loaded ended an outage that never began")
	}
	l.startOutage(t0.Add(time.Second))
	back := t0.Add(5 * time.Second)
	if !l.loaded(back) {
		t.Fatal("loaded did not end the outage")
	}
	if l.outage || !l.holding(back) {
		t.Fatalf("after the outage: outage %v, holding %v", l.outage, l.holding(back))
	}
	if want := back.Add(5 * time.Second); !l.holdUntil.Equal(want) { // (3+2) intervals of 1s
		t.Errorf("hold until %v after the outage, want %v", l.holdUntil.Sub(t0), want.Sub(t0))
	}
}

func TestLivenessInterval(t *testing.T) {
	l := liveness{cfg: Config{HeartbeatInterval: 2 * time.Second}.withDefaults()}
	for _, tc := range []struct {
		ms   int64
		want time.Duration
	}{{0, 2 * time.Second}, {-1, 2 * time.Second}, {500, 500 * time.Millisecond}} {
		if got := l.intervalOf(&agentapi.Heartbeat{IntervalMS: tc.ms}); got != tc.want {
			t.Errorf("intervalOf(%d ms) = %v, want %v", tc.ms, got, tc.want)
		}
	}
	if l.scanDue(time.Time{}.Add(time.Second - 1)) {
		t.Error("scan due before a second passed")
	}
	l.scanned(time.Time{}.Add(time.Second))
	if l.scanDue(time.Time{}.Add(1999 * time.Millisecond)) {
		t.Error("scan due within a second of the last")
	}
}
