package scheduler

import (
	"maps"
	"slices"
)

// ReplicaBounds bounds the resident copies of a model the replica controller keeps: at least
// Min (warm even when idle), at most Max (0: Min, no scaling).
type ReplicaBounds struct {
	Min int `yaml:"min" json:"min"`
	Max int `yaml:"max" json:"max"`
}

// ScaleDecision is what Scale found for one model.
type ScaleDecision struct {
	Model string `json:"model"`
	// Replicas counts the nodes where the model is resident (or loading) and schedulable;
	// Target is how many it should have.
	Replicas int `json:"replicas"`
	Target   int `json:"target"`
	// Demand is the model's requests in flight on its replicas plus those waiting for it in the
	// gateway; Capacity the slots of its replicas.
	Demand   int `json:"demand"`
	Capacity int `json:"capacity"`
	// Drop, when Target < Replicas, is the replica to unload: an idle one, least recently used.
	Drop string `json:"drop,omitempty"`
}

// ScaleHighWater and ScaleLowWater are the demand ÷ capacity past which Scale adds a replica and
// under which (counted without the replica it would drop) it drops one.
const (
	ScaleHighWater = 1.0
	ScaleLowWater  = 0.5
)

// Scale decides, for each bounded model, the replicas it needs now from its measured demand:
// one more when its demand (requests in flight on its replicas, plus waiting[model] in the
// gateway's queue) exceeds its replicas' slots (requests queue: ScaleHighWater), or when it has
// demand and no replica; one fewer when the replicas left would run at most half full
// (ScaleLowWater) and one replica is idle; never outside [Min, Max]. It moves one step per call,
// so the controller's pass interval paces it, and the controller holds a drop until Scale asks
// for it on several passes in a row. Scale is pure.
func (s *Scheduler) Scale(bounds map[string]ReplicaBounds, waiting map[string]int, snap *Snapshot) []ScaleDecision {
	if snap == nil {
		return nil
	}
	out := make([]ScaleDecision, 0, len(bounds))
	for _, model := range slices.Sorted(maps.Keys(bounds)) {
		b := bounds[model]
		hi := max(b.Max, b.Min)
		dec := ScaleDecision{Model: model, Demand: max(waiting[model], 0)}
		drop, dropSlots := -1, 0
		for i := range snap.Nodes {
			n := &snap.Nodes[i]
			mi := findModel(n, model)
			if mi < 0 || n.Stale || n.Draining || !n.Healthy {
				continue
			}
			m := &n.Models[mi]
			if !m.Resident && !m.Loading {
				continue
			}
			dec.Replicas++
			dec.Capacity += max(n.Slots, 1)
			dec.Demand += max(m.InFlight, 0)
			if m.InFlight <= 0 && m.Resident && (drop < 0 || m.LastUsed.Before(snap.Nodes[drop].Models[findModel(&snap.Nodes[drop], model)].LastUsed)) {
				drop, dropSlots = i, max(n.Slots, 1)
			}
		}
		dec.Target = dec.Replicas
		switch {
		case dec.Replicas < b.Min:
			dec.Target = b.Min
		case dec.Replicas < hi && (dec.Replicas == 0 && dec.Demand > 0 || float64(dec.Demand) > ScaleHighWater*float64(dec.Capacity)):
			dec.Target = dec.Replicas + 1
		case dec.Replicas > max(b.Min, 1) && drop >= 0 && float64(dec.Demand) <= ScaleLowWater*float64(dec.Capacity-dropSlots):
			dec.Target = dec.Replicas - 1
			dec.Drop = snap.Nodes[drop].ID
		case dec.Replicas > hi && drop >= 0:
			dec.Target = dec.Replicas - 1
			dec.Drop = snap.Nodes[drop].ID
		}
		out = append(out, dec)
	}
	return out
}
