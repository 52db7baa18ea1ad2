package registry

import (
	"slices"
	"time"

	"github.com/herd-llm/herd/scheduler"
)

// LoadGrace is how long a load this gateway started (StartLoad) counts as under way without a
// heartbeat showing the model resident: long enough for a large model from a slow disk.
const LoadGrace = 2 * time.Minute

// loads are the models this gateway made a node load (a request sent while the model was not
// resident there), each with the instant it stops counting as under way: until a heartbeat shows
// the model resident (confirm) or LoadGrace passes. Guarded by Registry.mu; nil is empty.
type loads map[string]time.Time

// confirm forgets the loads that models (a heartbeat's) show resident.
func (l loads) confirm(models []scheduler.NodeModel) {
	if len(l) == 0 {
		return
	}
	for j := range models {
		if m := &models[j]; m.Resident {
			delete(l, m.Name)
		}
	}
}

// mark sets Loading on the models of sn with a load under way at now, copying sn.Models first so
// the registry's base stays untouched, drops expired loads, and returns the earliest deadline
// still ahead (zero: none).
func (l loads) mark(sn *scheduler.Node, now time.Time) time.Time {
	var next time.Time
	copied := false
	for model, until := range l {
		if !now.Before(until) {
			delete(l, model)
			continue
		}
		for j := range sn.Models {
			if sn.Models[j].Name != model || sn.Models[j].Resident {
				continue
			}
			if !copied {
				sn.Models = slices.Clone(sn.Models)
				copied = true
			}
			sn.Models[j].Loading = true
			if next.IsZero() || until.Before(next) {
				next = until
			}
		}
	}
	return next
}

// StartLoad records that this gateway sent nodeID a request for model, which is not resident
// there, so the node is loading it. Until a heartbeat shows the model resident, or LoadGrace
// passes, snapshots mark the model Loading on the node, and the scheduler (herd policy) sends
// the model's requests to wait for that load rather than start another one elsewhere.
func (r *Registry) StartLoad(nodeID, model string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	if n.loads == nil {
		n.loads = loads{}
	}
	n.loads[model] = r.clock.Now().Add(LoadGrace)
	r.snaps.structChanged()
}

// EndLoad forgets a load StartLoad recorded (the request that started it failed).
func (r *Registry) EndLoad(nodeID, model string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.lookup(nodeID); n != nil && n.loads != nil {
		if _, ok := n.loads[model]; ok {
			delete(n.loads, model)
			r.snaps.structChanged()
		}
	}
}
