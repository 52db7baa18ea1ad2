package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// maxArrivals bounds one schedule, so a typo in a rate cannot exhaust memory.
const maxArrivals = 5_000_000

// Arrivals returns the send times, as offsets from the start, of a Poisson process whose rate
// goes linearly from `from` to `to` requests/s over d (from == to: a constant rate). The same seed
// gives the same schedule.
//
// It uses time rescaling: with Λ(t) = ∫₀ᵗ λ, the points Λ⁻¹(S₁), Λ⁻¹(S₂), … are the process when
// S is a unit-rate Poisson process, so one stream of exponential gaps serves every ramp exactly
// (no thinning, no rejected draws).
func Arrivals(seed uint64, from, to float64, d time.Duration) ([]time.Duration, error) {
	if from < 0 || to < 0 || d <= 0 || (from == 0 && to == 0) {
		return nil, fmt.Errorf("%w: arrivals need non-negative rates, not both zero, and a positive duration", ErrBadOptions)
	}
	D := d.Seconds()
	expected := (from + to) / 2 * D
	if expected > maxArrivals {
		return nil, fmt.Errorf("%w: %.0f requests expected, more than the %d one run may schedule", ErrBadOptions, expected, maxArrivals)
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	// Λ(t) = a·t + k·t², k = (b−a)/(2D). Solving Λ(t) = S with the form 2S/(a+√(a²+4kS)) stays
	// exact for k → 0 and for a = 0.
	a, k := from, (to-from)/(2*D)
	out := make([]time.Duration, 0, int(expected*1.1)+16)
	s := 0.0
	for len(out) < maxArrivals {
		s += rng.ExpFloat64()
		disc := a*a + 4*k*s
		if disc < 0 { // a falling ramp has no more arrivals past Λ(D)
			break
		}
		t := 2 * s / (a + math.Sqrt(disc))
		if t >= D {
			break
		}
		out = append(out, time.Duration(t*float64(time.Second)))
	}
	return out, nil
}
