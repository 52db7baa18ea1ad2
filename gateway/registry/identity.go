package registry

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Node identity, in the token-only lab mode where every agent holds the one cluster token: a
// node ID is bound to the agent instance (Heartbeat.InstanceID, new at every agent start) and to
// the address whose heartbeat was recorded last.
//
//   - A heartbeat with another instance, or the same instance from another address, while the
//     holder is fresh is refused with a *ConflictError (the HTTP layer answers 409
//     node_id_conflict), counted, and logged once a minute per claimant (refusalLog); the record
//     is left as it was, so two live claimants never alternate.
//   - That holds for a new instance at the holder's own address too: a restarted agent takes its
//     ID back once its previous start has been silent for the stale window (3 intervals, see
//     liveness), never at once, since "same address" is only what the claimant says.
//   - Once the holder is stale any instance may take the ID.
//   - The instance ID is what proves a claim, so nothing this package writes (error texts, logs)
//     contains one: they show agentapi.InstanceFingerprint.
//
// With a shared table the table makes the same check cluster-wide (Shared.Put), and the registry
// takes what the table accepted without checking again.

// ErrNodeIDConflict is matched (errors.Is) by a *ConflictError: a heartbeat refused because
// another live agent holds its node ID.
var ErrNodeIDConflict = errors.New("registry: node id held by another live agent")

// ConflictError is a heartbeat refused because its node ID is bound to another agent instance
// (or to the same instance at another address) whose heartbeats are still fresh. It holds no
// instance ID, only fingerprints: its text goes back to the claimant and into logs.
type ConflictError struct {
	NodeID string
	// HolderFingerprint (agentapi.InstanceFingerprint) and HolderAddress identify the agent that
	// holds the ID.
	HolderFingerprint, HolderAddress string
	// HolderAge is how long ago the holder's last heartbeat arrived; HolderStaleAfter is the
	// holder's stale window: the claim can succeed once the holder has been silent that long.
	HolderAge, HolderStaleAfter time.Duration
	// ClaimantFingerprint and ClaimantAddress identify the refused agent.
	ClaimantFingerprint, ClaimantAddress string
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("node id %q is held by a live agent at %s (instance fingerprint %s, last heartbeat %s ago); "+
		"the claim from %s (instance fingerprint %s) is refused until the holder has been silent for %s: "+
		"a restarted agent takes its id back then; two different agents need different --node-id values",
		e.NodeID, e.HolderAddress, e.HolderFingerprint, e.HolderAge.Round(time.Millisecond),
		e.ClaimantAddress, e.ClaimantFingerprint, e.HolderStaleAfter)
}

// Is makes errors.Is(err, ErrNodeIDConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrNodeIDConflict }

// sameHolder reports whether claimant comes from the agent that sent holder: the same instance at
// the same address. Anything else is another agent's claim on the ID.
func sameHolder(holder, claimant *agentapi.Heartbeat) bool {
	return holder.InstanceID == claimant.InstanceID && holder.Address == claimant.Address
}

// conflict is the refusal of claimant's heartbeat while holder, last heard from age ago, holds
// the ID with a stale window of staleAfter.
func conflict(holder, claimant *agentapi.Heartbeat, age, staleAfter time.Duration) *ConflictError {
	return &ConflictError{
		NodeID: claimant.NodeID, HolderFingerprint: agentapi.InstanceFingerprint(holder.InstanceID), HolderAddress: holder.Address,
		HolderAge: age, HolderStaleAfter: staleAfter,
		ClaimantFingerprint: agentapi.InstanceFingerprint(claimant.InstanceID), ClaimantAddress: claimant.Address,
	}
}

// refusalLogEvery is how often one claimant's refusals are logged: an agent retrying every
// second must not flood the log.
const refusalLogEvery = time.Minute

// refusalLogCap bounds the claimants remembered: a hostile sender cycling instances must not grow
// the map; past it the memory is cleared (a few extra log lines, never unbounded memory).
const refusalLogCap = 1024

// refusalLog decides which refusals are logged: once a minute per claimant (node ID, instance
// fingerprint and address). It is safe for concurrent use.
type refusalLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether e, refused at now, is to be logged, and if so remembers that it was.
func (l *refusalLog) due(e *ConflictError, now time.Time) bool {
	key := e.NodeID + "\x00" + e.ClaimantFingerprint + "\x00" + e.ClaimantAddress
	l.mu.Lock()
	defer l.mu.Unlock()
	last, seen := l.last[key]
	if seen && now.Sub(last) < refusalLogEvery {
		return false
	}
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if len(l.last) > refusalLogCap {
		clear(l.last)
	}
	l.last[key] = now
	return true
}

// logRefusal logs a refused claimant at Warn, once a minute per claimant instance.
func (r *Registry) logRefusal(e *ConflictError) {
	if !r.refusals.due(e, r.clock.Now()) {
		return
	}
	r.log.Warn("heartbeat refused: node id held by another live agent", "node", e.NodeID,
		"holder_address", e.HolderAddress, "holder_instance_fp", e.HolderFingerprint, "holder_last_heartbeat_age", e.HolderAge,
		"claimant_address", e.ClaimantAddress, "claimant_instance_fp", e.ClaimantFingerprint)
}
