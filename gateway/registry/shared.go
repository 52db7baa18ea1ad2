package registry

import (
	"context"
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
	// Load returns the whole table.
	Load(ctx context.Context) (SharedTable, error)
	// SetDraining drains (on) or undrains a node for every gateway.
	SetDraining(ctx context.Context, id string, on bool) error
	// Restore adds ids to the drained set without removing any (after the table lost its data).
	Restore(ctx context.Context, draining []string) error
}

// SharedTable is the shared node table as Load returns it.
type SharedTable struct {
	// Nodes holds every node's latest heartbeat with its age by the table's clock.
	Nodes []SharedNode
	// Draining holds the IDs of drained nodes.
	Draining map[string]bool
	// Epoch changes when the table lost its data (an empty Redis after a restart): the gateway
	// then writes back the drains it knows, which the table no longer holds.
	Epoch string
}

// SharedNode is one node of a SharedTable.
type SharedNode struct {
	Heartbeat agentapi.Heartbeat
	// Age is how long ago the heartbeat was written, by the table's own clock (one clock for
	// every gateway, so clock skew between gateways cannot make a node look fresh or stale).
	Age time.Duration
}

// ErrSharedUnavailable wraps a failure to reach the shared registry.
var ErrSharedUnavailable = errors.New("registry: shared registry unavailable")

// Share makes the registry keep its nodes in s as well as in memory: Accept writes heartbeats
// to s, SetDraining writes drains to it, and RunShared (which the caller must run) reads it back
// every heartbeat interval. Call it before the registry is used.
func (r *Registry) Share(s Shared) { r.shared = s }

// Accept records a heartbeat an agent sent to this gateway: in the shared table (which checks
// the node's identity cluster-wide) and in memory. When the shared table cannot be reached the
// heartbeat is recorded in memory only, with the identity checked against this gateway's view,
// and the reply says so (Registry "local"), so that the agent sends it to its other gateways too.
func (r *Registry) Accept(ctx context.Context, hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error) {
	if r.shared == nil || r.inOutage() {
		// During an outage only SyncShared probes the table (every interval): heartbeats do not
		// wait for Redis to time out.
		return r.observe(hb, true)
	}
	stale := time.Duration(r.cfg.StaleAfterBeats) * r.intervalOf(&hb)
	pctx, cancel := context.WithTimeout(ctx, putTimeout)
	err := r.shared.Put(pctx, hb, stale, max(r.cfg.ForgetAfter, 2*stale))
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
	return r.outage
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
	if r.outage {
		r.mu.Unlock()
		return
	}
	r.outage = true
	r.holdFrom = r.lastLoad
	if r.holdFrom.IsZero() || r.holdFrom.After(now) {
		r.holdFrom = now
	}
	r.holdUntil = r.holdFrom.Add(r.cfg.OutageGrace)
	r.structVer.Add(1)
	r.mu.Unlock()
	r.log.Warn("shared registry unreachable: holding the last view of the cluster", "err", err,
		"view_from", r.holdFrom, "hold_until", r.holdUntil)
}

// applyShared merges a table read from the shared registry into memory. A record no newer than
// what this gateway already has (its own heartbeats come back this way) changes nothing; nodes
// the table lacks are kept (an emptied Redis refills with the next heartbeats) and age as usual.
func (r *Registry) applyShared(ctx context.Context, tab SharedTable) {
	now := r.clock.Now()
	var restore []string
	r.mu.Lock()
	if r.outage {
		r.outage = false
		// Agents that heartbeat to other gateways reach the table again once those gateways have
		// read it too (a poll), within a heartbeat, and this gateway reads them a poll later:
		// keep holding that long, so that they do not blink out meanwhile.
		if r.holdingLocked(now) {
			r.holdUntil = now.Add(max(time.Duration(r.cfg.StaleAfterBeats+2)*r.cfg.HeartbeatInterval, 2*time.Second))
		}
		r.log.Info("shared registry reachable again", "nodes", len(tab.Nodes), "hold_until", r.holdUntil)
	}
	r.lastLoad = now
	lostData := r.epoch != "" && tab.Epoch != r.epoch
	r.epoch = tab.Epoch
	added := false
	for _, sn := range tab.Nodes {
		hb := sn.Heartbeat
		seen := now.Add(-sn.Age)
		n := r.lookup(hb.NodeID)
		if n == nil {
			n = &node{id: hb.NodeID}
			n.circuitClean.Store(true)
			r.addLocked(n)
			added = true
			r.log.Info("node joined", "node", hb.NodeID, "address", hb.Address, "backend", hb.Backend, "simulated", hb.Simulated, "via", "shared registry")
		} else if !seen.After(n.lastSeen) {
			continue
		}
		r.recordLocked(n, hb, seen)
	}
	for _, n := range r.nodes {
		switch on := tab.Draining[n.id]; {
		case lostData && n.draining && !on:
			restore = append(restore, n.id)
		case n.draining != on:
			r.log.Info("node drain changed", "node", n.id, "draining", on, "via", "shared registry")
			n.draining = on
		}
	}
	r.forgetLocked(now)
	r.structVer.Add(1)
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
