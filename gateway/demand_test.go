package gateway

import (
	"math"
	"testing"
	"time"
)

// TestDemandMeter: a steady rate reads as itself from the first seconds (the bias correction)
// and once warm; a model no longer asked for fades; the published map is rebuilt at most every
// demandPublishEvery.
func TestDemandMeter(t *testing.T) {
	var d demandMeter
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var rates map[string]float64
	// a at 2/s and b at 0.5/s for 30 s, then b alone for another 3 minutes.
	for ms := 0; ms < 30_000; ms += 500 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		rates = d.observe("a", now)
		if ms%2000 == 0 {
			rates = d.observe("b", now)
		}
	}
	for name, want := range map[string]float64{"a": 2, "b": 0.5} {
		if got := rates[name]; math.Abs(got-want) > 0.15*want {
			t.Errorf("after 30 s, %s at %.3f/s, want %.2f ± 15%%", name, got, want)
		}
	}
	for ms := 30_000; ms < 210_000; ms += 2000 {
		rates = d.observe("b", t0.Add(time.Duration(ms)*time.Millisecond))
	}
	if got := rates["b"]; math.Abs(got-0.5) > 0.05 {
		t.Errorf("b at %.3f/s, want 0.5", got)
	}
	if got := rates["a"]; got > 0.2 {
		t.Errorf("a, not asked for in 3 minutes, at %.3f/s: want it faded below 0.2", got)
	}
	// Within demandPublishEvery the same map comes back, unchanged by the new request.
	now := t0.Add(210 * time.Second)
	first := d.observe("c", now)
	again := d.observe("c", now.Add(demandPublishEvery/2))
	if first["c"] != again["c"] {
		t.Errorf("the published rates changed within %v: %v then %v", demandPublishEvery, first["c"], again["c"])
	}
}
