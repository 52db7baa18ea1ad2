package backend

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func TestDetect(t *testing.T) {
	ollama := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/version" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":"0.17.4"}`))
	}))
	defer ollama.Close()
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	for _, tc := range []struct {
		name, url, want string
	}{
		{"ollama answers", ollama.URL, agentapi.BackendOllama},
		{"ollama answers, trailing slash", ollama.URL + "/", agentapi.BackendOllama},
		{"something else answers 404", other.URL, agentapi.BackendSim},
		{"nothing listens", closedURL, agentapi.BackendSim},
		{"bad URL", "://", agentapi.BackendSim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Detect(context.Background(), nil, tc.url); got != tc.want {
				t.Fatalf("Detect(%q) = %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}
