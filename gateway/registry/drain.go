package registry

import "fmt"

// Drains are operator state kept by the gateway, not by the agent: a draining node gets no new
// requests but finishes what it has; the state survives heartbeats and is echoed in
// HeartbeatReply.Draining so the agent knows. With a shared table a drain is written there
// first, so every gateway honours it, and each gateway takes the table's drains at every read
// (sharedDrain).

// SetDraining drains (on) or undrains a node: a draining node gets no new requests but finishes
// what it has. The state is the gateway's (with a shared registry, every gateway's: it is written
// there first, and an error wrapping ErrSharedUnavailable means nothing changed) and survives
// heartbeats.
func (r *Registry) SetDraining(id string, on bool) error {
	if r.lookup(id) == nil {
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	if r.shared != nil {
		if err := r.setSharedDraining(id, on); err != nil {
			return err
		}
	}
	r.mu.Lock()
	n := r.lookup(id)
	if n == nil {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	changed := n.draining != on
	n.draining = on
	r.mu.Unlock()
	if changed {
		r.log.Info("node drain changed", "node", id, "draining", on)
		r.snaps.structChanged()
		r.notify()
	}
	return nil
}

// sharedDrain is a node's drain after a read of the shared table: the table's (inTable), except
// that after the table lost its data a drain this gateway holds is kept and written back
// (writeBack) rather than dropped.
func sharedDrain(held, inTable, lostData bool) (next, writeBack bool) {
	if lostData && held && !inTable {
		return true, true
	}
	return inTable, false
}

// applySharedDrainsLocked takes the shared table's drained set into every node and returns the
// drains to write back to a table that lost its data; r.mu must be held.
func (r *Registry) applySharedDrainsLocked(draining map[string]bool, lostData bool) (restore []string) {
	for _, n := range r.nodes {
		next, writeBack := sharedDrain(n.draining, draining[n.id], lostData)
		if writeBack {
			restore = append(restore, n.id)
		}
		if next != n.draining {
			r.log.Info("node drain changed", "node", n.id, "draining", next, "via", "shared registry")
			n.draining = next
		}
	}
	return restore
}
