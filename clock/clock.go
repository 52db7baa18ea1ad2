// Package clock is herd's one time source interface: code that reads the time or waits takes a
// Clock, so tests can hand it a fake one (internal/fakeclock) and run minutes in microseconds.
// It is a leaf: it imports nothing of herd, so every package may use it (deps_test.go).
package clock

import "time"

// Clock tells the time and runs timers.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer started by Clock.AfterFunc.
type Timer interface {
	// Stop prevents the timer from firing; it reports false when it already fired or was stopped.
	Stop() bool
}

// System is the real clock.
type System struct{}

// Now implements Clock.
func (System) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (System) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

var _ Clock = System{}
