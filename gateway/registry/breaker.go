package registry

import (
	"sync"
	"sync/atomic"
	"time"
)

// Circuit-breaker states as NodeView.Circuit reports them.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)

type circuitState uint8

const (
	stateClosed circuitState = iota
	stateOpen
)

// breaker is one node's circuit breaker, judged on this gateway's own requests to the node (each
// gateway judges its own connections, so breakers are never shared between gateways).
//
//   - Closed: requests flow. CircuitFailures consecutive failures (ReportFailure) open it for
//     CircuitOpenFor; a success resets the count.
//   - Open: the node gets no requests. Late verdicts of requests sent before it opened change
//     nothing (they say nothing about the node now).
//   - Half-open, once the open period is over: the first request (acquire) is the probe, and
//     until it is reported or released the snapshot shows the circuit open, so only one request
//     tests a node that was failing. A successful probe closes the circuit, a failed one opens it
//     again at once, and a probe released without a verdict lets the next request probe.
//
// The zero value is a closed breaker. The hot path (a request to a healthy node) costs one atomic
// load: dirty is false while the circuit is closed with no failure counted.
type breaker struct {
	dirty atomic.Bool

	mu        sync.Mutex // guards the fields below
	state     circuitState
	failures  int
	openUntil time.Time
	probing   bool // a half-open probe request is in flight
}

// circuitLocked returns the effective state at now; b.mu must be held.
func (b *breaker) circuitLocked(now time.Time) string {
	if b.state == stateClosed {
		return CircuitClosed
	}
	if now.Before(b.openUntil) {
		return CircuitOpen
	}
	return CircuitHalfOpen
}

// circuit returns the state at now (CircuitClosed, CircuitOpen or CircuitHalfOpen).
func (b *breaker) circuit(now time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.circuitLocked(now)
}

// keepsOut reports whether the breaker keeps the node out of the schedule at now (open, or
// half-open with its probe out), and until when, if that ends by time alone (zero otherwise).
func (b *breaker) keepsOut(now time.Time) (out bool, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.circuitLocked(now) {
	case CircuitOpen:
		return true, b.openUntil
	case CircuitHalfOpen:
		return b.probing, time.Time{}
	}
	return false, time.Time{}
}

// acquire counts a request sent at now; it reports whether that changed what the snapshot shows
// (the request is a half-open circuit's probe).
func (b *breaker) acquire(now time.Time) (changed bool) {
	if !b.dirty.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.circuitLocked(now) == CircuitHalfOpen && !b.probing {
		b.probing = true
		return true
	}
	return false
}

// release ends a request without a verdict; it reports whether that changed what the snapshot
// shows (a probe was out: the next request probes).
func (b *breaker) release() (changed bool) {
	if !b.dirty.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.probing {
		b.probing = false
		return true
	}
	return false
}

// success records a request answered at now; it reports whether that closed the circuit (a
// half-open probe succeeded).
func (b *breaker) success(now time.Time) (closed bool) {
	if !b.dirty.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.circuitLocked(now) {
	case CircuitClosed:
		b.failures = 0
		b.dirty.Store(false)
	case CircuitHalfOpen:
		b.state, b.failures, b.probing = stateClosed, 0, false
		b.dirty.Store(false)
		return true
	case CircuitOpen:
		// A request that started before the circuit opened says nothing about the node now.
	}
	return false
}

// failure records a request failed at now on the node's side; threshold consecutive failures
// open the circuit for openFor, and a failed half-open probe opens it again at once. It reports
// whether the circuit opened, and the consecutive failures counted.
func (b *breaker) failure(now time.Time, threshold int, openFor time.Duration) (opened bool, failures int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.circuitLocked(now) {
	case CircuitClosed:
		b.failures++
		b.dirty.Store(true)
		if b.failures >= threshold {
			b.state, b.openUntil, opened = stateOpen, now.Add(openFor), true
		}
	case CircuitHalfOpen:
		b.state, b.openUntil, b.probing, opened = stateOpen, now.Add(openFor), false, true
	case CircuitOpen:
		// Late failures of requests sent before the circuit opened do not extend it.
	}
	return opened, b.failures
}
