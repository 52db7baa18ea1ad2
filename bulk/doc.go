// Package bulk is the client side of bulk generation: it turns prompt files (plain text, one
// prompt a line, or CSV with a template) into OpenAI batch input JSONL, submits them to a gateway
// through package api, and delivers a finished batch as one file per prompt plus manifest.json,
// the provenance record (sha256, model, node, tokens, timings) of files that are handed on or
// sold. Every delivered file is written atomically and durably (package atomicfile).
package bulk
