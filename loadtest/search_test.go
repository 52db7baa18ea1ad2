package loadtest

import (
	"context"
	"errors"
	"math"
	"testing"
)

// threshold is a fake probe: every rate up to limit passes, every rate above fails.
func threshold(limit float64, calls *[]float64) ProbeFunc {
	return func(_ context.Context, rate float64) (Probe, error) {
		*calls = append(*calls, rate)
		return Probe{Pass: rate <= limit, Attainment: math.Min(1, limit/rate)}, nil
	}
}

func TestSearchCapacity(t *testing.T) {
	cases := []struct {
		name        string
		limit       float64
		o           SearchOptions
		wantBounded bool
		wantZero    bool
	}{
		{"bracket up then bisect", 3.7, SearchOptions{Start: 2, MaxProbes: 10, Tolerance: 0.05}, true, false},
		{"bracket down then bisect", 0.9, SearchOptions{Start: 8, MaxProbes: 10, Tolerance: 0.05}, true, false},
		{"start exactly at the limit", 2, SearchOptions{Start: 2, MaxProbes: 10, Tolerance: 0.05}, true, false},
		{"never passes: below the lowest rate probed", 0.001, SearchOptions{Start: 1, Min: 0.25, MaxProbes: 10}, true, true},
		{"always passes up to Max", 1e9, SearchOptions{Start: 1, Max: 16, MaxProbes: 10}, false, false},
		{"probe budget ends the bracket", 1e9, SearchOptions{Start: 1, MaxProbes: 3}, false, false},
		{"one probe", 5, SearchOptions{Start: 2, MaxProbes: 1}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls []float64
			res, err := SearchCapacity(context.Background(), tc.o, threshold(tc.limit, &calls))
			if err != nil {
				t.Fatal(err)
			}
			o, _ := tc.o.withDefaults()
			if len(res.Probes) != len(calls) || len(calls) > o.MaxProbes {
				t.Fatalf("%d probes recorded, %d run, budget %d", len(res.Probes), len(calls), o.MaxProbes)
			}
			for _, r := range calls {
				if r < o.Min || r > o.Max {
					t.Errorf("probed %v outside [%v, %v]", r, o.Min, o.Max)
				}
			}
			if res.Bounded() != tc.wantBounded {
				t.Errorf("bounded %v, want %v (%+v)", res.Bounded(), tc.wantBounded, res)
			}
			if tc.wantZero {
				if res.CapacityRPS != 0 || res.Best != -1 {
					t.Errorf("capacity %v best %d, want none", res.CapacityRPS, res.Best)
				}
				return
			}
			if res.CapacityRPS > tc.limit || res.Best < 0 || res.Probes[res.Best].RateRPS != res.CapacityRPS || !res.Probes[res.Best].Pass {
				t.Fatalf("capacity %v (best %d) for a limit of %v: %+v", res.CapacityRPS, res.Best, tc.limit, res.Probes)
			}
			if tc.wantBounded {
				if res.FailRPS <= tc.limit || (res.FailRPS-res.CapacityRPS)/res.FailRPS > o.Tolerance {
					t.Errorf("bracket [%v, %v] around %v wider than %v", res.CapacityRPS, res.FailRPS, tc.limit, o.Tolerance)
				}
			}
		})
	}
}

func TestSearchCapacityReplays(t *testing.T) {
	var a, b []float64
	ra, _ := SearchCapacity(context.Background(), SearchOptions{Start: 2}, threshold(5.3, &a))
	rb, _ := SearchCapacity(context.Background(), SearchOptions{Start: 2}, threshold(5.3, &b))
	if len(a) != len(b) || ra.CapacityRPS != rb.CapacityRPS {
		t.Fatalf("two searches differ: %v / %v", a, b)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("probe %d: %v vs %v", i, a[i], b[i])
		}
	}
}

func TestSearchCapacityErrors(t *testing.T) {
	boom := errors.New("cluster would not start")
	n := 0
	res, err := SearchCapacity(context.Background(), SearchOptions{Start: 1}, func(_ context.Context, rate float64) (Probe, error) {
		n++
		if n == 3 {
			return Probe{}, boom
		}
		return Probe{Pass: true}, nil
	})
	if !errors.Is(err, boom) || len(res.Probes) != 2 || res.CapacityRPS != 2 {
		t.Errorf("err %v, probes %d, capacity %v: want the error after two passing probes", err, len(res.Probes), res.CapacityRPS)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SearchCapacity(ctx, SearchOptions{Start: 1}, threshold(1, new([]float64))); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err %v", err)
	}
	for _, o := range []SearchOptions{{}, {Start: -1}, {Start: math.Inf(1)}, {Start: 1, Min: 2}, {Start: 4, Max: 2}} {
		if _, err := SearchCapacity(context.Background(), o, threshold(1, new([]float64))); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%+v: err %v", o, err)
		}
	}
}
