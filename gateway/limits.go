package gateway

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/herd-llm/herd/gateway/ratelimit"
)

// Per-tenant rate limits on the inference routes, as OpenAI applies them: requests per minute
// and tokens per minute, 429 rate_limit_exceeded (error.type "requests" or "tokens") with
// Retry-After, and the x-ratelimit-* headers on every answer to a limited key.
//
// Decisions:
//   - A request reserves its prompt estimate (about four bytes of body per token, as the
//     scheduler estimates) before it runs; when it ends, the reservation is settled against the
//     total_tokens of the usage the backend reported (or its prompt and completion counts added
//     up: Ollama's prompt_eval_count and eval_count), as the call's meter read it (a stream without usage keeps the estimate;
//     a request the gateway refused before any node ran it gives its tokens back).
//   - Batch lines are not charged: they only run in capacity interactive traffic leaves free.
//   - Counters are in memory, or in Redis with Config.RedisURL so every gateway charges the same
//     buckets. When Redis cannot be reached the request is let through (and a warning logged):
//     a rate limiter that is down must not take inference down with it.

// rateLimiter counts requests and tokens per tenant (ratelimit.Memory, ratelimit.Redis).
type rateLimiter interface {
	Take(ctx context.Context, key string, l ratelimit.Limits, tokens int) (ratelimit.Result, error)
	Settle(ctx context.Context, key string, l ratelimit.Limits, delta int) error
}

var (
	_ rateLimiter = (*ratelimit.Memory)(nil)
	_ rateLimiter = (*ratelimit.Redis)(nil)
)

func (t *tenant) limits() ratelimit.Limits {
	return ratelimit.Limits{RequestsPerMinute: t.rpm, TokensPerMinute: t.tpm}
}

// OpenAI's rate-limit headers.
const (
	hdrLimitRequests     = "X-Ratelimit-Limit-Requests"
	hdrLimitTokens       = "X-Ratelimit-Limit-Tokens"
	hdrRemainingRequests = "X-Ratelimit-Remaining-Requests"
	hdrRemainingTokens   = "X-Ratelimit-Remaining-Tokens"
	hdrResetRequests     = "X-Ratelimit-Reset-Requests"
	hdrResetTokens       = "X-Ratelimit-Reset-Tokens"
)

// resetText writes a duration the way OpenAI's reset headers do ("1s", "6m0s", "20ms").
func resetText(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(10 * time.Millisecond)
	}
	return d.String()
}

// setLimitHeaders writes the x-ratelimit-* headers of the limits t has.
func setLimitHeaders(h http.Header, t *tenant, r ratelimit.Result) {
	if t.rpm > 0 {
		h[hdrLimitRequests] = []string{strconv.Itoa(t.rpm)}
		h[hdrRemainingRequests] = []string{strconv.Itoa(r.RemainingRequests)}
		h[hdrResetRequests] = []string{resetText(r.ResetRequests)}
	}
	if t.tpm > 0 {
		h[hdrLimitTokens] = []string{strconv.Itoa(t.tpm)}
		h[hdrRemainingTokens] = []string{strconv.Itoa(r.RemainingTokens)}
		h[hdrResetTokens] = []string{resetText(r.ResetTokens)}
	}
}

// errRateLimited is OpenAI's 429 for a key over its limit.
func errRateLimited(t *tenant, r ratelimit.Result, requested int) *APIError {
	wait := resetText(r.RetryAfter)
	var msg string
	if r.Refused == ratelimit.Tokens {
		msg = fmt.Sprintf("Rate limit reached for key `%s` on tokens per min (TPM): Limit %d, Used %d, Requested %d. Please try again in %s.",
			t.name, t.tpm, t.tpm-r.RemainingTokens, requested, wait)
	} else {
		msg = fmt.Sprintf("Rate limit reached for key `%s` on requests per min (RPM): Limit %d, Used %d, Requested 1. Please try again in %s.",
			t.name, t.rpm, t.rpm-r.RemainingRequests, wait)
	}
	return &APIError{Status: http.StatusTooManyRequests, Type: r.Refused, Code: "rate_limit_exceeded", Message: msg,
		RetryAfter: max(1, int(math.Ceil(r.RetryAfter.Seconds())))}
}

// admitRate charges the call's tenant one request and its prompt estimate; a refusal is the 429
// to answer. It writes the x-ratelimit-* headers either way.
func (k *call) admitRate(h http.Header) *APIError {
	t := k.tenant
	if t == nil || (t.rpm <= 0 && t.tpm <= 0) {
		return nil
	}
	s := k.s
	est := k.info.promptBytes / 4
	r, err := s.core.limiter.Take(k.ctx, t.name, t.limits(), est)
	if err != nil {
		s.log.Warn("rate limiter unavailable: request let through", "tenant", t.name, "err", err)
		return nil
	}
	setLimitHeaders(h, t, r)
	if !r.Allowed {
		s.metrics.rateLimited.WithLabelValues(t.name, r.Refused).Inc()
		h["Retry-After-Ms"] = []string{strconv.FormatInt(r.RetryAfter.Milliseconds(), 10)}
		return errRateLimited(t, r, est)
	}
	if t.tpm > 0 {
		k.reserved, k.charged = est, true
	}
	return nil
}

// settleRate corrects the call's token reservation with the usage the backend reported.
func (k *call) settleRate(res result) {
	t := k.tenant
	if t == nil || t.tpm <= 0 || !k.charged {
		return
	}
	used := k.reserved
	switch u := k.mt.usage(); {
	case res.err != nil:
		used = 0 // no node ran it
	case u.seen:
		used = int(u.total)
	}
	if used > 0 {
		k.s.metrics.tenantTokens.WithLabelValues(t.name).Add(float64(used))
	}
	if delta := used - k.reserved; delta != 0 {
		// The client may be gone: the correction is still owed.
		if err := k.s.core.limiter.Settle(context.WithoutCancel(k.ctx), t.name, t.limits(), delta); err != nil {
			k.s.log.Warn("rate limiter unavailable: token usage not recorded", "tenant", t.name, "err", err)
		}
	}
}
