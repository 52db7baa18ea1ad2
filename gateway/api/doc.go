// Package api is the wire format of the gateway's own HTTP API — the admin API (/admin/v1:
// nodes, models, drain, queue, history, presets, keys), OpenAI's Files and Batches (/v1/files, /v1/batches) and herd's
// batch manifest — and a typed client for it. The gateway's handlers encode these types and the
// herd CLI (and anyone else) decodes them, so the two cannot drift apart.
//
// It is a leaf: it imports no herd package but the pure wire and data packages agentapi (the GPU
// sample a node reports, embedded as is in the admin node view, and model transfer progress) and
// models (presets).
package api
