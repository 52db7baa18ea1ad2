package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// fakeClock is a Clock under the test's control. In auto mode every timer fires at once and moves
// the clock forward by its duration, so a sequential request runs its whole simulated timeline
// instantly and the clock afterwards tells how long it took. In manual mode timers wait for
// Advance or AdvanceToNext.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	auto   bool
	timers []*fakeTimer
}

type fakeTimer struct {
	c     *fakeClock
	at    time.Time
	f     func()
	fired bool
}

var testEpoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func newAutoClock() *fakeClock   { return &fakeClock{now: testEpoch, auto: true} }
func newManualClock() *fakeClock { return &fakeClock{now: testEpoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc starts a timer; f runs when it fires (at once, in auto mode). The fake calls f on the
// goroutine that moves the clock: the node's f only closes a channel.
func (c *fakeClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if c.auto {
		c.now = t.at
		t.fired = true
		f()
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.fired {
		return false
	}
	t.c.timers = slices.DeleteFunc(t.c.timers, func(x *fakeTimer) bool { return x == t })
	return true
}

// Advance moves the clock by d and fires the timers due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fireLocked()
}

// AdvanceToNext moves the clock to the earliest pending timer and fires it; false if none.
func (c *fakeClock) AdvanceToNext() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return false
	}
	next := c.timers[0].at
	for _, t := range c.timers {
		if t.at.Before(next) {
			next = t.at
		}
	}
	if next.After(c.now) {
		c.now = next
	}
	c.fireLocked()
	return true
}

func (c *fakeClock) fireLocked() {
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.fired = true
		t.f()
		return true
	})
}

// Pending counts timers waiting to fire.
func (c *fakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

var _ clock.Clock = (*fakeClock)(nil)

// eventually polls cond until it holds, failing the test after a generous real-time bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// drive advances a manual clock, timer by timer, until done closes.
func drive(t *testing.T, c *fakeClock, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out driving the clock")
		}
		if !c.AdvanceToNext() {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

func gpu(t *testing.T, key string) models.GPUProfile {
	t.Helper()
	p, ok := models.LookupGPU(key)
	if !ok {
		t.Fatalf("no GPU %q", key)
	}
	return p
}

func spec(t *testing.T, name string) models.ModelSpec {
	t.Helper()
	s, ok := models.LookupModel(name)
	if !ok {
		t.Fatalf("no model %q", name)
	}
	return s
}

func newNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// call serves one request through a ResponseRecorder (which flushes into its buffer).
func call(ctx context.Context, n *Node, endpoint string, body any) *httptest.ResponseRecorder {
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		b, _ = json.Marshal(v)
	}
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(b))
	w := httptest.NewRecorder()
	n.ServeInference(w, r, endpoint, b)
	return w
}

func chatBody(model, content string, extra map[string]any) map[string]any {
	b := map[string]any{"model": model, "messages": []map[string]any{{"role": "user", "content": content}}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func decodeJSON[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func modelInfo(t *testing.T, n *Node, name string) (agentapi.Model, bool) {
	t.Helper()
	ms, err := n.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return agentapi.Model{}, false
}

func gpuSamples(t *testing.T, n *Node) []agentapi.GPU {
	t.Helper()
	gs, err := n.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return gs
}
