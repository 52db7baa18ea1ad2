package admission

import (
	"context"
	"testing"
	"time"

	"github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/internal/fakeclock"
)

// stepClock is a Clock that moves only when told to (Advance), over the shared fake clock.
type stepClock struct{ *fakeclock.Clock }

var _ clock.Clock = (*stepClock)(nil)

func newStepClock() *stepClock {
	return &stepClock{fakeclock.New(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))}
}

// eventually polls cond until it holds; the bound guards against a hang, it is not a timing
// assertion.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
