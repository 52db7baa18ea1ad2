package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/openaierr"
)

// Why a running batch stops before all its lines are done.
var (
	errCancelled = errors.New("batch cancelled")
	errExpired   = errors.New("batch expired")
	errLost      = errors.New("batch claim lost to another runner")
)

// Run runs queued batches until ctx is done: it claims batches from the store's queue (including
// ones a crashed runner left behind), runs their lines through the Dispatcher and finalizes them.
// When ctx is done it abandons the lines in flight (they are redone on resume) and returns once
// every goroutine it started has ended, so the store may be closed right after.
func (s *Service) Run(ctx context.Context) error {
	if s.disp == nil {
		return errors.New("batch: no dispatcher")
	}
	if err := s.requeueUnfinished(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("requeue of unfinished batches failed", "err", err)
	}
	// Claims still held under this runner's name belong to its previous life (a crash, a kill):
	// resume them now rather than when their claims time out.
	var own []string
	if h, ok := s.st.(heldClaims); ok {
		var err error
		if own, err = h.Held(ctx, s.consumer); err != nil && ctx.Err() == nil {
			s.log.Warn("listing this gateway's own claims failed", "err", err)
		}
		if len(own) > 0 {
			s.log.Info("resuming batches this gateway held before it restarted", "batches", own)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	running := make(chan struct{}, s.cfg.MaxActiveBatches)
	poll := time.NewTicker(s.cfg.PollInterval)
	defer poll.Stop()
	for {
		for len(running) < cap(running) {
			var id string
			var err error
			if len(own) > 0 {
				id, own = own[0], own[1:]
			} else {
				id, err = s.st.Claim(ctx, s.consumer, s.cfg.ClaimTimeout)
			}
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("claiming queued batches failed", "err", err)
				}
				break
			}
			if id == "" {
				break
			}
			if !s.markActive(id) {
				// Already running here: its claim looked idle (a stall longer than ClaimTimeout)
				// and Claim handed it back to us, which renewed it. Nothing more to do.
				continue
			}
			running <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-running }()
				defer s.unmarkActive(id)
				s.runBatch(ctx, id)
				s.notify() // a slot for another batch is free
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		case <-s.wake:
		}
	}
}

// heldClaims is implemented by queues whose claims outlive the process (Redis): Held lists the
// batches still claimed under consumer's name.
type heldClaims interface {
	Held(ctx context.Context, consumer string) ([]string, error)
}

// markActive records that this runner runs batch id; false if it already does.
func (s *Service) markActive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.active[id]; ok {
		return false
	}
	s.active[id] = nil // the stop function comes once runBatch has made it
	return true
}

func (s *Service) unmarkActive(id string) {
	s.mu.Lock()
	delete(s.active, id)
	s.mu.Unlock()
}

// requeueUnfinished queues every batch that is not finished, so a batch recorded just before a
// crash that kept it off the queue still runs. Enqueue is idempotent.
func (s *Service) requeueUnfinished(ctx context.Context) error {
	after := ""
	for {
		page, more, err := s.st.ListBatches(ctx, store.ListOptions{After: after, Limit: 100})
		if err != nil {
			return err
		}
		for _, b := range page {
			if !store.Terminal(b.Status) {
				if err := s.st.Enqueue(ctx, b.ID); err != nil {
					return err
				}
			}
		}
		if !more || len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].ID
	}
}

// runBatch drives one claimed batch through its states until it is final (then it is acked), the
// claim is lost, or ctx is done (then it stays queued for a later claim).
func (s *Service) runBatch(ctx context.Context, id string) {
	log := s.log.With("batch", id)
	claimCtx, loseClaim := context.WithCancelCause(ctx)
	defer loseClaim(nil)
	linesCtx, stopLines := context.WithCancelCause(claimCtx)
	defer stopLines(nil)

	s.mu.Lock()
	s.active[id] = func() { stopLines(errCancelled) }
	s.mu.Unlock()

	var kwg sync.WaitGroup
	kwg.Add(1)
	go func() {
		defer kwg.Done()
		s.keepalive(claimCtx, id, loseClaim, stopLines)
	}()
	defer kwg.Wait()
	defer loseClaim(nil) // stops keepalive before waiting for it

	err := s.drive(claimCtx, linesCtx, id, log)
	switch {
	case err == nil:
		if err := s.st.Ack(context.WithoutCancel(ctx), id); err != nil {
			log.Warn("ack failed; the batch will be claimed again and found final", "err", err)
		}
	case claimCtx.Err() != nil:
		log.Info("batch left for a later claim", "why", context.Cause(claimCtx))
	default:
		// A store failure: leave the batch queued; its claim times out and it is retried.
		log.Error("batch run failed; will retry", "err", err)
	}
}

// keepalive renews the claim, and watches for cancellation by another gateway and for expiry.
func (s *Service) keepalive(ctx context.Context, id string, loseClaim, stopLines context.CancelCauseFunc) {
	renew := time.NewTicker(max(s.cfg.ClaimTimeout/3, time.Millisecond))
	defer renew.Stop()
	poll := time.NewTicker(s.cfg.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			err := s.st.Renew(ctx, s.consumer, id)
			if errors.Is(err, store.ErrNotOwner) || errors.Is(err, store.ErrNotFound) {
				loseClaim(errLost)
				return
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("claim renewal failed", "batch", id, "err", err)
			}
		case <-poll.C:
			b, err := s.st.GetBatch(ctx, id)
			if err != nil {
				continue
			}
			if b.Status == store.StatusCancelling {
				stopLines(errCancelled)
			}
			if !store.Terminal(b.Status) && s.expired(b) {
				stopLines(errExpired)
			}
		}
	}
}

func (s *Service) expired(b store.Batch) bool {
	return b.ExpiresAt > 0 && s.now().Unix() >= b.ExpiresAt
}

// drive moves the batch from its stored state to a final one. nil means final.
func (s *Service) drive(ctx, linesCtx context.Context, id string, log *slog.Logger) error {
	for range 8 { // each pass moves the state forward; the bound only guards against a bug looping
		b, err := s.st.GetBatch(ctx, id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil // nothing to run: ack it away
			}
			return err
		}
		if store.Terminal(b.Status) {
			return nil
		}
		if s.expired(b) {
			return s.finalize(ctx, b, store.StatusExpired)
		}
		switch b.Status {
		case store.StatusValidating:
			if err := s.validate(ctx, b); err != nil {
				return err
			}
		case store.StatusInProgress:
			err := s.runLinesTraced(linesCtx, b)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			switch cause := context.Cause(linesCtx); {
			case errors.Is(cause, errExpired):
				b, err := s.st.GetBatch(ctx, id)
				if err != nil {
					return err
				}
				return s.finalize(ctx, b, store.StatusExpired)
			case errors.Is(cause, errCancelled):
				continue // the stored status is "cancelling"
			case err != nil:
				return err
			}
			_, err = s.st.UpdateBatch(ctx, id, func(b *store.Batch) error {
				if b.Status == store.StatusInProgress {
					b.Status = store.StatusFinalizing
					b.FinalizingAt = s.now().Unix()
				}
				return nil
			})
			if err != nil {
				return err
			}
		case store.StatusFinalizing:
			return s.finalize(ctx, b, store.StatusCompleted)
		case store.StatusCancelling:
			return s.finalize(ctx, b, store.StatusCancelled)
		default:
			return fmt.Errorf("batch: %s has unknown status %q", id, b.Status)
		}
		log.Debug("batch state advanced")
	}
	return fmt.Errorf("batch: %s did not reach a final state", id)
}

// openInput opens and validates the batch's input file.
func (s *Service) openInput(ctx context.Context, b store.Batch) (*os.File, []InputLine, []store.BatchError, error) {
	f, err := s.contents.Open(ctx, b.InputFileID)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, []store.BatchError{{Code: "input_file_missing", Param: "input_file_id",
			Message: fmt.Sprintf("input file %s no longer exists", b.InputFileID)}}, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("batch: %w", err)
	}
	lines, verrs, err := ValidateInputLimits(f, b.Endpoint, InputLimits{Lines: s.cfg.MaxFileLines, Errors: s.cfg.MaxValidationErrors, LineBytes: s.cfg.MaxLineBytes})
	if err != nil || len(verrs) > 0 {
		f.Close()
		return nil, nil, verrs, err
	}
	return f, lines, nil, nil
}

// validate checks the input file: a bad file fails the batch, a good one starts it.
func (s *Service) validate(ctx context.Context, b store.Batch) error {
	f, lines, verrs, err := s.openInput(ctx, b)
	if err != nil {
		return err
	}
	if f != nil {
		f.Close()
	}
	if len(verrs) == 0 && s.models != nil {
		if verrs, err = s.checkModels(ctx, b.ID, lines); err != nil {
			return err
		}
	}
	failed := false
	_, err = s.st.UpdateBatch(ctx, b.ID, func(b *store.Batch) error {
		failed = false
		if b.Status != store.StatusValidating {
			return nil // cancelled meanwhile
		}
		now := s.now().Unix()
		if len(verrs) > 0 {
			b.Status, b.FailedAt, b.Errors = store.StatusFailed, now, verrs
			failed = true
			return nil
		}
		b.Status, b.InProgressAt, b.RequestCounts.Total = store.StatusInProgress, now, len(lines)
		return nil
	})
	if err == nil && failed {
		s.obs.BatchFinished(store.StatusFailed)
	}
	return err
}

// modelRecheck is how often a batch waiting out Config.ModelGrace asks about its models again.
const modelRecheck = 250 * time.Millisecond

// checkModels returns a validation error for each line (up to MaxValidationErrors) whose model
// cannot run anywhere, or that names none. While the runner is younger than Config.ModelGrace,
// a model not yet known is waited for rather than failed: after a gateway start the nodes are
// still reporting in. An error means ctx ended while waiting.
func (s *Service) checkModels(ctx context.Context, id string, lines []InputLine) ([]store.BatchError, error) {
	for {
		problems := map[string]string{}
		unknown := false
		for _, l := range lines {
			if _, done := problems[l.Model]; done {
				continue
			}
			p := ""
			if l.Model == "" {
				p = "the request body names no model (body.model is required)"
			} else if p = s.models.CheckModel(l.Model); p != "" {
				unknown = true
			}
			problems[l.Model] = p
		}
		if wait := s.started.Add(s.cfg.ModelGrace).Sub(s.now()); unknown && wait > 0 {
			s.log.Info("batch names a model no node has reported yet; waiting for nodes to report in", "batch", id, "grace_left", wait.Round(time.Millisecond))
			// Look again soon: a node that reports the model ends the wait.
			t := time.NewTimer(min(wait, modelRecheck))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			continue
		}
		var errs []store.BatchError
		for _, l := range lines {
			p := problems[l.Model]
			if p == "" {
				continue
			}
			if len(errs) == s.cfg.MaxValidationErrors {
				break
			}
			code := CodeModelNotFound
			if l.Model == "" {
				code = CodeMissingModel
			}
			errs = append(errs, store.BatchError{Code: code, Param: "body.model", Line: l.Line, Message: p})
		}
		return errs, nil
	}
}

// runLines runs every line of the batch that has no recorded result, with at most
// Config.Concurrency lines in flight over all batches. It returns when all are recorded, or when
// ctx is done (lines in flight are then abandoned).
func (s *Service) runLines(ctx context.Context, b store.Batch) error {
	f, lines, verrs, err := s.openInput(ctx, b)
	if err != nil {
		return err
	}
	if len(verrs) > 0 {
		// The input changed or vanished under a running batch: nothing sensible can be run.
		failed := false
		_, err := s.st.UpdateBatch(ctx, b.ID, func(b *store.Batch) error {
			failed = b.Status == store.StatusInProgress
			if failed {
				b.Status, b.FailedAt, b.Errors = store.StatusFailed, s.now().Unix(), verrs
			}
			return nil
		})
		if err == nil && failed {
			s.obs.BatchFinished(store.StatusFailed)
		}
		return err
	}
	defer f.Close()
	done, err := s.recordedIndexes(ctx, b.ID)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	defer wg.Wait()
	for _, l := range lines {
		if done[l.Index] {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case s.slots <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.slots }()
			if err := s.runLine(ctx, b, f, l); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (s *Service) recordedIndexes(ctx context.Context, id string) (map[int]bool, error) {
	done := make(map[int]bool)
	err := s.st.Lines(ctx, id, func(r store.LineResult) error {
		done[r.Index] = true
		return nil
	})
	return done, err
}

// lineMeta is what the runner reads from a request body: the model (for the manifest) and
// whether it asks to stream, which a batch cannot do.
type lineMeta struct {
	Model  string `json:"model"`
	Stream *bool  `json:"stream"`
}

// runLine dispatches one line with retries and records its outcome. It returns an error only
// when the outcome could not be recorded; a line abandoned because ctx is done records nothing.
func (s *Service) runLine(ctx context.Context, b store.Batch, f io.ReaderAt, l InputLine) error {
	ctx, sp := s.startLine(ctx, b, l)
	defer sp.End()
	body, err := readBody(f, l, b.Endpoint)
	if err != nil {
		return err
	}
	var meta lineMeta
	_ = json.Unmarshal(body, &meta) // validated as an object already; fields of the wrong type are the backend's to reject
	if meta.Stream != nil && *meta.Stream {
		body, err = withoutStreaming(body)
		if err != nil {
			return err
		}
	}
	res := store.LineResult{Index: l.Index, ID: store.NewID("batch_req_", s.now()), CustomID: l.CustomID, Model: meta.Model}
	start := s.now()
	res.StartedAt = start.UnixMilli()
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		resp, err := s.disp.Dispatch(ctx, Request{Endpoint: b.Endpoint, Body: body, Class: ClassBatch})
		if ctx.Err() != nil {
			return nil
		}
		final := attempt >= s.cfg.MaxAttempts
		if err != nil {
			if !final {
				if !s.backoff(ctx, attempt) {
					return nil
				}
				continue
			}
			res.ErrorCode, res.ErrorMessage = "dispatch_failed", fmt.Sprintf("no node answered after %d attempts: %v", attempt, err)
			break
		}
		if retryableStatus(resp.StatusCode) && !final {
			if !s.backoff(ctx, attempt) {
				return nil
			}
			continue
		}
		fillResponse(&res, resp, s.now())
		break
	}
	res.FinishedAt = s.now().UnixMilli()
	endLine(sp, res)
	// Record even if ctx ended just now: the line is finished, and keeping it saves redoing it.
	if _, err := s.st.PutLine(context.WithoutCancel(ctx), b.ID, res); err != nil {
		return fmt.Errorf("batch: record line %d: %w", l.Index, err)
	}
	s.obs.LineRecorded(!res.OK)
	return nil
}

func retryableStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// backoff waits before try attempt+1: exponential, capped, with jitter so lines that failed
// together do not retry together. It reports false when ctx ended first.
func (s *Service) backoff(ctx context.Context, attempt int) bool {
	d := s.cfg.RetryBackoff << min(attempt-1, 30)
	if d <= 0 || d > s.cfg.MaxRetryBackoff {
		d = s.cfg.MaxRetryBackoff
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func withoutStreaming(body []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	m["stream"] = json.RawMessage("false")
	delete(m, "stream_options")
	return json.Marshal(m)
}

// fillResponse records the backend's answer: the body (as JSON; a non-JSON body becomes a JSON
// string), usage and, for a non-2xx answer, the error it carries. now (the service's clock) dates
// the request ID made for an answer that came without one.
func fillResponse(res *store.LineResult, resp Response, now time.Time) {
	res.StatusCode = resp.StatusCode
	res.Node, res.Simulated = resp.Node, resp.Simulated
	if len(resp.Parameters) > 0 && json.Valid(resp.Parameters) {
		res.Parameters = json.RawMessage(resp.Parameters)
	}
	res.RequestID = resp.RequestID
	if res.RequestID == "" {
		res.RequestID = store.NewID("req_", now)
	}
	if json.Valid(resp.Body) {
		res.Body = json.RawMessage(resp.Body)
	} else {
		res.Body, _ = json.Marshal(string(resp.Body))
	}
	var parsed struct {
		Model string `json:"model"`
		Usage struct {
			PromptTokens        int `json:"prompt_tokens"`
			CompletionTokens    int `json:"completion_tokens"`
			PromptTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
			CompletionTokensDetails struct {
				ReasoningTokens int `json:"reasoning_tokens"`
			} `json:"completion_tokens_details"`
			// The Responses API's names for the same counts.
			InputTokens        int `json:"input_tokens"`
			OutputTokens       int `json:"output_tokens"`
			InputTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"input_tokens_details"`
			OutputTokensDetails struct {
				ReasoningTokens int `json:"reasoning_tokens"`
			} `json:"output_tokens_details"`
		} `json:"usage"`
		Error *openaierr.Detail `json:"error"`
	}
	_ = json.Unmarshal(resp.Body, &parsed) // best effort: an unparseable body leaves zeros
	if parsed.Model != "" {
		res.Model = parsed.Model
	}
	// A backend's negative count would make the store refuse the line; it means "unknown" at best.
	u := parsed.Usage
	res.PromptTokens, res.CompletionTokens = max(u.PromptTokens, u.InputTokens, 0), max(u.CompletionTokens, u.OutputTokens, 0)
	res.CachedTokens = max(u.PromptTokensDetails.CachedTokens, u.InputTokensDetails.CachedTokens, 0)
	res.ReasoningTokens = max(u.CompletionTokensDetails.ReasoningTokens, u.OutputTokensDetails.ReasoningTokens, 0)
	res.OK = resp.StatusCode >= 200 && resp.StatusCode < 300
	if res.OK {
		return
	}
	res.ErrorCode = fmt.Sprintf("http_%d", resp.StatusCode)
	res.ErrorMessage = http.StatusText(resp.StatusCode)
	if parsed.Error != nil {
		// A numeric code (vLLM echoes the HTTP status) says less than the type.
		if c := parsed.Error.Code; c != nil && *c != "" && strings.Trim(*c, "0123456789") != "" {
			res.ErrorCode = *c
		} else if parsed.Error.Type != "" {
			res.ErrorCode = parsed.Error.Type
		}
		if parsed.Error.Message != "" {
			res.ErrorMessage = parsed.Error.Message
		}
	}
}

// finalize writes the output and error files and moves the batch to status final (completed,
// cancelled or expired). Lines never run are written to the error file with code
// "batch_cancelled" or "batch_expired" and counted as failed. It is idempotent: redone after a
// crash, it rewrites the same file IDs.
func (s *Service) finalize(ctx context.Context, b store.Batch, final string) error {
	b, err := s.st.UpdateBatch(ctx, b.ID, func(b *store.Batch) error {
		if b.PlannedOutputFileID == "" {
			b.PlannedOutputFileID = store.NewID("file-", s.now())
			b.PlannedErrorFileID = store.NewID("file-", s.now())
		}
		return nil
	})
	if err != nil {
		return err
	}
	if store.Terminal(b.Status) {
		return nil
	}
	// Lines never run: only known when the input was validated (in_progress_at is set); a batch
	// cancelled or expired before that has none, and its request counts stay zero.
	var unrun []InputLine
	if final != store.StatusCompleted && b.InProgressAt != 0 {
		f, lines, _, err := s.openInput(ctx, b)
		if err != nil {
			return err
		}
		if f != nil {
			f.Close()
			done, err := s.recordedIndexes(ctx, b.ID)
			if err != nil {
				return err
			}
			for _, l := range lines {
				if !done[l.Index] {
					unrun = append(unrun, l)
				}
			}
		}
	}
	var unrunCode, unrunMsg string
	switch final {
	case store.StatusCancelled:
		unrunCode, unrunMsg = "batch_cancelled", "The batch was cancelled before this request was executed."
	case store.StatusExpired:
		unrunCode, unrunMsg = "batch_expired", "This request could not be executed before the completion window expired."
	}

	var okLines, errLines int
	outBytes, err := s.writeFileAtomic(ctx, b.PlannedOutputFileID, func(w io.Writer) error {
		return s.writeLines(ctx, w, b.ID, true, nil, "", "", &okLines)
	})
	if err != nil {
		return err
	}
	errBytes, err := s.writeFileAtomic(ctx, b.PlannedErrorFileID, func(w io.Writer) error {
		return s.writeLines(ctx, w, b.ID, false, unrun, unrunCode, unrunMsg, &errLines)
	})
	if err != nil {
		return err
	}
	outputID, errorID := "", ""
	for _, o := range []struct {
		id, suffix string
		lines      int
		bytes      int64
		keep       *string
	}{
		{b.PlannedOutputFileID, "output", okLines, outBytes, &outputID},
		{b.PlannedErrorFileID, "error", errLines, errBytes, &errorID},
	} {
		if o.lines == 0 { // OpenAI leaves the ID null rather than point at an empty file
			if err := s.contents.Remove(ctx, o.id); err != nil {
				return err
			}
			continue
		}
		err := s.st.PutFile(ctx, store.File{
			ID: o.id, Bytes: o.bytes, CreatedAt: s.now().Unix(), Filename: fmt.Sprintf("%s_%s.jsonl", b.ID, o.suffix),
			Purpose: PurposeBatchOutput, Status: "processed", Lines: o.lines, Owner: b.Owner,
		})
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		*o.keep = o.id
	}
	finished := false
	_, err = s.st.UpdateBatch(ctx, b.ID, func(b *store.Batch) error {
		finished = false
		if store.Terminal(b.Status) {
			return nil
		}
		finished = true
		now := s.now().Unix()
		b.OutputFileID, b.ErrorFileID = outputID, errorID
		b.RequestCounts.Failed += len(unrun)
		switch final {
		case store.StatusCompleted:
			b.Status, b.CompletedAt = store.StatusCompleted, now
			if b.FinalizingAt == 0 {
				b.FinalizingAt = now
			}
		case store.StatusCancelled:
			b.Status, b.CancelledAt = store.StatusCancelled, now
		case store.StatusExpired:
			b.Status, b.ExpiredAt = store.StatusExpired, now
		}
		return nil
	})
	if err == nil && finished {
		s.obs.BatchFinished(final)
	}
	return err
}

// writeLines writes the recorded lines with OK == ok, merged in input order with the never-run
// lines (error file only), as JSONL.
func (s *Service) writeLines(ctx context.Context, w io.Writer, batchID string, ok bool, unrun []InputLine, code, msg string, n *int) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	writeUnrunBefore := func(index int) error {
		for len(unrun) > 0 && unrun[0].Index < index {
			l := unrun[0]
			unrun = unrun[1:]
			if err := enc.Encode(api.OutputLine{ID: store.NewID("batch_req_", s.now()), CustomID: l.CustomID, Error: &api.OutputError{Code: code, Message: msg}}); err != nil {
				return err
			}
			*n++
		}
		return nil
	}
	err := s.st.Lines(ctx, batchID, func(r store.LineResult) error {
		if err := writeUnrunBefore(r.Index); err != nil {
			return err
		}
		if r.OK != ok {
			return nil
		}
		*n++
		return enc.Encode(newOutputLine(r))
	})
	if err != nil {
		return err
	}
	if err := writeUnrunBefore(int(^uint(0) >> 1)); err != nil {
		return err
	}
	return bw.Flush()
}
