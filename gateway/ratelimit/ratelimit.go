// Package ratelimit counts each tenant's requests and tokens per minute, in memory (one gateway)
// or in Redis (several gateways sharing the counters).
//
// Each limit is a token bucket that holds a minute's allowance and refills continuously (a limit
// of 60 requests per minute gives one back every second), which is how OpenAI describes its own
// limits: a client is never made to wait for a window boundary, and a burst of a full minute's
// allowance is allowed once.
//
// Tokens are reserved before a request runs (the caller's estimate) and settled after it, with
// the count the backend reported in usage: the difference is taken or given back. A bucket may go
// below zero when a response used more than was reserved; the tenant then waits for it to refill.
// A request whose estimate is larger than the whole per-minute allowance is let through once
// the bucket is full (it would otherwise never run), and leaves the bucket in debt.
//
// Both implementations run the same arithmetic (step below, and its Lua twin in redis.go), so a
// test table holds them to the same answers.
package ratelimit

import (
	"context"
	"math"
	"sync"
	"time"
)

// Limits are a tenant's allowances per minute; 0 means no limit on that dimension.
type Limits struct {
	RequestsPerMinute int
	TokensPerMinute   int
}

// Zero reports whether l limits nothing.
func (l Limits) Zero() bool { return l.RequestsPerMinute <= 0 && l.TokensPerMinute <= 0 }

// Which limit refused a request, as OpenAI names it in error.type.
const (
	Requests = "requests"
	Tokens   = "tokens"
)

// Result is the state of a tenant's buckets after Take, what OpenAI's x-ratelimit-* headers say.
type Result struct {
	// Allowed is true when the request was charged; otherwise nothing was.
	Allowed bool
	// Refused is Requests or Tokens when !Allowed: the limit that needs the longer wait.
	Refused string
	// RemainingRequests and RemainingTokens are what is left now (never negative).
	RemainingRequests, RemainingTokens int
	// ResetRequests and ResetTokens are how long until each bucket is full again.
	ResetRequests, ResetTokens time.Duration
	// RetryAfter, when !Allowed, is how long until the request would fit.
	RetryAfter time.Duration
}

// state is one tenant's two buckets at a moment (milliseconds since the Unix epoch).
type state struct {
	requests, tokens float64
	at               int64
}

const minuteMS = 60_000

// step refills st to now, then charges one request and tokens tokens if both fit (take) or moves
// the token bucket by -delta (settle, take false). It returns the result and the new state.
func step(st state, fresh bool, now int64, l Limits, tokens, delta int, take bool) (Result, state) {
	rpm, tpm := float64(max(l.RequestsPerMinute, 0)), float64(max(l.TokensPerMinute, 0))
	if fresh {
		st = state{requests: rpm, tokens: tpm, at: now}
	}
	elapsed := float64(max(now-st.at, 0))
	st.requests = math.Min(rpm, st.requests+elapsed*rpm/minuteMS)
	st.tokens = math.Min(tpm, st.tokens+elapsed*tpm/minuteMS)
	st.at = now
	res := Result{Allowed: true}
	if take {
		var waitReq, waitTok float64
		if rpm > 0 && st.requests < 1 {
			waitReq = (1 - st.requests) * minuteMS / rpm
		}
		if tpm > 0 {
			need := math.Max(1, math.Min(float64(tokens), tpm))
			if st.tokens < need {
				waitTok = (need - st.tokens) * minuteMS / tpm
			}
		}
		switch {
		case waitReq > 0 && waitReq >= waitTok:
			res.Allowed, res.Refused, res.RetryAfter = false, Requests, ceilMS(waitReq)
		case waitTok > 0:
			res.Allowed, res.Refused, res.RetryAfter = false, Tokens, ceilMS(waitTok)
		default:
			if rpm > 0 {
				st.requests--
			}
			if tpm > 0 {
				st.tokens -= float64(tokens)
			}
		}
	} else if tpm > 0 {
		st.tokens = math.Min(tpm, st.tokens-float64(delta))
	}
	res.RemainingRequests, res.RemainingTokens = int(math.Max(st.requests, 0)), int(math.Max(st.tokens, 0))
	if rpm > 0 {
		res.ResetRequests = ceilMS((rpm - st.requests) * minuteMS / rpm)
	}
	if tpm > 0 {
		res.ResetTokens = ceilMS((tpm - st.tokens) * minuteMS / tpm)
	}
	return res, st
}

func ceilMS(ms float64) time.Duration { return time.Duration(math.Ceil(ms)) * time.Millisecond }

// Memory keeps the counters in this process. The zero value is not usable; use NewMemory.
type Memory struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]state
	// swept is when idle entries were last dropped.
	swept int64
}

// NewMemory returns counters in memory that read the time from now (time.Now when nil).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, m: make(map[string]state)}
}

// Take charges one request and tokens tokens to key if both fit under l.
func (m *Memory) Take(_ context.Context, key string, l Limits, tokens int) (Result, error) {
	return m.apply(key, l, tokens, 0, true), nil
}

// Settle moves key's token bucket by -delta (delta = used − reserved).
func (m *Memory) Settle(_ context.Context, key string, l Limits, delta int) error {
	m.apply(key, l, 0, delta, false)
	return nil
}

func (m *Memory) apply(key string, l Limits, tokens, delta int, take bool) Result {
	now := m.now().UnixMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.m[key]
	res, st := step(st, !ok, now, l, tokens, delta, take)
	m.m[key] = st
	// A bucket not in debt and untouched for a minute is full again, the same as a missing one:
	// drop such entries now and then, so keys that come and go do not grow the map.
	if now-m.swept > minuteMS {
		for k, s := range m.m {
			if now-s.at > minuteMS && s.requests >= 0 && s.tokens >= 0 {
				delete(m.m, k)
			}
		}
		m.swept = now
	}
	return res
}
