package batch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

// dispatchFunc adapts a function to Dispatcher.
type dispatchFunc func(ctx context.Context, req Request) (Response, error)

func (f dispatchFunc) Dispatch(ctx context.Context, req Request) (Response, error) {
	return f(ctx, req)
}

// echo answers a chat request with its last message, as node "node-a", with usage.
func echo(_ context.Context, req Request) (Response, error) {
	var body struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return Response{StatusCode: 400, Body: []byte(`{"error":{"message":"bad json","type":"invalid_request_error"}}`)}, nil
	}
	content := ""
	if n := len(body.Messages); n > 0 {
		content = body.Messages[n-1].Content
	}
	out, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion", "model": body.Model,
		"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": "echo: " + content}, "finish_reason": "stop"}},
		"usage":   map[string]int{"prompt_tokens": len(content), "completion_tokens": 2, "total_tokens": len(content) + 2},
	})
	return Response{StatusCode: 200, Body: out, Node: "node-a"}, nil
}

func testConfig() Config {
	return Config{
		Concurrency: 4, MaxAttempts: 3, RetryBackoff: time.Millisecond, MaxRetryBackoff: 5 * time.Millisecond,
		PollInterval: 10 * time.Millisecond, ClaimTimeout: time.Hour,
	}
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type harness struct {
	t    *testing.T
	dir  string
	st   store.Store
	svc  *Service
	stop context.CancelFunc
	done chan error
}

func openBolt(t *testing.T, dir string) store.Store {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(dir, "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// start builds a Service over st and runs it until the test ends (or h.kill).
func start(t *testing.T, dir string, st store.Store, d Dispatcher, cfg Config, opts ...func(*Options)) *harness {
	t.Helper()
	o := Options{Store: st, Dir: dir, Dispatcher: d, Config: cfg, Consumer: "test"}
	for _, f := range opts {
		f(&o)
	}
	svc, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, dir: dir, st: st, svc: svc, stop: cancel, done: make(chan error, 1)}
	go func() { h.done <- svc.Run(ctx) }()
	t.Cleanup(h.kill)
	return h
}

// kill stops the runner the way a crash would as far as the store can tell: lines in flight are
// abandoned, nothing is finalized, the claim is not released. It waits for Run to return.
func (h *harness) kill() {
	h.stop()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
		h.done <- nil // later kills return at once
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
}

func (h *harness) upload(content string) store.File {
	h.t.Helper()
	f, err := h.svc.CreateFile(context.Background(), "in.jsonl", PurposeBatch, strings.NewReader(content))
	if err != nil {
		h.t.Fatal(err)
	}
	return f
}

func (h *harness) create(fileID string) store.Batch {
	h.t.Helper()
	b, err := h.svc.CreateBatch(context.Background(), CreateBatchParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// waitFor polls the batch until cond holds; the deadline is generous because it only bounds a
// hang, it does not measure speed.
func waitFor(t *testing.T, st store.Store, id string, what string, cond func(store.Batch) bool) store.Batch {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := st.GetBatch(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch never got %s; last: status %s counts %+v errors %+v", what, b.Status, b.RequestCounts, b.Errors)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(s string) func(store.Batch) bool {
	return func(b store.Batch) bool { return b.Status == s }
}

func readOutput(t *testing.T, dir, id string) []api.OutputLine {
	t.Helper()
	if id == "" {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(dir, "files", id))
	if err != nil {
		t.Fatal(err)
	}
	var out []api.OutputLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l api.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func chatLines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"q%d"}]}}`+"\n", i, i)
	}
	return b.String()
}

func TestRunCompletesBatch(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	var calls atomic.Int64
	var badBody atomic.Bool
	h := start(t, dir, st, dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		calls.Add(1)
		if req.Class != ClassBatch || req.Endpoint != "/v1/chat/completions" {
			badBody.Store(true)
		}
		resp, err := echo(ctx, req)
		resp.Simulated, resp.Parameters = true, json.RawMessage(`{"temperature":0.5}`)
		return resp, err
	}), testConfig())
	b := h.create(h.upload(chatLines(25)).ID)
	b = waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	if badBody.Load() {
		t.Fatal("request not sent as batch class to the batch endpoint")
	}
	if b.RequestCounts != (store.RequestCounts{Total: 25, Completed: 25}) || b.ErrorFileID != "" || b.OutputFileID == "" {
		t.Fatalf("batch = %+v", b)
	}
	if b.InProgressAt == 0 || b.FinalizingAt == 0 || b.CompletedAt == 0 {
		t.Fatalf("timestamps missing: %+v", b)
	}
	out := readOutput(t, dir, b.OutputFileID)
	if len(out) != 25 || calls.Load() != 25 {
		t.Fatalf("%d output lines, %d calls", len(out), calls.Load())
	}
	for i, l := range out {
		var body struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(l.Response.Body, &body); err != nil {
			t.Fatal(err)
		}
		if l.CustomID != fmt.Sprint("req-", i) || l.Response.StatusCode != 200 || l.Error != nil ||
			!strings.HasPrefix(l.ID, "batch_req_") || l.Response.RequestID == "" || body.Choices[0].Message.Content != fmt.Sprint("echo: q", i) {
			t.Fatalf("line %d = %+v", i, l)
		}
	}
	f, err := h.svc.GetFile(context.Background(), b.OutputFileID)
	if err != nil || f.Purpose != PurposeBatchOutput || f.Lines != 25 {
		t.Fatalf("output file meta %+v %v", f, err)
	}
	m, err := h.svc.Manifest(context.Background(), b.ID)
	if err != nil || len(m.Data) != 25 {
		t.Fatalf("manifest %+v %v", m, err)
	}
	if e := m.Data[3]; e.CustomID != "req-3" || e.Node != "node-a" || e.Model != "m" || e.PromptTokens != 2 || e.CompletionTokens != 2 || e.Status != "completed" || e.Attempts != 1 ||
		!e.Simulated || string(e.Parameters) != `{"temperature":0.5}` {
		t.Fatalf("manifest entry %+v", e)
	}
	// echo's prompt tokens are the length of "q<i>": 10 of 2, 15 of 3; 2 completion tokens each.
	want := api.BatchUsage{InputTokens: 65, OutputTokens: 50, TotalTokens: 115}
	if got := NewBatchObject(b).Usage; got != want {
		t.Fatalf("usage = %+v, want %+v", got, want)
	}
}

// echoUsage sums what echo reports for chatLines(n).
func echoUsage(n int) store.Usage {
	var u store.Usage
	for i := range n {
		u.InputTokens += int64(len(fmt.Sprint("q", i)))
		u.OutputTokens += 2
	}
	return u
}

// OpenAI always sends usage; a batch that ran nothing has zeros, not a missing object.
func TestBatchObjectUsageAlwaysPresent(t *testing.T) {
	data, err := json.Marshal(NewBatchObject(store.Batch{ID: "batch_x", Status: store.StatusValidating}))
	if err != nil {
		t.Fatal(err)
	}
	const want = `"usage":{"input_tokens":0,"input_tokens_details":{"cached_tokens":0},"output_tokens":0,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":0}`
	if !strings.Contains(string(data), want) {
		t.Fatalf("batch object %s lacks %s", data, want)
	}
	u := NewBatchObject(store.Batch{Usage: store.Usage{InputTokens: 100, CachedTokens: 64, OutputTokens: 40, ReasoningTokens: 25}}).Usage
	if u != (api.BatchUsage{InputTokens: 100, InputTokensDetails: api.InputTokensDetails{CachedTokens: 64}, OutputTokens: 40,
		OutputTokensDetails: api.OutputTokensDetails{ReasoningTokens: 25}, TotalTokens: 140}) {
		t.Fatalf("usage = %+v", u)
	}
}

func TestFillResponseUsage(t *testing.T) {
	tests := []struct {
		name                               string
		status                             int
		body                               string
		prompt, completion, cached, reason int
	}{
		{"chat", 200, `{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`, 12, 5, 0, 0},
		{"details", 200, `{"usage":{"prompt_tokens":100,"completion_tokens":40,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":25}}}`, 100, 40, 64, 25},
		{"embeddings", 200, `{"object":"list","data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}`, 9, 0, 0, 0},
		{"null details", 200, `{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":null}}`, 3, 1, 0, 0},
		{"negative is unknown", 200, `{"usage":{"prompt_tokens":-1,"completion_tokens":-5,"prompt_tokens_details":{"cached_tokens":-2}}}`, 0, 0, 0, 0},
		{"no usage", 500, `{"error":{"message":"boom"}}`, 0, 0, 0, 0},
		{"not json", 200, `plain text`, 0, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var res store.LineResult
			fillResponse(&res, Response{StatusCode: tc.status, Body: []byte(tc.body)}, time.Now())
			if res.PromptTokens != tc.prompt || res.CompletionTokens != tc.completion || res.CachedTokens != tc.cached || res.ReasoningTokens != tc.reason {
				t.Fatalf("tokens = %d/%d cached %d reasoning %d, want %d/%d cached %d reasoning %d",
					res.PromptTokens, res.CompletionTokens, res.CachedTokens, res.ReasoningTokens, tc.prompt, tc.completion, tc.cached, tc.reason)
			}
		})
	}
}

// TestRequestIDFromInjectedClock: a line whose answer came without a request ID gets one made on
// the service's clock, not the machine's (IDs begin with their time in big-endian nanoseconds).
func TestRequestIDFromInjectedClock(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	clk := newClock()
	h := start(t, dir, st, dispatchFunc(echo), testConfig(), func(o *Options) { o.Now = clk.Now })
	b := h.create(h.upload(chatLines(1)).ID)
	waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	var ids []string
	if err := st.Lines(context.Background(), b.ID, func(r store.LineResult) error {
		ids = append(ids, r.RequestID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := store.NewID("req_", clk.Now())[:len("req_")+16]
	if len(ids) != 1 || !strings.HasPrefix(ids[0], want) {
		t.Fatalf("request IDs %v, want one beginning %s (the injected clock's time)", ids, want)
	}
}

// recordingObserver is a batch Observer that counts what it hears.
type recordingObserver struct {
	mu         sync.Mutex
	ok, failed int
	finished   map[string]int
}

func (o *recordingObserver) LineRecorded(failed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if failed {
		o.failed++
	} else {
		o.ok++
	}
}

func (o *recordingObserver) BatchFinished(status string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.finished == nil {
		o.finished = map[string]int{}
	}
	o.finished[status]++
}

var _ Observer = (*recordingObserver)(nil)

// wait waits until cond holds (under the observer's lock): the runner tells the observer just
// after the store, so a test that saw the store change may be a moment early.
func (o *recordingObserver) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o.mu.Lock()
		ok := cond()
		got := fmt.Sprintf("ok %d failed %d finished %v", o.ok, o.failed, o.finished)
		o.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("observer: want %s, got %s", what, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunRetriesAndFailsLines(t *testing.T) {
	obs := &recordingObserver{}
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	var mu sync.Mutex
	tries := map[string]int{}
	h := start(t, dir, st, dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		var body struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		_ = json.Unmarshal(req.Body, &body)
		q := body.Messages[0].Content
		mu.Lock()
		tries[q]++
		n := tries[q]
		mu.Unlock()
		switch q {
		case "q1": // flaky: no node, then a 503, then fine
			if n == 1 {
				return Response{}, errors.New("no node available")
			}
			if n == 2 {
				return Response{StatusCode: 503, Body: []byte(`{"error":{"message":"overloaded"}}`), Node: "node-b"}, nil
			}
		case "q2": // the backend rejects it: no retry
			return Response{StatusCode: 400, Body: []byte(`{"error":{"message":"model 'zzz' not found","type":"invalid_request_error","code":"model_not_found"}}`), Node: "node-b"}, nil
		case "q3": // always 500: retried, then given up
			return Response{StatusCode: 500, Body: []byte("internal oops"), Node: "node-b"}, nil
		case "q4": // never dispatchable
			return Response{}, errors.New("no node can serve m")
		}
		return echo(ctx, req)
	}), testConfig(), func(o *Options) { o.Observer = obs })
	b := h.create(h.upload(chatLines(6)).ID)
	b = waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	obs.wait(t, "3 lines ok, 3 failed, one batch completed", func() bool {
		return obs.ok == 3 && obs.failed == 3 && obs.finished[store.StatusCompleted] == 1 && len(obs.finished) == 1
	})
	if b.RequestCounts != (store.RequestCounts{Total: 6, Completed: 3, Failed: 3}) {
		t.Fatalf("counts %+v", b.RequestCounts)
	}
	out := readOutput(t, dir, b.OutputFileID)
	errs := readOutput(t, dir, b.ErrorFileID)
	if ids := customIDs(out); ids != "req-0 req-1 req-5" {
		t.Fatalf("output ids %s", ids)
	}
	if ids := customIDs(errs); ids != "req-2 req-3 req-4" {
		t.Fatalf("error ids %s", ids)
	}
	if e := errs[0]; e.Response == nil || e.Response.StatusCode != 400 || e.Error.Code != "model_not_found" || !strings.Contains(e.Error.Message, "zzz") {
		t.Fatalf("4xx line %+v", e)
	}
	if e := errs[1]; e.Response == nil || e.Response.StatusCode != 500 || string(e.Response.Body) != `"internal oops"` || e.Error.Code != "http_500" {
		t.Fatalf("5xx line %+v (body %s)", e, e.Response.Body)
	}
	if e := errs[2]; e.Response != nil || e.Error.Code != "dispatch_failed" {
		t.Fatalf("undispatchable line %+v", e)
	}
	mu.Lock()
	defer mu.Unlock()
	if tries["q1"] != 3 || tries["q2"] != 1 || tries["q3"] != 3 || tries["q4"] != 3 {
		t.Fatalf("tries %v", tries)
	}
}

func customIDs(ls []api.OutputLine) string {
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i] = l.CustomID
	}
	return strings.Join(ids, " ")
}

func TestValidationFailsBatch(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	obs := &recordingObserver{}
	h := start(t, dir, st, dispatchFunc(echo), testConfig(), func(o *Options) { o.Observer = obs })
	in := chatLines(2) + "{not json\n" + `{"custom_id":"req-0","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n"
	b := h.create(h.upload(in).ID)
	b = waitFor(t, st, b.ID, "failed", status(store.StatusFailed))
	if b.FailedAt == 0 || len(b.Errors) != 2 || b.Errors[0].Line != 3 || b.Errors[0].Code != CodeInvalidJSONLine ||
		b.Errors[1].Line != 4 || b.Errors[1].Code != CodeDuplicateCustomID {
		t.Fatalf("batch %+v", b)
	}
	if b.OutputFileID != "" || b.ErrorFileID != "" {
		t.Fatalf("a failed validation wrote files: %+v", b)
	}
	obs.wait(t, "one failed batch, no line", func() bool {
		return obs.finished[store.StatusFailed] == 1 && obs.ok+obs.failed == 0
	})
}

// gate is a dispatcher that answers only as fast as the test lets it.
type gate struct {
	release chan struct{}
	calls   atomic.Int64
}

func (g *gate) Dispatch(ctx context.Context, req Request) (Response, error) {
	g.calls.Add(1)
	select {
	case <-g.release:
		return echo(ctx, req)
	case <-ctx.Done():
		return Response{}, ctx.Err()
	}
}

func TestCancelKeepsFinishedLines(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	g := &gate{release: make(chan struct{})}
	h := start(t, dir, st, g, testConfig())
	b := h.create(h.upload(chatLines(40)).ID)
	for range 10 {
		g.release <- struct{}{}
	}
	waitFor(t, st, b.ID, "10 lines done", func(b store.Batch) bool { return b.RequestCounts.Completed == 10 })
	cb, err := h.svc.CancelBatch(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cb.Status != store.StatusCancelling || cb.CancellingAt == 0 {
		t.Fatalf("after cancel: %+v", cb)
	}
	b = waitFor(t, st, b.ID, "cancelled", status(store.StatusCancelled))
	if b.CancelledAt == 0 || b.RequestCounts != (store.RequestCounts{Total: 40, Completed: 10, Failed: 30}) {
		t.Fatalf("batch %+v", b)
	}
	out, errs := readOutput(t, dir, b.OutputFileID), readOutput(t, dir, b.ErrorFileID)
	if len(out) != 10 || len(errs) != 30 {
		t.Fatalf("%d output, %d error lines", len(out), len(errs))
	}
	seen := map[string]bool{}
	for _, l := range append(out, errs...) {
		if seen[l.CustomID] {
			t.Fatalf("%s twice", l.CustomID)
		}
		seen[l.CustomID] = true
	}
	for _, l := range errs {
		if l.Error.Code != "batch_cancelled" || l.Response != nil {
			t.Fatalf("error line %+v", l)
		}
	}
	if _, err := h.svc.CancelBatch(context.Background(), b.ID); err != nil {
		t.Fatalf("cancelling a cancelled batch: %v", err)
	}
	// A completed batch cannot be cancelled.
	close(g.release)
	b2 := h.create(h.upload(chatLines(1)).ID)
	waitFor(t, st, b2.ID, "completed", status(store.StatusCompleted))
	var e *Error
	if _, err := h.svc.CancelBatch(context.Background(), b2.ID); !errors.As(err, &e) || e.Kind != KindConflict {
		t.Fatalf("cancel completed: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	clk := newClock()
	g := &gate{release: make(chan struct{})}
	h := start(t, dir, st, g, testConfig(), func(o *Options) { o.Now = clk.Now })
	b := h.create(h.upload(chatLines(12)).ID)
	if b.ExpiresAt != clk.Now().Add(24*time.Hour).Unix() {
		t.Fatalf("expires_at %d", b.ExpiresAt)
	}
	for range 5 {
		g.release <- struct{}{}
	}
	waitFor(t, st, b.ID, "5 lines done", func(b store.Batch) bool { return b.RequestCounts.Completed == 5 })
	clk.Advance(24*time.Hour + time.Second)
	b = waitFor(t, st, b.ID, "expired", status(store.StatusExpired))
	if b.ExpiredAt == 0 || b.RequestCounts != (store.RequestCounts{Total: 12, Completed: 5, Failed: 7}) {
		t.Fatalf("batch %+v", b)
	}
	errs := readOutput(t, dir, b.ErrorFileID)
	if len(readOutput(t, dir, b.OutputFileID)) != 5 || len(errs) != 7 || errs[0].Error.Code != "batch_expired" {
		t.Fatalf("errors %+v", errs)
	}
}

// TestResumeAfterCrash stops a runner abruptly in the middle of a 1,500-line batch, reopens the
// store from the same data dir under a new runner, and checks that the batch completes with
// every custom_id exactly once and only the unrecorded lines run again.
func TestResumeAfterCrash(t *testing.T) {
	const n = 1500
	dir := t.TempDir()
	st := openBolt(t, dir)
	slow := dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return Response{}, ctx.Err()
		}
		return echo(ctx, req)
	})
	cfg := testConfig()
	cfg.Concurrency = 8
	h := start(t, dir, st, slow, cfg)
	b := h.create(h.upload(chatLines(n)).ID)
	waitFor(t, st, b.ID, "a third done", func(b store.Batch) bool { return b.RequestCounts.Completed >= n/3 })
	h.kill()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openBolt(t, dir)
	defer st.Close()
	mid, err := st.GetBatch(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mid.Status != store.StatusInProgress || mid.RequestCounts.Completed >= n {
		t.Fatalf("the crash did not land mid-batch: %+v", mid)
	}
	var calls atomic.Int64
	h2 := start(t, dir, st, dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		calls.Add(1)
		return echo(ctx, req)
	}), cfg)
	_ = h2
	done := waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	if done.RequestCounts != (store.RequestCounts{Total: n, Completed: n}) {
		t.Fatalf("counts %+v", done.RequestCounts)
	}
	// Lines finished before the crash counted once, those redone after it once more: exact.
	if want := echoUsage(n); done.Usage != want {
		t.Fatalf("usage %+v, want %+v", done.Usage, want)
	}
	if got, want := calls.Load(), int64(n-mid.RequestCounts.Completed); got != want {
		t.Fatalf("resumed runner dispatched %d lines, want the %d unrecorded ones", got, want)
	}
	out := readOutput(t, dir, done.OutputFileID)
	if len(out) != n {
		t.Fatalf("%d output lines, want %d", len(out), n)
	}
	for i, l := range out {
		if l.CustomID != fmt.Sprint("req-", i) { // in order, hence each exactly once
			t.Fatalf("output line %d is %s", i, l.CustomID)
		}
	}
}

// TestResumeFinalizing picks up a batch whose runner died while finalizing: the planned files
// are rewritten, not duplicated.
func TestResumeFinalizing(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	ctx := context.Background()
	svc, err := New(Options{Store: st, Dir: dir, Dispatcher: dispatchFunc(echo), Config: testConfig(), Consumer: "x"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := svc.CreateFile(ctx, "in.jsonl", PurposeBatch, strings.NewReader(chatLines(3)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := svc.CreateBatch(ctx, CreateBatchParams{InputFileID: f.ID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	planned := store.NewID("file-", time.Now())
	_, err = st.UpdateBatch(ctx, b.ID, func(b *store.Batch) error {
		b.Status, b.RequestCounts.Total, b.PlannedOutputFileID, b.PlannedErrorFileID = store.StatusFinalizing, 3, planned, store.NewID("file-", time.Now())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := st.PutLine(ctx, b.ID, store.LineResult{Index: i, ID: fmt.Sprint("batch_req_", i), CustomID: fmt.Sprint("req-", i), OK: true, StatusCode: 200, Body: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// What a crash mid-write could leave: a partial output under the planned ID.
	if err := os.WriteFile(filepath.Join(dir, "files", planned), []byte("{\"id\":\"half"), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, dir, st, dispatchFunc(echo), testConfig())
	done := waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	if done.OutputFileID != planned {
		t.Fatalf("output file %s, want the planned %s", done.OutputFileID, planned)
	}
	if out := readOutput(t, dir, planned); customIDs(out) != "req-0 req-1 req-2" {
		t.Fatalf("output %s", customIDs(out))
	}
}

// TestRedisTakeover runs two gateways' runners on one Redis: when the first dies mid-batch, the
// second claims the batch once the claim times out and completes it, every line exactly once.
func TestRedisTakeover(t *testing.T) {
	url := storetest.StartRedis(t)
	ctx := context.Background()
	dir := t.TempDir() // the shared data volume
	openR := func() store.Store {
		st, err := store.OpenRedis(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	cfg := testConfig()
	cfg.ClaimTimeout = 500 * time.Millisecond
	g := &gate{release: make(chan struct{})}
	a := start(t, dir, openR(), g, cfg, func(o *Options) { o.Consumer = "gw-a" })
	b := a.create(a.upload(chatLines(30)).ID)
	for range 12 {
		g.release <- struct{}{}
	}
	waitFor(t, a.st, b.ID, "12 lines done", func(b store.Batch) bool { return b.RequestCounts.Completed == 12 })
	a.kill()

	var calls atomic.Int64
	other := start(t, dir, openR(), dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		calls.Add(1)
		return echo(ctx, req)
	}), cfg, func(o *Options) { o.Consumer = "gw-b" })
	done := waitFor(t, other.st, b.ID, "completed", status(store.StatusCompleted))
	if done.RequestCounts != (store.RequestCounts{Total: 30, Completed: 30}) || calls.Load() != 18 {
		t.Fatalf("counts %+v, %d calls on the second gateway", done.RequestCounts, calls.Load())
	}
	out := readOutput(t, dir, done.OutputFileID)
	for i, l := range out {
		if l.CustomID != fmt.Sprint("req-", i) {
			t.Fatalf("line %d is %s", i, l.CustomID)
		}
	}
	if len(out) != 30 {
		t.Fatalf("%d lines", len(out))
	}
}

// TestRedisRestartedGatewayResumesOwnClaims: a gateway restarted under the same consumer name
// resumes the batch it held at once, although its claim would not time out for an hour.
func TestRedisRestartedGatewayResumesOwnClaims(t *testing.T) {
	url := storetest.StartRedis(t)
	ctx := context.Background()
	dir := t.TempDir()
	openR := func() store.Store {
		st, err := store.OpenRedis(ctx, url, store.WithRedisPrefix("own:"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	cfg := testConfig() // ClaimTimeout: an hour
	g := &gate{release: make(chan struct{})}
	a := start(t, dir, openR(), g, cfg, func(o *Options) { o.Consumer = "gw-a" })
	b := a.create(a.upload(chatLines(10)).ID)
	for range 4 {
		g.release <- struct{}{}
	}
	waitFor(t, a.st, b.ID, "4 lines done", func(b store.Batch) bool { return b.RequestCounts.Completed == 4 })
	a.kill()

	again := start(t, dir, openR(), dispatchFunc(echo), cfg, func(o *Options) { o.Consumer = "gw-a" })
	done := waitFor(t, again.st, b.ID, "completed", status(store.StatusCompleted))
	if done.RequestCounts != (store.RequestCounts{Total: 10, Completed: 10}) {
		t.Fatalf("counts %+v", done.RequestCounts)
	}
}

// modelSet is a Models that knows a fixed, changeable set of models.
type modelSet struct {
	mu    sync.Mutex
	known map[string]bool
	asked int
}

func (m *modelSet) CheckModel(model string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked++
	if m.known[model] {
		return ""
	}
	return "no node has model `" + model + "`"
}

func (m *modelSet) add(model string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.known[model] = true
}

// TestValidationUnknownModel: a batch naming a model no node has fails validation with the
// lines that name it (OpenAI's model_not_found, param body.model), and nothing is dispatched.
func TestValidationUnknownModel(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	var calls atomic.Int64
	cfg := testConfig()
	cfg.ModelGrace = -1 // no grace: the nodes have long reported
	h := start(t, dir, st, dispatchFunc(func(ctx context.Context, req Request) (Response, error) {
		calls.Add(1)
		return echo(ctx, req)
	}), cfg, func(o *Options) { o.Models = &modelSet{known: map[string]bool{"m": true}} })
	input := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}

{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"nope","messages":[]}}
{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"messages":[]}}
{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"model":"nope","messages":[]}}
`
	b := h.create(h.upload(input).ID)
	got := waitFor(t, st, b.ID, "failed", status(store.StatusFailed))
	want := []store.BatchError{
		{Code: CodeModelNotFound, Param: "body.model", Line: 3, Message: "no node has model `nope`"},
		{Code: CodeMissingModel, Param: "body.model", Line: 4, Message: "the request body names no model (body.model is required)"},
		{Code: CodeModelNotFound, Param: "body.model", Line: 5, Message: "no node has model `nope`"},
	}
	if fmt.Sprint(got.Errors) != fmt.Sprint(want) || got.InProgressAt != 0 {
		t.Fatalf("errors %+v (in progress at %d), want %+v", got.Errors, got.InProgressAt, want)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d lines dispatched from a batch that failed validation", n)
	}
}

// TestValidationWaitsForNodesAfterStart: right after the start, a model no node has reported yet
// is waited for until the grace ends; a node reporting it meanwhile lets the batch run.
func TestValidationWaitsForNodesAfterStart(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	cfg := testConfig()
	cfg.ModelGrace = 30 * time.Second
	models := &modelSet{known: map[string]bool{}}
	h := start(t, dir, st, dispatchFunc(echo), cfg, func(o *Options) { o.Models = models })
	b := h.create(h.upload(chatLines(2)).ID)
	waitFor(t, st, b.ID, "the model asked about", func(store.Batch) bool {
		models.mu.Lock()
		defer models.mu.Unlock()
		return models.asked > 0
	})
	if got, _ := st.GetBatch(context.Background(), b.ID); got.Status != store.StatusValidating {
		t.Fatalf("status %s within the grace, want validating", got.Status)
	}
	models.add("m") // a node with the model reports in
	got := waitFor(t, st, b.ID, "completed", status(store.StatusCompleted))
	if got.RequestCounts.Completed != 2 {
		t.Fatalf("counts %+v", got.RequestCounts)
	}
}
