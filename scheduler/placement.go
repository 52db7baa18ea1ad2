package scheduler

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/herd-llm/herd/models"
)

// PlacementRequest asks the planner where to load a model.
type PlacementRequest struct {
	Model string `json:"model"`
	// VRAMBytes is the memory the model needs loaded, the same on every node. 0: estimated per
	// node from Spec (models.EstimateVRAM: weights + KV cache for ContextLength × the node's
	// slots + overhead), else the largest VRAM figure a node reports for the model, else its
	// largest size on disk. A model of unknown size fits anywhere.
	VRAMBytes uint64 `json:"vram_bytes,omitempty"`
	// Spec describes the model (models.LookupModel); nil: unknown.
	Spec *models.ModelSpec `json:"spec,omitempty"`
	// ContextLength is the per-slot context the model will be loaded with; 0: models' default.
	ContextLength int `json:"context_length,omitempty"`
	// Exclude lists node IDs not to place on.
	Exclude []string `json:"exclude,omitempty"`
	// Keep lists models that must not be evicted (a model kept warm by min_replicas).
	Keep []string `json:"keep,omitempty"`
	// NewReplica asks for a node that does not hold the model yet. Without it, a node where the
	// model is already resident is the answer (AlreadyResident), and nothing needs loading.
	NewReplica bool `json:"new_replica,omitempty"`
}

// PlacementPlan says which node should load a model and what it must evict first.
type PlacementPlan struct {
	Model string `json:"model"`
	// Node is the chosen node's ID; empty when the model fits on no node (Reason says why).
	Node string `json:"node,omitempty"`
	// NodeIndex indexes Snapshot.Nodes; -1 when no node was chosen.
	NodeIndex int `json:"-"`
	// AlreadyResident is true when the model is loaded on Node already: nothing to do.
	AlreadyResident bool `json:"already_resident,omitempty"`
	// NeedsPull is true when the model's weights are not on Node's disk: pull or copy them first.
	NeedsPull bool `json:"needs_pull,omitempty"`
	// Evict lists the idle models to unload from Node first, least recently used first.
	Evict []Eviction `json:"evict,omitempty"`
	// VRAMBytes is the size the plan assumed for the model on Node (0: unknown).
	VRAMBytes uint64 `json:"vram_bytes"`
	// FreeAfterBytes is Node's free GPU memory once the evictions are done and the model loaded.
	FreeAfterBytes uint64 `json:"free_after_bytes"`
	// TokensPerSecond is the decode speed expected for the model on Node.
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
	// Reason says why no node was chosen.
	Reason string `json:"reason,omitempty"`
	// Refused lists the nodes that could not take the model, and why.
	Refused []PlacementRefusal `json:"refused,omitempty"`
}

// OK reports whether the plan names a node.
func (p PlacementPlan) OK() bool { return p.Node != "" }

// Eviction is one model to unload before a load.
type Eviction struct {
	Model     string    `json:"model"`
	VRAMBytes uint64    `json:"vram_bytes"`
	LastUsed  time.Time `json:"last_used"`
}

// PlacementRefusal is a node the planner could not use.
type PlacementRefusal struct {
	Node   string `json:"node"`
	Reason Reason `json:"reason"`
}

// placeOption is one node that can take the model.
type placeOption struct {
	index     int
	need      uint64
	resident  bool
	onDisk    bool
	tps       float64
	freeAfter uint64
	evict     []Eviction
}

// Plan chooses the node that should load req.Model: among the healthy nodes whose backend loads
// models on demand and where the model fits in free GPU memory once idle models are evicted
// (least recently used first), the fastest for the model, then the one with the most memory
// left, then one that has the weights on disk, then the fewest evictions, then the lowest ID.
// When the model is resident on a healthy node already (and req.NewReplica is false), that node
// is the answer. Plan is pure.
func (s *Scheduler) Plan(req PlacementRequest, snap *Snapshot) PlacementPlan {
	plan := PlacementPlan{Model: req.Model, NodeIndex: -1}
	if snap == nil {
		plan.Reason = "empty snapshot"
		return plan
	}
	reported := reportedVRAM(snap, req.Model)
	if reported == 0 {
		reported = reportedSize(snap, req.Model)
	}
	weights := reportedSize(snap, req.Model)
	if req.Spec != nil && req.Spec.WeightsBytes > 0 {
		weights = req.Spec.WeightsBytes
	}
	var resident, loadable []placeOption
	for i := range snap.Nodes {
		node := &snap.Nodes[i]
		need := req.VRAMBytes
		if need == 0 && req.Spec != nil {
			need = models.EstimateVRAM(*req.Spec, req.ContextLength, max(node.Slots, 1))
		}
		if need == 0 {
			need = reported
		}
		w := weights
		if w == 0 {
			w = need
		}
		r, opt := s.placeOn(&req, node, need, w)
		if r != ReasonNone {
			plan.Refused = append(plan.Refused, PlacementRefusal{Node: node.ID, Reason: r})
			continue
		}
		opt.index, opt.need = i, need
		if opt.resident {
			resident = append(resident, opt)
		} else {
			loadable = append(loadable, opt)
		}
	}
	opts := loadable
	if len(resident) > 0 {
		opts = resident
	}
	if len(opts) == 0 {
		plan.Reason = "no healthy node that can load the model has room for it"
		return plan
	}
	// Nodes that cannot estimate their speed take the cluster median, so that they rank as
	// average rather than as slowest.
	var median float64
	var buf []float64
	for i := range opts {
		if opts[i].tps == 0 {
			if median == 0 {
				listed, indexed := snap.nodesWith(req.Model)
				if median = clusterMedianSpeed(snap, req.Model, listed, indexed, &buf); median == 0 {
					median = s.cfg.DefaultTokensPerSecond
				}
			}
			opts[i].tps = median
		}
	}
	best := slices.MinFunc(opts, func(a, b placeOption) int {
		if c := cmp.Compare(b.tps, a.tps); c != 0 {
			return c
		}
		if c := cmp.Compare(b.freeAfter, a.freeAfter); c != 0 {
			return c
		}
		if a.onDisk != b.onDisk {
			if a.onDisk {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(len(a.evict), len(b.evict)); c != 0 {
			return c
		}
		return cmp.Compare(snap.Nodes[a.index].ID, snap.Nodes[b.index].ID)
	})
	plan.Node = snap.Nodes[best.index].ID
	plan.NodeIndex = best.index
	plan.VRAMBytes = best.need
	plan.AlreadyResident = best.resident
	plan.NeedsPull = !best.onDisk
	plan.Evict = best.evict
	plan.FreeAfterBytes = best.freeAfter
	plan.TokensPerSecond = best.tps
	return plan
}

// placeOn says whether node can take the model, and if so at what cost.
func (s *Scheduler) placeOn(req *PlacementRequest, node *Node, need, weights uint64) (Reason, placeOption) {
	switch {
	case slices.Contains(req.Exclude, node.ID):
		return ReasonExcluded, placeOption{}
	case node.Stale:
		return ReasonStale, placeOption{}
	case node.Draining:
		return ReasonDraining, placeOption{}
	case !node.Healthy:
		return ReasonUnhealthy, placeOption{}
	case node.CircuitOpen:
		return ReasonCircuitOpen, placeOption{}
	}
	mi := findModel(node, req.Model)
	free := satSub(node.VRAMTotalBytes, node.VRAMUsedBytes)
	opt := placeOption{}
	opt.tps, _ = nodeSpeed(node, mi, weights)
	if mi >= 0 && node.Models[mi].Resident {
		if req.NewReplica {
			return ReasonAlreadyResident, placeOption{}
		}
		opt.resident, opt.onDisk, opt.freeAfter = true, true, free
		return ReasonNone, opt
	}
	if !node.CanLoad {
		return ReasonCannotLoad, placeOption{}
	}
	opt.onDisk = mi >= 0 && node.Models[mi].OnDisk
	if need == 0 || node.VRAMTotalBytes == 0 {
		// Unknown size or no GPU telemetry: the planner cannot tell, so it does not refuse.
		opt.freeAfter = satSub(free, need)
		return ReasonNone, opt
	}
	if free < need {
		var idle []int
		for j := range node.Models {
			o := &node.Models[j]
			if j != mi && o.Resident && o.InFlight <= 0 && !slices.Contains(req.Keep, o.Name) {
				idle = append(idle, j)
			}
		}
		slices.SortFunc(idle, func(a, b int) int {
			ma, mb := &node.Models[a], &node.Models[b]
			if c := ma.LastUsed.Compare(mb.LastUsed); c != 0 {
				return c
			}
			return cmp.Compare(ma.Name, mb.Name)
		})
		for _, j := range idle {
			if free >= need {
				break
			}
			o := &node.Models[j]
			opt.evict = append(opt.evict, Eviction{Model: o.Name, VRAMBytes: o.VRAMBytes, LastUsed: o.LastUsed})
			free += o.VRAMBytes
		}
		if free < need {
			return ReasonDoesNotFit, placeOption{}
		}
	}
	opt.freeAfter = free - need
	return ReasonNone, opt
}

// Replicas plans the loads that bring every model of minReplicas up to that many resident copies
// on healthy nodes, one plan per missing copy, in model-name order. Plans build on each other
// (a later one sees the memory an earlier one used) and never evict a model that is at or below
// its own minimum. A model that fits nowhere gets one plan with an empty Node and the reason.
// Its size is the largest VRAM figure a node reports for it, else the models estimate of its
// catalogue entry for each node's slots, else its size on disk.
func (s *Scheduler) Replicas(minReplicas map[string]int, snap *Snapshot) []PlacementPlan {
	if snap == nil {
		return nil
	}
	work := &Snapshot{Now: snap.Now, Nodes: slices.Clone(snap.Nodes)}
	for i := range work.Nodes {
		work.Nodes[i].Models = slices.Clone(work.Nodes[i].Models)
	}
	var plans []PlacementPlan
	for _, name := range slices.Sorted(maps.Keys(minReplicas)) {
		want := minReplicas[name]
		size := reportedVRAM(snap, name)
		var spec *models.ModelSpec
		if sp, ok := models.LookupModel(name); ok && size == 0 {
			spec = &sp
		}
		// Each plan adds a replica on a node that had none, so this ends within len(Nodes) rounds.
		for have := residentCount(work, name); have < want; have++ {
			var keep []string
			for _, m := range slices.Sorted(maps.Keys(minReplicas)) {
				if minReplicas[m] > 0 && residentCount(work, m) <= minReplicas[m] {
					keep = append(keep, m)
				}
			}
			p := s.Plan(PlacementRequest{Model: name, VRAMBytes: size, Spec: spec, Keep: keep, NewReplica: true}, work)
			plans = append(plans, p)
			if !p.OK() {
				break
			}
			apply(work, p)
		}
	}
	return plans
}

// apply updates work as if plan had been carried out.
func apply(work *Snapshot, plan PlacementPlan) {
	node := &work.Nodes[plan.NodeIndex]
	for _, e := range plan.Evict {
		if j := findModel(node, e.Model); j >= 0 {
			node.Models[j].Resident = false
			node.VRAMUsedBytes = satSub(node.VRAMUsedBytes, node.Models[j].VRAMBytes)
		}
	}
	j := findModel(node, plan.Model)
	if j < 0 {
		node.Models = append(node.Models, NodeModel{Name: plan.Model})
		j = len(node.Models) - 1
	}
	m := &node.Models[j]
	m.Resident, m.OnDisk, m.LastUsed = true, true, work.Now
	if m.VRAMBytes == 0 {
		m.VRAMBytes = plan.VRAMBytes
	}
	node.VRAMUsedBytes += plan.VRAMBytes
}

// residentCount counts the healthy nodes of snap where model is resident.
func residentCount(snap *Snapshot, model string) int {
	n := 0
	for i := range snap.Nodes {
		node := &snap.Nodes[i]
		if node.Stale || node.Draining || !node.Healthy || node.CircuitOpen {
			continue
		}
		if j := findModel(node, model); j >= 0 && node.Models[j].Resident {
			n++
		}
	}
	return n
}

// reportedVRAM is the largest VRAM figure any node reports for model (0: none).
func reportedVRAM(snap *Snapshot, model string) uint64 {
	var v uint64
	for i := range snap.Nodes {
		if j := findModel(&snap.Nodes[i], model); j >= 0 {
			v = max(v, snap.Nodes[i].Models[j].VRAMBytes)
		}
	}
	return v
}

// reportedSize is the largest size on disk any node reports for model.
func reportedSize(snap *Snapshot, model string) uint64 {
	var v uint64
	for i := range snap.Nodes {
		if j := findModel(&snap.Nodes[i], model); j >= 0 {
			v = max(v, snap.Nodes[i].Models[j].SizeBytes)
		}
	}
	return v
}
