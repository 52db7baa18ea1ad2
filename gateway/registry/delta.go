package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// ErrNoBase is returned (wrapped) by AcceptDelta when the registry holds no full heartbeat the
// delta applies to: the node is unknown here (this gateway restarted, or forgot it), another
// agent instance holds its record, or the record's static part is another (agentapi.StaticHash).
// The agent then sends the full heartbeat.
var ErrNoBase = errors.New("registry: no full heartbeat held for this delta")

// AcceptDelta records a delta heartbeat (agentapi.HeartbeatDelta): it is applied onto the node's
// latest heartbeat held here, which must be of the same agent instance and static part, and
// the result is accepted exactly as a full heartbeat (Accept: identity, the shared table, the
// reply), except that the shared table stores the delta as it came when it holds the base. A base read from the shared table serves as well as one this gateway accepted: a
// delta carries the whole dynamic part, so applied onto any copy of its base it gives the same
// heartbeat. d is not retained.
func (r *Registry) AcceptDelta(ctx context.Context, d *agentapi.HeartbeatDelta) (agentapi.HeartbeatReply, error) {
	r.mu.Lock()
	n := r.lookup(d.NodeID)
	if n == nil {
		r.mu.Unlock()
		return agentapi.HeartbeatReply{}, fmt.Errorf("%w: node %q is not known here", ErrNoBase, d.NodeID)
	}
	// The merged heartbeat is built in scratch memory: Accept copies what it keeps (observe
	// records a clone), so the only copy that lives on is the registry's own.
	hb := mergedBeats.Get().(*agentapi.Heartbeat)
	defer func() {
		*hb = agentapi.Heartbeat{GPUs: hb.GPUs[:0], Models: hb.Models[:0]}
		mergedBeats.Put(hb)
	}()
	err := d.ApplyTo(&n.hb, hb)
	r.mu.Unlock()
	if err != nil {
		return agentapi.HeartbeatReply{}, fmt.Errorf("%w: node %q: %w", ErrNoBase, d.NodeID, err)
	}
	return r.accept(ctx, *hb, d)
}

// mergedBeats recycles the scratch heartbeats AcceptDelta merges deltas into.
var mergedBeats = sync.Pool{New: func() any { return new(agentapi.Heartbeat) }}
