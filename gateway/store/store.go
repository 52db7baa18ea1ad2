// Package store is the state the gateway keeps between requests and across restarts: file
// metadata, batches with their progress, per-line checkpoints, the batch work queue, presets and
// API keys (as SHA-256 digests).
//
// It is declared here, not in the packages that use it, because two of them (gateway/batch and
// gateway) share one instance and the two implementations must agree on every detail; the
// conformance suite in store/storetest holds them to it.
//
// Two implementations:
//   - Bolt (go.etcd.io/bbolt): one file in the data dir, for a single gateway (the default).
//     bbolt locks its file, so only one process holds it; claims on the work queue found at open
//     therefore belong to a dead process and are released then.
//   - Redis (github.com/redis/go-redis/v9): for several gateways sharing state. The work queue is a
//     Redis stream with a consumer group; a gateway that stops renewing its claims is presumed
//     dead and another one takes its batches over with XAUTOCLAIM.
//
// Ordering: IDs made by NewID sort by creation time, and lists are newest first by ID, so both
// implementations page the same way (after = the last ID of the previous page).
//
// Request counts and usage: Completed and Failed, and the token sums in Usage, move by PutLine
// (atomically with storing the line, so a line is counted, and its tokens summed, exactly once,
// across crashes and retries) and by UpdateBatch, which applies the change its function made as a
// delta, so concurrent PutLine increments are never lost.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/herd-llm/herd/models"
)

// Errors callers branch on.
var (
	// ErrNotFound: no object with that ID.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: Create of an ID that is already there.
	ErrExists = errors.New("store: already exists")
	// ErrNotOwner: Renew of a queue entry another consumer holds now (this one was presumed dead).
	ErrNotOwner = errors.New("store: queue entry is held by another consumer")
	// ErrUnavailable: the store cannot be reached now (Redis down, connection refused or reset);
	// the call may succeed if retried later. Test with errors.Is.
	ErrUnavailable = errors.New("store: unavailable")
)

// Store is everything the gateway persists.
type Store interface {
	Files
	Batches
	Queue
	Presets
	Keys
	// Close releases the store; the bbolt file is unlocked.
	Close() error
}

// Files holds file metadata; the content lives on disk (the data dir, shared between gateways).
type Files interface {
	// PutFile creates or replaces a file's metadata.
	PutFile(ctx context.Context, f File) error
	// GetFile returns ErrNotFound for an unknown ID.
	GetFile(ctx context.Context, id string) (File, error)
	// ListFiles returns files newest first, those older than opts.After, at most opts.Limit, only
	// of opts.Purpose when set; more reports that older ones remain.
	ListFiles(ctx context.Context, opts ListOptions) (files []File, more bool, err error)
	// DeleteFile returns ErrNotFound for an unknown ID.
	DeleteFile(ctx context.Context, id string) error
}

// Batches holds batches and their per-line results.
type Batches interface {
	// CreateBatch stores a new batch; ErrExists if the ID is taken.
	CreateBatch(ctx context.Context, b Batch) error
	// GetBatch returns ErrNotFound for an unknown ID.
	GetBatch(ctx context.Context, id string) (Batch, error)
	// UpdateBatch reads the batch, calls fn on it and writes the result atomically (fn may be
	// called more than once under contention, so it must only modify the batch). An error from fn
	// aborts the update and is returned. Changes fn makes to RequestCounts.Completed and .Failed
	// and to Usage are applied as deltas to the stored values.
	UpdateBatch(ctx context.Context, id string, fn func(*Batch) error) (Batch, error)
	// ListBatches returns batches newest first, those older than opts.After, at most opts.Limit.
	ListBatches(ctx context.Context, opts ListOptions) (batches []Batch, more bool, err error)
	// PutLine records one finished line of a batch, durably, unless a result for that line index
	// is already there (first write wins). When it adds the line it also counts it in the batch's
	// RequestCounts (Completed when r.OK, else Failed) and adds its tokens to the batch's Usage,
	// in the same atomic write. Negative token counts are an error.
	PutLine(ctx context.Context, batchID string, r LineResult) (added bool, err error)
	// Lines calls fn on every recorded line of the batch in index order; an error from fn stops
	// the walk and is returned.
	Lines(ctx context.Context, batchID string, fn func(LineResult) error) error
}

// Queue is the batch work queue: a batch is enqueued when created and acknowledged when it
// reaches a final state; in between, a runner holds a claim on it and renews it.
type Queue interface {
	// Enqueue makes the batch claimable. Enqueueing a batch already queued is a no-op.
	Enqueue(ctx context.Context, batchID string) error
	// Claim gives consumer one batch to run: a batch nobody holds, or one whose holder has not
	// renewed it for minIdle (presumed dead; that may be consumer itself, restarted under the same
	// name). It returns "" when there is none. A claim renewed within minIdle is never handed out.
	Claim(ctx context.Context, consumer string, minIdle time.Duration) (batchID string, err error)
	// Renew tells the queue consumer is still working on batchID. ErrNotOwner when another
	// consumer has taken it over; ErrNotFound when it is not queued.
	Renew(ctx context.Context, consumer, batchID string) error
	// Ack removes the batch from the queue. Acking one not queued is a no-op.
	Ack(ctx context.Context, batchID string) error
}

// Presets holds presets created through the admin API.
type Presets interface {
	// PutPreset creates or replaces the preset of that name.
	PutPreset(ctx context.Context, p models.Preset) error
	// GetPreset returns ErrNotFound for an unknown name.
	GetPreset(ctx context.Context, name string) (models.Preset, error)
	// DeletePreset returns ErrNotFound for an unknown name.
	DeletePreset(ctx context.Context, name string) error
	// ListPresets returns every stored preset, by name.
	ListPresets(ctx context.Context) ([]models.Preset, error)
}

// Keys holds the API keys created through the admin API (keys declared in the configuration are
// not stored). Only a key's SHA-256 is kept, never the key itself.
type Keys interface {
	// CreateKey stores a new key; ErrExists if its ID or its name is taken.
	CreateKey(ctx context.Context, k APIKey) error
	// GetKey returns ErrNotFound for an unknown ID.
	GetKey(ctx context.Context, id string) (APIKey, error)
	// DeleteKey returns ErrNotFound for an unknown ID.
	DeleteKey(ctx context.Context, id string) error
	// ListKeys returns every stored key, by name.
	ListKeys(ctx context.Context) ([]APIKey, error)
}

// APIKey is a stored API key: a tenant created at run time.
type APIKey struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// SHA256 is the hex SHA-256 digest of the secret.
	SHA256 string `json:"sha256"`
	// Redacted shows the secret's first and last characters, for lists.
	Redacted string   `json:"redacted"`
	Scopes   []string `json:"scopes"`
	// RequestsPerMinute and TokensPerMinute are the key's rate limits; 0: unlimited.
	RequestsPerMinute int   `json:"requests_per_minute,omitempty"`
	TokensPerMinute   int   `json:"tokens_per_minute,omitempty"`
	CreatedAt         int64 `json:"created_at"`
}

// ListOptions pages a list.
type ListOptions struct {
	// After is the ID of the last object of the previous page; "" starts with the newest.
	After string
	// Limit is the page size; values below 1 mean 20.
	Limit int
	// Purpose filters files by purpose ("" for all); batches ignore it.
	Purpose string
	// Owner, when not "", keeps only the objects of that owner (a tenant's name).
	Owner string
}

// keep reports whether an object of owner passes the filter.
func (o ListOptions) keep(owner string) bool { return o.Owner == "" || o.Owner == owner }

func (o ListOptions) limit() int {
	if o.Limit < 1 {
		return 20
	}
	return o.Limit
}

// File is the metadata of an uploaded or generated file, in OpenAI's terms.
type File struct {
	ID        string `json:"id"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
	// Lines is the number of non-blank lines (requests, for a batch input file).
	Lines int `json:"lines"`
	// Owner is the name of the tenant that uploaded the file (or whose batch wrote it); "" for
	// files made before tenants existed or with no key configured.
	Owner string `json:"owner,omitempty"`
}

// Batch statuses, as OpenAI names them.
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// Terminal reports whether a batch in this status will not change any more.
func Terminal(status string) bool {
	switch status {
	case StatusFailed, StatusCompleted, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Batch is a batch and its progress. Timestamps are Unix seconds, 0 for "not yet".
type Batch struct {
	ID               string            `json:"id"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     string            `json:"output_file_id,omitempty"`
	ErrorFileID      string            `json:"error_file_id,omitempty"`
	Errors           []BatchError      `json:"errors,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	// Owner is the name of the tenant that created the batch ("" as for File.Owner).
	Owner         string        `json:"owner,omitempty"`
	RequestCounts RequestCounts `json:"request_counts"`
	// Usage sums the tokens of the recorded lines; PutLine keeps it.
	Usage Usage `json:"usage"`

	CreatedAt    int64 `json:"created_at"`
	InProgressAt int64 `json:"in_progress_at,omitempty"`
	ExpiresAt    int64 `json:"expires_at,omitempty"`
	FinalizingAt int64 `json:"finalizing_at,omitempty"`
	CompletedAt  int64 `json:"completed_at,omitempty"`
	FailedAt     int64 `json:"failed_at,omitempty"`
	ExpiredAt    int64 `json:"expired_at,omitempty"`
	CancellingAt int64 `json:"cancelling_at,omitempty"`
	CancelledAt  int64 `json:"cancelled_at,omitempty"`

	// PlannedOutputFileID and PlannedErrorFileID are chosen before the output files are written,
	// so a finalization redone after a crash overwrites the same files instead of leaving orphans.
	PlannedOutputFileID string `json:"planned_output_file_id,omitempty"`
	PlannedErrorFileID  string `json:"planned_error_file_id,omitempty"`
}

// RequestCounts is OpenAI's request_counts.
type RequestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Usage is the token use of a batch: the sums of its recorded lines' token counts. The cached
// tokens are part of InputTokens and the reasoning tokens part of OutputTokens, as in OpenAI's
// usage objects.
type Usage struct {
	InputTokens     int64 `json:"input_tokens"`
	CachedTokens    int64 `json:"cached_tokens"`
	OutputTokens    int64 `json:"output_tokens"`
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// add sums the line's tokens into u.
func (u *Usage) add(r LineResult) {
	u.InputTokens += int64(r.PromptTokens)
	u.CachedTokens += int64(r.CachedTokens)
	u.OutputTokens += int64(r.CompletionTokens)
	u.ReasoningTokens += int64(r.ReasoningTokens)
}

// BatchError is one entry of a batch's errors.data (a validation failure).
type BatchError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	// Line is the 1-based line of the input file, 0 when the error is not about one line.
	Line int `json:"line,omitempty"`
}

// LineResult is the outcome of one line of a batch: what the output or error file says about it,
// and what the manifest says (node, tokens, timings).
type LineResult struct {
	// Index is the 0-based position of the request among the input file's requests.
	Index int `json:"index"`
	// ID is the output line's "batch_req_…" ID.
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	// OK puts the line in the output file; otherwise it goes to the error file.
	OK bool `json:"ok"`
	// StatusCode, RequestID and Body are the backend's response; StatusCode 0 means none came.
	StatusCode int             `json:"status_code,omitempty"`
	RequestID  string          `json:"request_id,omitempty"`
	Body       json.RawMessage `json:"body,omitempty"`
	// ErrorCode and ErrorMessage explain a failed line.
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`

	Node             string `json:"node,omitempty"`
	Model            string `json:"model,omitempty"`
	PromptTokens     int    `json:"prompt_tokens,omitempty"`
	CompletionTokens int    `json:"completion_tokens,omitempty"`
	// Simulated is true when Node is a simulated GPU; Parameters are the sampling parameters the
	// line ran with (a JSON object), for the delivery manifest's provenance.
	Simulated  bool            `json:"simulated,omitempty"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	// CachedTokens is the part of PromptTokens served from the prompt cache
	// (usage.prompt_tokens_details.cached_tokens); ReasoningTokens the part of CompletionTokens
	// spent reasoning (usage.completion_tokens_details.reasoning_tokens).
	CachedTokens    int `json:"cached_tokens,omitempty"`
	ReasoningTokens int `json:"reasoning_tokens,omitempty"`
	// StartedAt and FinishedAt are Unix milliseconds.
	StartedAt  int64 `json:"started_at,omitempty"`
	FinishedAt int64 `json:"finished_at,omitempty"`
	Attempts   int   `json:"attempts,omitempty"`
}

// NewID returns prefix followed by 32 hex digits: 16 of the creation time in nanoseconds, so IDs
// sort by age, and 16 random ones, so gateways creating IDs at once never collide.
func NewID(prefix string, now time.Time) string {
	var b [16]byte
	ns := uint64(now.UnixNano())
	for i := 7; i >= 0; i-- {
		b[i] = byte(ns)
		ns >>= 8
	}
	if _, err := rand.Read(b[8:]); err != nil {
		panic(fmt.Sprintf("store: crypto/rand failed: %v", err))
	}
	return prefix + hex.EncodeToString(b[:])
}

// checkLine rejects a line PutLine must not store.
func checkLine(r LineResult) error {
	if r.Index < 0 {
		return fmt.Errorf("store: line index %d is negative", r.Index)
	}
	if r.PromptTokens < 0 || r.CompletionTokens < 0 || r.CachedTokens < 0 || r.ReasoningTokens < 0 {
		return fmt.Errorf("store: line %d has a negative token count", r.Index)
	}
	return nil
}

// sharedDelta is the change an UpdateBatch fn made to the values PutLine also moves.
type sharedDelta struct {
	completed, failed int
	usage             Usage
}

func deltaOf(before, after Batch) sharedDelta {
	return sharedDelta{
		completed: after.RequestCounts.Completed - before.RequestCounts.Completed,
		failed:    after.RequestCounts.Failed - before.RequestCounts.Failed,
		usage: Usage{
			InputTokens:     after.Usage.InputTokens - before.Usage.InputTokens,
			CachedTokens:    after.Usage.CachedTokens - before.Usage.CachedTokens,
			OutputTokens:    after.Usage.OutputTokens - before.Usage.OutputTokens,
			ReasoningTokens: after.Usage.ReasoningTokens - before.Usage.ReasoningTokens,
		},
	}
}
