package presets

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/models"
)

// presetServer serves the preset admin routes of a book of file over a bbolt store.
func presetServer(t *testing.T, file []models.Preset) (*Book, *httptest.Server) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), store.BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	book := New(file, st)
	if err := book.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	NewHandlers(book, nil).Register(e.Group("/admin/v1"))
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return book, srv
}

func TestBulkPresets(t *testing.T) {
	fromFile := models.Preset{Name: "poet", Model: "llama3.1:8b", System: "Rhyme.", Version: 1}
	book, srv := presetServer(t, []models.Preset{fromFile})
	do := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		return res.StatusCode, data
	}
	if p, ok := book.Lookup("poet"); !ok || p.System != "Rhyme." {
		t.Fatalf("file preset: %+v %v", p, ok)
	}
	status, data := do(http.MethodPut, "/admin/v1/presets/support", `{"model":"qwen2.5:7b","system":"Help.","temperature":0.3}`)
	if status != 200 {
		t.Fatalf("put: %d %s", status, data)
	}
	var p models.Preset
	json.Unmarshal(data, &p)
	if p.Name != "support" || p.Version != 1 || p.CreatedAt.IsZero() {
		t.Fatalf("stored %+v", p)
	}
	status, data = do(http.MethodPut, "/admin/v1/presets/support", `{"model":"qwen2.5:14b","system":"Help more."}`)
	json.Unmarshal(data, &p)
	if status != 200 || p.Version != 2 || p.Model != "qwen2.5:14b" {
		t.Fatalf("update: %d %s", status, data)
	}
	// Versions: the same content again changes nothing; an explicit version is kept as given and
	// must move up when the content changes.
	for _, tc := range []struct {
		name, body  string
		status, ver int
	}{
		{"same content again", `{"model":"qwen2.5:14b","system":"Help more."}`, 200, 2},
		{"same content, same explicit version", `{"model":"qwen2.5:14b","system":"Help more.","version":2}`, 200, 2},
		{"explicit version", `{"model":"qwen2.5:14b","system":"Help, v5.","version":5}`, 200, 5},
		{"changed content at the same version", `{"model":"qwen2.5:14b","system":"Other.","version":5}`, 409, 0},
		{"lower version", `{"model":"qwen2.5:14b","system":"Older.","version":3}`, 409, 0},
		{"no version: numbered", `{"model":"qwen2.5:14b","system":"Help, v6."}`, 200, 6},
	} {
		status, data := do(http.MethodPut, "/admin/v1/presets/support", tc.body)
		var got models.Preset
		json.Unmarshal(data, &got)
		if status != tc.status || (status == 200 && got.Version != tc.ver) {
			t.Fatalf("%s: %d %s, want %d version %d", tc.name, status, data, tc.status, tc.ver)
		}
		if status == 409 && !strings.Contains(string(data), "preset_version_conflict") {
			t.Fatalf("%s: %s", tc.name, data)
		}
	}
	// The file's preset applied again as it is stores nothing.
	status, data = do(http.MethodPut, "/admin/v1/presets/poet", `{"model":"llama3.1:8b","system":"Rhyme."}`)
	json.Unmarshal(data, &p)
	if status != 200 || p.Version != 1 || book.IsStored("poet") {
		t.Fatalf("file preset unchanged: %d %s", status, data)
	}
	// A stored preset overrides the file's of the same name; deleting it shows the file's again.
	status, data = do(http.MethodPut, "/admin/v1/presets/poet", `{"model":"mistral:7b"}`)
	json.Unmarshal(data, &p)
	if status != 200 || p.Version != 2 {
		t.Fatalf("override: %d %s", status, data)
	}
	if got, _ := book.Lookup("poet"); got.Model != "mistral:7b" {
		t.Fatalf("override not in effect: %+v", got)
	}
	if status, _ := do(http.MethodDelete, "/admin/v1/presets/poet", ""); status != 200 {
		t.Fatalf("delete override: %d", status)
	}
	if got, _ := book.Lookup("poet"); got.Model != "llama3.1:8b" {
		t.Fatalf("file preset not back: %+v", got)
	}
	if status, _ := do(http.MethodDelete, "/admin/v1/presets/poet", ""); status != 400 {
		t.Fatalf("deleting a file preset: %d, want 400", status)
	}
	if status, _ := do(http.MethodDelete, "/admin/v1/presets/nope", ""); status != 404 {
		t.Fatalf("deleting unknown: %d", status)
	}
	for _, body := range []string{`{`, `{"model":""}`, `{"name":"other","model":"m"}`, `{"model":"m","temperature":9}`} {
		if status, data := do(http.MethodPut, "/admin/v1/presets/x", body); status != 400 {
			t.Fatalf("put %s: %d %s", body, status, data)
		}
	}
	status, data = do(http.MethodGet, "/admin/v1/presets", "")
	var list struct{ Data []models.Preset }
	json.Unmarshal(data, &list)
	if status != 200 || len(list.Data) != 2 || list.Data[0].Name != "poet" || list.Data[1].Name != "support" {
		t.Fatalf("list: %d %s", status, data)
	}
	if status, _ := do(http.MethodGet, "/admin/v1/presets/support", ""); status != 200 {
		t.Fatalf("get: %d", status)
	}
	if status, _ := do(http.MethodGet, "/admin/v1/presets/nope", ""); status != 404 {
		t.Fatalf("get unknown: %d", status)
	}
}

// TestErrorShape checks that the routes' errors are the OpenAI error object.
func TestErrorShape(t *testing.T) {
	_, srv := presetServer(t, nil)
	res, err := http.Get(srv.URL + "/admin/v1/presets/nope")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body api.ErrorBody
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 404 || body.Error.Code == nil || *body.Error.Code != "preset_not_found" || body.Error.Param == nil || *body.Error.Param != "name" {
		t.Fatalf("%d %+v", res.StatusCode, body.Error)
	}
}

func TestLoadFileAndOpen(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "presets.yaml")
	if err := os.WriteFile(good, []byte("presets:\n  - name: poet\n    model: llama3.1:8b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("presets:\n  - name: \"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       int
		wantErr    bool
	}{
		{"none", "", 0, false},
		{"file", good, 1, false},
		{"missing", filepath.Join(dir, "nope.yaml"), 0, true},
		{"invalid", bad, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := LoadFile(tt.path)
			if (err != nil) != tt.wantErr || len(ps) != tt.want {
				t.Fatalf("LoadFile(%q) = %v, %v", tt.path, ps, err)
			}
		})
	}

	st, err := store.OpenBolt(filepath.Join(dir, store.BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.PutPreset(ctx, models.Preset{Name: "stored", Model: "m", Version: 1}); err != nil {
		t.Fatal(err)
	}
	book, err := Open(ctx, good, st)
	if err != nil {
		t.Fatal(err)
	}
	if list := book.List(); len(list) != 2 || list[0].Name != "poet" || list[1].Name != "stored" {
		t.Fatalf("Open: %+v", list)
	}
	if !book.IsStored("stored") || book.IsStored("poet") {
		t.Fatal("IsStored confuses file and stored presets")
	}
	if _, err := Open(ctx, bad, st); err == nil {
		t.Fatal("invalid presets file accepted")
	}

	var nilBook *Book
	if _, ok := nilBook.Lookup("x"); ok || nilBook.List() != nil {
		t.Fatal("nil book has presets")
	}
}

// TestSharedThroughRedis: a preset stored through one book (one gateway) is seen by another over
// the same Redis once it reloads.
func TestSharedThroughRedis(t *testing.T) {
	url := storetest.StartRedis(t)
	ctx := context.Background()
	open := func() *Book {
		st, err := store.OpenRedis(ctx, url, store.WithRedisPrefix("presets-test:"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		b, err := Open(ctx, "", st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := open(), open()
	p, err := a.Put(ctx, models.Preset{Name: "shared", Model: "m"}, time.Unix(1000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != 1 || !p.CreatedAt.Equal(time.Unix(1000, 0)) {
		t.Fatalf("stored %+v", p)
	}
	if _, ok := b.Lookup("shared"); ok {
		t.Fatal("seen before a reload: the request path would be reading the store")
	}
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Lookup("shared"); !ok {
		t.Fatal("preset stored through one gateway is not seen by the other")
	}
}
