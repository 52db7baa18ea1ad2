package api

import (
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// NodeList is GET /admin/v1/nodes.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// Node is one node as the admin API shows it (GET /admin/v1/nodes/{id}, drain and undrain).
type Node struct {
	ID              string      `json:"id"`
	Address         string      `json:"address"`
	Hostname        string      `json:"hostname"`
	Version         string      `json:"version"`
	Backend         string      `json:"backend"`
	Simulated       bool        `json:"simulated"`
	Healthy         bool        `json:"healthy"`
	UnhealthyReason string      `json:"unhealthy_reason"`
	Draining        bool        `json:"draining"`
	Stale           bool        `json:"stale"`
	Circuit         string      `json:"circuit"`
	GPUs            []GPU       `json:"gpus"`
	Models          []NodeModel `json:"models"`
	// InFlight and Queued are the scheduler's figures: this gateway's own requests plus the
	// other gateways' work the node's last heartbeat reported, split at Slots. GatewayInFlight
	// is this gateway's own count alone.
	InFlight        int       `json:"in_flight"`
	GatewayInFlight int       `json:"gateway_in_flight"`
	Queued          int       `json:"queued"`
	Slots           int       `json:"slots"`
	LastHeartbeat   time.Time `json:"last_heartbeat"`
	// LastSeenSeconds is the age of LastHeartbeat on the gateway's clock: how old the node's
	// figures are. Status is NodeUp, NodeLate or NodeDown.
	LastSeenSeconds float64   `json:"last_seen_seconds"`
	Status          string    `json:"status"`
	StartedAt       time.Time `json:"started_at"`
	TelemetryError  string    `json:"telemetry_error"`
	BackendError    string    `json:"backend_error"`
}

// Node statuses. A node is up while its heartbeat is at most 1.5 intervals old, late past that
// (a beat missed; still in the schedule) and down once it is stale (out of the schedule).
const (
	NodeUp   = "up"
	NodeLate = "late"
	NodeDown = "down"
)

// Current reports whether the node's figures are current: its heartbeat is fresh.
func (n Node) Current() bool { return n.Status != NodeDown && n.Status != NodeLate && !n.Stale }

// Queue is GET /admin/v1/queue: the requests waiting in the gateway for a node (not on a node).
type Queue struct {
	// Interactive and Batch total the waiting requests of each class.
	Interactive int          `json:"interactive"`
	Batch       int          `json:"batch"`
	Models      []QueueDepth `json:"models"`
}

// QueueDepth is how many requests of one model and class wait in the gateway, and the bound past
// which it answers 429 queue_full.
type QueueDepth struct {
	Model    string `json:"model"`
	Class    string `json:"class"`
	Waiting  int    `json:"waiting"`
	Capacity int    `json:"capacity"`
}

// History is GET /admin/v1/history: the gateway's in-process samples of the cluster, oldest
// first, one every IntervalSeconds over WindowSeconds (what the dashboard charts).
type History struct {
	IntervalSeconds float64         `json:"interval_seconds"`
	WindowSeconds   float64         `json:"window_seconds"`
	Samples         []HistorySample `json:"samples"`
}

// HistorySample is the cluster at one instant.
type HistorySample struct {
	Time time.Time `json:"time"`
	// TokensPerSecond is the completion tokens per second this gateway relayed since the last sample.
	TokensPerSecond float64 `json:"tokens_per_second"`
	// QueuedInteractive and QueuedBatch are the requests waiting in the gateway.
	QueuedInteractive int `json:"queued_interactive"`
	QueuedBatch       int `json:"queued_batch"`
	// InFlight is the requests in flight on all nodes that were up.
	InFlight int                `json:"in_flight"`
	Nodes    []HistoryNodePoint `json:"nodes"`
}

// HistoryNodePoint is one node in a sample; the figures are absent when it was not up (a gap,
// never its last figures carried forward).
type HistoryNodePoint struct {
	ID        string   `json:"id"`
	Up        bool     `json:"up"`
	Simulated bool     `json:"simulated"`
	GPUUtil   *float64 `json:"gpu_utilization_ratio,omitempty"`
	VRAMUsed  *uint64  `json:"memory_used_bytes,omitempty"`
	VRAMTotal *uint64  `json:"memory_total_bytes,omitempty"`
	PowerW    *float64 `json:"power_watts,omitempty"`
}

// GPU is the agent's GPU sample as it reported it, plus what the gateway derives from it.
type GPU struct {
	agentapi.GPU
	// Throttled is true when a throttle reason is a thermal or power slowdown.
	Throttled bool `json:"throttled"`
}

// NodeModel is a model a node reports (resident in GPU memory, on disk, or both).
type NodeModel struct {
	Name            string  `json:"name"`
	Resident        bool    `json:"resident"`
	OnDisk          bool    `json:"on_disk"`
	VRAMBytes       uint64  `json:"vram_bytes"`
	SizeBytes       uint64  `json:"size_bytes"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	InFlight        int     `json:"in_flight"`
	ParameterSize   string  `json:"parameter_size"`
	Quantization    string  `json:"quantization"`
	// PromptTokens counts the prompt tokens the node served for the model since its agent
	// started, and CachedPromptTokens the part its engine's prompt cache held (prefill saved):
	// the backend's cached_tokens, or the agent's estimate from prefill time (Ollama).
	PromptTokens       int64 `json:"prompt_tokens,omitempty"`
	CachedPromptTokens int64 `json:"cached_prompt_tokens,omitempty"`
}

// ModelList is GET /admin/v1/models: every model in the cluster and where it is.
type ModelList struct {
	Models []ClusterModel `json:"models"`
}

// ClusterModel is one model and the nodes that have it.
type ClusterModel struct {
	Name  string        `json:"name"`
	Nodes []ModelOnNode `json:"nodes"`
}

// ModelOnNode is where one node has a model.
type ModelOnNode struct {
	Node      string `json:"node"`
	Resident  bool   `json:"resident"`
	OnDisk    bool   `json:"on_disk"`
	VRAMBytes uint64 `json:"vram_bytes"`
	SizeBytes uint64 `json:"size_bytes"`
	Stale     bool   `json:"stale"`
}

// FaultRequest is POST /admin/v1/nodes/{id}/fault (simulated nodes only).
type FaultRequest struct {
	GPU  *int   `json:"gpu"`
	Kind string `json:"kind"`
}

// PullRequest is POST /admin/v1/models/pull; no nodes means every node.
type PullRequest struct {
	Model    string   `json:"model"`
	Nodes    []string `json:"nodes"`
	Insecure bool     `json:"insecure"`
}

// CopyRequest is POST /admin/v1/models/copy: a model from one node's disk to another's.
type CopyRequest struct {
	Model string `json:"model"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Progress is one NDJSON line of a pull or copy stream, tagged with its node. Each node's part
// ends with one line whose status is "success" or "error".
type Progress = agentapi.Progress

// LoadRequest is POST /admin/v1/models/load; no node lets the placement planner choose.
type LoadRequest struct {
	Model     string `json:"model"`
	Node      string `json:"node"`
	KeepAlive string `json:"keep_alive"`
}

// LoadResponse is the answer to a load: where the model went and what was unloaded for it.
type LoadResponse struct {
	Model   string     `json:"model"`
	Node    string     `json:"node"`
	Status  string     `json:"status"`
	Evicted []Eviction `json:"evicted"`
}

// Eviction is an idle model unloaded to make room for a load.
type Eviction struct {
	Model     string    `json:"model"`
	VRAMBytes uint64    `json:"vram_bytes"`
	LastUsed  time.Time `json:"last_used"`
}

// UnloadRequest is POST /admin/v1/models/unload; no node means wherever it is resident.
type UnloadRequest struct {
	Model string `json:"model"`
	Node  string `json:"node"`
}
