// Package batch runs bulk generation with OpenAI's Files and Batches semantics: it keeps uploaded
// files, validates batch input files, runs their lines through a Dispatcher (the gateway's
// scheduler, as low-priority batch work) with bounded concurrency and retries, checkpoints every
// finished line in the store, and assembles output and error files.
//
// Decisions where OpenAI's documentation is silent or herd differs:
//   - A malformed input file (a line that is not JSON, lacks custom_id, repeats one, is not a POST
//     to the batch's endpoint, or has a body that is not an object) fails the batch during
//     validation, as OpenAI does, with every bad line listed (1-based) in errors.data (at most
//     MaxValidationErrors of them). A well-formed line the backend rejects (4xx) fails only that
//     line, into the error file; the batch goes on.
//   - Dispatch errors (no node now, transport failure), 5xx, 408 and 429 are retried with
//     exponential backoff up to Config.MaxAttempts; then the line goes to the error file.
//   - Every finished line is written to the store (committed) before it counts. After a crash the
//     batch is claimed again and resumes: lines already recorded are kept, lines that were in
//     flight are redone; the output has every custom_id exactly once, in input order.
//   - Cancel stops dispatching at once (in-flight requests are abandoned, not awaited); lines that
//     finished are in the output/error files, lines never run go to the error file with code
//     "batch_cancelled" and count as failed. Expiry is the same with "batch_expired".
//   - Per-line facts OpenAI's output format has no room for (node, tokens, timings) are served by
//     Service.Manifest (GET /v1/batches/{id}/manifest); output lines stay exactly OpenAI's.
//   - Bulk inputs for the CLI (plain text, CSV + template) are turned into OpenAI JSONL on the
//     client side, by package bulk; this package sees only OpenAI JSONL.
package batch

import (
	"context"
	"encoding/json"
	"time"
)

// ClassBatch is the scheduling class of batch work: admitted only into capacity that interactive
// traffic leaves free.
const ClassBatch = "batch"

// Dispatcher runs one request of a batch on some node. The gateway implements it with its
// scheduler and failover.
type Dispatcher interface {
	// Dispatch returns the backend's answer, whatever its status code. An error means no answer
	// came (no node could take it now, or transport failure); the runner retries later.
	Dispatch(ctx context.Context, req Request) (Response, error)
}

// Request is one line of a batch on its way to a node.
type Request struct {
	// Endpoint is the batch's endpoint ("/v1/chat/completions").
	Endpoint string
	// Body is the line's body as given (its "model" may name a preset; the dispatcher resolves it).
	Body []byte
	// Class is ClassBatch.
	Class string
}

// Response is a backend's answer to a Request.
type Response struct {
	StatusCode int
	Body       []byte
	// Node is the node that answered, for the manifest; Simulated is true when that node is a
	// simulated GPU (nodeagent/sim), so the line's provenance says so.
	Node      string
	Simulated bool
	// Parameters are the sampling parameters the request was run with (after a preset applied its
	// defaults): a JSON object of temperature, top_p, max_tokens, seed, stop, ... as sent.
	Parameters json.RawMessage
	// RequestID, when the dispatcher knows one (an X-Request-Id), becomes the output line's
	// response.request_id; otherwise the runner makes one.
	RequestID string
}

// Config bounds files and batches and tunes the runner. Zero values take DefaultConfig's.
type Config struct {
	// MaxFileBytes bounds an uploaded file (OpenAI: 200 MB).
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// MaxFileLines bounds the requests in a batch input file (OpenAI: 50,000).
	MaxFileLines int `yaml:"max_file_lines"`
	// MaxLineBytes bounds one line of a batch input file: a longer one fails the batch at
	// validation, with its line number. The gateway sets it to its MaxBodyBytes when zero.
	MaxLineBytes int64 `yaml:"max_line_bytes"`
	// Concurrency bounds the lines in flight at once, over all batches this gateway runs.
	Concurrency int `yaml:"concurrency"`
	// MaxActiveBatches bounds the batches this gateway runs at once.
	MaxActiveBatches int `yaml:"max_active_batches"`
	// MaxAttempts bounds the tries of one line on retryable failures.
	MaxAttempts int `yaml:"max_attempts"`
	// RetryBackoff is the wait before the second try; it doubles per try up to MaxRetryBackoff.
	RetryBackoff    time.Duration `yaml:"retry_backoff"`
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff"`
	// PollInterval is how often the runner looks for queued work and for cancellations made on
	// other gateways.
	PollInterval time.Duration `yaml:"poll_interval"`
	// ClaimTimeout is how long a batch's claim may go unrenewed before another runner takes it
	// over; claims are renewed every ClaimTimeout/3.
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
	// MaxValidationErrors bounds errors.data of a batch that failed validation.
	MaxValidationErrors int `yaml:"max_validation_errors"`
	// ModelGrace is how long after the runner starts (the gateway's start) a batch naming a model
	// no node has reported waits in "validating" rather than fail: nodes are still reporting in.
	// Past it such a batch fails validation (model_not_found, with its lines). The gateway sets
	// it to 10s or three heartbeat intervals, whichever is longer, when zero.
	ModelGrace time.Duration `yaml:"model_grace"`
}

// DefaultConfig returns OpenAI's limits and a runner tuned for a small cluster.
func DefaultConfig() Config {
	return Config{
		MaxFileBytes:        200 << 20,
		MaxFileLines:        50_000,
		MaxLineBytes:        32 << 20,
		Concurrency:         8,
		MaxActiveBatches:    2,
		MaxAttempts:         6,
		RetryBackoff:        time.Second,
		MaxRetryBackoff:     30 * time.Second,
		PollInterval:        time.Second,
		ClaimTimeout:        30 * time.Second,
		MaxValidationErrors: 100,
		ModelGrace:          10 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxFileBytes <= 0 {
		c.MaxFileBytes = d.MaxFileBytes
	}
	if c.MaxFileLines <= 0 {
		c.MaxFileLines = d.MaxFileLines
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = d.MaxLineBytes
	}
	if c.Concurrency <= 0 {
		c.Concurrency = d.Concurrency
	}
	if c.MaxActiveBatches <= 0 {
		c.MaxActiveBatches = d.MaxActiveBatches
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = d.RetryBackoff
	}
	if c.MaxRetryBackoff <= 0 {
		c.MaxRetryBackoff = d.MaxRetryBackoff
	}
	if c.PollInterval <= 0 {
		c.PollInterval = d.PollInterval
	}
	if c.ClaimTimeout <= 0 {
		c.ClaimTimeout = d.ClaimTimeout
	}
	if c.ModelGrace == 0 {
		c.ModelGrace = d.ModelGrace
	}
	if c.MaxValidationErrors <= 0 {
		c.MaxValidationErrors = d.MaxValidationErrors
	}
	return c
}
