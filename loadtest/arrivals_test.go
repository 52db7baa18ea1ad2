package loadtest

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

func TestArrivalsConstantRateMean(t *testing.T) {
	// 200 s at 50 req/s: 10 000 expected, Poisson σ = 100. The schedule is a pure function of the
	// seed, so this is deterministic; the tolerance (4σ) holds for any seed one would pick.
	for _, seed := range []uint64{0, 1, 42, 1 << 40} {
		a, err := Arrivals(seed, 50, 50, 200*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(a); math.Abs(float64(n)-10000) > 400 {
			t.Errorf("seed %d: %d arrivals, want 10000 ± 400", seed, n)
		}
		if !slices.IsSorted(a) {
			t.Errorf("seed %d: arrivals not increasing", seed)
		}
		if a[len(a)-1] >= 200*time.Second || a[0] < 0 {
			t.Errorf("seed %d: arrivals outside [0, 200s)", seed)
		}
		// Exponential gaps: mean 20ms, and the coefficient of variation of an exponential is 1.
		var sum, sq float64
		for i := 1; i < len(a); i++ {
			g := (a[i] - a[i-1]).Seconds()
			sum += g
			sq += g * g
		}
		n := float64(len(a) - 1)
		mean := sum / n
		cv := math.Sqrt(sq/n-mean*mean) / mean
		if math.Abs(mean-0.02) > 0.001 || math.Abs(cv-1) > 0.05 {
			t.Errorf("seed %d: gap mean %.4fs cv %.3f, want 0.02s and 1", seed, mean, cv)
		}
	}
}

func TestArrivalsDeterministic(t *testing.T) {
	a, _ := Arrivals(7, 10, 30, 20*time.Second)
	b, _ := Arrivals(7, 10, 30, 20*time.Second)
	c, _ := Arrivals(8, 10, 30, 20*time.Second)
	if !slices.Equal(a, b) {
		t.Error("same seed gave different schedules")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds gave the same schedule")
	}
}

func TestArrivalsRamp(t *testing.T) {
	// A ramp 0 → 100 over 100 s: Λ(50 s) = 1250 in the first half, 3750 in the second.
	tests := []struct {
		from, to           float64
		firstHalf, secHalf float64
	}{
		{0, 100, 1250, 3750},
		{100, 0, 3750, 1250},
		{20, 60, 1500, 2500},
	}
	for _, tt := range tests {
		a, err := Arrivals(3, tt.from, tt.to, 100*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		first := 0
		for _, x := range a {
			if x < 50*time.Second {
				first++
			}
		}
		second := len(a) - first
		if math.Abs(float64(first)-tt.firstHalf) > 4*math.Sqrt(tt.firstHalf) ||
			math.Abs(float64(second)-tt.secHalf) > 4*math.Sqrt(tt.secHalf) {
			t.Errorf("ramp %v→%v: halves %d/%d, want ≈ %v/%v", tt.from, tt.to, first, second, tt.firstHalf, tt.secHalf)
		}
	}
}

func TestArrivalsRejectsBadInput(t *testing.T) {
	for _, c := range []struct {
		from, to float64
		d        time.Duration
	}{{0, 0, time.Second}, {-1, 5, time.Second}, {5, 5, 0}, {1e9, 1e9, time.Hour}} {
		if _, err := Arrivals(1, c.from, c.to, c.d); !errors.Is(err, ErrBadOptions) {
			t.Errorf("Arrivals(%v, %v, %v) err = %v, want ErrBadOptions", c.from, c.to, c.d, err)
		}
	}
}

func TestParseRamp(t *testing.T) {
	tests := []struct {
		in       string
		from, to float64
		ok       bool
	}{
		{"10:100", 10, 100, true},
		{" 5 : 0.5 ", 5, 0.5, true},
		{"0:50", 0, 50, true},
		{"10", 0, 0, false},
		{"a:b", 0, 0, false},
		{"0:0", 0, 0, false},
		{"-1:5", 0, 0, false},
	}
	for _, tt := range tests {
		from, to, err := ParseRamp(tt.in)
		if (err == nil) != tt.ok || from != tt.from || to != tt.to {
			t.Errorf("ParseRamp(%q) = %v, %v, %v", tt.in, from, to, err)
		}
	}
}
