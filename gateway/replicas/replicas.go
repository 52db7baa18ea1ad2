// Package replicas is the gateway's replica controller: it keeps a minimum number of resident
// copies of listed models warm (the gateway's min_replicas), loading them through the node agents where
// the scheduler's placement planner says, on nodes that already have the weights; and, for the
// models given bounds (replicas: min/max), it adds and drops replicas by measured demand
// (scheduler.Scale: requests in flight on the replicas and waiting in the gateway against their
// slots). A drop waits until Scale has asked for it DropAfter passes in a row, so a lull between
// bursts does not unload a model that is about to be needed again; an add is carried out at once.
package replicas

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// Registry is the cluster as the controller sees it: the gateway's registry.
type Registry interface {
	Snapshot() *scheduler.Snapshot
	Node(id string) (registry.NodeView, bool)
}

// Loads is told of the loads the controller starts, so that the scheduler counts them as
// replicas under way (the gateway's registry).
type Loads interface {
	StartLoad(nodeID, model string)
}

// Planner plans replicas: the gateway's scheduler.
type Planner interface {
	Replicas(minReplicas map[string]int, snap *scheduler.Snapshot) []scheduler.PlacementPlan
	Scale(bounds map[string]scheduler.ReplicaBounds, waiting map[string]int, snap *scheduler.Snapshot) []scheduler.ScaleDecision
}

// Waiting reports the requests waiting in the gateway for each model (admission's queue).
type Waiting func() map[string]int

// DropAfter is how many passes in a row Scale must ask to drop a replica before the controller
// unloads it.
const DropAfter = 3

// Agents gives the client of a node's agent.
type Agents interface {
	For(v registry.NodeView) *agentapi.Client
}

var (
	_ Registry = (*registry.Registry)(nil)
	_ Loads    = (*registry.Registry)(nil)
	_ Planner  = (*scheduler.Scheduler)(nil)
)

// Controller keeps replicas warm.
type Controller struct {
	reg    Registry
	plan   Planner
	agents Agents
	log    *slog.Logger
	// min is the wanted count of resident copies by model; every the pass interval.
	min   map[string]int
	every time.Duration
	// loads are the load goroutines Reconcile started; Run waits for them before it returns, so
	// that a gateway shutting down has no load still talking to an agent.
	loads sync.WaitGroup
	// bounds are the models scaled by demand; waiting reports their queues; starts, when set, is
	// told of every load started; drops counts, per "model/node", the passes in a row Scale
	// asked to drop that replica.
	bounds  map[string]scheduler.ReplicaBounds
	waiting Waiting
	starts  Loads
	mu      sync.Mutex
	drops   map[string]int
}

// WithDemand scales the models of bounds by demand, reading the gateway's queue from waiting
// (nil: none), and tells loads (nil: nobody) of each load started. It returns s.
func (s *Controller) WithDemand(bounds map[string]scheduler.ReplicaBounds, waiting Waiting, loads Loads) *Controller {
	s.bounds = make(map[string]scheduler.ReplicaBounds, len(bounds))
	for m, b := range bounds {
		s.bounds[models.NormalizeName(m)] = b
	}
	s.waiting, s.starts = waiting, loads
	return s
}

// New returns a controller keeping min[model] resident copies, checking every interval (10s when
// not positive); log nil means slog.Default().
func New(reg Registry, plan Planner, agents Agents, log *slog.Logger, min map[string]int, every time.Duration) *Controller {
	if log == nil {
		log = slog.Default()
	}
	if every <= 0 {
		every = 10 * time.Second
	}
	return &Controller{reg: reg, plan: plan, agents: agents, log: log, min: min, every: every}
}

// Run keeps the replicas warm until ctx is done. Each pass asks the placement planner (scheduler.Replicas) which nodes should load which
// model and what idle models they must evict first. Loads go only to nodes that already have the
// weights: a warm replica must never turn into a multi-gigabyte download nobody asked for.
// When ctx is done it returns once the loads it started have ended (their requests are made
// under ctx, so they end promptly).
func (s *Controller) Run(ctx context.Context) {
	defer s.loads.Wait()
	var pending sync.Map // "node/model" → struct{}: a load under way, not yet in a heartbeat
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.Reconcile(ctx, &pending)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Reconcile runs one pass and returns the plans it acted on (loads started in the background);
// pending holds the loads under way, "node/model" keys, so a pass does not start one twice.
func (s *Controller) Reconcile(ctx context.Context, pending *sync.Map) []scheduler.PlacementPlan {
	want := make(map[string]int, len(s.min))
	for m, n := range s.min {
		want[models.NormalizeName(m)] = n
	}
	snap := s.reg.Snapshot()
	s.scale(ctx, snap, want)
	var done []scheduler.PlacementPlan
	for _, plan := range s.plan.Replicas(want, snap) {
		switch {
		case !plan.OK():
			s.log.Warn("min_replicas: no node can take another replica", "model", plan.Model, "reason", plan.Reason)
			continue
		case plan.AlreadyResident:
			continue
		case plan.NeedsPull:
			s.log.Warn("min_replicas: the chosen node lacks the weights; pull or copy them there", "model", plan.Model, "node", plan.Node)
			continue
		}
		key := plan.Node + "/" + plan.Model
		if _, busy := pending.LoadOrStore(key, struct{}{}); busy {
			continue
		}
		view, ok := s.reg.Node(plan.Node)
		if !ok {
			pending.Delete(key)
			continue
		}
		client := s.agents.For(view)
		s.loads.Go(func() {
			defer pending.Delete(key)
			lctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			defer cancel()
			for _, e := range plan.Evict {
				if err := client.Unload(lctx, agentapi.ModelRequest{Model: e.Model}); err != nil {
					s.log.Warn("min_replicas: evict failed", "node", plan.Node, "model", e.Model, "err", err)
					return
				}
			}
			if s.starts != nil {
				s.starts.StartLoad(plan.Node, plan.Model)
			}
			if err := client.Load(lctx, agentapi.ModelRequest{Model: plan.Model, KeepAlive: "-1"}); err != nil {
				s.log.Warn("min_replicas: load failed", "node", plan.Node, "model", plan.Model, "err", err)
				return
			}
			s.log.Info("min_replicas: replica loaded", "node", plan.Node, "model", plan.Model, "evicted", len(plan.Evict))
		})
		done = append(done, plan)
	}
	return done
}

// scale raises want to the replicas each bounded model needs now (the loads then go through
// the planner with the min_replicas ones) and unloads the replicas Scale has asked to drop
// DropAfter passes in a row.
func (s *Controller) scale(ctx context.Context, snap *scheduler.Snapshot, want map[string]int) {
	if len(s.bounds) == 0 {
		return
	}
	var waiting map[string]int
	if s.waiting != nil {
		waiting = s.waiting()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drops == nil {
		s.drops = map[string]int{}
	}
	asked := map[string]bool{}
	for _, d := range s.plan.Scale(s.bounds, waiting, snap) {
		if d.Target > d.Replicas && d.Target > want[d.Model] {
			want[d.Model] = d.Target
			s.log.Info("replicas: adding a replica", "model", d.Model, "replicas", d.Replicas, "demand", d.Demand, "capacity", d.Capacity)
		}
		if d.Drop == "" {
			continue
		}
		key := d.Model + "/" + d.Drop
		asked[key] = true
		if s.drops[key]++; s.drops[key] < DropAfter {
			continue
		}
		delete(s.drops, key)
		view, ok := s.reg.Node(d.Drop)
		if !ok || busy(s.reg.Snapshot(), d.Drop, d.Model) {
			continue // never evict a model with requests in flight
		}
		s.log.Info("replicas: dropping an idle replica", "model", d.Model, "node", d.Drop, "replicas", d.Replicas, "demand", d.Demand, "capacity", d.Capacity)
		client := s.agents.For(view)
		s.loads.Go(func() {
			uctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := client.Unload(uctx, agentapi.ModelRequest{Model: d.Model}); err != nil {
				s.log.Warn("replicas: unload failed", "node", d.Drop, "model", d.Model, "err", err)
			}
		})
	}
	for key := range s.drops {
		if !asked[key] {
			delete(s.drops, key)
		}
	}
}

// busy reports whether model has requests in flight on node in snap (or the node is gone).
func busy(snap *scheduler.Snapshot, node, model string) bool {
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if n.ID != node {
			continue
		}
		for _, m := range n.Models {
			if m.Name == model {
				return m.InFlight > 0
			}
		}
		return false
	}
	return true
}
