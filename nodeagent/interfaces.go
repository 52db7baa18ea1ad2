package nodeagent

import (
	"context"
	"io"
	"net/http"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Backend is the local model server an agent fronts: Ollama, an OpenAI-compatible server, or the
// simulated GPU node.
type Backend interface {
	// Kind is one of agentapi.BackendOllama, BackendOpenAI, BackendSim.
	Kind() string
	// Simulated is true for nodeagent/sim.
	Simulated() bool
	// ServeInference answers an OpenAI-format request for endpoint (agentapi.PathChatCompletions,
	// PathCompletions or PathEmbeddings) whose body has already been read. It writes the OpenAI
	// wire format to w, flushing each SSE event as it is produced when the request streams, and
	// OpenAI-shaped errors with the backend's status.
	ServeInference(w http.ResponseWriter, r *http.Request, endpoint string, body []byte)
	// Models lists the models the backend knows: on disk and resident.
	Models(ctx context.Context) ([]agentapi.Model, error)
}

// ResponsesServer is implemented by backends that may serve the Responses API (/v1/responses)
// themselves. The agent passes Responses requests through to a backend that says it does, and
// translates them to chat completions (nodeagent/responses) for every other backend.
type ResponsesServer interface {
	ServesResponses(ctx context.Context) bool
}

// NativeOllama is implemented by backends that serve Ollama's native API (the Ollama backend):
// the gateway sends Ollama clients' requests to them unchanged.
type NativeOllama interface {
	// ServeOllama answers a native Ollama request for path (agentapi.PathOllamaChat, ...) whose
	// body has already been read, streaming NDJSON as Ollama writes it.
	ServeOllama(w http.ResponseWriter, r *http.Request, path string, body []byte)
}

// ModelManager is implemented by backends that can pull, load, unload and delete models.
type ModelManager interface {
	Pull(ctx context.Context, model string, progress func(agentapi.Progress)) error
	Load(ctx context.Context, model string, keepAlive string) error
	Unload(ctx context.Context, model string) error
	Delete(ctx context.Context, model string) error
}

// ModelExporter is implemented by backends that can hand a model to a peer as blobs.
type ModelExporter interface {
	Export(ctx context.Context, model string) (agentapi.ModelManifest, error)
	// OpenBlob opens the blob with digest ("sha256:<hex>") for reading.
	OpenBlob(ctx context.Context, digest string) (io.ReadCloser, int64, error)
}

// ModelImporter is implemented by backends that can rebuild a model from a peer's blobs.
type ModelImporter interface {
	// Import creates the model described by m, calling fetch for each blob it does not have yet.
	// It verifies every blob's digest before it uses it.
	Import(ctx context.Context, m agentapi.ModelManifest, fetch func(ctx context.Context, digest string) (io.ReadCloser, error), progress func(agentapi.Progress)) error
}

// TelemetrySource reads the node's GPUs. It is sampled off the request path.
type TelemetrySource interface {
	// GPUs returns one sample per GPU. No GPU or no driver is an empty slice and a nil error;
	// a GPU that fails to answer is returned with Healthy false.
	GPUs(ctx context.Context) ([]agentapi.GPU, error)
}

// ChatTemplater is implemented by backends that can tell a model's chat template (the
// simulator's own format; a llama.cpp server's /props): the agent's /api/show answer for a backend
// that does not speak Ollama includes it. ok is false when the template is not known.
type ChatTemplater interface {
	ChatTemplate(ctx context.Context, model string) (template string, ok bool)
}
