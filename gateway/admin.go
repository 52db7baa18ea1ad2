package gateway

// The admin API (/admin/v1): what operators, the herd CLI and the dashboard use to see the
// cluster and act on it. Decisions made here:
//   - Model names are shown and matched in their normalised form (models.NormalizeName), the form
//     the scheduler sees, so "llama3" and "llama3:latest" are one model everywhere.
//   - A node's in_flight is the scheduler's figure: the larger of the heartbeat's count and this
//     gateway's own (gateway_in_flight shows the latter alone).
//   - Pull and copy stream NDJSON agentapi.Progress lines tagged with the node, flushed as they
//     arrive; every node's part ends with exactly one line whose status is "success" or "error".
//     The stream is tied to the admin request: a client that hangs up cancels the transfers.
//   - Unload without a node unloads the model wherever it is resident; delete (which loses the
//     weights) always needs an explicit node.
//   - Load without a node asks the scheduler's placement planner, restricted to the nodes that
//     have the weights on disk, and unloads the idle models the plan evicts before loading.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// maxAdminBody bounds admin request bodies: they are a few small JSON fields.
const maxAdminBody = 64 << 10

// registerAdminRoutes mounts /admin/v1 (nodes, drain, faults, models, explain). The caller puts
// admin authentication in front of g.
func (s *Server) registerAdminRoutes(g *gin.RouterGroup) {
	g.GET("/nodes", s.handleListNodes)
	g.GET("/nodes/:id", s.handleGetNode)
	g.POST("/nodes/:id/drain", s.handleDrain(true))
	g.POST("/nodes/:id/undrain", s.handleDrain(false))
	g.POST("/nodes/:id/fault", s.handleFault)
	g.GET("/models", s.handleListModels)
	g.POST("/models/pull", s.handlePull)
	g.POST("/models/load", s.handleLoad)
	g.POST("/models/unload", s.handleUnload)
	g.POST("/models/copy", s.handleCopy)
	// Model names may contain slashes ("hf.co/org/repo:q4"), hence the catch-all.
	g.DELETE("/models/*name", s.handleDeleteModel)
	g.GET("/explain", s.handleExplain)
}

func (s *Server) adminLog() *slog.Logger {
	if s.log != nil {
		return s.log
	}
	return slog.Default()
}

// ---- nodes ----

type adminNodeList struct {
	Nodes []adminNode `json:"nodes"`
}

type adminNode struct {
	ID              string       `json:"id"`
	Address         string       `json:"address"`
	Hostname        string       `json:"hostname"`
	Version         string       `json:"version"`
	Backend         string       `json:"backend"`
	Simulated       bool         `json:"simulated"`
	Healthy         bool         `json:"healthy"`
	UnhealthyReason string       `json:"unhealthy_reason"`
	Draining        bool         `json:"draining"`
	Stale           bool         `json:"stale"`
	Circuit         string       `json:"circuit"`
	GPUs            []adminGPU   `json:"gpus"`
	Models          []adminModel `json:"models"`
	InFlight        int          `json:"in_flight"`
	GatewayInFlight int          `json:"gateway_in_flight"`
	Queued          int          `json:"queued"`
	Slots           int          `json:"slots"`
	LastHeartbeat   time.Time    `json:"last_heartbeat"`
	// LastSeenSeconds is the age of LastHeartbeat; Status is "up", "late" or "down" (see ops_admin.go).
	LastSeenSeconds float64   `json:"last_seen_seconds"`
	Status          string    `json:"status"`
	StartedAt       time.Time `json:"started_at"`
	TelemetryError  string    `json:"telemetry_error"`
	BackendError    string    `json:"backend_error"`
}

type adminGPU struct {
	agentapi.GPU
	// Throttled is true when a throttle reason is a thermal or power slowdown.
	Throttled bool `json:"throttled"`
}

type adminModel struct {
	Name            string  `json:"name"`
	Resident        bool    `json:"resident"`
	OnDisk          bool    `json:"on_disk"`
	VRAMBytes       uint64  `json:"vram_bytes"`
	SizeBytes       uint64  `json:"size_bytes"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	InFlight        int     `json:"in_flight"`
	ParameterSize   string  `json:"parameter_size"`
	Quantization    string  `json:"quantization"`
}

func toAdminNode(v registry.NodeView) adminNode {
	hb := &v.Heartbeat
	n := adminNode{
		ID: hb.NodeID, Address: hb.Address, Hostname: hb.Hostname, Version: hb.Version,
		Backend: hb.Backend, Simulated: hb.Simulated,
		Healthy: v.Healthy, UnhealthyReason: v.UnhealthyReason,
		Draining: v.Draining, Stale: v.Stale, Circuit: v.Circuit,
		GPUs:     make([]adminGPU, 0, len(hb.GPUs)),
		Models:   make([]adminModel, 0, len(hb.Models)),
		InFlight: max(hb.InFlight, v.GatewayInFlight), GatewayInFlight: v.GatewayInFlight,
		Queued: hb.Queued, Slots: hb.Slots,
		LastHeartbeat: v.LastHeartbeat.UTC(), StartedAt: hb.StartedAt.UTC(),
		TelemetryError: hb.TelemetryError, BackendError: hb.BackendError,
	}
	for _, g := range hb.GPUs {
		ag := adminGPU{GPU: g}
		ag.ThrottleReasons = slices.Clone(g.ThrottleReasons)
		ag.Simulated = g.Simulated || hb.Simulated
		if ag.ThrottleReasons == nil {
			ag.ThrottleReasons = []string{}
		}
		ag.Throttled = slices.ContainsFunc(g.ThrottleReasons, registry.IsThrottling)
		n.GPUs = append(n.GPUs, ag)
	}
	for _, m := range hb.Models {
		n.Models = append(n.Models, adminModel{
			Name: models.NormalizeName(m.Name), Resident: m.Resident, OnDisk: m.OnDisk,
			VRAMBytes: m.VRAMBytes, SizeBytes: m.SizeBytes, TokensPerSecond: m.TokensPerSecond,
			InFlight: m.InFlight, ParameterSize: m.ParameterSize, Quantization: m.Quantization,
		})
	}
	slices.SortFunc(n.Models, func(a, b adminModel) int { return strings.Compare(a.Name, b.Name) })
	return n
}

func (s *Server) handleListNodes(c *gin.Context) {
	views := s.registry.Nodes()
	out := adminNodeList{Nodes: make([]adminNode, 0, len(views))}
	for _, v := range views {
		out.Nodes = append(out.Nodes, s.adminNodeOf(v))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) handleGetNode(c *gin.Context) {
	v, err := s.node(c.Param("id"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, s.adminNodeOf(v))
}

func (s *Server) node(id string) (registry.NodeView, error) {
	v, ok := s.registry.Node(id)
	if !ok {
		return v, nodeNotFound(id)
	}
	return v, nil
}

func nodeNotFound(id string) *APIError {
	return notFound("node_not_found", "node", "node %q is not known to this gateway", id)
}

func (s *Server) handleDrain(on bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.Param("id")
		if err := s.registry.SetDraining(id, on); err != nil {
			if errors.Is(err, registry.ErrUnknownNode) {
				abortWithError(c, nodeNotFound(id))
				return
			}
			abortWithError(c, err)
			return
		}
		s.adminLog().Info("admin: drain", "node", id, "draining", on)
		v, err := s.node(id)
		if err != nil {
			abortWithError(c, err)
			return
		}
		c.JSON(http.StatusOK, s.adminNodeOf(v))
	}
}

type faultRequest struct {
	GPU  *int   `json:"gpu"`
	Kind string `json:"kind"`
}

func (s *Server) handleFault(c *gin.Context) {
	var req faultRequest
	if err := bindAdminJSON(c, &req); err != nil {
		abortWithError(c, err)
		return
	}
	gpu := 0
	if req.GPU != nil {
		gpu = *req.GPU
	}
	if gpu < 0 {
		abortWithError(c, badRequest("invalid_gpu", "gpu", "gpu must not be negative"))
		return
	}
	if req.Kind == "" {
		abortWithError(c, badRequest("missing_kind", "kind", "kind is required (e.g. ecc, xid, thermal, clear)"))
		return
	}
	v, err := s.node(c.Param("id"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	if err := s.agentFor(v).InjectFault(c.Request.Context(), gpu, req.Kind); err != nil {
		abortWithError(c, agentFailure(v.Heartbeat.NodeID, "inject fault", err))
		return
	}
	s.adminLog().Warn("admin: fault injected", "node", v.Heartbeat.NodeID, "gpu", gpu, "kind", req.Kind)
	c.JSON(http.StatusOK, gin.H{"node": v.Heartbeat.NodeID, "gpu": gpu, "kind": req.Kind, "status": "injected"})
}

// ---- models ----

type adminModelList struct {
	Models []adminClusterModel `json:"models"`
}

type adminClusterModel struct {
	Name  string             `json:"name"`
	Nodes []adminModelOnNode `json:"nodes"`
}

type adminModelOnNode struct {
	Node      string `json:"node"`
	Resident  bool   `json:"resident"`
	OnDisk    bool   `json:"on_disk"`
	VRAMBytes uint64 `json:"vram_bytes"`
	SizeBytes uint64 `json:"size_bytes"`
	Stale     bool   `json:"stale"`
}

func (s *Server) handleListModels(c *gin.Context) {
	byName := map[string]*adminClusterModel{}
	for _, v := range s.registry.Nodes() {
		for _, m := range v.Heartbeat.Models {
			name := models.NormalizeName(m.Name)
			cm := byName[name]
			if cm == nil {
				cm = &adminClusterModel{Name: name}
				byName[name] = cm
			}
			on := adminModelOnNode{Node: v.Heartbeat.NodeID, Resident: m.Resident, OnDisk: m.OnDisk,
				VRAMBytes: m.VRAMBytes, SizeBytes: m.SizeBytes, Stale: v.Stale}
			// Two spellings of one model on one node are one entry.
			if i := slices.IndexFunc(cm.Nodes, func(x adminModelOnNode) bool { return x.Node == on.Node }); i >= 0 {
				e := &cm.Nodes[i]
				e.Resident, e.OnDisk = e.Resident || on.Resident, e.OnDisk || on.OnDisk
				e.VRAMBytes, e.SizeBytes = max(e.VRAMBytes, on.VRAMBytes), max(e.SizeBytes, on.SizeBytes)
				continue
			}
			cm.Nodes = append(cm.Nodes, on)
		}
	}
	out := adminModelList{Models: make([]adminClusterModel, 0, len(byName))}
	for _, cm := range byName {
		out.Models = append(out.Models, *cm)
	}
	// Nodes() is sorted by ID, so each model's nodes already are.
	slices.SortFunc(out.Models, func(a, b adminClusterModel) int { return strings.Compare(a.Name, b.Name) })
	c.JSON(http.StatusOK, out)
}

type pullRequest struct {
	Model    string   `json:"model"`
	Nodes    []string `json:"nodes"`
	Insecure bool     `json:"insecure"`
}

func (s *Server) handlePull(c *gin.Context) {
	var req pullRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		abortWithError(c, err)
		return
	}
	var targets []registry.NodeView
	if len(req.Nodes) == 0 {
		for _, v := range s.registry.Nodes() {
			if !v.Stale {
				targets = append(targets, v)
			}
		}
		if len(targets) == 0 {
			abortWithError(c, unavailable("no live node to pull %q to", req.Model))
			return
		}
	} else {
		for _, id := range req.Nodes {
			v, err := s.node(id)
			if err != nil {
				abortWithError(c, err)
				return
			}
			if !slices.ContainsFunc(targets, func(t registry.NodeView) bool { return t.Heartbeat.NodeID == id }) {
				targets = append(targets, v)
			}
		}
	}
	s.adminLog().Info("admin: pull", "model", req.Model, "nodes", len(targets))
	s.streamProgress(c, targets, func(ctx context.Context, v registry.NodeView, progress func(agentapi.Progress)) error {
		return s.agentFor(v).Pull(ctx, agentapi.PullRequest{Model: req.Model, Insecure: req.Insecure}, progress)
	})
}

type copyRequest struct {
	Model string `json:"model"`
	From  string `json:"from"`
	To    string `json:"to"`
}

func (s *Server) handleCopy(c *gin.Context) {
	var req copyRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		abortWithError(c, err)
		return
	}
	switch {
	case req.From == "" || req.To == "":
		abortWithError(c, badRequest("missing_node", "from", "from and to (node IDs) are required"))
		return
	case req.From == req.To:
		abortWithError(c, badRequest("invalid_node", "to", "from and to are the same node"))
		return
	}
	from, err := s.node(req.From)
	if err != nil {
		abortWithError(c, err)
		return
	}
	to, err := s.node(req.To)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if m := findNodeModel(from, req.Model); m == nil || !m.OnDisk {
		abortWithError(c, notFound("model_not_found", "model", "model %q is not on node %q's disk", req.Model, req.From))
		return
	}
	s.adminLog().Info("admin: copy", "model", req.Model, "from", req.From, "to", req.To)
	s.streamProgress(c, []registry.NodeView{to}, func(ctx context.Context, v registry.NodeView, progress func(agentapi.Progress)) error {
		return s.agentFor(v).Copy(ctx, agentapi.CopyRequest{Model: req.Model, From: from.Heartbeat.Address}, progress)
	})
}

// transferFunc runs one node's pull or copy, reporting each progress line.
type transferFunc func(ctx context.Context, v registry.NodeView, progress func(agentapi.Progress)) error

// streamProgress runs do on every target at once and streams their progress as NDJSON, each
// line tagged with its node, flushing every line. Each node's part ends with one final line.
func (s *Server) streamProgress(c *gin.Context, targets []registry.NodeView, do transferFunc) {
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
				s.adminLog().Warn("admin: model transfer failed", "node", id, "err", err)
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

type loadRequest struct {
	Model     string `json:"model"`
	Node      string `json:"node"`
	KeepAlive string `json:"keep_alive"`
}

type loadResponse struct {
	Model   string               `json:"model"`
	Node    string               `json:"node"`
	Status  string               `json:"status"`
	Evicted []scheduler.Eviction `json:"evicted"`
}

func (s *Server) handleLoad(c *gin.Context) {
	var req loadRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		abortWithError(c, err)
		return
	}
	resp := loadResponse{Model: models.NormalizeName(req.Model), Status: "loaded", Evicted: []scheduler.Eviction{}}
	var target registry.NodeView
	if req.Node != "" {
		v, err := s.node(req.Node)
		if err != nil {
			abortWithError(c, err)
			return
		}
		target = v
	} else {
		plan, err := s.planLoad(resp.Model)
		if err != nil {
			abortWithError(c, err)
			return
		}
		v, err := s.node(plan.Node)
		if err != nil {
			abortWithError(c, err)
			return
		}
		target = v
		if plan.AlreadyResident {
			resp.Node, resp.Status = plan.Node, "already_resident"
			c.JSON(http.StatusOK, resp)
			return
		}
		client := s.agentFor(target)
		for _, e := range plan.Evict {
			if err := client.Unload(c.Request.Context(), agentapi.ModelRequest{Model: e.Model}); err != nil {
				abortWithError(c, agentFailure(plan.Node, "unload "+e.Model, err))
				return
			}
			resp.Evicted = append(resp.Evicted, e)
		}
	}
	resp.Node = target.Heartbeat.NodeID
	if err := s.agentFor(target).Load(c.Request.Context(), agentapi.ModelRequest{Model: req.Model, KeepAlive: req.KeepAlive}); err != nil {
		abortWithError(c, agentFailure(resp.Node, "load", err))
		return
	}
	s.adminLog().Info("admin: load", "model", resp.Model, "node", resp.Node, "evicted", len(resp.Evicted))
	c.JSON(http.StatusOK, resp)
}

// planLoad asks the placement planner for a node to load model on, among the nodes that have its
// weights (a load must not turn into a multi-gigabyte pull behind the operator's back).
func (s *Server) planLoad(model string) (scheduler.PlacementPlan, error) {
	snap := s.registry.Snapshot()
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
		return scheduler.PlacementPlan{}, notFound("model_not_found", "model", "no node has model %q on disk: pull or copy it first", model)
	}
	plan := s.sched.Plan(req, snap)
	if !plan.OK() {
		return plan, unavailable("no node can load %q: %s", model, plan.Reason)
	}
	return plan, nil
}

type unloadRequest struct {
	Model string `json:"model"`
	Node  string `json:"node"`
}

func (s *Server) handleUnload(c *gin.Context) {
	var req unloadRequest
	if err := bindModelJSON(c, &req, &req.Model); err != nil {
		abortWithError(c, err)
		return
	}
	name := models.NormalizeName(req.Model)
	var targets []registry.NodeView
	if req.Node != "" {
		v, err := s.node(req.Node)
		if err != nil {
			abortWithError(c, err)
			return
		}
		targets = append(targets, v)
	} else {
		for _, v := range s.registry.Nodes() {
			if m := findNodeModel(v, name); m != nil && m.Resident && !v.Stale {
				targets = append(targets, v)
			}
		}
		if len(targets) == 0 {
			abortWithError(c, notFound("model_not_resident", "model", "model %q is not resident on any live node", name))
			return
		}
	}
	nodes := make([]string, 0, len(targets))
	for _, v := range targets {
		if err := s.agentFor(v).Unload(c.Request.Context(), agentapi.ModelRequest{Model: req.Model}); err != nil {
			abortWithError(c, agentFailure(v.Heartbeat.NodeID, "unload", err))
			return
		}
		nodes = append(nodes, v.Heartbeat.NodeID)
	}
	s.adminLog().Info("admin: unload", "model", name, "nodes", nodes)
	c.JSON(http.StatusOK, gin.H{"model": name, "nodes": nodes, "status": "unloaded"})
}

func (s *Server) handleDeleteModel(c *gin.Context) {
	model := strings.TrimPrefix(c.Param("name"), "/")
	if model == "" {
		abortWithError(c, badRequest("missing_model", "name", "model name is required in the path"))
		return
	}
	id := c.Query("node")
	if id == "" {
		abortWithError(c, badRequest("missing_node", "node", "node query parameter is required: deleting removes the weights from that node's disk"))
		return
	}
	v, err := s.node(id)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if err := s.agentFor(v).Delete(c.Request.Context(), agentapi.ModelRequest{Model: model}); err != nil {
		abortWithError(c, agentFailure(id, "delete", err))
		return
	}
	s.adminLog().Info("admin: delete", "model", model, "node", id)
	c.JSON(http.StatusOK, gin.H{"model": models.NormalizeName(model), "node": id, "status": "deleted"})
}

// ---- explain ----

// handleExplain shows how the scheduler would place a request for ?model= now: each node's
// filter reason or score breakdown. Optional: class, prompt_tokens, max_tokens, seed.
func (s *Server) handleExplain(c *gin.Context) {
	model := strings.TrimSpace(c.Query("model"))
	if model == "" {
		abortWithError(c, badRequest("missing_model", "model", "model query parameter is required"))
		return
	}
	req := scheduler.Request{Model: models.NormalizeName(model), Class: scheduler.ClassInteractive}
	if cl := c.Query("class"); cl != "" {
		if cl != scheduler.ClassInteractive && cl != scheduler.ClassBatch {
			abortWithError(c, badRequest("invalid_class", "class", "class must be %q or %q", scheduler.ClassInteractive, scheduler.ClassBatch))
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
				abortWithError(c, badRequest("invalid_parameter", q.name, "%s must be a non-negative integer", q.name))
				return
			}
			*q.dst = n
		}
	}
	if v := c.Query("seed"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			abortWithError(c, badRequest("invalid_parameter", "seed", "seed must be an unsigned integer"))
			return
		}
		req.Seed = n
	}
	// As on the request path, the model's size is the most VRAM any node reports for it.
	snap := s.registry.Snapshot()
	for i := range snap.Nodes {
		for _, m := range snap.Nodes[i].Models {
			if m.Name == req.Model {
				req.ModelVRAMBytes = max(req.ModelVRAMBytes, m.VRAMBytes)
			}
		}
	}
	c.JSON(http.StatusOK, s.sched.Explain(&req, snap))
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
			return &APIError{Status: http.StatusRequestEntityTooLarge, Type: errInvalidRequest, Code: "request_too_large",
				Message: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
		}
		return badRequest("invalid_json", "", "request body is not valid JSON: %v", err)
	}
	return nil
}

// bindModelJSON binds an admin request whose model field (pointed to by model) is required.
func bindModelJSON(c *gin.Context, dst any, model *string) error {
	if err := bindAdminJSON(c, dst); err != nil {
		return err
	}
	if strings.TrimSpace(*model) == "" {
		return badRequest("missing_model", "model", "model is required")
	}
	return nil
}

// findNodeModel finds a model on a node by its normalised name.
func findNodeModel(v registry.NodeView, name string) *agentapi.Model {
	name = models.NormalizeName(name)
	for i := range v.Heartbeat.Models {
		if models.NormalizeName(v.Heartbeat.Models[i].Name) == name {
			return &v.Heartbeat.Models[i]
		}
	}
	return nil
}

// agentFailure turns an agent call's error into what the admin client sees: the agent's own
// 4xx/501 passes through, anything else is a 502 naming the node.
func agentFailure(node, what string, err error) *APIError {
	// A 401/403 from the agent means this gateway's cluster token is wrong: the gateway's fault,
	// not the operator's request, so it is a 502 like any other agent failure.
	var ae *agentapi.APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotImplemented ||
		ae.Status/100 == 4 && ae.Status != http.StatusUnauthorized && ae.Status != http.StatusForbidden) {
		typ, code := errInvalidRequest, "agent_rejected"
		switch ae.Status {
		case http.StatusNotFound:
			code = "not_found"
		case http.StatusNotImplemented:
			code = "not_supported"
		}
		return &APIError{Status: ae.Status, Type: typ, Code: code, Message: fmt.Sprintf("node %q: %s: %s", node, what, ae.Message)}
	}
	return &APIError{Status: http.StatusBadGateway, Type: errServer, Code: "agent_error",
		Message: fmt.Sprintf("node %q: %s failed: %v", node, what, err)}
}

// agentPool caches one agent client per address; its zero value is ready to use. All clients
// share one HTTP client, so connections to an agent are reused across admin calls.
type agentPool struct {
	mu      sync.Mutex
	hc      *http.Client
	clients map[string]*agentapi.Client
	// pruneAt is the cache size at which clients of addresses no node has any more are dropped
	// (addresses change when nodes are re-provisioned).
	pruneAt int
}

// get returns the client for address, creating it on first use. live lists the addresses
// in use; it is only called when the cache has grown.
func (p *agentPool) get(address, token string, live func() map[string]bool) *agentapi.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[address]; ok {
		return c
	}
	if p.hc == nil {
		p.hc = agentapi.DefaultHTTPClient()
	}
	if p.clients == nil {
		p.clients = map[string]*agentapi.Client{}
	}
	if len(p.clients) >= max(p.pruneAt, 16) {
		keep := live()
		for a := range p.clients {
			if !keep[a] {
				delete(p.clients, a)
			}
		}
		p.pruneAt = 2 * len(p.clients)
	}
	c := agentapi.NewClient(address, token, p.hc)
	p.clients[address] = c
	return c
}

// agentFor returns the agent client of a node, authenticated with the cluster token.
func (s *Server) agentFor(v registry.NodeView) *agentapi.Client {
	return s.agents.get(v.Heartbeat.Address, s.cfg.ClusterToken, func() map[string]bool {
		live := map[string]bool{}
		for _, nv := range s.registry.Nodes() {
			live[nv.Heartbeat.Address] = true
		}
		return live
	})
}
