// Package storetest is the conformance suite every store.Store implementation must pass, and a
// helper that starts a real redis-server for tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/models"
)

// Run runs the conformance suite. open returns a fresh, empty store for each subtest; the suite
// closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"FilesCRUD", testFilesCRUD},
		{"FilesList", testFilesList},
		{"BatchCRUD", testBatchCRUD},
		{"BatchList", testBatchList},
		{"UpdateBatchAbort", testUpdateBatchAbort},
		{"PutLineFirstWriteWins", testPutLineFirstWriteWins},
		{"PutLineUsage", testPutLineUsage},
		{"LinesInIndexOrder", testLinesInIndexOrder},
		{"ConcurrentLinesAndUpdates", testConcurrentLinesAndUpdates},
		{"QueueClaimRenewAck", testQueueClaimRenewAck},
		{"QueueTakeover", testQueueTakeover},
		{"QueueFIFO", testQueueFIFO},
		{"Presets", testPresets},
		{"Keys", testKeys},
		{"OwnerFilter", testOwnerFilter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// ids returns n IDs with the prefix in creation order (older first).
func ids(prefix string, n int) []string {
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	out := make([]string, n)
	for i := range out {
		out[i] = store.NewID(prefix, base.Add(time.Duration(i)*time.Millisecond))
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testFilesCRUD(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.GetFile(ctx, "file-nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFile unknown: err = %v, want ErrNotFound", err)
	}
	f := store.File{ID: ids("file-", 1)[0], Bytes: 42, CreatedAt: 1700000000, Filename: "in.jsonl", Purpose: "batch", Status: "processed", Lines: 3}
	must(t, s.PutFile(ctx, f))
	got, err := s.GetFile(ctx, f.ID)
	must(t, err)
	if got != f {
		t.Fatalf("GetFile = %+v, want %+v", got, f)
	}
	f.Bytes = 43
	must(t, s.PutFile(ctx, f))
	if got, _ := s.GetFile(ctx, f.ID); got.Bytes != 43 {
		t.Fatalf("PutFile did not replace: bytes = %d", got.Bytes)
	}
	must(t, s.DeleteFile(ctx, f.ID))
	if _, err := s.GetFile(ctx, f.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFile after delete: err = %v", err)
	}
	if err := s.DeleteFile(ctx, f.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteFile twice: err = %v, want ErrNotFound", err)
	}
	if files, _, err := s.ListFiles(ctx, store.ListOptions{}); err != nil || len(files) != 0 {
		t.Fatalf("ListFiles after delete = %v, %v", files, err)
	}
}

func testFilesList(t *testing.T, s store.Store) {
	ctx := context.Background()
	all := ids("file-", 7)
	for i, id := range all {
		purpose := "batch"
		if i%2 == 1 {
			purpose = "batch_output"
		}
		must(t, s.PutFile(ctx, store.File{ID: id, Purpose: purpose, Filename: fmt.Sprint(i)}))
	}
	// Newest first, pages of 3: 6 5 4 | 3 2 1 | 0.
	var got []string
	after := ""
	for page := 0; ; page++ {
		files, more, err := s.ListFiles(ctx, store.ListOptions{After: after, Limit: 3})
		must(t, err)
		for _, f := range files {
			got = append(got, f.ID)
		}
		if !more {
			break
		}
		if page > 5 || len(files) == 0 {
			t.Fatalf("pagination does not end (page %d)", page)
		}
		after = files[len(files)-1].ID
	}
	want := []string{all[6], all[5], all[4], all[3], all[2], all[1], all[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages = %v, want %v", got, want)
	}
	files, more, err := s.ListFiles(ctx, store.ListOptions{Purpose: "batch_output", Limit: 2})
	must(t, err)
	if len(files) != 2 || files[0].ID != all[5] || files[1].ID != all[3] || !more {
		t.Fatalf("purpose filter page 1 = %v more=%v", files, more)
	}
	files, more, err = s.ListFiles(ctx, store.ListOptions{Purpose: "batch_output", Limit: 2, After: files[1].ID})
	must(t, err)
	if len(files) != 1 || files[0].ID != all[1] || more {
		t.Fatalf("purpose filter page 2 = %v more=%v", files, more)
	}
	files, more, err = s.ListFiles(ctx, store.ListOptions{Limit: 7})
	must(t, err)
	if len(files) != 7 || more {
		t.Fatalf("exact-size page: %d files, more=%v; want 7, false", len(files), more)
	}
}

func newBatch(id string) store.Batch {
	return store.Batch{
		ID: id, Endpoint: "/v1/chat/completions", InputFileID: "file-x", CompletionWindow: "24h",
		Status: store.StatusValidating, CreatedAt: 1700000000, ExpiresAt: 1700086400,
		Metadata: map[string]string{"k": "v"},
	}
}

func testBatchCRUD(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	if _, err := s.GetBatch(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetBatch unknown: %v", err)
	}
	if _, err := s.UpdateBatch(ctx, id, func(*store.Batch) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateBatch unknown: %v", err)
	}
	b := newBatch(id)
	must(t, s.CreateBatch(ctx, b))
	if err := s.CreateBatch(ctx, b); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateBatch twice: %v, want ErrExists", err)
	}
	got, err := s.GetBatch(ctx, id)
	must(t, err)
	if got.Status != store.StatusValidating || got.Metadata["k"] != "v" || got.ExpiresAt != b.ExpiresAt {
		t.Fatalf("GetBatch = %+v", got)
	}
	upd, err := s.UpdateBatch(ctx, id, func(b *store.Batch) error {
		b.Status = store.StatusInProgress
		b.InProgressAt = 1700000005
		b.RequestCounts.Total = 10
		b.Errors = []store.BatchError{{Code: "c", Message: "m", Line: 3}}
		b.ID = "something-else" // ignored: the ID is the key
		return nil
	})
	must(t, err)
	if upd.ID != id || upd.Status != store.StatusInProgress || upd.RequestCounts.Total != 10 {
		t.Fatalf("UpdateBatch returned %+v", upd)
	}
	got, err = s.GetBatch(ctx, id)
	must(t, err)
	if got.Status != store.StatusInProgress || got.InProgressAt != 1700000005 || got.RequestCounts.Total != 10 ||
		len(got.Errors) != 1 || got.Errors[0].Line != 3 {
		t.Fatalf("after update: %+v", got)
	}
}

func testBatchList(t *testing.T, s store.Store) {
	ctx := context.Background()
	all := ids("batch_", 5)
	for _, id := range all {
		must(t, s.CreateBatch(ctx, newBatch(id)))
	}
	page, more, err := s.ListBatches(ctx, store.ListOptions{Limit: 2})
	must(t, err)
	if len(page) != 2 || page[0].ID != all[4] || page[1].ID != all[3] || !more {
		t.Fatalf("page 1 = %v more=%v", page, more)
	}
	page, more, err = s.ListBatches(ctx, store.ListOptions{Limit: 2, After: all[3]})
	must(t, err)
	if len(page) != 2 || page[0].ID != all[2] || page[1].ID != all[1] || !more {
		t.Fatalf("page 2 = %v more=%v", page, more)
	}
	page, more, err = s.ListBatches(ctx, store.ListOptions{Limit: 2, After: all[1]})
	must(t, err)
	if len(page) != 1 || page[0].ID != all[0] || more {
		t.Fatalf("page 3 = %v more=%v", page, more)
	}
	page, _, err = s.ListBatches(ctx, store.ListOptions{})
	must(t, err)
	if len(page) != 5 {
		t.Fatalf("default limit listed %d batches, want 5", len(page))
	}
}

func testUpdateBatchAbort(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	must(t, s.CreateBatch(ctx, newBatch(id)))
	boom := errors.New("boom")
	_, err := s.UpdateBatch(ctx, id, func(b *store.Batch) error {
		b.Status = store.StatusFailed
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateBatch err = %v, want boom", err)
	}
	if got, _ := s.GetBatch(ctx, id); got.Status != store.StatusValidating {
		t.Fatalf("aborted update was written: status %q", got.Status)
	}
}

func testPutLineFirstWriteWins(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	if _, err := s.PutLine(ctx, id, store.LineResult{Index: 0}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PutLine unknown batch: %v, want ErrNotFound", err)
	}
	if err := s.Lines(ctx, id, func(store.LineResult) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Lines unknown batch: %v, want ErrNotFound", err)
	}
	must(t, s.CreateBatch(ctx, newBatch(id)))
	n := 0
	must(t, s.Lines(ctx, id, func(store.LineResult) error { n++; return nil }))
	if n != 0 {
		t.Fatalf("new batch has %d lines", n)
	}
	first := store.LineResult{Index: 4, ID: "batch_req_a", CustomID: "c4", OK: true, StatusCode: 200, Body: []byte(`{"x":1}`), Node: "n1", PromptTokens: 3, CompletionTokens: 5, StartedAt: 10, FinishedAt: 20, Attempts: 1}
	added, err := s.PutLine(ctx, id, first)
	must(t, err)
	if !added {
		t.Fatal("first PutLine not added")
	}
	second := first
	second.ID, second.OK, second.Body = "batch_req_b", false, []byte(`{"y":2}`)
	added, err = s.PutLine(ctx, id, second)
	must(t, err)
	if added {
		t.Fatal("second PutLine of the same index was added")
	}
	var got []store.LineResult
	must(t, s.Lines(ctx, id, func(r store.LineResult) error { got = append(got, r); return nil }))
	if len(got) != 1 || got[0].ID != "batch_req_a" || string(got[0].Body) != `{"x":1}` || got[0].Node != "n1" || got[0].CompletionTokens != 5 {
		t.Fatalf("Lines = %+v", got)
	}
	b, err := s.GetBatch(ctx, id)
	must(t, err)
	if b.RequestCounts.Completed != 1 || b.RequestCounts.Failed != 0 {
		t.Fatalf("counts = %+v, want 1 completed", b.RequestCounts)
	}
	if _, err := s.PutLine(ctx, id, store.LineResult{Index: 5, CustomID: "c5"}); err != nil {
		t.Fatal(err)
	}
	b, _ = s.GetBatch(ctx, id)
	if b.RequestCounts.Completed != 1 || b.RequestCounts.Failed != 1 {
		t.Fatalf("counts = %+v, want 1 completed 1 failed", b.RequestCounts)
	}
	stop := errors.New("stop")
	calls := 0
	err = s.Lines(ctx, id, func(store.LineResult) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Lines with failing fn: err=%v calls=%d", err, calls)
	}
}

// usageLines are a chat line, a failed line that still reports prompt tokens, a line with
// cached and reasoning tokens, and an embeddings line (prompt tokens only).
var usageLines = []store.LineResult{
	{Index: 0, CustomID: "chat", OK: true, StatusCode: 200, PromptTokens: 11, CompletionTokens: 7},
	{Index: 1, CustomID: "failed", StatusCode: 400, PromptTokens: 3},
	{Index: 2, CustomID: "cached", OK: true, StatusCode: 200, PromptTokens: 100, CachedTokens: 64, CompletionTokens: 40, ReasoningTokens: 25},
	{Index: 3, CustomID: "embedding", OK: true, StatusCode: 200, PromptTokens: 9},
}

var usageLinesSum = store.Usage{InputTokens: 123, CachedTokens: 64, OutputTokens: 47, ReasoningTokens: 25}

func testPutLineUsage(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	must(t, s.CreateBatch(ctx, newBatch(id)))
	if b, _ := s.GetBatch(ctx, id); b.Usage != (store.Usage{}) {
		t.Fatalf("new batch usage = %+v, want zeros", b.Usage)
	}
	for _, r := range usageLines {
		if added, err := s.PutLine(ctx, id, r); err != nil || !added {
			t.Fatalf("PutLine %d: added=%v err=%v", r.Index, added, err)
		}
		// A retry of the same line (a crash between storing it and noting that) adds nothing,
		// even with other token counts.
		again := r
		again.PromptTokens, again.CompletionTokens = 1000, 1000
		if added, err := s.PutLine(ctx, id, again); err != nil || added {
			t.Fatalf("PutLine %d again: added=%v err=%v", r.Index, added, err)
		}
	}
	b, err := s.GetBatch(ctx, id)
	must(t, err)
	if b.Usage != usageLinesSum {
		t.Fatalf("usage = %+v, want %+v", b.Usage, usageLinesSum)
	}
	if b.RequestCounts.Completed != 3 || b.RequestCounts.Failed != 1 {
		t.Fatalf("counts = %+v, want 3 completed 1 failed", b.RequestCounts)
	}
	var got []store.LineResult
	must(t, s.Lines(ctx, id, func(r store.LineResult) error { got = append(got, r); return nil }))
	if len(got) != 4 || got[2].CachedTokens != 64 || got[2].ReasoningTokens != 25 || got[0].PromptTokens != 11 {
		t.Fatalf("Lines = %+v", got)
	}

	if _, err := s.PutLine(ctx, id, store.LineResult{Index: 9, OK: true, CompletionTokens: -1}); err == nil {
		t.Fatal("PutLine accepted a negative token count")
	}
	// UpdateBatch leaves usage alone unless fn changes it, and then as a delta.
	upd, err := s.UpdateBatch(ctx, id, func(b *store.Batch) error { b.Status = store.StatusFinalizing; return nil })
	must(t, err)
	if upd.Usage != usageLinesSum {
		t.Fatalf("UpdateBatch returned usage %+v, want %+v", upd.Usage, usageLinesSum)
	}
	_, err = s.UpdateBatch(ctx, id, func(b *store.Batch) error { b.Usage.OutputTokens += 3; return nil })
	must(t, err)
	b, _ = s.GetBatch(ctx, id)
	want := usageLinesSum
	want.OutputTokens += 3
	if b.Usage != want || b.Status != store.StatusFinalizing {
		t.Fatalf("after updates: status %q usage %+v, want usage %+v", b.Status, b.Usage, want)
	}
	list, _, err := s.ListBatches(ctx, store.ListOptions{})
	must(t, err)
	if len(list) != 1 || list[0].Usage != want {
		t.Fatalf("ListBatches = %+v", list)
	}
}

// RunReopen checks that what PutLine recorded survives closing and reopening the store. open
// returns the same stored state on every call (the same file, the same server and prefix); the
// suite closes what it returns.
func RunReopen(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	s := open(t)
	must(t, s.CreateBatch(ctx, newBatch(id)))
	for _, r := range usageLines[:2] {
		if _, err := s.PutLine(ctx, id, r); err != nil {
			t.Fatal(err)
		}
	}
	must(t, s.Close())

	// As after a crash: the runner redoes the lines it finished, then goes on.
	s = open(t)
	defer func() { must(t, s.Close()) }()
	b, err := s.GetBatch(ctx, id)
	must(t, err)
	if want := (store.Usage{InputTokens: 14, OutputTokens: 7}); b.Usage != want {
		t.Fatalf("usage after reopen = %+v, want %+v", b.Usage, want)
	}
	for _, r := range usageLines {
		if _, err := s.PutLine(ctx, id, r); err != nil {
			t.Fatal(err)
		}
	}
	b, err = s.GetBatch(ctx, id)
	must(t, err)
	if b.Usage != usageLinesSum || b.RequestCounts.Completed != 3 || b.RequestCounts.Failed != 1 {
		t.Fatalf("after redoing lines: usage %+v counts %+v, want usage %+v, 3 completed 1 failed", b.Usage, b.RequestCounts, usageLinesSum)
	}
}

func testLinesInIndexOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	must(t, s.CreateBatch(ctx, newBatch(id)))
	// Indexes whose decimal and byte orders differ (2 < 10 < 256 < 1000).
	for _, i := range []int{1000, 2, 256, 10, 0} {
		if _, err := s.PutLine(ctx, id, store.LineResult{Index: i, CustomID: fmt.Sprint("c", i), OK: true}); err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	must(t, s.Lines(ctx, id, func(r store.LineResult) error { got = append(got, r.Index); return nil }))
	if fmt.Sprint(got) != "[0 2 10 256 1000]" {
		t.Fatalf("Lines order = %v", got)
	}
}

func testConcurrentLinesAndUpdates(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	must(t, s.CreateBatch(ctx, newBatch(id)))
	const lines, writers = 60, 6
	var wg sync.WaitGroup
	errc := make(chan error, writers+1)
	// Every writer tries every line: each must land exactly once.
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				// Every writer reports other token counts for the line; only the first write's count.
				r := store.LineResult{Index: i, CustomID: fmt.Sprint(i), OK: i%3 != 0, Node: fmt.Sprint(w),
					PromptTokens: 10 + w, CompletionTokens: 1, CachedTokens: w}
				if _, err := s.PutLine(ctx, id, r); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	// Meanwhile: status updates and one count delta, which must not lose PutLine's increments.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			_, err := s.UpdateBatch(ctx, id, func(b *store.Batch) error {
				b.Metadata = map[string]string{"round": fmt.Sprint(i)}
				if i == 7 {
					b.RequestCounts.Failed += 5
				}
				return nil
			})
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	b, err := s.GetBatch(ctx, id)
	must(t, err)
	if b.RequestCounts.Completed != 40 || b.RequestCounts.Failed != 20+5 {
		t.Fatalf("counts = %+v, want completed 40 failed 25", b.RequestCounts)
	}
	if b.Metadata["round"] != "19" {
		t.Fatalf("last update lost: metadata %v", b.Metadata)
	}
	var n int
	var sum store.Usage
	must(t, s.Lines(ctx, id, func(r store.LineResult) error {
		n++
		sum.InputTokens += int64(r.PromptTokens)
		sum.CachedTokens += int64(r.CachedTokens)
		sum.OutputTokens += int64(r.CompletionTokens)
		return nil
	}))
	if n != lines {
		t.Fatalf("%d lines stored, want %d", n, lines)
	}
	if sum.OutputTokens != lines || b.Usage != sum {
		t.Fatalf("usage = %+v, want the sum of the stored lines %+v", b.Usage, sum)
	}
}

func testQueueClaimRenewAck(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	if got, err := s.Claim(ctx, "a", time.Hour); err != nil || got != "" {
		t.Fatalf("Claim on empty queue = %q, %v", got, err)
	}
	must(t, s.Enqueue(ctx, id))
	must(t, s.Enqueue(ctx, id)) // no-op
	got, err := s.Claim(ctx, "a", time.Hour)
	must(t, err)
	if got != id {
		t.Fatalf("Claim = %q, want %q", got, id)
	}
	for _, c := range []string{"a", "b"} {
		if got, err := s.Claim(ctx, c, time.Hour); err != nil || got != "" {
			t.Fatalf("Claim by %s of a held batch = %q, %v; want none (enqueued twice must be one entry)", c, got, err)
		}
	}
	must(t, s.Renew(ctx, "a", id))
	if err := s.Renew(ctx, "b", id); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("Renew by non-owner: %v, want ErrNotOwner", err)
	}
	must(t, s.Ack(ctx, id))
	must(t, s.Ack(ctx, id)) // no-op
	if err := s.Renew(ctx, "a", id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Renew after Ack: %v, want ErrNotFound", err)
	}
	if got, err := s.Claim(ctx, "b", 0); err != nil || got != "" {
		t.Fatalf("Claim after Ack = %q, %v", got, err)
	}
	// Acked batches can be queued again (a batch is re-enqueued only by its creator, but the
	// queue must not remember it).
	must(t, s.Enqueue(ctx, id))
	if got, err := s.Claim(ctx, "b", time.Hour); err != nil || got != id {
		t.Fatalf("Claim after re-enqueue = %q, %v", got, err)
	}
}

func testQueueTakeover(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := ids("batch_", 1)[0]
	must(t, s.Enqueue(ctx, id))
	if got, err := s.Claim(ctx, "dead", time.Hour); err != nil || got != id {
		t.Fatalf("Claim = %q, %v", got, err)
	}
	const minIdle = 20 * time.Millisecond
	// Idle time only grows, so sleeping past minIdle cannot make this flaky.
	time.Sleep(3 * minIdle)
	got, err := s.Claim(ctx, "alive", minIdle)
	must(t, err)
	if got != id {
		t.Fatalf("takeover Claim = %q, want %q", got, id)
	}
	if err := s.Renew(ctx, "dead", id); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("Renew by the presumed-dead consumer: %v, want ErrNotOwner", err)
	}
	must(t, s.Renew(ctx, "alive", id))
	if got, err := s.Claim(ctx, "third", time.Hour); err != nil || got != "" {
		t.Fatalf("Claim of a freshly renewed batch = %q, %v", got, err)
	}
}

func testQueueFIFO(t *testing.T, s store.Store) {
	ctx := context.Background()
	all := ids("batch_", 3)
	for _, id := range all {
		must(t, s.Enqueue(ctx, id))
	}
	for i, want := range all {
		got, err := s.Claim(ctx, fmt.Sprint("c", i), time.Hour)
		must(t, err)
		if got != want {
			t.Fatalf("claim %d = %q, want %q", i, got, want)
		}
	}
}

func testPresets(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.GetPreset(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetPreset unknown: %v", err)
	}
	if err := s.DeletePreset(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeletePreset unknown: %v", err)
	}
	temp, maxTok := 0.2, 64
	p := models.Preset{
		Name: "support", Model: "llama3.1:8b", System: "Be kind.", Version: 2,
		Temperature: &temp, MaxTokens: &maxTok, Stop: []string{"END"},
		ResponseFormat: map[string]any{"type": "json_object"},
		CreatedAt:      time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	must(t, s.PutPreset(ctx, p))
	must(t, s.PutPreset(ctx, models.Preset{Name: "aaa", Model: "m"}))
	got, err := s.GetPreset(ctx, "support")
	must(t, err)
	if got.Model != p.Model || got.System != p.System || got.Version != 2 || got.Temperature == nil || *got.Temperature != 0.2 ||
		got.MaxTokens == nil || *got.MaxTokens != 64 || len(got.Stop) != 1 || got.ResponseFormat["type"] != "json_object" ||
		!got.CreatedAt.Equal(p.CreatedAt) {
		t.Fatalf("GetPreset = %+v", got)
	}
	list, err := s.ListPresets(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Name != "aaa" || list[1].Name != "support" {
		t.Fatalf("ListPresets = %v", list)
	}
	must(t, s.DeletePreset(ctx, "aaa"))
	list, _ = s.ListPresets(ctx)
	if len(list) != 1 {
		t.Fatalf("after delete: %v", list)
	}
}

func testKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.GetKey(ctx, "key_nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetKey unknown: %v", err)
	}
	if err := s.DeleteKey(ctx, "key_nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteKey unknown: %v", err)
	}
	kids := ids("key_", 3)
	k := store.APIKey{ID: kids[0], Name: "team-b", SHA256: strings.Repeat("ab", 32), Redacted: "sk-***abcd",
		Scopes: []string{"inference", "batch"}, RequestsPerMinute: 60, TokensPerMinute: 1000, CreatedAt: 1700000000}
	must(t, s.CreateKey(ctx, k))
	must(t, s.CreateKey(ctx, store.APIKey{ID: kids[1], Name: "team-a", SHA256: strings.Repeat("cd", 32), Scopes: []string{"admin"}}))
	for _, dup := range []store.APIKey{
		{ID: kids[0], Name: "other"},  // ID taken
		{ID: kids[2], Name: "team-b"}, // name taken
	} {
		if err := s.CreateKey(ctx, dup); !errors.Is(err, store.ErrExists) {
			t.Fatalf("CreateKey(%s, %s): err = %v, want ErrExists", dup.ID, dup.Name, err)
		}
	}
	got, err := s.GetKey(ctx, k.ID)
	must(t, err)
	if got.Name != k.Name || got.SHA256 != k.SHA256 || got.Redacted != k.Redacted || fmt.Sprint(got.Scopes) != fmt.Sprint(k.Scopes) ||
		got.RequestsPerMinute != 60 || got.TokensPerMinute != 1000 || got.CreatedAt != k.CreatedAt {
		t.Fatalf("GetKey = %+v, want %+v", got, k)
	}
	list, err := s.ListKeys(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Name != "team-a" || list[1].Name != "team-b" {
		t.Fatalf("ListKeys = %+v", list)
	}
	must(t, s.DeleteKey(ctx, k.ID))
	// The name is free again once its key is gone (a key is rotated by delete and re-create).
	must(t, s.CreateKey(ctx, store.APIKey{ID: kids[2], Name: "team-b", SHA256: strings.Repeat("ef", 32)}))
	list, _ = s.ListKeys(ctx)
	if len(list) != 2 || list[1].ID != kids[2] {
		t.Fatalf("after delete and re-create: %+v", list)
	}
}

// testOwnerFilter: ListOptions.Owner keeps one owner's files and batches, and pages over them.
func testOwnerFilter(t *testing.T, s store.Store) {
	ctx := context.Background()
	fids, bids := ids("file-", 6), ids("batch_", 6)
	owners := []string{"a", "b", "a", "", "a", "b"}
	for i, o := range owners {
		must(t, s.PutFile(ctx, store.File{ID: fids[i], Purpose: "batch", Owner: o}))
		b := newBatch(bids[i])
		b.Owner = o
		must(t, s.CreateBatch(ctx, b))
	}
	files, more, err := s.ListFiles(ctx, store.ListOptions{Owner: "a", Limit: 2})
	must(t, err)
	if len(files) != 2 || files[0].ID != fids[4] || files[1].ID != fids[2] || !more {
		t.Fatalf("owner a, page 1: %+v more=%v", files, more)
	}
	files, more, err = s.ListFiles(ctx, store.ListOptions{Owner: "a", Limit: 2, After: files[1].ID})
	must(t, err)
	if len(files) != 1 || files[0].ID != fids[0] || more {
		t.Fatalf("owner a, page 2: %+v more=%v", files, more)
	}
	batches, _, err := s.ListBatches(ctx, store.ListOptions{Owner: "b"})
	must(t, err)
	if len(batches) != 2 || batches[0].ID != bids[5] || batches[1].ID != bids[1] || batches[0].Owner != "b" {
		t.Fatalf("owner b batches: %+v", batches)
	}
	all, _, err := s.ListBatches(ctx, store.ListOptions{})
	must(t, err)
	if len(all) != 6 {
		t.Fatalf("no owner filter: %d batches, want 6", len(all))
	}
	got, err := s.GetFile(ctx, fids[1])
	must(t, err)
	if got.Owner != "b" {
		t.Fatalf("file owner = %q, want b", got.Owner)
	}
}

// StartRedis starts a redis-server on a free loopback port for the test, without persistence,
// and returns its URL; the server is killed when the test ends. Without redis-server installed
// the test is skipped, or fails when HERD_REQUIRE_REDIS or CI is set.
func StartRedis(t testing.TB) string {
	t.Helper()
	return StartRedisServer(t).URL
}

// RedisServer is a redis-server process a test started; Kill and Restart let it test the loss
// and return of Redis.
type RedisServer struct {
	// URL is redis://127.0.0.1:PORT/0; it stays the same across Restart.
	URL string

	t      testing.TB
	bin    string
	port   int
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartRedisServer is StartRedis returning the server, for tests that kill and restart it.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("HERD_REQUIRE_REDIS") != "" || os.Getenv("CI") != "" {
			t.Fatalf("redis-server is required (HERD_REQUIRE_REDIS/CI set) but not installed: %v", err)
		}
		t.Skip("redis-server not installed; set HERD_REQUIRE_REDIS=1 to make this a failure")
	}
	var lastErr error
	for range 3 { // the free port may be taken between picking it and the server binding it
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		srv := &RedisServer{t: t, bin: bin, port: port}
		if lastErr = srv.start(); lastErr == nil {
			srv.URL = "redis://" + srv.addr() + "/0"
			t.Cleanup(srv.Kill)
			return srv
		}
	}
	t.Fatalf("redis-server did not come up: %v", lastErr)
	return nil
}

func (s *RedisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// start runs a fresh, empty server on s.port and waits for it to answer.
func (s *RedisServer) start() error {
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", s.t.TempDir(), "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	if err := waitRedis(s.addr(), exited); err != nil {
		s.Kill()
		return err
	}
	return nil
}

// Kill ends the server with SIGKILL (its data is lost: it runs without persistence) and waits
// for it to exit. Killing a server that is not running does nothing.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts a fresh, empty server on the same port (after Kill).
func (s *RedisServer) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for range 20 { // the old socket may linger a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redis-server did not come back on port %d: %v", s.port, err)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitRedis waits until the server answers PING, it exits, or 20 s pass.
func waitRedis(addr string, exited <-chan struct{}) error {
	for range 400 {
		select {
		case <-exited:
			return errors.New("redis-server exited")
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			var n int
			if err == nil {
				n, err = conn.Read(buf)
			}
			conn.Close()
			if err == nil && string(buf[:n]) == "+PONG\r\n" {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out waiting for PING")
}
