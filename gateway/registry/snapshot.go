package registry

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/herd-llm/herd/scheduler"
)

// snapshots caches the scheduler's snapshot and knows when it must be rebuilt.
//
//   - Two counters say what changed: structVer counts changes to anything but this gateway's
//     in-flight counters (heartbeats, drains, circuit transitions, loads, nodes joining or
//     leaving); loadVer counts Acquire and Release. The cached snapshot is reused while both
//     match and it has not expired: expires is the first instant at which time alone changes it
//     (a node turning stale or forgotten, an open circuit reaching half-open, a load's grace
//     ending) and at most one heartbeat interval ahead, which bounds how old Snapshot.Now gets.
//   - A snapshot rebuilt only because in-flight counters moved copies the previous snapshot's
//     nodes and patches their counts (two allocations, no per-node locks); handed-out snapshots
//     are never written.
//   - modelsVer counts changes to which node lists which model (a node joined or was forgotten,
//     or its model names changed): telemetry moves every second, the model index rarely, so a
//     build reuses the last snapshot's ByModel index while modelsVer holds still.
type snapshots struct {
	structVer atomic.Uint64
	loadVer   atomic.Uint64
	cur       atomic.Pointer[built]
	// modelsVer is guarded by Registry.mu.
	modelsVer uint64
	// onBuild, when set (SetBuildObserver), is told how long each full build took.
	onBuild func(time.Duration)
}

// structChanged records a change that needs a full rebuild.
func (s *snapshots) structChanged() { s.structVer.Add(1) }

// loadChanged records that an in-flight counter moved.
func (s *snapshots) loadChanged() { s.loadVer.Add(1) }

// modelsChanged records that which node lists which model changed; Registry.mu must be held.
func (s *snapshots) modelsChanged() { s.modelsVer++ }

// built is a cached snapshot with what it was built from. The snapshot lives inside it, so a
// rebuild allocates one struct and the node slice.
type built struct {
	snap      scheduler.Snapshot
	structVer uint64
	loadVer   uint64
	// modelsVer is the snapshots' modelsVer the snapshot's ByModel index was built at.
	modelsVer uint64
	// expires is the first instant at which time alone changes the snapshot.
	expires time.Time
}

// Snapshot returns the current immutable view of the cluster for the scheduler. The returned
// snapshot is shared and must not be modified.
func (r *Registry) Snapshot() *scheduler.Snapshot {
	now := r.clock.Now()
	b := r.snaps.cur.Load()
	if b != nil && b.structVer == r.snaps.structVer.Load() && now.Before(b.expires) {
		if b.loadVer == r.snaps.loadVer.Load() {
			return &b.snap
		}
		// Only in-flight counters moved. If another goroutine is rebuilding, its snapshot will
		// carry them; meanwhile this one is off by the few requests that just started or ended.
		if !r.mu.TryLock() {
			return &b.snap
		}
	} else {
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	return r.rebuildLocked(r.clock.Now())
}

// rebuildLocked builds a snapshot at now, caches it and returns it; r.mu must be held.
func (r *Registry) rebuildLocked(now time.Time) *scheduler.Snapshot {
	r.forgetLocked(now)
	s := &r.snaps
	// Versions are read before the state so a change racing with the build bumps past them and
	// the next Snapshot rebuilds.
	sv, lv := s.structVer.Load(), s.loadVer.Load()
	prev := s.cur.Load()
	if prev != nil && prev.structVer == sv && now.Before(prev.expires) {
		if prev.loadVer == lv {
			return &prev.snap
		}
		// Only in-flight counters moved: nothing else about the nodes can have changed (that
		// would have bumped structVer, and nothing time-driven is due before prev.expires).
		nb := &built{snap: scheduler.Snapshot{Now: now, Nodes: slices.Clone(prev.snap.Nodes), ByModel: prev.snap.ByModel},
			structVer: sv, loadVer: lv, modelsVer: prev.modelsVer, expires: prev.expires}
		for i, n := range r.nodes {
			sn := &nb.snap.Nodes[i]
			sn.InFlight, sn.Queued = n.slots.split(n.slots.mine(), n.base.Slots)
		}
		s.cur.Store(nb)
		return &nb.snap
	}
	if s.onBuild != nil {
		// Wall time, not the injected clock: this measures the build's own cost.
		start := time.Now()
		defer func() { s.onBuild(time.Since(start)) }()
	}
	expires := now.Add(r.cfg.HeartbeatInterval) // bounds how old Snapshot.Now can get
	nb := &built{snap: scheduler.Snapshot{Now: now, Nodes: make([]scheduler.Node, len(r.nodes))}, structVer: sv, loadVer: lv, modelsVer: s.modelsVer}
	snap := &nb.snap
	for i, n := range r.nodes {
		expires = buildNode(&snap.Nodes[i], n, &r.live, now, expires)
	}
	if prev != nil && prev.modelsVer == s.modelsVer && prev.snap.ByModel != nil {
		snap.ByModel = prev.snap.ByModel
	} else {
		snap.ByModel = scheduler.IndexByModel(snap.Nodes)
	}
	nb.expires = expires
	s.cur.Store(nb)
	return snap
}

// buildNode writes n as the scheduler sees it at now into sn: what its last heartbeat said
// (n.base), with what changes without a heartbeat filled in (in-flight and queued counts, drain,
// staleness, loads under way, the circuit breaker). It returns expires, brought forward to the
// first instant at which time alone changes the node; Registry.mu must be held.
func buildNode(sn *scheduler.Node, n *node, live *liveness, now, expires time.Time) time.Time {
	*sn = n.base
	sn.InFlight, sn.Queued = n.slots.split(n.slots.mine(), n.base.Slots)
	sn.Draining = n.draining
	sn.Stale = live.stale(n.seen, now)
	if until := n.loads.mark(sn, now); !until.IsZero() && until.Before(expires) {
		expires = until
	}
	if staleAt := live.staleAt(n.seen, now); !sn.Stale && staleAt.Before(expires) {
		expires = staleAt
	}
	if forgetAt := live.forgetAt(n.seen); forgetAt.Before(expires) {
		expires = forgetAt
	}
	out, until := n.breaker.keepsOut(now)
	sn.CircuitOpen = out
	if !until.IsZero() && until.Before(expires) {
		expires = until
	}
	return expires
}
