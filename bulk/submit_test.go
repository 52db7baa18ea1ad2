package bulk

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/herd-llm/herd/gateway/api"
)

// A key without the admin scope cannot read a preset (403 from /admin/v1/presets); Submit then
// checks the preset through /v1/models and records the batch without the preset's version.
func TestSubmitPresetWithoutAdminScope(t *testing.T) {
	var mu sync.Mutex
	var created api.CreateBatchRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/admin/v1/presets/"):
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: admin.","type":"permission_error","param":null,"code":"insufficient_permissions"}}`)
		case r.URL.Path == "/v1/models/haiku":
			io.WriteString(w, `{"id":"haiku","object":"model","created":1,"owned_by":"herd-preset"}`)
		case r.URL.Path == "/v1/models/llama3.2:1b":
			io.WriteString(w, `{"id":"llama3.2:1b","object":"model","created":1,"owned_by":"herd"}`)
		case r.URL.Path == "/v1/files":
			io.WriteString(w, `{"id":"file-1","object":"file","bytes":10,"created_at":1,"filename":"p.txt","purpose":"batch","status":"processed"}`)
		case r.URL.Path == "/v1/batches":
			mu.Lock()
			_ = json.NewDecoder(r.Body).Decode(&created)
			mu.Unlock()
			io.WriteString(w, `{"id":"batch_1","object":"batch","endpoint":"/v1/chat/completions","input_file_id":"file-1","completion_window":"24h","status":"validating","created_at":1,"request_counts":{"total":0,"completed":0,"failed":0}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "p.txt")
	os.WriteFile(path, []byte("autumn\nsea\n"), 0o644)
	c := api.NewClient(srv.URL, "sk-batch-only")

	b, err := Submit(context.Background(), c, path, SubmitOptions{Preset: "haiku", Temperature: -1})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	md := created.Metadata
	mu.Unlock()
	if b.ID != "batch_1" || md["preset"] != "haiku" || md["preset_version"] != "" {
		t.Fatalf("batch %s, metadata %v", b.ID, md)
	}
	// A base model given as --preset is refused with advice.
	if _, err := Submit(context.Background(), c, path, SubmitOptions{Preset: "llama3.2:1b", Temperature: -1}); err == nil || !strings.Contains(err.Error(), "use --model") {
		t.Fatalf("a model as --preset: %v", err)
	}
}
