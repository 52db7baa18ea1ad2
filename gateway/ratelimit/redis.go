package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keeps the counters in Redis, so every gateway of a cluster charges the same buckets.
// One script call per Take or Settle does the refill and the charge atomically; the time is the
// Redis server's (TIME), so gateways whose clocks differ still agree. A tenant's key expires once
// its buckets would be full again, so idle tenants cost no memory.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis returns counters kept in c under prefix ("herd:ratelimit:" when empty).
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	if prefix == "" {
		prefix = "herd:ratelimit:"
	}
	return &Redis{c: c, prefix: prefix}
}

// OpenRedis connects to the Redis server at url ("redis://host:port/db").
func OpenRedis(ctx context.Context, url string) (*Redis, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: redis url: %w", err)
	}
	c := redis.NewClient(o)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("ratelimit: redis: %w", err)
	}
	return NewRedis(c, ""), nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }

// stepScript is step (ratelimit.go) in Lua. ARGV: rpm, tpm, tokens, delta, take (1/0).
// It returns allowed, refused, remaining requests, remaining tokens, reset requests (ms), reset
// tokens (ms), retry after (ms).
var stepScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm = math.max(tonumber(ARGV[1]), 0), math.max(tonumber(ARGV[2]), 0)
local tokens, delta, take = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local v = redis.call('HMGET', KEYS[1], 'r', 't', 'at')
local lr, lt, at = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
if not at then lr, lt, at = rpm, tpm, now end
lr, lt = lr or rpm, lt or tpm
local el = math.max(now - at, 0)
lr = math.min(rpm, lr + el * rpm / 60000)
lt = math.min(tpm, lt + el * tpm / 60000)
local allowed, refused, retry = 1, '', 0
if take then
  local wr, wt = 0, 0
  if rpm > 0 and lr < 1 then wr = (1 - lr) * 60000 / rpm end
  if tpm > 0 then
    local need = math.max(1, math.min(tokens, tpm))
    if lt < need then wt = (need - lt) * 60000 / tpm end
  end
  if wr > 0 and wr >= wt then allowed, refused, retry = 0, 'requests', math.ceil(wr)
  elseif wt > 0 then allowed, refused, retry = 0, 'tokens', math.ceil(wt)
  else
    if rpm > 0 then lr = lr - 1 end
    if tpm > 0 then lt = lt - tokens end
  end
elseif tpm > 0 then
  lt = math.min(tpm, lt - delta)
end
local rr, rt = 0, 0
if rpm > 0 then rr = math.ceil((rpm - lr) * 60000 / rpm) end
if tpm > 0 then rt = math.ceil((tpm - lt) * 60000 / tpm) end
redis.call('HSET', KEYS[1], 'r', tostring(lr), 't', tostring(lt), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.max(rr, rt) + 1000)
return {allowed, refused, math.floor(math.max(lr, 0)), math.floor(math.max(lt, 0)), rr, rt, retry}`)

func (r *Redis) run(ctx context.Context, key string, l Limits, tokens, delta int, take bool) (Result, error) {
	flag := 0
	if take {
		flag = 1
	}
	vals, err := stepScript.Run(ctx, r.c, []string{r.prefix + key}, l.RequestsPerMinute, l.TokensPerMinute, tokens, delta, flag).Slice()
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(vals) != 7 {
		return Result{}, fmt.Errorf("ratelimit: redis: script returned %d values", len(vals))
	}
	n := func(i int) int64 { v, _ := vals[i].(int64); return v }
	refused, _ := vals[1].(string)
	return Result{
		Allowed: n(0) == 1, Refused: refused,
		RemainingRequests: int(n(2)), RemainingTokens: int(n(3)),
		ResetRequests: time.Duration(n(4)) * time.Millisecond, ResetTokens: time.Duration(n(5)) * time.Millisecond,
		RetryAfter: time.Duration(n(6)) * time.Millisecond,
	}, nil
}

// Take charges one request and tokens tokens to key if both fit under l.
func (r *Redis) Take(ctx context.Context, key string, l Limits, tokens int) (Result, error) {
	return r.run(ctx, key, l, tokens, 0, true)
}

// Settle moves key's token bucket by -delta (delta = used − reserved).
func (r *Redis) Settle(ctx context.Context, key string, l Limits, delta int) error {
	_, err := r.run(ctx, key, l, 0, delta, false)
	return err
}
