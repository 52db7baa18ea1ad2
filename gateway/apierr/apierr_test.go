package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
)

func TestAbort(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for _, tc := range []struct {
		name        string
		err         error
		status      int
		typ, code   string
		param       *string
		retryAfter  string
		wantMessage string
	}{
		{"bad request", BadRequest("invalid_value", "limit", "limit must be %d", 5), 400, TypeInvalidRequest, "invalid_value", ptr("limit"), "", "limit must be 5"},
		{"wrapped not found", fmt.Errorf("lookup: %w", NotFound("not_found", "", "no such file")), 404, TypeInvalidRequest, "not_found", nil, "", "no such file"},
		{"unavailable", Unavailable("no node for %s", "m"), 503, TypeUnavailable, "no_node_available", nil, "1", "no node for m"},
		{"internal error does not leak", errors.New("disk /secret failed"), 500, TypeServer, "internal_error", nil, "", "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			c, _ := gin.CreateTestContext(w)
			Abort(c, tc.err)
			if w.Code != tc.status || w.Header().Get("Retry-After") != tc.retryAfter {
				t.Fatalf("status %d Retry-After %q, want %d %q", w.Code, w.Header().Get("Retry-After"), tc.status, tc.retryAfter)
			}
			var body api.ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			e := body.Error
			if e.Message != tc.wantMessage || e.Type != tc.typ || e.Code == nil || *e.Code != tc.code || (e.Param == nil) != (tc.param == nil) ||
				(e.Param != nil && *e.Param != *tc.param) {
				t.Fatalf("body %s", w.Body.Bytes())
			}
			if !c.IsAborted() {
				t.Fatal("handler chain not aborted")
			}
		})
	}
	// An absent param and code are JSON nulls, as OpenAI sends them.
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	Abort(c, &Error{Status: http.StatusTooManyRequests, Type: TypeRateLimit, Message: "slow down"})
	if got := w.Body.String(); got != `{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}` {
		t.Fatalf("body %s", got)
	}
}

func ptr(s string) *string { return &s }

// Errors that are not the client's map to the status that says whose they are; none is a 500
// unless it is the gateway's own.
func TestFromError(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter bool
	}{
		{"disk full", fmt.Errorf("batch: stage upload: %w", &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), 507, "insufficient_storage", true},
		{"quota", fmt.Errorf("write: %w", syscall.EDQUOT), 507, "insufficient_storage", true},
		{"store down", fmt.Errorf("batch: %w", fmt.Errorf("%w: redis: dial tcp: refused", store.ErrUnavailable)), 503, "store_unavailable", true},
		{"api error kept", fmt.Errorf("wrapped: %w", BadRequest("c", "", "m")), 400, "c", false},
		{"anything else", errors.New("boom"), 500, "internal_error", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := FromError(tc.err)
			if e.Status != tc.status || e.Code != tc.code || (e.RetryAfter > 0) != tc.retryAfter {
				t.Fatalf("FromError = %+v, want %d %s retry-after=%v", e, tc.status, tc.code, tc.retryAfter)
			}
			if strings.Contains(e.Message, "refused") || strings.Contains(e.Message, "boom") {
				t.Errorf("message leaks internals: %q", e.Message)
			}
		})
	}
}
