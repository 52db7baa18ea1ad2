package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestRegister(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	Register(e, func(c *gin.Context) { c.String(http.StatusOK, "root") })
	tests := []struct {
		method, path, accept string
		wantPage             bool
	}{
		{http.MethodGet, "/dashboard", "", true},
		{http.MethodGet, "/", "text/html,application/xhtml+xml", true},
		{http.MethodGet, "/", "", false},
		{http.MethodGet, "/", "application/json", false},
		{http.MethodHead, "/", "text/html", false},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tt.method, tt.path, nil)
		if tt.accept != "" {
			req.Header.Set("Accept", tt.accept)
		}
		e.ServeHTTP(rec, req)
		isPage := strings.Contains(rec.Header().Get("Content-Type"), "text/html")
		if rec.Code != http.StatusOK || isPage != tt.wantPage {
			t.Errorf("%s %s (Accept %q): %d %s, want page %v", tt.method, tt.path, tt.accept, rec.Code, rec.Header().Get("Content-Type"), tt.wantPage)
		}
		if isPage && tt.method == http.MethodGet {
			// The page reads the admin API and labels simulated nodes.
			for _, want := range []string{"/admin/v1/nodes", "simulated", "<title>herd"} {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("%s lacks %q", tt.path, want)
				}
			}
		}
		if !isPage && tt.method == http.MethodGet && rec.Body.String() != "root" {
			t.Errorf("%s %s: %q, want root's answer", tt.method, tt.path, rec.Body.String())
		}
	}
}
