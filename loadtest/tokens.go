package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// TokenDist is a distribution of token counts, for the prompt and output lengths of the
// synthetic workload. Its text form, which ParseTokenDist reads and String writes, is one of
//
//	N                   fixed:N            every request N tokens
//	uniform:MIN:MAX     uniform integers in [MIN, MAX]
//	normal:MEAN:SD      normal, cut to [1, MEAN + 4 SD]
//	lognormal:MEAN:SD   log-normal with that mean and standard deviation, cut at MEAN + 6 SD
//
// (a long-tailed shape like that of real chat prompts). Samples are always at least 1.
type TokenDist struct {
	// Kind is "fixed", "uniform", "normal" or "lognormal".
	Kind string
	// A and B are N and 0 (fixed), MIN and MAX (uniform), or MEAN and SD (normal, lognormal).
	A, B float64
}

// MaxTokenCount bounds every figure of a TokenDist, so that a typo cannot ask for a prompt of
// a billion tokens.
const MaxTokenCount = 1 << 20

// ParseTokenDist parses the text form of a TokenDist.
func ParseTokenDist(s string) (TokenDist, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ":")
	bad := func(why string) (TokenDist, error) {
		return TokenDist{}, fmt.Errorf("%w: token distribution %q: %s (want N, uniform:MIN:MAX, normal:MEAN:SD or lognormal:MEAN:SD)", ErrBadOptions, s, why)
	}
	nums := make([]float64, 0, 2)
	kind := "fixed"
	args := parts
	if _, err := strconv.ParseFloat(parts[0], 64); err != nil {
		kind, args = strings.ToLower(strings.TrimSpace(parts[0])), parts[1:]
	}
	for _, a := range args {
		v, err := strconv.ParseFloat(strings.TrimSpace(a), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return bad(fmt.Sprintf("%q is not a number", a))
		}
		if v < 0 || v > MaxTokenCount {
			return bad(fmt.Sprintf("%g is outside 0..%d", v, MaxTokenCount))
		}
		nums = append(nums, v)
	}
	d := TokenDist{Kind: kind}
	switch kind {
	case "fixed":
		if len(nums) != 1 {
			return bad("fixed takes one number")
		}
		d.A = nums[0]
		if d.A < 1 {
			return bad("need at least 1 token")
		}
	case "uniform":
		if len(nums) != 2 {
			return bad("uniform takes MIN:MAX")
		}
		d.A, d.B = nums[0], nums[1]
		if d.A < 1 || d.B < d.A {
			return bad("need 1 ≤ MIN ≤ MAX")
		}
	case "normal", "lognormal":
		if len(nums) != 2 {
			return bad(kind + " takes MEAN:SD")
		}
		d.A, d.B = nums[0], nums[1]
		if d.A < 1 {
			return bad("need a mean of at least 1 token")
		}
	default:
		return bad(fmt.Sprintf("unknown kind %q", kind))
	}
	return d, nil
}

// String is the text form ParseTokenDist reads.
func (d TokenDist) String() string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	switch d.Kind {
	case "", "fixed":
		return f(d.A)
	case "uniform", "normal", "lognormal":
		return d.Kind + ":" + f(d.A) + ":" + f(d.B)
	}
	return d.Kind
}

// IsZero reports an unset distribution.
func (d TokenDist) IsZero() bool { return d.Kind == "" && d.A == 0 && d.B == 0 }

// Mean is the distribution's mean before the cut (close to the sample mean: the cuts are far out).
func (d TokenDist) Mean() float64 {
	switch d.Kind {
	case "uniform":
		return (d.A + d.B) / 2
	}
	return d.A
}

// Max is the largest value Sample returns.
func (d TokenDist) Max() int {
	switch d.Kind {
	case "uniform":
		return int(d.B)
	case "normal":
		return int(math.Ceil(d.A + 4*d.B))
	case "lognormal":
		return int(math.Ceil(d.A + 6*d.B))
	}
	return max(int(d.A), 1)
}

// Sample draws one token count from r.
func (d TokenDist) Sample(r *rand.Rand) int {
	var v float64
	switch d.Kind {
	case "uniform":
		v = d.A + math.Floor(r.Float64()*(d.B-d.A+1))
	case "normal":
		v = math.Round(d.A + d.B*r.NormFloat64())
	case "lognormal":
		// With m, s the mean and SD: σ² = ln(1 + s²/m²), μ = ln m − σ²/2.
		s2 := math.Log1p(d.B * d.B / (d.A * d.A))
		v = math.Round(math.Exp(math.Log(d.A) - s2/2 + math.Sqrt(s2)*r.NormFloat64()))
	default:
		v = d.A
	}
	return int(min(max(v, 1), float64(d.Max())))
}
