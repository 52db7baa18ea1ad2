package registry

import (
	"testing"
	"time"
)

// TestBreaker drives one breaker through its states on its own (TestCircuitBreaker checks the
// same rules through the Registry): each step is an event at an offset from the start, and what
// the breaker says after it.
func TestBreaker(t *testing.T) {
	const openFor = 10 * time.Second
	type step struct {
		at      time.Duration
		do      string // fail, ok, acquire, release, none
		changed bool   // the event's result: opened, closed or changed the snapshot
		circuit string
		out     bool // keepsOut
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"zero value is closed and clean", []step{
			{do: "none", circuit: CircuitClosed},
			{do: "acquire", circuit: CircuitClosed},
			{do: "release", circuit: CircuitClosed},
			{do: "ok", circuit: CircuitClosed},
		}},
		{"opens at the third consecutive failure", []step{
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", changed: true, circuit: CircuitOpen, out: true},
			{at: time.Second, do: "fail", circuit: CircuitOpen, out: true}, // late: no extension
			{at: openFor - time.Nanosecond, do: "none", circuit: CircuitOpen, out: true},
			{at: openFor, do: "none", circuit: CircuitHalfOpen},
		}},
		{"a success resets the count", []step{
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "ok", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", circuit: CircuitClosed},
			{do: "fail", changed: true, circuit: CircuitOpen, out: true},
		}},
		{"a success while half-open closes, probe out or not", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail", changed: true, circuit: CircuitOpen, out: true},
			{at: openFor, do: "ok", changed: true, circuit: CircuitClosed}, // no probe out yet
		}},
		{"probe out keeps the node out; released, the next may probe", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail", changed: true, circuit: CircuitOpen, out: true},
			{at: openFor, do: "acquire", changed: true, circuit: CircuitHalfOpen, out: true},
			{at: openFor, do: "acquire", circuit: CircuitHalfOpen, out: true}, // not a second probe
			{at: openFor, do: "release", changed: true, circuit: CircuitHalfOpen},
			{at: openFor, do: "acquire", changed: true, circuit: CircuitHalfOpen, out: true},
			{at: openFor, do: "ok", changed: true, circuit: CircuitClosed},
			{at: openFor, do: "release", circuit: CircuitClosed},
		}},
		{"a failed probe opens again at once", []step{
			{do: "fail"}, {do: "fail"}, {do: "fail", changed: true, circuit: CircuitOpen, out: true},
			{at: openFor, do: "acquire", changed: true, circuit: CircuitHalfOpen, out: true},
			{at: openFor, do: "fail", changed: true, circuit: CircuitOpen, out: true},
			{at: 2*openFor - time.Nanosecond, do: "none", circuit: CircuitOpen, out: true},
			{at: 2 * openFor, do: "none", circuit: CircuitHalfOpen},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
			var b breaker
			for i, s := range tc.steps {
				now := start.Add(s.at)
				var changed bool
				switch s.do {
				case "fail":
					changed, _ = b.failure(now, 3, openFor)
				case "ok":
					changed = b.success(now)
				case "acquire":
					changed = b.acquire(now)
				case "release":
					changed = b.release()
				}
				if changed != s.changed {
					t.Errorf("step %d (%s): changed %v, want %v", i, s.do, changed, s.changed)
				}
				if s.circuit != "" {
					if got := b.circuit(now); got != s.circuit {
						t.Errorf("step %d (%s): circuit %s, want %s", i, s.do, got, s.circuit)
					}
					out, until := b.keepsOut(now)
					if out != s.out {
						t.Errorf("step %d (%s): keepsOut %v, want %v", i, s.do, out, s.out)
					}
					if open := s.circuit == CircuitOpen; open != !until.IsZero() {
						t.Errorf("step %d (%s): keepsOut until %v with circuit %s", i, s.do, until, s.circuit)
					}
				}
			}
			if closed := b.circuit(start.Add(time.Hour)) == CircuitClosed; closed && b.dirty.Load() && b.failures == 0 {
				t.Error("a closed breaker with no failure is left dirty: the hot path takes the lock")
			}
		})
	}
}
