// Package fakeclock is a clock for tests that moves only when the test advances it, with timers
// that fire as it passes them: code that waits, times out or measures runs the same on a loaded
// machine as on an idle one, and a minute of it takes microseconds.
//
// It implements clock.Clock, herd's one clock interface.
package fakeclock

import (
	"sync"
	"time"

	"github.com/herd-llm/herd/clock"
)

// Clock is a fake clock. It is safe for concurrent use.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*Timer
}

// Timer is a timer started by Clock.AfterFunc.
type Timer struct {
	c       *Clock
	at      time.Time
	f       func()
	stopped bool
}

// New returns a clock that reads start until it is advanced.
func New(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc calls f, in its own goroutine as time.AfterFunc does, once the clock has been
// advanced d past now.
func (c *Clock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &Timer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// Stop prevents the timer from firing; it reports false when it already fired or was stopped.
func (t *Timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves the clock by d and starts the timers that came due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*Timer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

var _ clock.Clock = (*Clock)(nil)
