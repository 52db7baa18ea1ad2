package gateway

import (
	"context"
	"time"

	"github.com/herd-llm/herd/gateway/admin"
	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/scheduler"
)

// queueView shows admission's queue to the admin API: the requests waiting in the gateway (under
// the herd policy that is where they wait, not on the nodes), by model and class.
type queueView struct{ adm *admission.Admission }

var _ admin.Queue = queueView{}

// Queue implements admin.Queue.
func (q queueView) Queue() api.Queue {
	depths := q.adm.QueueDepths()
	out := api.Queue{Models: make([]api.QueueDepth, 0, len(depths))}
	for _, d := range depths {
		out.Models = append(out.Models, api.QueueDepth{Model: d.Model, Class: d.Class, Waiting: d.Waiting, Capacity: d.Capacity})
		if d.Class == scheduler.ClassBatch {
			out.Batch += d.Waiting
		} else {
			out.Interactive += d.Waiting
		}
	}
	return out
}

// recordHistory samples the cluster into the history every interval until ctx is done, starting
// at once.
func (s *Server) recordHistory(ctx context.Context) {
	take := func() { s.history.Sample(s.core.clock.Now(), s.registry.Nodes(), s.core.adm.QueueDepths()) }
	take()
	t := time.NewTicker(s.history.Interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			take()
		}
	}
}
