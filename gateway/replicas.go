package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// keepReplicas keeps Config.MinReplicas resident copies of each listed model warm until ctx is
// done. Each pass asks the placement planner (scheduler.Replicas) which nodes should load which
// model and what idle models they must evict first. Loads go only to nodes that already have the
// weights: a warm replica must never turn into a multi-gigabyte download nobody asked for.
func (s *Server) keepReplicas(ctx context.Context) {
	every := s.cfg.ReplicaInterval
	if every <= 0 {
		every = 10 * time.Second
	}
	var pending sync.Map // "node/model" → struct{}: a load under way, not yet in a heartbeat
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.reconcileReplicas(ctx, &pending)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reconcileReplicas runs one pass and returns the plans it acted on.
func (s *Server) reconcileReplicas(ctx context.Context, pending *sync.Map) []scheduler.PlacementPlan {
	want := make(map[string]int, len(s.cfg.MinReplicas))
	for m, n := range s.cfg.MinReplicas {
		want[models.NormalizeName(m)] = n
	}
	snap := s.registry.Snapshot()
	var done []scheduler.PlacementPlan
	for _, plan := range s.sched.Replicas(want, snap) {
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
		view, ok := s.registry.Node(plan.Node)
		if !ok {
			pending.Delete(key)
			continue
		}
		client := s.agentFor(view)
		go func() {
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
		}()
		done = append(done, plan)
	}
	return done
}
