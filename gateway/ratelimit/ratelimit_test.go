package ratelimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/gateway/ratelimit"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

// limiter is what the gateway asks of either implementation.
type limiter interface {
	Take(ctx context.Context, key string, l ratelimit.Limits, tokens int) (ratelimit.Result, error)
	Settle(ctx context.Context, key string, l ratelimit.Limits, delta int) error
}

var (
	_ limiter = (*ratelimit.Memory)(nil)
	_ limiter = (*ratelimit.Redis)(nil)
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// near reports whether got is within slack below want: Redis runs on the server's clock, which
// moves while the test runs, so its buckets may have refilled a little.
func near(got, want, slack time.Duration) bool { return got <= want && got >= want-slack }

// conformance runs the same sequence on an implementation; slack is how far the real clock may
// have moved the answers (0 for the fake clock).
func conformance(t *testing.T, l limiter, slack time.Duration) {
	ctx := context.Background()
	rpm := ratelimit.Limits{RequestsPerMinute: 3}
	for i, wantRemaining := range []int{2, 1, 0} {
		r, err := l.Take(ctx, "rpm", rpm, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Allowed || r.RemainingRequests != wantRemaining {
			t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, r, wantRemaining)
		}
	}
	r, err := l.Take(ctx, "rpm", rpm, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 3 per minute: one comes back every 20 s; the bucket is full again in 60 s.
	if r.Allowed || r.Refused != ratelimit.Requests || !near(r.RetryAfter, 20*time.Second, slack) ||
		!near(r.ResetRequests, 60*time.Second, slack) || r.RemainingRequests != 0 {
		t.Fatalf("4th request: %+v, want refused on requests, retry in 20s, reset in 60s", r)
	}
	// Another key has its own buckets.
	if r, _ := l.Take(ctx, "other", rpm, 0); !r.Allowed || r.RemainingRequests != 2 {
		t.Fatalf("another key: %+v", r)
	}

	tpm := ratelimit.Limits{TokensPerMinute: 600} // 10 tokens a second
	if r, _ := l.Take(ctx, "tpm", tpm, 400); !r.Allowed || r.RemainingTokens != 200 {
		t.Fatalf("reserve 400 of 600: %+v", r)
	}
	r, _ = l.Take(ctx, "tpm", tpm, 300)
	if r.Allowed || r.Refused != ratelimit.Tokens || !near(r.RetryAfter, 10*time.Second, slack) {
		t.Fatalf("300 more: %+v, want refused on tokens, retry in 10s", r)
	}
	// The response used 100 tokens only: 300 come back.
	if err := l.Settle(ctx, "tpm", tpm, -300); err != nil {
		t.Fatal(err)
	}
	if r, _ := l.Take(ctx, "tpm", tpm, 300); !r.Allowed || r.RemainingTokens < 200 || r.RemainingTokens > 201 {
		t.Fatalf("after giving 300 back: %+v", r)
	}
	// A response that used far more than reserved leaves the bucket in debt: refused until it
	// refills past zero, however small the next estimate.
	if err := l.Settle(ctx, "tpm", tpm, 1000); err != nil {
		t.Fatal(err)
	}
	r, _ = l.Take(ctx, "tpm", tpm, 1)
	if r.Allowed || r.RemainingTokens != 0 || r.RetryAfter < 80*time.Second-slack {
		t.Fatalf("in debt: %+v, want refused for over 80s", r)
	}
	// An estimate above the whole allowance runs once the bucket is full.
	big := ratelimit.Limits{TokensPerMinute: 100}
	if r, _ := l.Take(ctx, "big", big, 5000); !r.Allowed {
		t.Fatalf("estimate over the allowance on a full bucket: %+v", r)
	}
	if r, _ := l.Take(ctx, "big", big, 1); r.Allowed {
		t.Fatalf("after an estimate over the allowance: %+v, want refused", r)
	}
	// No limits: always allowed.
	for range 5 {
		if r, _ := l.Take(ctx, "free", ratelimit.Limits{}, 1<<20); !r.Allowed {
			t.Fatalf("no limits: %+v", r)
		}
	}
}

func TestMemory(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := ratelimit.NewMemory(clk.now)
	conformance(t, m, 0)

	// Refill follows the clock: 20 s gives one request back, not more.
	ctx := context.Background()
	rpm := ratelimit.Limits{RequestsPerMinute: 3}
	clk.advance(20 * time.Second)
	if r, _ := m.Take(ctx, "rpm", rpm, 0); !r.Allowed || r.RemainingRequests != 0 {
		t.Fatalf("after 20s: %+v, want one request back", r)
	}
	if r, _ := m.Take(ctx, "rpm", rpm, 0); r.Allowed {
		t.Fatalf("second request after 20s: %+v, want refused", r)
	}
	clk.advance(10 * time.Minute)
	if r, _ := m.Take(ctx, "rpm", rpm, 0); !r.Allowed || r.RemainingRequests != 2 {
		t.Fatalf("after 10 min: %+v, want a full bucket", r)
	}
}

func TestRedis(t *testing.T) {
	url := storetest.StartRedis(t)
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	defer c.Close()
	conformance(t, ratelimit.NewRedis(c, "t:"), 2*time.Second)

	// Two gateways on one Redis charge the same buckets.
	a, b := ratelimit.NewRedis(c, "shared:"), ratelimit.NewRedis(redis.NewClient(o), "shared:")
	lim := ratelimit.Limits{RequestsPerMinute: 2}
	ctx := context.Background()
	if r, _ := a.Take(ctx, "k", lim, 0); !r.Allowed {
		t.Fatal("first request refused")
	}
	if r, _ := b.Take(ctx, "k", lim, 0); !r.Allowed || r.RemainingRequests != 0 {
		t.Fatalf("second request, other gateway: %+v", r)
	}
	if r, _ := a.Take(ctx, "k", lim, 0); r.Allowed {
		t.Fatalf("third request: %+v, want refused", r)
	}
	// The key expires once the buckets would be full again.
	ttl, err := c.PTTL(ctx, "shared:k").Result()
	if err != nil || ttl <= 0 || ttl > 61*time.Second {
		t.Fatalf("PTTL = %v, %v; want at most a minute", ttl, err)
	}
}
