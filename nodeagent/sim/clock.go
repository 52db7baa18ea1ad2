package sim

import (
	"context"
	"math"
	"time"
)

// The simulation's time source is the node's clock.Clock: every simulated duration (model load,
// prefill, each decoded token, a pull) is waited for on it, so a test can hand the node a fake
// clock and run a minute of simulated work in microseconds.

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
	fired := make(chan struct{})
	t := n.clock.AfterFunc(d, func() { close(fired) })
	defer t.Stop()
	select {
	case <-fired:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return errGPULost
	}
}
