package batch

import (
	"encoding/json"
	"fmt"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
)

// File purposes.
const (
	PurposeBatch       = "batch"
	PurposeUserData    = "user_data"
	PurposeBatchOutput = "batch_output"
)

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

// The wire types of files, batches and the manifest are package api's, so the CLI and the
// handlers share them; this file renders stored records as them.

// NewFileObject renders stored file metadata as OpenAI's file object.
func NewFileObject(f store.File) api.FileObject {
	return api.FileObject{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt, Filename: f.Filename, Purpose: f.Purpose, Status: f.Status}
}

// newBatchUsage renders stored usage; cached and reasoning tokens are already inside the input
// and output counts, so the total is just those two.
func newBatchUsage(u store.Usage) api.BatchUsage {
	return api.BatchUsage{
		InputTokens:         u.InputTokens,
		InputTokensDetails:  api.InputTokensDetails{CachedTokens: u.CachedTokens},
		OutputTokens:        u.OutputTokens,
		OutputTokensDetails: api.OutputTokensDetails{ReasoningTokens: u.ReasoningTokens},
		TotalTokens:         u.InputTokens + u.OutputTokens,
	}
}

func ptrIf[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// NewBatchObject renders a stored batch as OpenAI's batch object.
func NewBatchObject(b store.Batch) api.BatchObject {
	o := api.BatchObject{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, InputFileID: b.InputFileID,
		CompletionWindow: b.CompletionWindow, Status: b.Status,
		OutputFileID: ptrIf(b.OutputFileID), ErrorFileID: ptrIf(b.ErrorFileID),
		CreatedAt: b.CreatedAt, InProgressAt: ptrIf(b.InProgressAt), ExpiresAt: ptrIf(b.ExpiresAt),
		FinalizingAt: ptrIf(b.FinalizingAt), CompletedAt: ptrIf(b.CompletedAt), FailedAt: ptrIf(b.FailedAt),
		ExpiredAt: ptrIf(b.ExpiredAt), CancellingAt: ptrIf(b.CancellingAt), CancelledAt: ptrIf(b.CancelledAt),
		RequestCounts: api.RequestCounts(b.RequestCounts),
		Usage:         newBatchUsage(b.Usage),
		Metadata:      b.Metadata,
	}
	if len(b.Errors) > 0 {
		o.Errors = &api.BatchErrors{Object: "list"}
		for _, e := range b.Errors {
			o.Errors.Data = append(o.Errors.Data, api.BatchErrorItem{Code: e.Code, Message: e.Message, Param: ptrIf(e.Param), Line: ptrIf(e.Line)})
		}
	}
	return o
}

// newOutputLine renders a recorded line.
func newOutputLine(r store.LineResult) api.OutputLine {
	l := api.OutputLine{ID: r.ID, CustomID: r.CustomID}
	if r.StatusCode != 0 {
		body := r.Body
		if len(body) == 0 {
			body = json.RawMessage("null")
		}
		l.Response = &api.OutputResponse{StatusCode: r.StatusCode, RequestID: r.RequestID, Body: body}
	}
	if !r.OK {
		l.Error = &api.OutputError{Code: r.ErrorCode, Message: r.ErrorMessage}
	}
	return l
}
