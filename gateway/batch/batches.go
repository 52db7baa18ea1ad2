package batch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
)

// CreateBatchParams is the body of POST /v1/batches.
type CreateBatchParams struct {
	InputFileID      string
	Endpoint         string
	CompletionWindow string
	Metadata         map[string]string
}

// Metadata limits, as OpenAI sets them.
const (
	maxMetadataPairs    = 16
	maxMetadataKeyLen   = 64
	maxMetadataValueLen = 512
)

// CreateBatch checks the request, records the batch (status "validating") and queues it; the
// runner validates the input file and runs it.
func (s *Service) CreateBatch(ctx context.Context, p CreateBatchParams) (store.Batch, error) {
	if p.InputFileID == "" {
		return store.Batch{}, invalid("missing_required_parameter", "input_file_id", "input_file_id is required")
	}
	if p.Endpoint == "" {
		return store.Batch{}, invalid("missing_required_parameter", "endpoint", "endpoint is required")
	}
	if !api.IsBatchEndpoint(p.Endpoint) {
		return store.Batch{}, invalid("invalid_value", "endpoint", "endpoint %q is not supported: use one of %s", p.Endpoint, strings.Join(api.BatchEndpoints(), ", "))
	}
	if p.CompletionWindow == "" {
		return store.Batch{}, invalid("missing_required_parameter", "completion_window", "completion_window is required")
	}
	if p.CompletionWindow != CompletionWindow {
		return store.Batch{}, invalid("invalid_value", "completion_window", "completion_window %q is not supported: only %q", p.CompletionWindow, CompletionWindow)
	}
	if err := checkMetadata(p.Metadata); err != nil {
		return store.Batch{}, err
	}
	f, err := s.GetFile(ctx, p.InputFileID)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Param = "input_file_id"
		}
		return store.Batch{}, err
	}
	if f.Purpose != PurposeBatch {
		return store.Batch{}, invalid("invalid_value", "input_file_id", "file %s has purpose %q; a batch input file must be uploaded with purpose %q", f.ID, f.Purpose, PurposeBatch)
	}
	now := s.now()
	b := store.Batch{
		ID: store.NewID("batch_", now), Endpoint: p.Endpoint, InputFileID: p.InputFileID,
		CompletionWindow: p.CompletionWindow, Status: store.StatusValidating,
		CreatedAt: now.Unix(), ExpiresAt: now.Add(24 * time.Hour).Unix(),
		Metadata: p.Metadata,
	}
	if err := s.st.CreateBatch(ctx, b); err != nil {
		return store.Batch{}, fmt.Errorf("batch: %w", err)
	}
	if err := s.st.Enqueue(ctx, b.ID); err != nil {
		// The batch is recorded; Run's start-up sweep queues it if this gateway lives on.
		return store.Batch{}, fmt.Errorf("batch: queue %s: %w", b.ID, err)
	}
	s.notify()
	return b, nil
}

func checkMetadata(md map[string]string) error {
	if len(md) > maxMetadataPairs {
		return invalid("invalid_value", "metadata", "metadata has %d pairs; at most %d are allowed", len(md), maxMetadataPairs)
	}
	for k, v := range md {
		if utf8.RuneCountInString(k) > maxMetadataKeyLen {
			return invalid("invalid_value", "metadata", "metadata key %q is longer than %d characters", k, maxMetadataKeyLen)
		}
		if utf8.RuneCountInString(v) > maxMetadataValueLen {
			return invalid("invalid_value", "metadata", "metadata value of %q is longer than %d characters", k, maxMetadataValueLen)
		}
	}
	return nil
}

// GetBatch returns a batch.
func (s *Service) GetBatch(ctx context.Context, id string) (store.Batch, error) {
	if !validID(id, "batch_") {
		return store.Batch{}, notFound("batch_id", "no such batch: %s", id)
	}
	b, err := s.st.GetBatch(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Batch{}, notFound("batch_id", "no such batch: %s", id)
	}
	return b, err
}

// ListBatches lists batches newest first.
func (s *Service) ListBatches(ctx context.Context, opts store.ListOptions) ([]store.Batch, bool, error) {
	return s.st.ListBatches(ctx, opts)
}

// CancelBatch moves a validating or running batch to "cancelling"; the runner holding it stops
// dispatching, writes what finished and marks it "cancelled". Cancelling a batch already
// cancelling or cancelled returns it unchanged; any other finished batch is a KindConflict error.
func (s *Service) CancelBatch(ctx context.Context, id string) (store.Batch, error) {
	if _, err := s.GetBatch(ctx, id); err != nil {
		return store.Batch{}, err
	}
	b, err := s.st.UpdateBatch(ctx, id, func(b *store.Batch) error {
		switch b.Status {
		case store.StatusValidating, store.StatusInProgress:
			b.Status = store.StatusCancelling
			b.CancellingAt = s.now().Unix()
			return nil
		case store.StatusCancelling, store.StatusCancelled:
			return nil
		default:
			return &Error{Kind: KindConflict, Code: "batch_not_cancellable", Param: "batch_id",
				Message: fmt.Sprintf("cannot cancel a batch with status %q", b.Status)}
		}
	})
	if err != nil {
		return store.Batch{}, err
	}
	s.mu.Lock()
	stop := s.active[id]
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.notify()
	return b, nil
}

// Manifest returns what herd recorded about each finished line of a batch, in input order.
func (s *Service) Manifest(ctx context.Context, id string) (api.Manifest, error) {
	b, err := s.GetBatch(ctx, id)
	if err != nil {
		return api.Manifest{}, err
	}
	m := api.Manifest{Object: "list", BatchID: b.ID, Status: b.Status, Data: []api.ManifestEntry{}}
	err = s.st.Lines(ctx, id, func(r store.LineResult) error {
		status := "completed"
		if !r.OK {
			status = "failed"
		}
		m.Data = append(m.Data, api.ManifestEntry{
			CustomID: r.CustomID, Index: r.Index, Status: status, StatusCode: r.StatusCode, ErrorCode: r.ErrorCode,
			Node: r.Node, Simulated: r.Simulated, Parameters: r.Parameters, Model: r.Model, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
			StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, DurationMS: r.FinishedAt - r.StartedAt, Attempts: r.Attempts,
		})
		return nil
	})
	if err != nil {
		return api.Manifest{}, fmt.Errorf("batch: %w", err)
	}
	return m, nil
}
