package sim

import (
	"context"
	"math"
	"time"
)

// Clock is the simulation's time source. Every simulated duration (model load, prefill, each
// decoded token, a pull) is waited for on it, so a test can hand the node a fake clock and run a
// minute of simulated work in microseconds.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer made by a Clock.
type Timer interface {
	// C delivers the time once when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

var _ Clock = realClock{}

// seconds converts simulated seconds to a Duration, rounding up so that waiting the result never
// leaves a fraction of a token owed.
func seconds(s float64) time.Duration {
	if s <= 0 || math.IsNaN(s) {
		return 0
	}
	if s > float64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Ceil(s * float64(time.Second)))
}

// sleep waits d on the node's clock. It returns early with ctx's error when ctx ends, and with
// errGPULost when lost closes (the GPU under the model fell off the bus).
func (n *Node) sleep(ctx context.Context, lost <-chan struct{}, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		select {
		case <-lost:
			return errGPULost
		default:
			return nil
		}
	}
	t := n.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return errGPULost
	}
}
