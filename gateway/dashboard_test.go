package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDashboardServed(t *testing.T) {
	s, err := New(Config{DataDir: t.TempDir(), ClusterToken: "t", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := s.Handler()
	for _, path := range []string{"/", "/dashboard"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Accept", "text/html") // as a browser asks; other clients of / get Ollama's probe answer
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Type"), "text/html") {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		body := rec.Body.String()
		// The page reads the admin API and labels simulated nodes.
		for _, want := range []string{"/admin/v1/nodes", "/admin/v1/queue", "/admin/v1/history", "/v1/batches", "/admin/v1/presets", "simulated", "<title>herd"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
		// The LAN may be air-gapped: nothing is loaded from elsewhere.
		for _, external := range []string{`src="http`, `href="http`, `src="//`, `href="//`, "@import", "<link"} {
			if strings.Contains(body, external) {
				t.Errorf("%s loads something from outside (%q)", path, external)
			}
		}
	}
}
