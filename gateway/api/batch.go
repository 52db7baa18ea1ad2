package api

import (
	"encoding/json"
	"slices"
)

// batchEndpoints are the endpoints a batch's lines can call.
var batchEndpoints = map[string]bool{
	"/v1/chat/completions": true,
	"/v1/completions":      true,
	"/v1/embeddings":       true,
	"/v1/responses":        true,
}

// IsBatchEndpoint reports whether a batch's lines can call endpoint.
func IsBatchEndpoint(endpoint string) bool { return batchEndpoints[endpoint] }

// BatchEndpoints returns the endpoints a batch's lines can call, sorted.
func BatchEndpoints() []string {
	eps := make([]string, 0, len(batchEndpoints))
	for ep := range batchEndpoints {
		eps = append(eps, ep)
	}
	slices.Sort(eps)
	return eps
}

// FileObject is OpenAI's file object.
type FileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	// Status is deprecated by OpenAI but still sent; herd's files are "processed" once stored.
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

// BatchObject is OpenAI's batch object, field for field.
type BatchObject struct {
	ID               string        `json:"id"`
	Object           string        `json:"object"`
	Endpoint         string        `json:"endpoint"`
	Errors           *BatchErrors  `json:"errors"`
	InputFileID      string        `json:"input_file_id"`
	CompletionWindow string        `json:"completion_window"`
	Status           string        `json:"status"`
	OutputFileID     *string       `json:"output_file_id"`
	ErrorFileID      *string       `json:"error_file_id"`
	CreatedAt        int64         `json:"created_at"`
	InProgressAt     *int64        `json:"in_progress_at"`
	ExpiresAt        *int64        `json:"expires_at"`
	FinalizingAt     *int64        `json:"finalizing_at"`
	CompletedAt      *int64        `json:"completed_at"`
	FailedAt         *int64        `json:"failed_at"`
	ExpiredAt        *int64        `json:"expired_at"`
	CancellingAt     *int64        `json:"cancelling_at"`
	CancelledAt      *int64        `json:"cancelled_at"`
	RequestCounts    RequestCounts `json:"request_counts"`
	// Usage is always present: zeros until lines have run.
	Usage    BatchUsage        `json:"usage"`
	Metadata map[string]string `json:"metadata"`
}

// Terminal reports whether the batch has ended (and will not change again).
func (b BatchObject) Terminal() bool {
	switch b.Status {
	case "completed", "failed", "cancelled", "expired":
		return true
	}
	return false
}

// BatchUsage is OpenAI's usage of a batch: the tokens of its finished lines, summed.
type BatchUsage struct {
	InputTokens         int64               `json:"input_tokens"`
	InputTokensDetails  InputTokensDetails  `json:"input_tokens_details"`
	OutputTokens        int64               `json:"output_tokens"`
	OutputTokensDetails OutputTokensDetails `json:"output_tokens_details"`
	TotalTokens         int64               `json:"total_tokens"`
}

// InputTokensDetails breaks the input tokens down.
type InputTokensDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// OutputTokensDetails breaks the output tokens down.
type OutputTokensDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// RequestCounts is OpenAI's request_counts.
type RequestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// BatchErrors is OpenAI's errors list of a batch.
type BatchErrors struct {
	Object string           `json:"object"`
	Data   []BatchErrorItem `json:"data"`
}

// BatchErrorItem is one entry of a batch's errors.
type BatchErrorItem struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// CreateBatchRequest is POST /v1/batches.
type CreateBatchRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata,omitempty"`
}

// OutputLine is one line of a batch's output or error file, in OpenAI's format.
type OutputLine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *OutputResponse `json:"response"`
	Error    *OutputError    `json:"error"`
}

// OutputResponse is the backend's answer to a line.
type OutputResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// OutputError says why a line failed.
type OutputError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ManifestEntry is what herd knows about one finished line beyond OpenAI's output format.
type ManifestEntry struct {
	CustomID string `json:"custom_id"`
	// Index is the request's 0-based position among the input file's requests.
	Index      int    `json:"index"`
	Status     string `json:"status"`
	StatusCode int    `json:"status_code,omitempty"`
	ErrorCode  string `json:"error_code,omitempty"`
	Node       string `json:"node,omitempty"`
	// Simulated is true when Node is a simulated GPU (its output came from nodeagent/sim).
	Simulated        bool   `json:"simulated"`
	Model            string `json:"model,omitempty"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	// Parameters are the sampling parameters the line ran with, preset defaults applied.
	Parameters json.RawMessage `json:"parameters,omitempty"`
	// StartedAt and FinishedAt are Unix milliseconds: the first try's start, the last try's end.
	StartedAt  int64 `json:"started_at"`
	FinishedAt int64 `json:"finished_at"`
	DurationMS int64 `json:"duration_ms"`
	Attempts   int   `json:"attempts"`
}

// Manifest is the per-line record of a batch (GET /v1/batches/{id}/manifest).
type Manifest struct {
	Object  string          `json:"object"`
	BatchID string          `json:"batch_id"`
	Status  string          `json:"status"`
	Data    []ManifestEntry `json:"data"`
}

// ListPage is OpenAI's list envelope (GET /v1/files, GET /v1/batches).
type ListPage[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// NewListPage builds a list page of data; id names an element for first_id and last_id.
func NewListPage[T any](data []T, id func(T) string, more bool) ListPage[T] {
	p := ListPage[T]{Object: "list", Data: data, HasMore: more}
	if p.Data == nil {
		p.Data = []T{}
	}
	if len(data) > 0 {
		first, last := id(data[0]), id(data[len(data)-1])
		p.FirstID, p.LastID = &first, &last
	}
	return p
}
