package backend

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestServesResponsesProbe(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		ctype  string
		body   string
		native bool
	}{
		{"ollama 0.17 (bad input)", 400, "application/json", `{"error":{"message":"invalid input","type":"invalid_request_error"}}`, true},
		{"vllm (validation)", 400, "application/json", `{"object":"error","message":"1 validation error","type":"BadRequestError","code":400}`, true},
		{"fastapi validation", 422, "application/json", `{"detail":[{"msg":"Input should be a valid string"}]}`, true},
		{"route names the model", 404, "application/json", `{"error":"model '' not found"}`, true},
		{"old ollama (gin)", 404, "text/plain", "404 page not found", false},
		{"fastapi no route", 404, "application/json", `{"detail":"Not Found"}`, false},
		{"method not allowed", 405, "text/plain", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if r.URL.Path != "/v1/responses" || r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer k" {
					t.Errorf("probe %s %s auth %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
				}
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			b, err := NewOpenAICompat(srv.URL, "k")
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if got := b.ServesResponses(context.Background()); got != tt.native {
					t.Fatalf("ServesResponses = %v, want %v", got, tt.native)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("%d probes, want 1 (the answer is kept)", n)
			}
			// After the TTL the backend is asked again (an upgrade is noticed without a restart).
			later := time.Now().Add(responsesProbeTTL + time.Second)
			b.proxy.responses.now = func() time.Time { return later }
			b.ServesResponses(context.Background())
			if n := calls.Load(); n != 2 {
				t.Errorf("%d probes after the TTL, want 2", n)
			}
		})
	}

	// A backend that answers 5xx, or not at all, is asked again next time.
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(503)
	}))
	defer srv.Close()
	b, _ := NewOpenAICompat(srv.URL, "")
	first := b.ServesResponses(context.Background())
	second := b.ServesResponses(context.Background())
	if first || second || calls.Load() != 2 {
		t.Errorf("5xx: native or kept (%d probes)", calls.Load())
	}
}
