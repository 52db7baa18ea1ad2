// Package backend holds the local model servers a herd agent fronts, behind nodeagent.Backend:
//
//   - Ollama (the default): model listing, pull, load, unload and delete through Ollama's own Go
//     client (github.com/ollama/ollama/api), air-gapped copy between nodes by exporting a model's
//     blobs from the models directory and importing them with Ollama's blob and create API, and
//     inference through Ollama's OpenAI-compatible routes.
//   - OpenAICompat: any OpenAI-compatible server (vLLM, llama.cpp server); inference and listing.
//
// Inference is a streaming reverse proxy in both: the body the agent already read goes to the
// backend unchanged and the answer comes back byte for byte, each SSE event flushed as it arrives,
// so clients see the backend's exact wire format. The agent's own credentials never reach the
// backend. A backend that cannot be reached answers 502 in the OpenAI error shape; a stream that
// breaks after it started ends with an OpenAI-shaped error event rather than a silent cut.
//
// Decisions worth knowing:
//   - Ollama model names are compared in their canonical form ("tiny" is "tiny:latest"), see
//     NormalizeModelName; Models reports canonical names.
//   - Unload returns once the model has left Ollama's process list, not when Ollama accepted the
//     request, so a placement planner can count on the memory being free.
//   - Delete unloads first: a deleted model must not stay resident under a name no request can
//     reach.
//   - Import verifies every blob's sha256 and size itself while streaming it into Ollama (Ollama
//     checks too); on a mismatch it stops before creating anything.
//   - Errors are wrapped with %w around the sentinels below (ErrModelNotFound, ErrInvalid, ...);
//     HTTPStatus maps them to the status the agent should answer with.
package backend
