// Package admin serves the admin API (/admin/v1 nodes, drain, faults, models, explain, queue,
// history): what operators, the herd CLI and the dashboard use to see the cluster and act on it. Its handlers
// are given the registry, the scheduler and the agent clients through the small interfaces
// declared here; the wire types are package api's. Decisions made here:
//   - Model names are shown as the registry keeps them (registry.ModelName: an OpenAI-compatible
//     server's ids exactly, Ollama-style names normalised), which is the form the scheduler sees,
//     and matched as given or normalised, so "llama3" and "llama3:latest" are one model.
//   - A node's in_flight and queued are the counts the scheduler uses, taken from the registry
//     (this gateway's own requests plus the other gateways' work the last heartbeat reported,
//     registry's rule), so what an operator sees is what placement saw; gateway_in_flight is
//     this gateway's own count alone.
//   - Pull and copy stream NDJSON agentapi.Progress lines tagged with the node, flushed as they
//     arrive; every node's part ends with exactly one line whose status is "success" or "error".
//     The stream is tied to the admin request: a client that hangs up cancels the transfers.
//   - Unload without a node unloads the model wherever it is resident; delete (which loses the
//     weights) always needs an explicit node.
//   - Load without a node asks the scheduler's placement planner, restricted to the nodes that
//     have the weights on disk, and unloads the idle models the plan evicts before loading.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/apierr"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// maxAdminBody bounds admin request bodies: they are a few small JSON fields.
const maxAdminBody = 64 << 10

// Registry is what the admin API reads and changes of the cluster: the gateway's registry.
type Registry interface {
	Nodes() []registry.NodeView
	Node(id string) (registry.NodeView, bool)
	SetDraining(id string, on bool) error
	Snapshot() *scheduler.Snapshot
}

// Scheduler explains placements and plans loads: the gateway's scheduler.
type Scheduler interface {
	Explain(req *scheduler.Request, snap *scheduler.Snapshot) scheduler.Explanation
	Plan(req scheduler.PlacementRequest, snap *scheduler.Snapshot) scheduler.PlacementPlan
}

// Agents gives the client of a node's agent.
type Agents interface {
	For(v registry.NodeView) *agentapi.Client
}

var (
	_ Registry  = (*registry.Registry)(nil)
	_ Scheduler = (*scheduler.Scheduler)(nil)
)

// Queue reports the requests waiting in the gateway (admission's queue).
type Queue interface {
	Queue() api.Queue
}

// History reports the gateway's in-process history of the cluster.
type History interface {
	History() api.History
}

// Requests reads an inference request body as the request path does, into the scheduler's
// request: the model, prompt size, output cap, the prefix each node's engine holds of its prompt
// (the gateway's prefix index) and the policies' keys. It returns the client's error for a body
// the request path would refuse.
type Requests interface {
	ExplainRequest(body []byte, snap *scheduler.Snapshot, req *scheduler.Request) *apierr.Error
}

// Handlers serve the admin API.
type Handlers struct {
	reg    Registry
	sched  Scheduler
	agents Agents
	log    *slog.Logger

	// now and interval date the nodes' figures (see liveness); queue and history, when set,
	// serve /queue and /history.
	now      func() time.Time
	interval time.Duration
	queue    Queue
	history  History
	requests Requests
}

// New returns the admin handlers over reg, sched and agents; log nil means slog.Default().
func New(reg Registry, sched Scheduler, agents Agents, log *slog.Logger) *Handlers {
	if log == nil {
		log = slog.Default()
	}
	return &Handlers{reg: reg, sched: sched, agents: agents, log: log, now: time.Now, interval: time.Second}
}

// WithClock sets the clock that dates the nodes' figures and the heartbeat interval assumed for
// agents that send none (defaults: the system clock, 1 s). It returns h.
func (h *Handlers) WithClock(now func() time.Time, interval time.Duration) *Handlers {
	h.now, h.interval = now, interval
	return h
}

// WithQueue serves /queue and /history from q and hist. It returns h.
func (h *Handlers) WithQueue(q Queue, hist History) *Handlers {
	h.queue, h.history = q, hist
	return h
}

// WithRequests lets POST /explain take an inference request body, read by r. It returns h.
func (h *Handlers) WithRequests(r Requests) *Handlers {
	h.requests = r
	return h
}

// Register mounts /admin/v1's nodes, drain, faults, models and explain routes on g. The caller
// puts admin authentication in front of g.
func (h *Handlers) Register(g *gin.RouterGroup) {
	g.GET("/nodes", h.handleListNodes)
	g.GET("/nodes/:id", h.handleGetNode)
	g.POST("/nodes/:id/drain", h.handleDrain(true))
	g.POST("/nodes/:id/undrain", h.handleDrain(false))
	g.POST("/nodes/:id/fault", h.handleFault)
	g.GET("/models", h.handleListModels)
	g.POST("/models/pull", h.handlePull)
	g.POST("/models/load", h.handleLoad)
	g.POST("/models/unload", h.handleUnload)
	g.POST("/models/copy", h.handleCopy)
	// Model names may contain slashes ("hf.co/org/repo:q4"), hence the catch-all.
	g.DELETE("/models/*name", h.handleDeleteModel)
	g.GET("/explain", h.handleExplain)
	if h.requests != nil {
		g.POST("/explain", h.handleExplain)
	}
	if h.queue != nil {
		g.GET("/queue", func(c *gin.Context) { c.JSON(http.StatusOK, h.queue.Queue()) })
	}
	if h.history != nil {
		g.GET("/history", func(c *gin.Context) { c.JSON(http.StatusOK, h.history.History()) })
	}
}

// liveness returns a node's heartbeat age and status at now. What an operator sees must be true
// now: a node is up while its heartbeat is at most 1.5 intervals old (the agent's own interval,
// else the gateway's), late past that (a beat missed; still in the schedule), and down once the
// registry holds it stale (out of the schedule). The age is on the gateway's clock, so a view
// can say "down 12s ago" and dim figures that old.
func liveness(v registry.NodeView, now time.Time, interval time.Duration) (float64, string) {
	age := max(now.Sub(v.LastHeartbeat), 0)
	if v.Heartbeat.IntervalMS > 0 {
		interval = time.Duration(v.Heartbeat.IntervalMS) * time.Millisecond
	}
	switch {
	case v.Stale:
		return age.Seconds(), api.NodeDown
	case interval > 0 && age > interval*3/2:
		return age.Seconds(), api.NodeLate
	}
	return age.Seconds(), api.NodeUp
}

// adminNode returns the admin view of v, dated now.
func (h *Handlers) adminNode(v registry.NodeView) api.Node {
	n := toAdminNode(v)
	n.LastSeenSeconds, n.Status = liveness(v, h.now(), h.interval)
	return n
}

// ---- nodes ----

func toAdminNode(v registry.NodeView) api.Node {
	hb := &v.Heartbeat
	n := api.Node{
		ID: hb.NodeID, Address: hb.Address, Hostname: hb.Hostname, Version: hb.Version,
		Backend: hb.Backend, Simulated: hb.Simulated,
		Healthy: v.Healthy, UnhealthyReason: v.UnhealthyReason,
		Draining: v.Draining, Stale: v.Stale, Circuit: v.Circuit,
		GPUs:     make([]api.GPU, 0, len(hb.GPUs)),
		Models:   make([]api.NodeModel, 0, len(hb.Models)),
		InFlight: v.InFlight, GatewayInFlight: v.GatewayInFlight,
		Queued: v.Queued, Slots: hb.Slots,
		LastHeartbeat: v.LastHeartbeat.UTC(), StartedAt: hb.StartedAt.UTC(),
		TelemetryError: hb.TelemetryError, BackendError: hb.BackendError,
	}
	for _, g := range hb.GPUs {
		ag := api.GPU{GPU: g}
		ag.ThrottleReasons = slices.Clone(g.ThrottleReasons)
		ag.Simulated = g.Simulated || hb.Simulated
		if ag.ThrottleReasons == nil {
			ag.ThrottleReasons = []string{}
		}
		ag.Throttled = slices.ContainsFunc(g.ThrottleReasons, registry.IsThrottling)
		n.GPUs = append(n.GPUs, ag)
	}
	for _, m := range hb.Models {
		n.Models = append(n.Models, api.NodeModel{
			Name: registry.ModelName(hb.Backend, m.Name), Resident: m.Resident, OnDisk: m.OnDisk,
			VRAMBytes: m.VRAMBytes, SizeBytes: m.SizeBytes, TokensPerSecond: m.TokensPerSecond,
			InFlight: m.InFlight, ParameterSize: m.ParameterSize, Quantization: m.Quantization,
			PromptTokens: m.PromptTokens, CachedPromptTokens: m.CachedPromptTokens,
		})
	}
	slices.SortFunc(n.Models, func(a, b api.NodeModel) int { return strings.Compare(a.Name, b.Name) })
	return n
}

func (h *Handlers) handleListNodes(c *gin.Context) {
	views := h.reg.Nodes()
	out := api.NodeList{Nodes: make([]api.Node, 0, len(views))}
	for _, v := range views {
		out.Nodes = append(out.Nodes, h.adminNode(v))
	}
	c.JSON(http.StatusOK, out)
}

func (h *Handlers) handleGetNode(c *gin.Context) {
	v, err := h.node(c.Param("id"))
	if err != nil {
		apierr.Abort(c, err)
		return
	}
	c.JSON(http.StatusOK, h.adminNode(v))
}

func (h *Handlers) node(id string) (registry.NodeView, error) {
	v, ok := h.reg.Node(id)
	if !ok {
		return v, nodeNotFound(id)
	}
	return v, nil
}

func nodeNotFound(id string) *apierr.Error {
	return apierr.NotFound("node_not_found", "node", "node %q is not known to this gateway", id)
}

func (h *Handlers) handleDrain(on bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.Param("id")
		if err := h.reg.SetDraining(id, on); err != nil {
			if errors.Is(err, registry.ErrUnknownNode) {
				apierr.Abort(c, nodeNotFound(id))
				return
			}
			if errors.Is(err, registry.ErrSharedUnavailable) {
				// Nothing changed: a drain only some gateways know would be worse than none.
				h.log.Warn("admin: drain not applied: shared registry unreachable", "node", id, "err", err)
				apierr.Abort(c, &apierr.Error{Status: http.StatusServiceUnavailable, Type: apierr.TypeUnavailable, Code: "registry_unavailable",
					Message: "The shared node registry (Redis) cannot be reached; the drain was not applied. Retry shortly.", RetryAfter: 1})
				return
			}
			apierr.Abort(c, err)
			return
		}
		h.log.Info("admin: drain", "node", id, "draining", on)
		v, err := h.node(id)
		if err != nil {
			apierr.Abort(c, err)
			return
		}
		c.JSON(http.StatusOK, h.adminNode(v))
	}
}

func (h *Handlers) handleFault(c *gin.Context) {
	var req api.FaultRequest
	if err := bindAdminJSON(c, &req); err != nil {
		apierr.Abort(c, err)
		return
	}
	gpu := 0
	if req.GPU != nil {
		gpu = *req.GPU
	}
	if gpu < 0 {
		apierr.Abort(c, apierr.BadRequest("invalid_gpu", "gpu", "gpu must not be negative"))
		return
	}
	if req.Kind == "" {
		apierr.Abort(c, apierr.BadRequest("missing_kind", "kind", "kind is required (e.g. ecc, xid, thermal, clear)"))
		return
	}
	v, err := h.node(c.Param("id"))
	if err != nil {
		apierr.Abort(c, err)
		return
	}
	if err := h.agents.For(v).InjectFault(c.Request.Context(), gpu, req.Kind); err != nil {
		apierr.Abort(c, agentFailure(v.Heartbeat.NodeID, "inject fault", err))
		return
	}
	h.log.Warn("admin: fault injected", "node", v.Heartbeat.NodeID, "gpu", gpu, "kind", req.Kind)
	c.JSON(http.StatusOK, gin.H{"node": v.Heartbeat.NodeID, "gpu": gpu, "kind": req.Kind, "status": "injected"})
}

// ---- models ----

func (h *Handlers) handleListModels(c *gin.Context) {
	byName := map[string]*api.ClusterModel{}
	for _, v := range h.reg.Nodes() {
		for _, m := range v.Heartbeat.Models {
			name := registry.ModelName(v.Heartbeat.Backend, m.Name)
			cm := byName[name]
			if cm == nil {
				cm = &api.ClusterModel{Name: name}
				byName[name] = cm
			}
			on := api.ModelOnNode{Node: v.Heartbeat.NodeID, Resident: m.Resident, OnDisk: m.OnDisk,
				VRAMBytes: m.VRAMBytes, SizeBytes: m.SizeBytes, Stale: v.Stale}
			// Two spellings of one model on one node are one entry.
			if i := slices.IndexFunc(cm.Nodes, func(x api.ModelOnNode) bool { return x.Node == on.Node }); i >= 0 {
				e := &cm.Nodes[i]
				e.Resident, e.OnDisk = e.Resident || on.Resident, e.OnDisk || on.OnDisk
				e.VRAMBytes, e.SizeBytes = max(e.VRAMBytes, on.VRAMBytes), max(e.SizeBytes, on.SizeBytes)
				continue
			}
			cm.Nodes = append(cm.Nodes, on)
		}
	}
	out := api.ModelList{Models: make([]api.ClusterModel, 0, len(byName))}
	for _, cm := range byName {
		out.Models = append(out.Models, *cm)
	}
	// Nodes() is sorted by ID, so each model's nodes already are.
	slices.SortFunc(out.Models, func(a, b api.ClusterModel) int { return strings.Compare(a.Name, b.Name) })
	c.JSON(http.StatusOK, out)
}

func (h *Handlers) handlePull(c *gin.Context) {
	var req api.PullRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		apierr.Abort(c, err)
		return
	}
	var targets []registry.NodeView
	if len(req.Nodes) == 0 {
		for _, v := range h.reg.Nodes() {
			if !v.Stale {
				targets = append(targets, v)
			}
		}
		if len(targets) == 0 {
			apierr.Abort(c, apierr.Unavailable("no live node to pull %q to", req.Model))
			return
		}
	} else {
		for _, id := range req.Nodes {
			v, err := h.node(id)
			if err != nil {
				apierr.Abort(c, err)
				return
			}
			if !slices.ContainsFunc(targets, func(t registry.NodeView) bool { return t.Heartbeat.NodeID == id }) {
				targets = append(targets, v)
			}
		}
	}
	h.log.Info("admin: pull", "model", req.Model, "nodes", len(targets))
	h.streamProgress(c, targets, func(ctx context.Context, v registry.NodeView, progress func(agentapi.Progress)) error {
		return h.agents.For(v).Pull(ctx, agentapi.PullRequest{Model: req.Model, Insecure: req.Insecure}, progress)
	})
}

func (h *Handlers) handleCopy(c *gin.Context) {
	var req api.CopyRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		apierr.Abort(c, err)
		return
	}
	switch {
	case req.From == "" || req.To == "":
		apierr.Abort(c, apierr.BadRequest("missing_node", "from", "from and to (node IDs) are required"))
		return
	case req.From == req.To:
		apierr.Abort(c, apierr.BadRequest("invalid_node", "to", "from and to are the same node"))
		return
	}
	from, err := h.node(req.From)
	if err != nil {
		apierr.Abort(c, err)
		return
	}
	to, err := h.node(req.To)
	if err != nil {
		apierr.Abort(c, err)
		return
	}
	if m := findNodeModel(from, req.Model); m == nil || !m.OnDisk {
		apierr.Abort(c, apierr.NotFound("model_not_found", "model", "model %q is not on node %q's disk", req.Model, req.From))
		return
	}
	h.log.Info("admin: copy", "model", req.Model, "from", req.From, "to", req.To)
	h.streamProgress(c, []registry.NodeView{to}, func(ctx context.Context, v registry.NodeView, progress func(agentapi.Progress)) error {
		return h.agents.For(v).Copy(ctx, agentapi.CopyRequest{Model: req.Model, From: from.Heartbeat.Address}, progress)
	})
}

// transferFunc runs one node's pull or copy, reporting each progress line.
type transferFunc func(ctx context.Context, v registry.NodeView, progress func(agentapi.Progress)) error

// streamProgress runs do on every target at once and streams their progress as NDJSON, each
// line tagged with its node, flushing every line. Each node's part ends with one final line.
func (h *Handlers) streamProgress(c *gin.Context, targets []registry.NodeView, do transferFunc) {
	ctx := c.Request.Context()
	lines := make(chan agentapi.Progress)
	var wg sync.WaitGroup
	for _, v := range targets {
		wg.Go(func() {
			id := v.Heartbeat.NodeID
			send := func(p agentapi.Progress) bool {
				p.Node = id
				select {
				case lines <- p:
					return true
				case <-ctx.Done():
					return false
				}
			}
			final := false
			err := do(ctx, v, func(p agentapi.Progress) {
				if p.Error != "" || p.Status == "success" {
					final = true
					if p.Error != "" {
						p.Status = "error"
					}
				}
				send(p)
			})
			if err != nil {
				h.log.Warn("admin: model transfer failed", "node", id, "err", err)
			}
			if err != nil && !final {
				send(agentapi.Progress{Status: "error", Error: err.Error()})
			}
		})
	}
	go func() {
		wg.Wait()
		close(lines)
	}()

	c.Header("Content-Type", "application/x-ndjson")
	c.Header("Cache-Control", "no-cache")
	c.Header("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	c.Writer.Flush()
	enc := json.NewEncoder(c.Writer)
	for p := range lines {
		if err := enc.Encode(p); err != nil {
			// The client is gone; its context cancels the transfers and the senders give up.
			for range lines {
			}
			return
		}
		c.Writer.Flush()
	}
}

func (h *Handlers) handleLoad(c *gin.Context) {
	var req api.LoadRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		apierr.Abort(c, err)
		return
	}
	resp := api.LoadResponse{Model: models.NormalizeName(req.Model), Status: "loaded", Evicted: []api.Eviction{}}
	var target registry.NodeView
	if req.Node != "" {
		v, err := h.node(req.Node)
		if err != nil {
			apierr.Abort(c, err)
			return
		}
		target = v
	} else {
		plan, err := h.planLoad(resp.Model)
		if err != nil {
			apierr.Abort(c, err)
			return
		}
		v, err := h.node(plan.Node)
		if err != nil {
			apierr.Abort(c, err)
			return
		}
		target = v
		if plan.AlreadyResident {
			resp.Node, resp.Status = plan.Node, "already_resident"
			c.JSON(http.StatusOK, resp)
			return
		}
		client := h.agents.For(target)
		for _, e := range plan.Evict {
			if err := client.Unload(c.Request.Context(), agentapi.ModelRequest{Model: e.Model}); err != nil {
				apierr.Abort(c, agentFailure(plan.Node, "unload "+e.Model, err))
				return
			}
			resp.Evicted = append(resp.Evicted, api.Eviction(e))
		}
	}
	resp.Node = target.Heartbeat.NodeID
	if err := h.agents.For(target).Load(c.Request.Context(), agentapi.ModelRequest{Model: req.Model, KeepAlive: req.KeepAlive}); err != nil {
		apierr.Abort(c, agentFailure(resp.Node, "load", err))
		return
	}
	h.log.Info("admin: load", "model", resp.Model, "node", resp.Node, "evicted", len(resp.Evicted))
	c.JSON(http.StatusOK, resp)
}

// planLoad asks the placement planner for a node to load model on, among the nodes that have its
// weights (a load must not turn into a multi-gigabyte pull behind the operator's back).
func (h *Handlers) planLoad(model string) (scheduler.PlacementPlan, error) {
	snap := h.reg.Snapshot()
	req := scheduler.PlacementRequest{Model: model}
	if spec, ok := models.LookupModel(model); ok {
		req.Spec = &spec
	}
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if !slices.ContainsFunc(n.Models, func(m scheduler.NodeModel) bool { return m.Name == model && (m.OnDisk || m.Resident) }) {
			req.Exclude = append(req.Exclude, n.ID)
		}
	}
	if len(req.Exclude) == len(snap.Nodes) {
		return scheduler.PlacementPlan{}, apierr.NotFound("model_not_found", "model", "no node has model %q on disk: pull or copy it first", model)
	}
	plan := h.sched.Plan(req, snap)
	if !plan.OK() {
		return plan, apierr.Unavailable("no node can load %q: %s", model, plan.Reason)
	}
	return plan, nil
}

func (h *Handlers) handleUnload(c *gin.Context) {
	var req api.UnloadRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		apierr.Abort(c, err)
		return
	}
	name := models.NormalizeName(req.Model)
	var targets []registry.NodeView
	if req.Node != "" {
		v, err := h.node(req.Node)
		if err != nil {
			apierr.Abort(c, err)
			return
		}
		targets = append(targets, v)
	} else {
		for _, v := range h.reg.Nodes() {
			if m := findNodeModel(v, name); m != nil && m.Resident && !v.Stale {
				targets = append(targets, v)
			}
		}
		if len(targets) == 0 {
			apierr.Abort(c, apierr.NotFound("model_not_resident", "model", "model %q is not resident on any live node", name))
			return
		}
	}
	nodes := make([]string, 0, len(targets))
	for _, v := range targets {
		if err := h.agents.For(v).Unload(c.Request.Context(), agentapi.ModelRequest{Model: req.Model}); err != nil {
			apierr.Abort(c, agentFailure(v.Heartbeat.NodeID, "unload", err))
			return
		}
		nodes = append(nodes, v.Heartbeat.NodeID)
	}
	h.log.Info("admin: unload", "model", name, "nodes", nodes)
	c.JSON(http.StatusOK, gin.H{"model": name, "nodes": nodes, "status": "unloaded"})
}

func (h *Handlers) handleDeleteModel(c *gin.Context) {
	model := strings.TrimPrefix(c.Param("name"), "/")
	if model == "" {
		apierr.Abort(c, apierr.BadRequest("missing_model", "name", "model name is required in the path"))
		return
	}
	id := c.Query("node")
	if id == "" {
		apierr.Abort(c, apierr.BadRequest("missing_node", "node", "node query parameter is required: deleting removes the weights from that node's disk"))
		return
	}
	v, err := h.node(id)
	if err != nil {
		apierr.Abort(c, err)
		return
	}
	if err := h.agents.For(v).Delete(c.Request.Context(), agentapi.ModelRequest{Model: model}); err != nil {
		apierr.Abort(c, agentFailure(id, "delete", err))
		return
	}
	h.log.Info("admin: delete", "model", model, "node", id)
	c.JSON(http.StatusOK, gin.H{"model": models.NormalizeName(model), "node": id, "status": "deleted"})
}

// ---- explain ----

// handleExplain shows how the scheduler would place a request for ?model= now: each node's
// filter reason or score breakdown. Optional: class, prompt_tokens, max_tokens, seed. A POST
// takes the inference request itself as its body (an OpenAI chat, completion or Responses body,
// presets not applied): then each node's explanation also shows how much of its prompt the
// node's engine holds (prefix_tokens) and the prefill that saves.
func (h *Handlers) handleExplain(c *gin.Context) {
	var req scheduler.Request
	snap := h.reg.Snapshot()
	if c.Request.Method == http.MethodPost {
		body, err := io.ReadAll(io.LimitReader(c.Request.Body, 64<<20))
		if err != nil {
			apierr.Abort(c, apierr.BadRequest("invalid_body", "", "reading the body: %v", err))
			return
		}
		if e := h.requests.ExplainRequest(body, snap, &req); e != nil {
			apierr.Abort(c, e)
			return
		}
	} else {
		model := strings.TrimSpace(c.Query("model"))
		if model == "" {
			apierr.Abort(c, apierr.BadRequest("missing_model", "model", "model query parameter is required"))
			return
		}
		req.Model = snapshotName(snap, model)
	}
	req.Class = scheduler.ClassInteractive
	if cl := c.Query("class"); cl != "" {
		if cl != scheduler.ClassInteractive && cl != scheduler.ClassBatch {
			apierr.Abort(c, apierr.BadRequest("invalid_class", "class", "class must be %q or %q", scheduler.ClassInteractive, scheduler.ClassBatch))
			return
		}
		req.Class = cl
	}
	for _, q := range []struct {
		name string
		dst  *int
	}{{"prompt_tokens", &req.PromptTokens}, {"max_tokens", &req.MaxTokens}} {
		if v := c.Query(q.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				apierr.Abort(c, apierr.BadRequest("invalid_parameter", q.name, "%s must be a non-negative integer", q.name))
				return
			}
			*q.dst = n
		}
	}
	if v := c.Query("seed"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			apierr.Abort(c, apierr.BadRequest("invalid_parameter", "seed", "seed must be an unsigned integer"))
			return
		}
		req.Seed = n
	}
	// As on the request path, the model's size is the most VRAM any node reports for it.
	for i := range snap.Nodes {
		for _, m := range snap.Nodes[i].Models {
			if m.Name == req.Model {
				req.ModelVRAMBytes = max(req.ModelVRAMBytes, m.VRAMBytes)
			}
		}
	}
	c.JSON(http.StatusOK, h.sched.Explain(&req, snap))
}

// ---- helpers ----

// bindAdminJSON decodes a small JSON body into dst, rejecting unknown fields so a typo in an
// operator's request is an error rather than a silently ignored option.
func bindAdminJSON(c *gin.Context, dst any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apierr.Error{Status: http.StatusRequestEntityTooLarge, Type: apierr.TypeInvalidRequest, Code: "request_too_large",
				Message: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
		}
		return apierr.BadRequest("invalid_json", "", "request body is not valid JSON: %v", err)
	}
	return nil
}

// bindModelJSON binds an admin request whose model field (pointed to by model) is required.
func bindModelJSON(c *gin.Context, dst any, model *string) error {
	if err := bindAdminJSON(c, dst); err != nil {
		return err
	}
	if strings.TrimSpace(*model) == "" {
		return apierr.BadRequest("missing_model", "model", "model is required")
	}
	return nil
}

// snapshotName is the name the scheduler knows a client's model name by: the name itself when a
// node reports it so (an OpenAI-compatible server's exact id), else its normalised spelling.
func snapshotName(snap *scheduler.Snapshot, name string) string {
	for i := range snap.Nodes {
		for j := range snap.Nodes[i].Models {
			if snap.Nodes[i].Models[j].Name == name {
				return name
			}
		}
	}
	return models.NormalizeName(name)
}

// findNodeModel finds a model on a node by its name as reported or its normalised name.
func findNodeModel(v registry.NodeView, name string) *agentapi.Model {
	norm := models.NormalizeName(name)
	for i := range v.Heartbeat.Models {
		if got := registry.ModelName(v.Heartbeat.Backend, v.Heartbeat.Models[i].Name); got == name || got == norm {
			return &v.Heartbeat.Models[i]
		}
	}
	return nil
}

// agentFailure turns an agent call's error into what the admin client sees: the agent's own
// 4xx/501 passes through, anything else is a 502 naming the node.
func agentFailure(node, what string, err error) *apierr.Error {
	// A 401/403 from the agent means this gateway's cluster token is wrong: the gateway's fault,
	// not the operator's request, so it is a 502 like any other agent failure.
	var ae *agentapi.APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotImplemented ||
		ae.Status/100 == 4 && ae.Status != http.StatusUnauthorized && ae.Status != http.StatusForbidden) {
		typ, code := apierr.TypeInvalidRequest, "agent_rejected"
		switch ae.Status {
		case http.StatusNotFound:
			code = "not_found"
		case http.StatusNotImplemented:
			code = "not_supported"
		}
		return &apierr.Error{Status: ae.Status, Type: typ, Code: code, Message: fmt.Sprintf("node %q: %s: %s", node, what, ae.Message)}
	}
	return &apierr.Error{Status: http.StatusBadGateway, Type: apierr.TypeServer, Code: "agent_error",
		Message: fmt.Sprintf("node %q: %s failed: %v", node, what, err)}
}
