package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Shared is a node table that every gateway of a cluster reads and writes, so that a heartbeat
// accepted by one gateway is seen by all (RedisShared is the implementation).
type Shared interface {
	// Put records hb as seen now by the table's clock, bound to hb.InstanceID and hb.Address.
	// When another instance, or the same one at another address, holds hb.NodeID and was seen
	// within its stale window, Put records nothing and returns a *ConflictError. staleAfter is hb's stale window; the record
	// is dropped after forgetAfter of silence.
	Put(ctx context.Context, hb agentapi.Heartbeat, staleAfter, forgetAfter time.Duration) error
	// PutDelta records hb, the merged heartbeat whose dynamic part d is, as Put does but writing
	// only d when the table holds hb's static part (hb.StaticHash) for that instance; when it
	// does not, PutDelta records nothing and returns ErrSharedNeedsFull (then Put hb). The
	// identity is checked as by Put.
	PutDelta(ctx context.Context, hb *agentapi.Heartbeat, d *agentapi.HeartbeatDelta, staleAfter, forgetAfter time.Duration) error
	// Load returns the nodes other writers changed since this Shared's previous Load (the
	// caller's own Puts are already in its memory), or the whole table, saying so with Full.
	// A failed Load loses nothing: the next one returns every change since the last success.
	Load(ctx context.Context) (SharedTable, error)
	// SetDraining drains (on) or undrains a node for every gateway.
	SetDraining(ctx context.Context, id string, on bool) error
	// Restore adds ids to the drained set without removing any (after the table lost its data).
	Restore(ctx context.Context, draining []string) error
}

// SharedTable is the shared node table, or its changes, as Load returns it.
type SharedTable struct {
	// Nodes holds the latest heartbeat, with its age by the table's clock, of every node changed
	// since the previous Load, or of every node when Full.
	Nodes []SharedNode
	// Full says Nodes holds the whole table (the first Load, or one after the table lost its
	// data). Nodes a Load leaves out are unchanged, not gone: either way the registry keeps them
	// and ages them by their last heartbeat.
	Full bool
	// Draining holds the IDs of drained nodes.
	Draining map[string]bool
	// Epoch changes when the table lost its data (an empty Redis after a restart): the gateway
	// then writes back the drains it knows, which the table no longer holds.
	Epoch string
}

// SharedNode is one node of a SharedTable.
type SharedNode struct {
	// Heartbeat is the node's latest heartbeat; when Delta is set it holds only NodeID, and
	// Resolve gives the heartbeat.
	Heartbeat agentapi.Heartbeat
	// Delta, when set, is the node's latest heartbeat as written: a delta onto the full
	// heartbeat base (JSON) holds.
	Delta *agentapi.HeartbeatDelta
	base  string
	// Age is how long ago the heartbeat was written, by the table's own clock (one clock for
	// every gateway, so clock skew between gateways cannot make a node look fresh or stale).
	Age time.Duration
}

// Resolve returns the node's heartbeat. A delta is applied onto held when held is its base (the
// record this gateway holds of the node), else onto the full heartbeat stored with it, which is
// decoded only then. The result's slices may be shared with held and must not be modified.
func (sn *SharedNode) Resolve(held *agentapi.Heartbeat) (agentapi.Heartbeat, error) {
	if sn.Delta == nil {
		return sn.Heartbeat, nil
	}
	var hb agentapi.Heartbeat
	if held != nil && sn.Delta.ApplyTo(held, &hb) == nil {
		return hb, nil
	}
	if sn.base == "" {
		// Read without its base, which this gateway held then and no longer does (a full
		// heartbeat changed it meanwhile): the node's next write is read whole.
		return hb, fmt.Errorf("registry: the delta of %q applies to a base no longer held", sn.Heartbeat.NodeID)
	}
	var base agentapi.Heartbeat
	if err := json.Unmarshal([]byte(sn.base), &base); err != nil {
		return hb, fmt.Errorf("registry: stored heartbeat of %q: %w", sn.Heartbeat.NodeID, err)
	}
	if err := sn.Delta.ApplyTo(&base, &hb); err != nil {
		return hb, fmt.Errorf("registry: stored delta of %q: %w", sn.Heartbeat.NodeID, err)
	}
	return hb, nil
}

// ErrSharedNeedsFull is returned by Shared.PutDelta when the table does not hold the static part
// the delta applies to: the caller writes the merged heartbeat with Put.
var ErrSharedNeedsFull = errors.New("registry: the shared table holds no base for the delta")

// ErrSharedUnavailable wraps a failure to reach the shared registry.
var ErrSharedUnavailable = errors.New("registry: shared registry unavailable")

// Share makes the registry keep its nodes in s as well as in memory: Accept writes heartbeats
// to s, SetDraining writes drains to it, and RunShared (which the caller must run) reads other
// gateways' changes back every heartbeat interval. Call it before the registry is used.
func (r *Registry) Share(s Shared) {
	r.shared = s
	if h, ok := s.(interface{ SetHeld(func(id string) string) }); ok {
		h.SetHeld(r.heldBase)
	}
}

// heldBase is the base this registry holds for node id, "instance\x00static hash" ("" when it
// holds none): the shared table's reads leave out the stored JSON of a delta onto it.
func (r *Registry) heldBase(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.lookup(id)
	if n == nil || n.hb.StaticHash == "" {
		return ""
	}
	return n.hb.InstanceID + "\x00" + n.hb.StaticHash
}

// Accept records a heartbeat an agent sent to this gateway: in the shared table (which checks
// the node's identity cluster-wide) and in memory. When the shared table cannot be reached the
// heartbeat is recorded in memory only, with the identity checked against this gateway's view,
// and the reply says so (Registry "local"), so that the agent sends it to its other gateways too.
func (r *Registry) Accept(ctx context.Context, hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error) {
	return r.accept(ctx, hb, nil)
}

// accept is Accept for a heartbeat that came whole (d nil) or as the delta d, merged into hb: a
// delta is written to the shared table as it came when the table holds its base.
func (r *Registry) accept(ctx context.Context, hb agentapi.Heartbeat, d *agentapi.HeartbeatDelta) (agentapi.HeartbeatReply, error) {
	if r.shared == nil || r.inOutage() {
		// During an outage only SyncShared probes the table (every interval): heartbeats do not
		// wait for Redis to time out.
		return r.observe(hb, true)
	}
	s := seen{interval: r.live.intervalOf(&hb)}
	pctx, cancel := context.WithTimeout(ctx, putTimeout)
	var err error
	if d != nil {
		err = r.shared.PutDelta(pctx, &hb, d, r.live.staleAfter(s), r.live.forgetAfter(s))
	}
	if d == nil || errors.Is(err, ErrSharedNeedsFull) {
		err = r.shared.Put(pctx, hb, r.live.staleAfter(s), r.live.forgetAfter(s))
	}
	cancel()
	var conflict *ConflictError
	switch {
	case errors.As(err, &conflict):
		r.logRefusal(conflict)
		return agentapi.HeartbeatReply{}, err
	case err != nil:
		r.sharedFailed(err)
		return r.observe(hb, true)
	}
	reply, err := r.observe(hb, false)
	reply.Registry = agentapi.RegistryShared
	return reply, err
}

// putTimeout bounds one write of a heartbeat to the shared table, well inside an agent's
// heartbeat timeout, so that a hung Redis turns into a local acceptance, not a failed heartbeat.
const putTimeout = 500 * time.Millisecond

func (r *Registry) inOutage() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live.outage
}

// RunShared reads the shared table every heartbeat interval into memory until ctx is done. The
// scheduler's snapshot is built from memory, so no request waits on the shared table.
func (r *Registry) RunShared(ctx context.Context) {
	if r.shared == nil {
		return
	}
	t := time.NewTicker(r.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		r.SyncShared(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SyncShared reads the shared table once into memory; RunShared calls it every interval.
func (r *Registry) SyncShared(ctx context.Context) {
	if r.shared == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, max(r.cfg.HeartbeatInterval, time.Second))
	tab, err := r.shared.Load(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			r.sharedFailed(err)
		}
		return
	}
	r.applyShared(ctx, tab)
}

// sharedFailed starts (or continues) an outage of the shared table: the view of the cluster at
// the last successful read is held for OutageGrace (see the package doc).
func (r *Registry) sharedFailed(err error) {
	now := r.clock.Now()
	r.mu.Lock()
	if !r.live.startOutage(now) {
		r.mu.Unlock()
		return
	}
	from, until := r.live.holdFrom, r.live.holdUntil
	r.snaps.structChanged()
	r.mu.Unlock()
	r.log.Warn("shared registry unreachable: holding the last view of the cluster", "err", err,
		"view_from", from, "hold_until", until)
}

// applyShared merges a table (or its changes) read from the shared registry into memory. A
// record no newer than what this gateway already has changes nothing; nodes the table lacks are
// kept (unchanged ones, and those of an emptied Redis, which refills with the next heartbeats)
// and age as usual.
func (r *Registry) applyShared(ctx context.Context, tab SharedTable) {
	now := r.clock.Now()
	r.mu.Lock()
	if r.live.loaded(now) {
		r.log.Info("shared registry reachable again", "nodes", len(tab.Nodes), "hold_until", r.live.holdUntil)
	}
	lostData := r.epoch != "" && tab.Epoch != r.epoch
	r.epoch = tab.Epoch
	added := false
	for i := range tab.Nodes {
		sn := &tab.Nodes[i]
		id := sn.Heartbeat.NodeID
		at := now.Add(-sn.Age)
		n := r.lookup(id)
		var held *agentapi.Heartbeat
		if n != nil {
			if !at.After(n.seen.at) {
				continue
			}
			held = &n.hb
		}
		hb, err := sn.Resolve(held)
		if err != nil {
			r.log.Warn("shared registry: a node's record cannot be read", "node", id, "err", err)
			continue
		}
		if n == nil {
			n = &node{id: id}
			r.addLocked(n)
			added = true
			r.log.Info("node joined", "node", id, "address", hb.Address, "backend", hb.Backend, "simulated", hb.Simulated, "via", "shared registry")
		}
		r.recordLocked(n, hb, at)
	}
	restore := r.applySharedDrainsLocked(tab.Draining, lostData)
	r.forgetLocked(now)
	r.snaps.structChanged()
	r.mu.Unlock()
	if added || len(tab.Nodes) > 0 {
		r.notify()
	}
	if len(restore) > 0 {
		r.log.Warn("shared registry lost its data: writing back the drains this gateway knows", "nodes", restore)
		if err := r.shared.Restore(ctx, restore); err != nil {
			r.log.Warn("writing back drains failed", "err", err)
		}
	}
}

// setSharedDraining writes a drain to the shared table before it is applied here, so that an
// operator never sees a drain that only one gateway knows.
func (r *Registry) setSharedDraining(id string, on bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.shared.SetDraining(ctx, id, on); err != nil {
		return fmt.Errorf("%w: %w", ErrSharedUnavailable, err)
	}
	return nil
}
