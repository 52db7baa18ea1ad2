package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunClosedLoopStreamAgainstFake(t *testing.T) {
	srv := httptest.NewServer(NewFakeBackend(FaultOK, FakeOptions{Chunks: 10, ChunkDelay: time.Millisecond}))
	defer srv.Close()
	var progress bytes.Buffer
	var mu sync.Mutex
	r, err := Run(context.Background(), Options{
		Target: srv.URL + "/v1", Concurrency: 4, Duration: 1500 * time.Millisecond, Stream: true,
		Progress: &lockedBuffer{b: &progress, mu: &mu}, Label: "fake",
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent == 0 || r.Failed != 0 || r.Succeeded != r.Sent {
		t.Fatalf("sent %d ok %d failed %d errors %v %v", r.Sent, r.Succeeded, r.Failed, r.Errors, r.ErrorSamples)
	}
	if r.OutputTokens != 10*r.Succeeded {
		t.Errorf("output tokens %d, want 10 per request", r.OutputTokens)
	}
	if r.TTFT.N != r.Succeeded || r.ITL.N != 9*r.Succeeded || r.TPOT.N != r.Succeeded {
		t.Errorf("TTFT n %d ITL n %d TPOT n %d for %d requests", r.TTFT.N, r.ITL.N, r.TPOT.N, r.Succeeded)
	}
	if !(r.TTFT.P50 <= r.E2E.P50) || r.ITL.P50 <= 0 {
		t.Errorf("TTFT p50 %v E2E p50 %v ITL p50 %v", r.TTFT.P50, r.E2E.P50, r.ITL.P50)
	}
	if r.PromptTokens == 0 || r.Mode != ModeClosedLoop || r.Concurrency != 4 {
		t.Errorf("report %+v", r)
	}
	if len(r.Samples()) != r.Sent {
		t.Errorf("samples %d, sent %d", len(r.Samples()), r.Sent)
	}
	mu.Lock()
	if !strings.Contains(progress.String(), "fake ") || !strings.Contains(progress.String(), "req/s") {
		t.Errorf("no progress line: %q", progress.String())
	}
	mu.Unlock()
}

type lockedBuffer struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestRunOpenLoopSendsTheSchedule(t *testing.T) {
	srv := httptest.NewServer(NewFakeBackend(FaultOK, FakeOptions{}))
	defer srv.Close()
	o := Options{Target: srv.URL, RPS: 40, Duration: time.Second, Seed: 9}
	want, _ := Arrivals(9, 40, 40, time.Second)
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != len(want) || r.Succeeded != len(want) {
		t.Fatalf("sent %d ok %d, schedule has %d", r.Sent, r.Succeeded, len(want))
	}
	if r.OfferedRPS != float64(len(want)) || r.Mode != ModeOpenLoop {
		t.Errorf("offered %v mode %v", r.OfferedRPS, r.Mode)
	}
	for i, s := range r.Samples() {
		if s.Index != uint64(i) || s.Start < want[i] {
			t.Fatalf("sample %d: index %d start %v before its arrival %v", i, s.Index, s.Start, want[i])
		}
		if s.Streamed || s.TTFT != s.Latency || len(s.ITL) != 0 {
			t.Fatalf("non-streaming sample %+v", s)
		}
	}
}

func TestRunCountsErrorsByKind(t *testing.T) {
	t.Run("flaky backend gives http_5xx for every k-th", func(t *testing.T) {
		srv := httptest.NewServer(NewFakeBackend(FaultFlaky, FakeOptions{FailEvery: 4}))
		defer srv.Close()
		r, err := Run(context.Background(), Options{Target: srv.URL, Concurrency: 3, Duration: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if want := r.Sent / 4; r.Errors["http_5xx"] != want || r.Failed != want {
			t.Errorf("sent %d, http_5xx %d, want %d", r.Sent, r.Errors["http_5xx"], want)
		}
		if len(r.ErrorSamples) == 0 || !strings.Contains(r.ErrorSamples[0], "injected flaky error") {
			t.Errorf("error samples %v", r.ErrorSamples)
		}
	})
	t.Run("hanging backend gives timeouts", func(t *testing.T) {
		srv := httptest.NewServer(NewFakeBackend(FaultHang, FakeOptions{}))
		defer srv.Close()
		r, err := Run(context.Background(), Options{Target: srv.URL, Concurrency: 2, Duration: 300 * time.Millisecond, RequestTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Sent == 0 || r.Errors["timeout"] != r.Sent {
			t.Errorf("sent %d errors %v", r.Sent, r.Errors)
		}
	})
	t.Run("drain ends in canceled and MaxInFlight drops", func(t *testing.T) {
		srv := httptest.NewServer(NewFakeBackend(FaultHang, FakeOptions{}))
		defer srv.Close()
		r, err := Run(context.Background(), Options{Target: srv.URL, RPS: 50, Duration: 400 * time.Millisecond, Seed: 1,
			MaxInFlight: 3, DrainTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Errors["canceled"] != 3 || r.Errors["dropped"] != r.Sent-3 || r.Succeeded != 0 {
			t.Errorf("sent %d errors %v", r.Sent, r.Errors)
		}
	})
	t.Run("nothing listening gives connect", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		u := srv.URL
		srv.Close()
		r, err := Run(context.Background(), Options{Target: u, Concurrency: 1, Duration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Sent == 0 || r.Errors["connect"] != r.Sent {
			t.Errorf("errors %v", r.Errors)
		}
	})
	t.Run("4xx, broken stream and bad body", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Header.Get("Authorization") {
			case "Bearer bad":
				w.WriteHeader(401)
				io.WriteString(w, `{"error":{"message":"bad key"}}`)
			case "Bearer stream":
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, chunkTok+`data: {"error":{"message":"node lost"}}`+"\n\n")
			default:
				io.WriteString(w, "not json")
			}
		}))
		defer srv.Close()
		for key, kind := range map[string]ErrorKind{"bad": ErrHTTP4xx, "stream": ErrStreamBroken, "": ErrBadResponse} {
			r, err := Run(context.Background(), Options{Target: srv.URL, APIKey: key, Concurrency: 1, Duration: 50 * time.Millisecond, Stream: key == "stream"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Sent == 0 || r.Errors[string(kind)] != r.Sent {
				t.Errorf("key %q: errors %v, want all %s", key, r.Errors, kind)
			}
		}
	})
}

func TestRunEventsFireAndWindowSplits(t *testing.T) {
	srv := httptest.NewServer(NewFakeBackend(FaultOK, FakeOptions{}))
	defer srv.Close()
	fired := make(chan struct{}, 1)
	r, err := Run(context.Background(), Options{Target: srv.URL, RPS: 50, Duration: 600 * time.Millisecond,
		Events: []Event{
			{At: 300 * time.Millisecond, Name: "poke", Do: func() error { fired <- struct{}{}; return nil }},
			{At: 350 * time.Millisecond, Name: "fails", Do: func() error { return errors.New("no") }},
			{At: time.Hour, Name: "never"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	default:
		t.Fatal("event did not fire")
	}
	if len(r.Events) != 2 || r.Events[0].Name != "poke" || r.Events[1].Error != "no" {
		t.Fatalf("events %+v", r.Events)
	}
	at := time.Duration(r.Events[0].AtS * float64(time.Second))
	before, after := r.Window(0, at), r.Window(at, time.Hour)
	if before.Sent+after.Sent != r.Sent || before.Sent == 0 {
		t.Errorf("windows %d + %d != %d", before.Sent, after.Sent, r.Sent)
	}
}

func TestRunCancelledReturnsPartialReport(t *testing.T) {
	srv := httptest.NewServer(NewFakeBackend(FaultOK, FakeOptions{}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r, err := Run(ctx, Options{Target: srv.URL, RPS: 20, Duration: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) || r == nil || r.Sent == 0 {
		t.Fatalf("err %v report %v", err, r)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Target: "localhost:8080", RPS: 1},
		{Target: "http://x", Workload: "bogus", RPS: 1},
		{Target: "http://x"},
		{Target: "http://x", RPS: 1, MaxTokens: -1},
	} {
		if _, err := Run(context.Background(), o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%+v: err %v", o, err)
		}
	}
}

// fakeBatchAPI serves just enough of /v1/files and /v1/batches for the mixed workload, plus chat
// through the fake backend. The batch completes on the second poll.
type fakeBatchAPI struct {
	mu     sync.Mutex
	lines  int
	polls  int
	fb     *FakeBackend
	gotKey string
}

func (f *fakeBatchAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/files":
		file, _, err := r.FormFile("file")
		if err != nil || r.FormValue("purpose") != "batch" {
			http.Error(w, "bad upload", 400)
			return
		}
		b, _ := io.ReadAll(file)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var l batchLine
			if json.Unmarshal([]byte(line), &l) != nil || l.URL != "/v1/chat/completions" || l.Body.Model == "" {
				http.Error(w, "bad line", 400)
				return
			}
		}
		f.mu.Lock()
		f.lines = strings.Count(string(b), "\n")
		f.gotKey = r.Header.Get("Authorization")
		f.mu.Unlock()
		io.WriteString(w, `{"id":"file-1","object":"file"}`)
	case r.URL.Path == "/v1/batches" && r.Method == http.MethodPost:
		io.WriteString(w, `{"id":"batch-1","status":"validating"}`)
	case r.URL.Path == "/v1/batches/batch-1":
		f.mu.Lock()
		f.polls++
		status, done := "in_progress", 3
		if f.polls >= 2 {
			status, done = "completed", f.lines
		}
		n := f.lines
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"id": "batch-1", "status": status,
			"request_counts": map[string]int{"total": n, "completed": done, "failed": 0}})
	default:
		f.fb.ServeHTTP(w, r)
	}
}

func TestRunMixedSubmitsAndWatchesTheBatch(t *testing.T) {
	api := &fakeBatchAPI{fb: NewFakeBackend(FaultOK, FakeOptions{})}
	srv := httptest.NewServer(api)
	defer srv.Close()
	r, err := Run(context.Background(), Options{Target: srv.URL, APIKey: "k", Workload: WorkloadMixed, RPS: 20,
		Duration: time.Second, BatchLines: 25, BatchAt: 100 * time.Millisecond, BatchWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b := r.Batch
	if b == nil || !b.Finished || b.Status != "completed" || b.Completed != 25 || b.Total != 25 || b.Lines != 25 || b.Error != "" {
		t.Fatalf("batch %+v", b)
	}
	if b.ID != "batch-1" || b.FileID != "file-1" || api.gotKey != "Bearer k" {
		t.Errorf("batch ids %q %q key %q", b.ID, b.FileID, api.gotKey)
	}
	if r.Succeeded == 0 || r.Failed != 0 {
		t.Errorf("interactive part: %d ok %d failed", r.Succeeded, r.Failed)
	}
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:1": "http://h:1", "http://h:1/": "http://h:1", "http://h:1/v1": "http://h:1", "http://h:1/v1/": "http://h:1",
		"http://h/api/v1": "http://h/api",
	} {
		if got := baseURL(in); got != want {
			t.Errorf("baseURL(%q) = %q, want %q", in, got, want)
		}
	}
}
