package batch

import (
	"encoding/json"
	"fmt"

	"github.com/herd-llm/herd/gateway/store"
)

// File purposes.
const (
	PurposeBatch       = "batch"
	PurposeUserData    = "user_data"
	PurposeBatchOutput = "batch_output"
)

// Endpoints a batch can target.
var batchEndpoints = map[string]bool{
	"/v1/chat/completions": true,
	"/v1/completions":      true,
	"/v1/embeddings":       true,
}

// CompletionWindow is the only completion window OpenAI offers, and so the only one herd takes.
const CompletionWindow = "24h"

// ErrorKind says which HTTP status an Error maps to.
type ErrorKind int

// Error kinds.
const (
	KindInvalid  ErrorKind = iota // 400
	KindNotFound                  // 404
	KindConflict                  // 409
	KindTooLarge                  // 413
)

// Error is an error a client caused, with OpenAI's code and param.
type Error struct {
	Kind    ErrorKind
	Code    string
	Param   string
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

func invalid(code, param, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

func notFound(param, format string, args ...any) *Error {
	return &Error{Kind: KindNotFound, Code: "not_found", Param: param, Message: fmt.Sprintf(format, args...)}
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

// NewFileObject renders stored file metadata as OpenAI's file object.
func NewFileObject(f store.File) FileObject {
	return FileObject{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt, Filename: f.Filename, Purpose: f.Purpose, Status: f.Status}
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

// newBatchUsage renders stored usage; cached and reasoning tokens are already inside the input
// and output counts, so the total is just those two.
func newBatchUsage(u store.Usage) BatchUsage {
	return BatchUsage{
		InputTokens:         u.InputTokens,
		InputTokensDetails:  InputTokensDetails{CachedTokens: u.CachedTokens},
		OutputTokens:        u.OutputTokens,
		OutputTokensDetails: OutputTokensDetails{ReasoningTokens: u.ReasoningTokens},
		TotalTokens:         u.InputTokens + u.OutputTokens,
	}
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

func ptrIf[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// NewBatchObject renders a stored batch as OpenAI's batch object.
func NewBatchObject(b store.Batch) BatchObject {
	o := BatchObject{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, InputFileID: b.InputFileID,
		CompletionWindow: b.CompletionWindow, Status: b.Status,
		OutputFileID: ptrIf(b.OutputFileID), ErrorFileID: ptrIf(b.ErrorFileID),
		CreatedAt: b.CreatedAt, InProgressAt: ptrIf(b.InProgressAt), ExpiresAt: ptrIf(b.ExpiresAt),
		FinalizingAt: ptrIf(b.FinalizingAt), CompletedAt: ptrIf(b.CompletedAt), FailedAt: ptrIf(b.FailedAt),
		ExpiredAt: ptrIf(b.ExpiredAt), CancellingAt: ptrIf(b.CancellingAt), CancelledAt: ptrIf(b.CancelledAt),
		RequestCounts: RequestCounts(b.RequestCounts),
		Usage:         newBatchUsage(b.Usage),
		Metadata:      b.Metadata,
	}
	if len(b.Errors) > 0 {
		o.Errors = &BatchErrors{Object: "list"}
		for _, e := range b.Errors {
			o.Errors.Data = append(o.Errors.Data, BatchErrorItem{Code: e.Code, Message: e.Message, Param: ptrIf(e.Param), Line: ptrIf(e.Line)})
		}
	}
	return o
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

// newOutputLine renders a recorded line.
func newOutputLine(r store.LineResult) OutputLine {
	l := OutputLine{ID: r.ID, CustomID: r.CustomID}
	if r.StatusCode != 0 {
		body := r.Body
		if len(body) == 0 {
			body = json.RawMessage("null")
		}
		l.Response = &OutputResponse{StatusCode: r.StatusCode, RequestID: r.RequestID, Body: body}
	}
	if !r.OK {
		l.Error = &OutputError{Code: r.ErrorCode, Message: r.ErrorMessage}
	}
	return l
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
