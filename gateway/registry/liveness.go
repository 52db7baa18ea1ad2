package registry

import (
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// seen is when a node's last heartbeat arrived, on the gateway's clock, and the interval its
// agent heartbeats at.
type seen struct {
	at       time.Time
	interval time.Duration
}

// liveness judges whether a node is fresh, stale or to be forgotten, and holds the last view of
// the cluster while a shared table is unreachable.
//
//   - Staleness is measured on the gateway's clock (the time a heartbeat arrived), never on the
//     agent's SentAt, so clock skew between hosts cannot make a node look fresh or stale.
//   - A node whose heartbeat is older than StaleAfterBeats × its interval (the agent's
//     IntervalMS, else Config.HeartbeatInterval) is stale; after ForgetAfter of silence (at
//     least two stale windows) it is forgotten.
//   - While a hold is on (an outage of the shared table, and a few intervals after it), staleness
//     is judged at holdFrom, the last successful read, instead of now: nodes heartbeating to
//     other gateways do not all go stale because Redis blinked.
//
// Its fields are guarded by Registry.mu.
type liveness struct {
	cfg Config // with defaults
	// outage is true while the shared table is unreachable; holdFrom and holdUntil bound the hold
	// of the last view; lastLoad is when the table was last read.
	outage    bool
	lastLoad  time.Time
	holdFrom  time.Time
	holdUntil time.Time
	// lastScan is when the registry last scanned its nodes for silent ones (scanDue).
	lastScan time.Time
}

// intervalOf is the heartbeat interval of hb's agent: its own, else the configured one.
func (l *liveness) intervalOf(hb *agentapi.Heartbeat) time.Duration {
	if hb.IntervalMS > 0 {
		return time.Duration(hb.IntervalMS) * time.Millisecond
	}
	return l.cfg.HeartbeatInterval
}

// staleAfter is how long a node heartbeating at s.interval may stay silent and count as fresh.
func (l *liveness) staleAfter(s seen) time.Duration {
	return time.Duration(l.cfg.StaleAfterBeats) * s.interval
}

// forgetAfter is how long a node may stay silent and still be listed.
func (l *liveness) forgetAfter(s seen) time.Duration {
	return max(l.cfg.ForgetAfter, 2*l.staleAfter(s))
}

// holding reports whether the last view of the cluster is held at now because the shared table
// is (or just was) unreachable.
func (l *liveness) holding(now time.Time) bool {
	return !l.holdUntil.IsZero() && now.Before(l.holdUntil)
}

// stale reports whether a node last seen at s is stale at now: its last heartbeat is older than
// its stale window, judged at holdFrom instead of now while a hold is on.
func (l *liveness) stale(s seen, now time.Time) bool {
	ref := now
	if l.holding(now) && l.holdFrom.Before(now) {
		ref = l.holdFrom
	}
	return ref.Sub(s.at) > l.staleAfter(s)
}

// staleAt is the first instant at which a node fresh at now turns stale.
func (l *liveness) staleAt(s seen, now time.Time) time.Time {
	at := s.at.Add(l.staleAfter(s)).Add(time.Nanosecond)
	if l.holding(now) && at.Before(l.holdUntil) {
		at = l.holdUntil
	}
	return at
}

// forgotten reports whether a node last seen at s is to be forgotten at now.
func (l *liveness) forgotten(s seen, now time.Time) bool {
	return now.Sub(s.at) > l.forgetAfter(s)
}

// forgetAt is the first instant at which a node last seen at s is to be forgotten.
func (l *liveness) forgetAt(s seen) time.Time {
	return s.at.Add(l.forgetAfter(s)).Add(time.Nanosecond)
}

// scanDue reports whether a scan for silent nodes is due at now, on a heartbeat: a scan of every
// node on every heartbeat grows with the square of the fleet, and once a second is enough (a
// snapshot build scans anyway). scanned records a scan.
func (l *liveness) scanDue(now time.Time) bool { return now.Sub(l.lastScan) >= time.Second }

// scanned records that the nodes were scanned for silent ones at now.
func (l *liveness) scanned(now time.Time) { l.lastScan = now }

// startOutage starts a hold of the view at the last successful read (or now, when there was
// none) for OutageGrace, and reports whether it did: false when an outage is already on.
func (l *liveness) startOutage(now time.Time) bool {
	if l.outage {
		return false
	}
	l.outage = true
	l.holdFrom = l.lastLoad
	if l.holdFrom.IsZero() || l.holdFrom.After(now) {
		l.holdFrom = now
	}
	l.holdUntil = l.holdFrom.Add(l.cfg.OutageGrace)
	return true
}

// loaded records a successful read of the shared table at now, and reports whether it ended an
// outage. Agents that heartbeat to other gateways reach the table again once those gateways have
// read it too (a poll), within a heartbeat, and this gateway reads them a poll later: a hold
// under way lasts that much longer, so that they do not blink out meanwhile.
func (l *liveness) loaded(now time.Time) (ended bool) {
	if l.outage {
		l.outage = false
		ended = true
		if l.holding(now) {
			l.holdUntil = now.Add(max(time.Duration(l.cfg.StaleAfterBeats+2)*l.cfg.HeartbeatInterval, 2*time.Second))
		}
	}
	l.lastLoad = now
	return ended
}
