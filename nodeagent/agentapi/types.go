// Package agentapi holds the wire types and the HTTP client for the herd agent's API: what an agent
// sends the gateway in a heartbeat, and the routes the gateway calls on an agent (inference
// pass-through, model management, air-gapped model copy). The gateway imports this package and
// never the agent itself, so the two processes only share this contract.
package agentapi

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/herd-llm/herd/openaierr"
)

// Route paths. Agents serve the inference routes in the OpenAI wire format, unchanged, so the
// gateway can proxy bytes; everything else lives under /agent/v1.
const (
	// PathChatCompletions is the OpenAI chat completions route on an agent.
	PathChatCompletions = "/v1/chat/completions"
	// PathCompletions is the OpenAI legacy completions route on an agent.
	PathCompletions = "/v1/completions"
	// PathEmbeddings is the OpenAI embeddings route on an agent.
	PathEmbeddings = "/v1/embeddings"
	// PathResponses is the OpenAI Responses route on an agent: passed through to a backend that
	// serves it, translated to chat completions for one that does not.
	PathResponses = "/v1/responses"

	// PathHealthz is the agent's liveness route (GET, no token: for Kubernetes probes and load
	// balancers; it says nothing about the node beyond its ID).
	PathHealthz = "/healthz"
	// PathOllamaChat, PathOllamaGenerate, PathOllamaEmbed and PathOllamaEmbeddings are Ollama's
	// native inference routes, passed through unchanged to an Ollama backend (agents of other
	// backends answer 404: the gateway translates to the OpenAI routes for those).
	PathOllamaChat       = "/api/chat"
	PathOllamaGenerate   = "/api/generate"
	PathOllamaEmbed      = "/api/embed"
	PathOllamaEmbeddings = "/api/embeddings"
	// PathOllamaShow is Ollama's native model description route (POST), passed through like the
	// inference routes.
	PathOllamaShow = "/api/show"

	// PathInfo returns the agent's current Heartbeat (GET).
	PathInfo = "/agent/v1/info"
	// PathModelPull pulls a model from the backend's registry (POST PullRequest → NDJSON Progress).
	PathModelPull = "/agent/v1/models/pull"
	// PathModelLoad loads a model into GPU memory (POST ModelRequest).
	PathModelLoad = "/agent/v1/models/load"
	// PathModelUnload evicts a model from GPU memory (POST ModelRequest).
	PathModelUnload = "/agent/v1/models/unload"
	// PathModelDelete removes a model from disk (POST ModelRequest).
	PathModelDelete = "/agent/v1/models/delete"
	// PathModelExport describes a model as blobs a peer can fetch (GET ?model=NAME → ModelManifest).
	PathModelExport = "/agent/v1/models/export"
	// PathBlobPrefix serves one blob by digest (GET PathBlobPrefix + "sha256:...").
	PathBlobPrefix = "/agent/v1/blobs/"
	// PathModelCopy makes this agent fetch a model from a peer agent (POST CopyRequest → NDJSON Progress).
	PathModelCopy = "/agent/v1/models/copy"
	// PathSimFault injects a fault into a simulated GPU (POST SimFaultRequest); sim backends only.
	PathSimFault = "/agent/v1/sim/fault"

	// PathHeartbeat is the gateway route agents POST their Heartbeat to.
	PathHeartbeat = "/internal/v1/heartbeat"
)

// Header names shared by gateway and agent.
const (
	// HeaderNode names the node that served a response.
	HeaderNode = "X-Herd-Node"
	// HeaderAttempts counts the nodes the gateway tried for a response.
	HeaderAttempts = "X-Herd-Attempts"
	// HeaderRequestID carries the gateway's request id to the agent and back to the client.
	HeaderRequestID = "X-Request-Id"
	// HeaderClass marks a request as interactive or batch work (ClassInteractive, ClassBatch).
	HeaderClass = "X-Herd-Class"
	// HeaderSimulated is "true" on responses produced by a simulated GPU node.
	HeaderSimulated = "X-Herd-Simulated"
	// HeaderModel carries, on an inference request, the backend's name of the model the gateway
	// resolved the request to (as the node lists it): the agent counts and meters the request
	// under it and does not read the body for it.
	HeaderModel = "X-Herd-Model"
	// HeaderClientModel carries the name the client asked for (a preset's, an Ollama spelling):
	// the agent writes it into the answer's "model" where it differs from HeaderModel.
	HeaderClientModel = "X-Herd-Client-Model"
	// HeaderContinue ("1") marks a continuation: the body is the client's request with a
	// top-level "herd_continue" member (Continuation) that the agent takes out, asking it to
	// continue that partial answer instead of starting one.
	HeaderContinue = "X-Herd-Continue"
	// HeaderNoContinue ("1"), sent by a client, asks the gateway not to continue a broken stream
	// on another node: it ends with an error event, as a single server's would.
	HeaderNoContinue = "X-Herd-No-Continue"
)

// ContinueField is the body member that carries a Continuation.
const ContinueField = "herd_continue"

// Continuation is a stream the gateway asks an agent to continue after the node that started it
// failed: the answer so far, and the framing the client already has, which the agent's answer
// keeps (one id, one created time, usage counting the tokens of both nodes).
type Continuation struct {
	// ID and Created are the stream's, as the client has them (OpenAI streams; 0 and "" for
	// Ollama's, which carry neither).
	ID      string `json:"id,omitempty"`
	Created int64  `json:"created,omitempty"`
	// Tokens counts the completion tokens the client already has (the text events relayed: one
	// token per event); the answer's usage adds them, and the output cap is lowered by them.
	Tokens int `json:"tokens"`
	// Content and Reasoning are the answer's text and reasoning text so far.
	Content   string `json:"content"`
	Reasoning string `json:"reasoning,omitempty"`
	// Responses is, on /v1/responses, the stream's state as its client has it: the continuing
	// agent writes events that follow it (ID is the response's id, Created its created_at).
	Responses *ResponsesState `json:"responses,omitempty"`
}

// ResponsesState is what the client of a broken Responses API stream has: the continuing
// agent numbers its events from Seq, keeps the output items (ids, output_index) and, in
// response.completed, lists them whole.
type ResponsesState struct {
	// Seq is the next sequence_number.
	Seq int64 `json:"seq"`
	// Model is the response's model as the client has it.
	Model string `json:"model,omitempty"`
	// Items are the output items the client has, in output_index order.
	Items []ResponsesItem `json:"items,omitempty"`
}

// ResponsesItem is one output item of a broken Responses stream: a message or a reasoning item
// (a stream with a function call is not continued).
type ResponsesItem struct {
	ID string `json:"id"`
	// Type is "message" or "reasoning".
	Type string `json:"type"`
	// Text is the item's text so far (a message's output_text, a reasoning item's
	// reasoning_text).
	Text string `json:"text"`
	// Open is true while the item is not done (output_item.done not sent); PartOpen, for a
	// message, that its content part was added and is not done.
	Open     bool `json:"open,omitempty"`
	PartOpen bool `json:"part_open,omitempty"`
}

// Request classes.
const (
	// ClassInteractive is a request from a waiting client.
	ClassInteractive = "interactive"
	// ClassBatch is a line of a bulk job; it only uses capacity interactive work leaves free.
	ClassBatch = "batch"
)

// Backend kinds an agent can run.
const (
	// BackendOllama is a local Ollama server.
	BackendOllama = "ollama"
	// BackendOpenAI is any OpenAI-compatible server (vLLM, llama.cpp server).
	BackendOpenAI = "openai"
	// BackendSim is a simulated GPU node (nodeagent/sim).
	BackendSim = "sim"
)

// Heartbeat is everything an agent tells the gateway about its node, pushed every interval and
// also served at PathInfo.
type Heartbeat struct {
	NodeID string `json:"node_id"`
	// InstanceID is generated afresh each time an agent starts. A gateway binds a node ID to the
	// instance (and address) that holds it and refuses (409 node_id_conflict) any other instance,
	// or the same one from another address, while the holder's heartbeats are fresh. It is what
	// lets an agent keep its node ID, so the gateway never shows or logs it: logs carry
	// InstanceFingerprint instead.
	InstanceID string `json:"instance_id,omitempty"`
	// Address is the URL the gateway uses to reach the agent (its advertise URL).
	Address string `json:"address"`
	Backend string `json:"backend"`
	// Engine is the model server behind the backend when the agent knows it ("ollama",
	// "llama.cpp", "vllm"): the gateway models its prompt cache accordingly.
	Engine string `json:"engine,omitempty"`
	// MaxLoadedModels is the most models the backend keeps resident at once (Ollama's
	// OLLAMA_MAX_LOADED_MODELS) when the agent knows it; 0: unknown or no bound but memory. A
	// load past it evicts a resident model however much memory is free.
	MaxLoadedModels int `json:"max_loaded_models,omitempty"`
	// Simulated is true when the GPUs and the backend are nodeagent/sim models, not hardware.
	Simulated bool   `json:"simulated"`
	Version   string `json:"version"`
	Hostname  string `json:"hostname,omitempty"`
	// GPUs is empty when the node has no GPU or no driver; TelemetryError then says why.
	GPUs           []GPU   `json:"gpus"`
	TelemetryError string  `json:"telemetry_error,omitempty"`
	Models         []Model `json:"models"`
	// BackendError is set when the agent could not list the backend's models on its last try
	// (backend down or unreachable); Models is then empty.
	BackendError string `json:"backend_error,omitempty"`
	// Draining echoes what a gateway last answered to a heartbeat (informational, for PathInfo).
	Draining bool `json:"draining,omitempty"`
	// InFlight counts requests the backend is working on; Queued counts requests waiting for a slot.
	InFlight int `json:"in_flight"`
	Queued   int `json:"queued"`
	// Slots is how many requests the node serves at once (Ollama's OLLAMA_NUM_PARALLEL, the sim's slots).
	Slots int `json:"slots"`
	// IntervalMS is the heartbeat interval the agent uses; the gateway marks the node stale after 3.
	IntervalMS int64     `json:"interval_ms"`
	SentAt     time.Time `json:"sent_at"`
	StartedAt  time.Time `json:"started_at"`
	// H2C says the agent's plain-HTTP listener also speaks HTTP/2 without TLS (prior knowledge):
	// a gateway reaching it on loopback then carries its streams on one connection.
	H2C bool `json:"h2c,omitempty"`
	// StaticHash is StaticHash of this heartbeat's static part, set by agents that send delta
	// heartbeats (HeartbeatDelta): the deltas that follow name it. Empty from older agents.
	StaticHash string `json:"static_hash,omitempty"`
}

// GPU is one GPU's telemetry sample.
type GPU struct {
	Index                  int      `json:"index"`
	Name                   string   `json:"name"`
	UUID                   string   `json:"uuid"`
	MemoryTotalBytes       uint64   `json:"memory_total_bytes"`
	MemoryUsedBytes        uint64   `json:"memory_used_bytes"`
	UtilizationRatio       float64  `json:"utilization_ratio"`
	MemoryUtilizationRatio float64  `json:"memory_utilization_ratio"`
	TemperatureCelsius     float64  `json:"temperature_celsius"`
	PowerWatts             float64  `json:"power_watts"`
	PowerLimitWatts        float64  `json:"power_limit_watts"`
	SMClockMHz             uint32   `json:"sm_clock_mhz"`
	ThrottleReasons        []string `json:"throttle_reasons"`
	ECCCorrected           uint64   `json:"ecc_corrected"`
	ECCUncorrected         uint64   `json:"ecc_uncorrected"`
	// XIDEvents counts critical XID events seen since the agent started.
	XIDEvents    uint64 `json:"xid_events"`
	LastXID      uint64 `json:"last_xid,omitempty"`
	Healthy      bool   `json:"healthy"`
	HealthReason string `json:"health_reason,omitempty"`
	Simulated    bool   `json:"simulated"`
}

// Throttle reason names used in GPU.ThrottleReasons. Thermal and power ones count as throttling
// for the scheduler; idle and application clocks do not.
const (
	ThrottleGPUIdle          = "gpu_idle"
	ThrottleApplicationClock = "applications_clocks_setting"
	ThrottleSWPowerCap       = "sw_power_cap"
	ThrottleHWSlowdown       = "hw_slowdown"
	ThrottleSyncBoost        = "sync_boost"
	ThrottleSWThermal        = "sw_thermal_slowdown"
	ThrottleHWThermal        = "hw_thermal_slowdown"
	ThrottleHWPowerBrake     = "hw_power_brake_slowdown"
	ThrottleDisplayClock     = "display_clock_setting"
	// ThrottleBoardLimit and ThrottleReliability are newer NVML clock event reasons (board-level
	// limits, reliability voltage/clock limits); neither counts as thermal for health.
	ThrottleBoardLimit  = "board_limit"
	ThrottleReliability = "reliability"
)

// Model is one model as a node knows it.
type Model struct {
	Name string `json:"name"`
	// Resident is true when the model is loaded in GPU (or CPU) memory and can answer at once.
	Resident bool `json:"resident"`
	// OnDisk is true when the model's weights are on the node and it can be loaded without a pull.
	OnDisk    bool   `json:"on_disk"`
	VRAMBytes uint64 `json:"vram_bytes"`
	SizeBytes uint64 `json:"size_bytes"`
	Digest    string `json:"digest,omitempty"`
	Family    string `json:"family,omitempty"`
	// ParameterSize and Quantization are as the backend reports them ("8.0B", "Q4_K_M").
	ParameterSize string `json:"parameter_size,omitempty"`
	Quantization  string `json:"quantization,omitempty"`
	// Embedding is true for embedding-only models.
	Embedding bool `json:"embedding,omitempty"`
	// Format ("gguf"), Families and ModifiedAt are as Ollama's /api/tags reports them; empty for
	// backends that do not say.
	Format     string    `json:"format,omitempty"`
	Families   []string  `json:"families,omitempty"`
	ModifiedAt time.Time `json:"modified_at,omitzero"`
	// ContextLength is the context window a resident model was loaded with (Ollama's /api/ps); 0:
	// unknown or not resident.
	ContextLength int `json:"context_length,omitempty"`
	// TokensPerSecond is the decode speed the node measured for this model (EWMA), 0 if unmeasured.
	TokensPerSecond float64 `json:"tokens_per_second"`
	// PrefillTokensPerSecond is the measured prompt-processing speed, 0 if unmeasured.
	PrefillTokensPerSecond float64   `json:"prefill_tokens_per_second,omitempty"`
	InFlight               int       `json:"in_flight"`
	LastUsed               time.Time `json:"last_used,omitempty"`
	ExpiresAt              time.Time `json:"expires_at,omitempty"`
	// Concurrency is the mean number of requests in flight on the model (the measured ones
	// included) while the requests behind TokensPerSecond decoded (EWMA); 0 if unmeasured. With
	// it the gateway separates the single-stream speed from the slowdown of sharing the GPU.
	Concurrency float64 `json:"concurrency,omitempty"`
	// PromptTokens counts the prompt tokens of the requests the agent served for this model since
	// it started, and CachedPromptTokens the part of them the backend did not evaluate again
	// because its prompt cache held it: usage.prompt_tokens_details.cached_tokens where the
	// backend reports it, else (Ollama) estimated from the time the prompt took against the
	// node's learned prefill speed. The gateway turns them into hit ratios and prefill saved.
	PromptTokens       int64 `json:"prompt_tokens,omitempty"`
	CachedPromptTokens int64 `json:"cached_prompt_tokens,omitempty"`
}

// HeartbeatReply is the gateway's answer to a heartbeat.
type HeartbeatReply struct {
	// Draining tells the agent an operator drained it (for its logs and /agent/v1/info).
	Draining bool `json:"draining"`
	// Registry is RegistryShared when this gateway wrote the heartbeat to a registry every
	// gateway reads (Redis): one gateway's acceptance is then enough. RegistryLocal (or empty,
	// from an older gateway) means only this gateway saw it, so the agent also sends it to every
	// other gateway it knows.
	Registry string `json:"registry,omitempty"`
	// DeltaVersion is the HeartbeatDelta version this gateway reads (DeltaVersion); 0, from an
	// older gateway: send it full heartbeats only.
	DeltaVersion int `json:"delta_version,omitempty"`
}

// HeartbeatReply.Registry values.
const (
	// RegistryShared: the heartbeat reached the registry all gateways share.
	RegistryShared = "shared"
	// RegistryLocal: the heartbeat reached this gateway's own registry only.
	RegistryLocal = "local"
)

// CodeNodeIDConflict is the OpenAI-shape error code of a heartbeat refused (409 Conflict) because
// another live agent instance holds its node ID.
const CodeNodeIDConflict = "node_id_conflict"

// ModelRequest names a model for load, unload and delete.
type ModelRequest struct {
	Model string `json:"model"`
	// KeepAlive is how long a loaded model stays resident (Go duration, "-1" forever); empty: backend default.
	KeepAlive string `json:"keep_alive,omitempty"`
}

// PullRequest asks an agent to pull a model from its backend's registry.
type PullRequest struct {
	Model    string `json:"model"`
	Insecure bool   `json:"insecure,omitempty"`
}

// CopyRequest asks an agent to fetch Model from the peer agent at From (its URL) with no internet.
type CopyRequest struct {
	Model string `json:"model"`
	From  string `json:"from"`
}

// SimFaultRequest asks a simulated node to make one of its GPUs fail in the named way (the kinds
// are the sim backend's to define, e.g. "ecc", "xid", "thermal", "lost", "clear").
type SimFaultRequest struct {
	GPU  int    `json:"gpu"`
	Kind string `json:"kind"`
}

// Progress is one line of a streamed pull or copy. The last line has Status "success" or a
// non-empty Error.
type Progress struct {
	Node      string `json:"node,omitempty"`
	Status    string `json:"status"`
	Digest    string `json:"digest,omitempty"`
	Total     int64  `json:"total,omitempty"`
	Completed int64  `json:"completed,omitempty"`
	Error     string `json:"error,omitempty"`
}

// ModelManifest describes a model as content-addressed blobs so a peer can rebuild it.
type ModelManifest struct {
	Model string `json:"model"`
	// Files maps file names (as Ollama's create API takes them) to blob digests ("sha256:<hex>").
	Files map[string]string `json:"files"`
	// Blobs lists every blob with its size, so the receiver can verify what it fetched.
	Blobs []Blob `json:"blobs"`
	// Template, System, Parameters and License carry the Modelfile settings the blobs do not.
	Template   string         `json:"template,omitempty"`
	System     string         `json:"system,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	License    []string       `json:"license,omitempty"`
	// Renderer, Parser and Requires are Ollama's model config settings (newer models name a
	// built-in prompt renderer and output parser); empty for most models.
	Renderer string `json:"renderer,omitempty"`
	Parser   string `json:"parser,omitempty"`
	Requires string `json:"requires,omitempty"`
}

// Blob is one content-addressed file of a model.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// ErrorBody is the error shape of the agent's own routes, OpenAI's as the inference routes
// answer it (openaierr.Body).
type ErrorBody = openaierr.Body

// ErrorDetail is the OpenAI error object: message, type, param, code.
type ErrorDetail = openaierr.Detail

// InstanceFingerprint is what logs and error texts show of an agent instance ID: the first 6
// bytes of its SHA-256, in hex. It tells two instances apart in a log without revealing the ID,
// which would let a reader heartbeat as that instance.
func InstanceFingerprint(instanceID string) string {
	if instanceID == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(instanceID))
	return hex.EncodeToString(sum[:6])
}
