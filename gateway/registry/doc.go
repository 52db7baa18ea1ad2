// Package registry turns agent heartbeats into the scheduler's snapshot of the cluster.
//
// Every agent pushes a Heartbeat; Observe (or Accept, with a shared table) records it. Snapshot
// hands the scheduler an immutable *scheduler.Snapshot that is rebuilt only when something
// changed (a heartbeat, a gateway-side acquire or release, a drain, a circuit-breaker transition)
// or when time alone changed a node's state (its heartbeat went stale, its open circuit reached
// half-open); otherwise the cached one is returned. The hot path (Acquire, Release,
// ReportSuccess, Snapshot on an unchanged cluster) uses atomics only; one mutex (Registry.mu)
// serialises rebuilds and heartbeat bookkeeping.
//
// The Registry composes small parts, one concern each, that can be read (and are tested) one at a
// time:
//
//   - basenode.go: what a heartbeat says about a node, derived once per heartbeat (baseNode:
//     health, throttling, VRAM, speeds, the models under their normalised names, ModelName).
//   - identity.go: which agent instance holds a node ID, and the refusal of another claimant
//     (ConflictError, refusalLog).
//   - liveness.go: fresh, stale or forgotten, judged on the gateway's clock, and the hold of the
//     last view while a shared table is unreachable (liveness, seen).
//   - breaker.go: the per-node circuit breaker (breaker); drain.go: operator drains.
//   - slots.go: how busy a node is: this gateway's exact count plus the other gateways' work
//     its heartbeat reported (slots).
//   - loads.go: model loads this gateway started and no heartbeat has confirmed yet.
//   - snapshot.go: the cached snapshot, its versions, its expiry, and its builds (snapshots,
//     buildNode).
//   - registry.go: the Registry, which keeps the nodes (sorted, with a lock-free index by ID)
//     and wires the parts above to heartbeats and requests.
//   - shared.go and redis.go: several gateways on one node table (below).
//
// Every node's speeds go through a scheduler.Learner, whose fit (per node and model:
// single-stream speed, contention, prefill speed) the snapshot carries in NodeModel.Learned; it
// is this gateway's own fit, learned from every heartbeat it receives.
//
// Several gateways (Share, Accept, RunShared): with a Shared table (Redis) the registry stays
// an in-memory cache that the scheduler reads without I/O, and the table is the truth:
//   - Accept writes each heartbeat to the table (which checks the identity cluster-wide, on the
//     table's clock, in one atomic step) and then records it here; RunShared reads back, every
//     heartbeat interval, the nodes other gateways changed since its last read (the whole
//     table now and then, see RedisShared), so a node that heartbeats to another gateway is
//     known here within about one interval. A record no newer than the one held is ignored.
//   - In-flight counts stay heartbeat-carried (see slots): no Redis traffic per request.
//     Another gateway's work reaches this one with the heartbeat, up to about two intervals late
//     (one heartbeat plus one poll); this gateway's own requests are always exact.
//   - Drains are written to the table before they apply, so every gateway honours them; the
//     circuit breakers stay per gateway, since each gateway judges its own connections.
//   - Outage: when a write or a read of the table fails, the registry holds its last view: for
//     OutageGrace, staleness is judged at the time of the last successful read instead of now,
//     so nodes heartbeating to other gateways do not all go stale because Redis blinked. Nodes
//     that heartbeat to this gateway are recorded here directly meanwhile (the identity checked
//     against this gateway's view), and their reply says "local" so that agents knowing other
//     gateways send them the heartbeat too. A node that died during the hold is caught by the
//     proxy's failover and its circuit breaker. When the table answers again the hold lasts a
//     few more intervals, long enough for every gateway to write its agents back.
//   - A table that lost its data (Redis restarted empty: its epoch changed) refills with the next
//     heartbeats; drains this gateway knows are written back to it.
package registry
