package registry

import "sync/atomic"

// slots counts how busy a node is: this gateway's own requests in flight there (exact: Acquire
// and Release) plus the work the node's last heartbeat reported beyond what this gateway had in
// flight there when that heartbeat arrived (work other gateways sent):
//
//	busy = local + max(0, hb.in_flight + hb.queued − local_at_heartbeat)
//
// Taking the max of the two counts instead (an earlier rule) let a heartbeat up to one interval
// old keep a node looking busy for up to a second after its requests ended, so admission held
// requests for slots that were already free and the expected-wait scorer steered away from idle
// nodes. The gateway counts a request from before it is sent until after its last byte, a window
// that covers the agent's, so at any instant the heartbeat's count of this gateway's requests is
// at most the local count: subtracting the local count can only under-estimate the other
// gateways' work, never invent some. The one exception is a request that ends between the
// agent's sample and the heartbeat's arrival (one network hop); it is counted as another
// gateway's until the next heartbeat. The other work keeps the heartbeat's split between running
// and queued; local requests count as running, and whatever exceeds the node's slots as queued.
type slots struct {
	// local counts this gateway's requests in flight on the node; lock-free.
	local atomic.Int64
	// otherRunning and otherQueued are the work the last heartbeat reported that this gateway
	// did not send; guarded by Registry.mu.
	otherRunning, otherQueued int
}

// acquire counts one more request of this gateway.
func (s *slots) acquire() { s.local.Add(1) }

// release ends a request counted by acquire. A node forgotten and re-added between the two
// starts at zero: the count never goes below it.
func (s *slots) release() {
	for {
		v := s.local.Load()
		if v <= 0 || s.local.CompareAndSwap(v, v-1) {
			return
		}
	}
}

// mine returns this gateway's requests in flight.
func (s *slots) mine() int { return int(s.local.Load()) }

// heartbeat takes the work a heartbeat reported (in flight and queued on the node) as the other
// gateways' work, less this gateway's requests in flight now: the most of them the heartbeat can
// have counted.
func (s *slots) heartbeat(inFlight, queued int) {
	busy := max(inFlight, 0) + max(queued, 0)
	other := max(0, busy-s.mine())
	s.otherQueued = min(max(queued, 0), other)
	s.otherRunning = other - s.otherQueued
}

// split returns the node's in-flight and queued counts with local requests of this gateway in
// flight, on a node with capacity slots (0: unbounded): what runs beyond its slots waits.
func (s *slots) split(local, capacity int) (inFlight, queued int) {
	inFlight, queued = s.otherRunning+local, s.otherQueued
	if capacity > 0 && inFlight > capacity {
		queued += inFlight - capacity
		inFlight = capacity
	}
	return inFlight, queued
}
