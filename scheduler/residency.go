package scheduler

import (
	"math"
	"slices"
)

// Multi-model residency, as an engine that keeps a bounded number of models loaded behaves
// (Ollama: OLLAMA_MAX_LOADED_MODELS; a request for a model that is not loaded waits until the
// runner it will unload is idle, then evicts it and loads; a load costs seconds):
//
//   - A model shown resident on a node that is loading another model past its bound is on its
//     way out: the heartbeat that says so has not come yet, but a request sent there for it
//     would wait behind the other model's load and then reload it. The scheduler treats it as
//     not resident (effectivelyResident).
//   - A load that must evict a model still serving requests waits for them all to finish (the
//     engine drains the runner first): the wait model counts that drain, and the load's harm
//     counts the busy models it evicts (swapOf).
//   - What an eviction costs depends on how soon the evicted model is asked for again: with the
//     per-model demand the gateway measured (Request.Demand) it is the reload, weighted by the
//     chance of a request within EvictionRecent, plus the waits of the requests expected while
//     the model is away (demandHarm).
//   - Under the herd policy a load that evicts is taken only when nothing is cheaper: a load
//     candidate that evicts a model and whose cost (wait plus eviction harm) is above another
//     candidate's — a busy node holding the
//     model, with the model's backlog in the gateway counted in its queue, or a cheaper load —
//     is refused with ReasonWaitCheaper, a capacity reason, so the request waits in the gateway
//     for the cheaper node instead of starting a load on whichever node has a free slot
//     (preferWaiting).

// effectivelyResident reports whether model mi is resident on node and will stay so: resident,
// and not among the least recently used resident models a load under way there (another model
// marked Loading) pushes past the node's bound on loaded models.
func effectivelyResident(node *Node, mi int) bool {
	m := &node.Models[mi]
	if !m.Resident {
		return false
	}
	if node.MaxLoadedModels <= 0 {
		return true
	}
	loaded, loading := 0, 0
	for j := range node.Models {
		o := &node.Models[j]
		switch {
		case o.Resident:
			loaded++
		case o.Loading:
			loaded++
			loading++
		}
	}
	over := loaded - node.MaxLoadedModels
	if loading == 0 || over <= 0 {
		return true
	}
	// The over least recently used resident models go; is m one of them?
	older := 0
	for j := range node.Models {
		o := &node.Models[j]
		if j != mi && o.Resident && (o.LastUsed.Before(m.LastUsed) || o.LastUsed.Equal(m.LastUsed) && j < mi) {
			older++
		}
	}
	return older >= over
}

// swap is what loading a model on a node involves beyond the load itself.
type swap struct {
	// drain is true when the load must wait for every request on the node to finish: the node's
	// bound on loaded models leaves no idle model to evict (the others are busy or loading).
	drain bool
	// otherLoad is the rest of the loads of other models under way on the node, seconds, which
	// the drain waits for too; when it is positive the node is swapping already.
	otherLoad float64
}

// swapping reports whether the node is loading another model in place of one it must evict.
func (sw swap) swapping() bool { return sw.otherLoad > 0 }

// swapOf says what loading model mi on node involves (see swap). A node with no bound on loaded
// models (memory only, checked by the fit filter) never drains.
func (s *Scheduler) swapOf(req *Request, node *Node, mi int) swap {
	if node.MaxLoadedModels <= 0 {
		return swap{}
	}
	var sw swap
	loaded, idle, attributed := 0, 0, 0
	for j := range node.Models {
		if j == mi {
			continue
		}
		o := &node.Models[j]
		switch {
		case o.Resident:
			loaded++
			attributed += max(o.InFlight, 0)
			if o.InFlight <= 0 {
				idle++
			}
		case o.Loading:
			loaded++
			sw.otherLoad += s.loadSeconds(req, o) / 2
		}
	}
	over := loaded + 1 - node.MaxLoadedModels
	if over <= 0 {
		return swap{}
	}
	// Requests the heartbeat has not attributed to a model yet (this gateway's newest) run on
	// models that look idle.
	idle = max(idle-max(max(node.InFlight, 0)-attributed, 0), 0)
	sw.drain = sw.otherLoad > 0 || idle < over
	if !sw.drain {
		sw.otherLoad = 0
	}
	return sw
}

// loadSeconds is the time to load model m: its weights at LoadBytesPerSecond plus the runner's
// start (LoadStartSeconds), or unknownLoadSeconds when its size is unknown.
func (s *Scheduler) loadSeconds(req *Request, m *NodeModel) float64 {
	b := modelWeights(req, m)
	if b == 0 {
		return unknownLoadSeconds
	}
	return float64(b)/s.cfg.LoadBytesPerSecond + s.cfg.LoadStartSeconds
}

// drainSeconds is how long ahead requests already on a node of slots take to finish, each of
// other output tokens at tps single-stream with contention c per other busy stream.
func drainSeconds(ahead float64, slots int, other, tps, c float64) float64 {
	if ahead <= 0 {
		return 0
	}
	sl := float64(max(slots, 1))
	if ahead <= sl {
		return other * (1 + c*(ahead-1)) / tps
	}
	full := 1 + c*(sl-1)
	return (ahead-sl)*other/(sl*tps/full) + other*full/tps
}

// demandHarm is what evicting a model with demand rate lambda (requests/s) and load time load
// costs its users, in seconds: the reload, if a request comes within EvictionRecent, plus the
// waits of the requests expected while it is away (away seconds: until the request that evicts
// it is done and it is loaded again). Each of those waits about half of away for the reload and
// about as long again in the backlog they form behind it, so the expected lambda × away requests
// wait away each (the same doubling QueueAversion gives a queue).
func demandHarm(lambda, load, away float64) float64 {
	if !(lambda > 0) {
		return 0
	}
	p := 1 - math.Exp(-lambda*EvictionRecent.Seconds())
	return p*load + lambda*away*away
}

// holders counts the nodes that could serve req whose copy of its model is resident (and stays)
// or loading: they share the model's backlog in the gateway (Request.Waiting).
func holders(req *Request, snap *Snapshot, listed []ModelRef, indexed bool) int {
	count := 0
	visit := func(n *Node, mi int) {
		if n.Stale || n.Draining || !n.Healthy || n.CircuitOpen || slices.Contains(req.Exclude, n.ID) {
			return
		}
		if n.Models[mi].Loading || effectivelyResident(n, mi) {
			count++
		}
	}
	if indexed {
		for _, r := range listed {
			visit(&snap.Nodes[r.Node], int(r.Model))
		}
		return count
	}
	for i := range snap.Nodes {
		if mi := findModel(&snap.Nodes[i], req.Model); mi >= 0 {
			visit(&snap.Nodes[i], mi)
		}
	}
	return count
}

// preferWaiting applies the herd policy's two rules about loads to the candidates, which stay in
// snapshot order:
//   - a node already swapping to another model (swap.swapping) is refused for a load with
//     ReasonSwapping, a capacity reason: queueing a second model's load behind the first at the
//     engine would serve the node's requests in arrival order, a load between each change of
//     model, where the gateway can hold the request and send it, with every other request for
//     its model, once the node has served the model it is loading (coalescing by model);
//   - a candidate whose load evicts a model, while another candidate costs less (a swapping
//     node included: it is worth waiting for), is refused with ReasonWaitCheaper, so the request
//     goes to the cheaper node or waits in the gateway for it, instead of loading the model on
//     whichever node has a free slot. A load into free room evicts nothing and stays allowed: it
//     adds a copy of the model, which serves the requests after this one too, and which a
//     comparison of this request's own wait would never pay for.
func (s *Scheduler) preferWaiting(d *Decision) {
	minCost := math.Inf(1)
	loads := 0
	for _, c := range d.Candidates {
		minCost = min(minCost, d.evals[c.Node].cost)
		if c.NeedsLoad {
			loads++
		}
	}
	if loads == 0 {
		return
	}
	kept := d.Candidates[:0]
	for _, c := range d.Candidates {
		switch e := &d.evals[c.Node]; {
		case c.NeedsLoad && e.swapping:
			d.Rejections = append(d.Rejections, Rejection{Node: c.Node, Reason: ReasonSwapping})
		case c.NeedsLoad && e.harm > 0 && e.cost > minCost:
			d.Rejections = append(d.Rejections, Rejection{Node: c.Node, Reason: ReasonWaitCheaper})
		default:
			kept = append(kept, c)
		}
	}
	d.Candidates = kept
}
