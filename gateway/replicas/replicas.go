// Package replicas is the gateway's replica controller: it keeps a minimum number of resident
// copies of listed models warm (the gateway's min_replicas), loading them through the node agents where
// the scheduler's placement planner says, on nodes that already have the weights.
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

// Planner plans replicas: the gateway's scheduler.
type Planner interface {
	Replicas(minReplicas map[string]int, snap *scheduler.Snapshot) []scheduler.PlacementPlan
}

// Agents gives the client of a node's agent.
type Agents interface {
	For(v registry.NodeView) *agentapi.Client
}

var (
	_ Registry = (*registry.Registry)(nil)
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
