package loadtest

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := time.Millisecond
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample any p", []time.Duration{7 * ms}, 99, 7 * ms},
		{"p50 of 1..100 is 50", hundred, 50, 50 * ms},
		{"p90 of 1..100 is 90", hundred, 90, 90 * ms},
		{"p99 of 1..100 is 99", hundred, 99, 99 * ms},
		{"p100 is the max", hundred, 100, 100 * ms},
		{"tiny p is the min", hundred, 0.001, 1 * ms},
		{"p50 of two is the lower", []time.Duration{1 * ms, 2 * ms}, 50, 1 * ms},
		{"p51 of two is the upper", []time.Duration{1 * ms, 2 * ms}, 51, 2 * ms},
		{"p99 of ten is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
		{"p90 of ten is the ninth", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(p=%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestDistOfSortsAndSummarises(t *testing.T) {
	d := []time.Duration{5 * time.Millisecond, 1 * time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	got := distOf(d)
	want := Dist{N: 5, Mean: 3, P50: 3, P90: 5, P99: 5, Max: 5}
	if got != want {
		t.Errorf("distOf = %+v, want %+v", got, want)
	}
	if zero := distOf(nil); zero != (Dist{}) {
		t.Errorf("distOf(nil) = %+v, want zero", zero)
	}
}

func TestSummarizeGoodputAndErrors(t *testing.T) {
	ms := time.Millisecond
	samples := []Sample{
		// meets both SLOs: TTFT 100ms, TPOT (1100-100)/10 = 100ms
		{Start: 0, TTFT: 100 * ms, Latency: 1100 * ms, OutputTokens: 11, Streamed: true, Node: "a"},
		// TTFT too slow
		{Start: 100 * ms, TTFT: 600 * ms, Latency: 1600 * ms, OutputTokens: 11, Streamed: true, Node: "b"},
		// TPOT too slow: (2100-100)/10 = 200ms
		{Start: 200 * ms, TTFT: 100 * ms, Latency: 2100 * ms, OutputTokens: 11, Streamed: true, Node: "a"},
		// failed
		{Start: 300 * ms, Latency: 10 * ms, Err: ErrHTTP5xx, ErrMsg: "HTTP 503: no node", Node: "b"},
		{Start: 400 * ms, Latency: 5 * ms, Err: ErrConnect, ErrMsg: "refused"},
	}
	o := Options{Target: "http://x", RPS: 5, Stream: true, SLOTTFT: 500 * ms, SLOTPOT: 150 * ms}
	r := summarize(samples, 2*time.Second, o)
	if r.Sent != 5 || r.Succeeded != 3 || r.Failed != 2 {
		t.Fatalf("sent/ok/failed = %d/%d/%d, want 5/3/2", r.Sent, r.Succeeded, r.Failed)
	}
	if r.GoodRequests != 1 || r.GoodputRPS != 0.5 {
		t.Errorf("good = %d (%v/s), want 1 (0.5/s)", r.GoodRequests, r.GoodputRPS)
	}
	if r.ThroughputRPS != 1.5 || r.OutputTokS != 16.5 {
		t.Errorf("throughput = %v req/s %v tok/s, want 1.5 and 16.5", r.ThroughputRPS, r.OutputTokS)
	}
	if r.Errors["http_5xx"] != 1 || r.Errors["connect"] != 1 || len(r.Errors) != 2 {
		t.Errorf("errors = %v", r.Errors)
	}
	if r.Nodes["a"] != 2 || r.Nodes["b"] != 2 {
		t.Errorf("nodes = %v", r.Nodes)
	}
	if r.TPOT.N != 3 || r.TPOT.P50 != 100 || r.TPOT.Max != 200 {
		t.Errorf("TPOT = %+v", r.TPOT)
	}
	// No SLO: every success is good.
	o.SLOTTFT, o.SLOTPOT = 0, 0
	if r := summarize(samples, 2*time.Second, o); r.GoodRequests != 3 {
		t.Errorf("without SLO good = %d, want 3", r.GoodRequests)
	}
}

func TestSampleTPOT(t *testing.T) {
	tests := []struct {
		s    Sample
		want time.Duration
	}{
		{Sample{Streamed: true, TTFT: 10, Latency: 110, OutputTokens: 11}, 10},
		{Sample{Streamed: true, TTFT: 10, Latency: 110, OutputTokens: 1}, 0},
		{Sample{Streamed: false, TTFT: 110, Latency: 110, OutputTokens: 11}, 0},
	}
	for _, tt := range tests {
		if got := tt.s.TPOT(); got != tt.want {
			t.Errorf("TPOT(%+v) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestMsRounding(t *testing.T) {
	if got := ms(1234567 * time.Nanosecond); math.Abs(got-1.235) > 1e-12 {
		t.Errorf("ms = %v, want 1.235", got)
	}
}
