package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestClientTypedError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer k" {
			t.Errorf("Authorization = %q", got)
		}
		switch r.URL.Path {
		case "/admin/v1/nodes/x":
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"message":"node \"x\" is not known","type":"invalid_request_error","param":"node","code":"node_not_found"}}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("upstream down\n"))
		}
	}))
	defer srv.Close()
	c := NewClient(srv.URL+"/", "k")
	_, err := c.Node(context.Background(), "x")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *api.Error", err)
	}
	want := Error{Status: 404, Type: "invalid_request_error", Code: "node_not_found", Param: "node", Message: `node "x" is not known`}
	if *e != want {
		t.Fatalf("error = %+v, want %+v", *e, want)
	}
	_, err = c.Models(context.Background())
	if !errors.As(err, &e) || e.Status != 502 || e.Message != "upstream down" || e.Code != "" {
		t.Fatalf("non-JSON error = %#v", err)
	}
}

func TestWatchBatchCallsProgressUntilTerminal(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		b := BatchObject{ID: "batch_1", Status: "in_progress", RequestCounts: RequestCounts{Total: 3, Completed: int(n)}}
		if n == 3 {
			b.Status = "completed"
		}
		_ = json.NewEncoder(w).Encode(b)
	}))
	defer srv.Close()
	var seen []int
	b, err := NewClient(srv.URL, "").WatchBatch(context.Background(), "batch_1", 1, func(b BatchObject) {
		seen = append(seen, b.RequestCounts.Completed)
	})
	if err != nil || b.Status != "completed" || !b.Terminal() {
		t.Fatalf("WatchBatch = %+v, %v", b, err)
	}
	if len(seen) != 3 || seen[0] != 1 || seen[2] != 3 {
		t.Fatalf("progress saw %v, want [1 2 3]", seen)
	}
}

func TestWatchBatchStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(BatchObject{ID: "b", Status: "in_progress"})
	}))
	defer srv.Close()
	_, err := NewClient(srv.URL, "").WatchBatch(ctx, "b", 1, func(BatchObject) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPullStreamsProgressAndCollectsFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req PullRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "m" {
			t.Errorf("body %+v, %v", req, err)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = w.Write([]byte(`{"node":"a","status":"pulling","total":10,"completed":5}
{"node":"a","status":"success"}
not json
{"node":"b","status":"error","error":"disk full"}
`))
	}))
	defer srv.Close()
	var lines []Progress
	err := NewClient(srv.URL, "").Pull(context.Background(), PullRequest{Model: "m"}, func(p Progress) { lines = append(lines, p) })
	if err == nil || !strings.Contains(err.Error(), "b: disk full") {
		t.Fatalf("err = %v, want node b's failure", err)
	}
	if len(lines) != 3 || lines[0].Completed != 5 || lines[1].Status != "success" {
		t.Fatalf("progress lines %+v", lines)
	}
}

func TestNewListPage(t *testing.T) {
	p := NewListPage([]string(nil), func(s string) string { return s }, false)
	if p.Object != "list" || p.Data == nil || p.FirstID != nil {
		t.Fatalf("empty page = %+v", p)
	}
	p = NewListPage([]string{"a", "b"}, func(s string) string { return s }, true)
	if *p.FirstID != "a" || *p.LastID != "b" || !p.HasMore {
		t.Fatalf("page = %+v", p)
	}
}
