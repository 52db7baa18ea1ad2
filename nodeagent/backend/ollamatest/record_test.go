package ollamatest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "record testdata/ golden files from a real Ollama (needs scripts/build-ollama.sh)")

// exchange is one request the fake must answer like the real server. The golden file holds the
// real server's body, sanitised.
type exchange struct {
	golden string
	method string
	path   string
	body   string
	status int
	// before runs against the server first (e.g. load the model so /api/ps lists it).
	before func(t *testing.T, base string)
}

func post(t *testing.T, base, path, body string) {
	t.Helper()
	status, b := do(t, http.MethodPost, base+path, body)
	if status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, status, b)
	}
}

func do(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	status, _, b := doH(t, method, url, body)
	return status, b
}

// doH is do that also returns the response's Content-Type.
func doH(t *testing.T, method, url, body string) (int, string, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 2 * time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// wrongBlob is a body whose digest is not the one it is posted under.
const wrongBlob = "not the bytes you are looking for"

// zeroDigest is a well-formed digest no content has.
var zeroDigest = "sha256:" + strings.Repeat("0", 64)

func tinyDigest(t testing.TB, seed int64) string {
	var buf bytes.Buffer
	if err := WriteTinyModel(&buf, seed); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return "sha256:" + hex.EncodeToString(sum[:])
}

func exchanges(t *testing.T) []exchange {
	copyDigest := tinyDigest(t, 2)
	createBody := fmt.Sprintf(`{"model":"tiny-copy","files":{"model.gguf":%q},"template":"{{ .Prompt }}","system":"be brief","parameters":{"num_ctx":2048,"num_predict":16},"license":["MIT"]}`, copyDigest)
	uploadCopy := func(t *testing.T, base string) {
		var buf bytes.Buffer
		if err := WriteTinyModel(&buf, 2); err != nil {
			t.Fatal(err)
		}
		status, b := do(t, http.MethodPost, base+"/api/blobs/"+copyDigest, buf.String())
		if status != http.StatusCreated && status != http.StatusOK {
			t.Fatalf("upload blob: %d %s", status, b)
		}
	}
	load := func(t *testing.T, base string) { post(t, base, "/api/generate", `{"model":"tiny","keep_alive":"5m"}`) }
	return []exchange{
		{golden: "version.json", method: "GET", path: "/api/version", status: 200},
		{golden: "tags.json", method: "GET", path: "/api/tags", status: 200},
		{golden: "show.json", method: "POST", path: "/api/show", body: `{"model":"tiny"}`, status: 200},
		{golden: "show-notfound.json", method: "POST", path: "/api/show", body: `{"model":"nosuch"}`, status: 404},
		{golden: "generate-load.json", method: "POST", path: "/api/generate", body: `{"model":"tiny","keep_alive":"5m"}`, status: 200},
		{golden: "ps.json", method: "GET", path: "/api/ps", status: 200, before: load},
		{golden: "generate-unload.json", method: "POST", path: "/api/generate", body: `{"model":"tiny","keep_alive":0}`, status: 200},
		{golden: "generate-notfound.json", method: "POST", path: "/api/generate", body: `{"model":"nosuch"}`, status: 404},
		{golden: "pull-error.ndjson", method: "POST", path: "/api/pull", body: `{"model":"nosuch"}`, status: 200},
		{golden: "delete-notfound.json", method: "DELETE", path: "/api/delete", body: `{"model":"nosuch"}`, status: 404},
		{golden: "blob-head-missing.json", method: "HEAD", path: "/api/blobs/" + zeroDigest, status: 404},
		{golden: "blob-mismatch.json", method: "POST", path: "/api/blobs/" + zeroDigest, body: wrongBlob, status: 400},
		{golden: "create.ndjson", method: "POST", path: "/api/create", body: createBody, status: 200, before: uploadCopy},
		{golden: "create-missing-blob.ndjson", method: "POST", path: "/api/create", body: fmt.Sprintf(`{"model":"broken","files":{"model.gguf":%q}}`, zeroDigest), status: 200},
		{golden: "chat.json", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":8}`, status: 200, before: load},
		{golden: "chat-stream.sse", method: "POST", path: "/v1/chat/completions", body: `{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}],"max_tokens":8}`, status: 200},
		{golden: "chat-notfound.json", method: "POST", path: "/v1/chat/completions", body: `{"model":"nosuch","messages":[{"role":"user","content":"hello"}]}`, status: 404},
		{golden: "completion.json", method: "POST", path: "/v1/completions", body: `{"model":"tiny","prompt":"hello","max_tokens":8}`, status: 200},
		{golden: "embeddings.json", method: "POST", path: "/v1/embeddings", body: `{"model":"tiny","input":"hello"}`, status: 200},
		{golden: "embeddings-notfound.json", method: "POST", path: "/v1/embeddings", body: `{"model":"nosuch","input":"hello"}`, status: 404},
	}
}

var ipv4 = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(:\d+)?\b`)

// sanitise removes this machine from a recorded body: temp paths and the resolver's address.
func sanitise(s *Server, b []byte) []byte {
	out := strings.ReplaceAll(string(b), s.ModelsDir, "/home/ollama/.ollama/models")
	out = strings.ReplaceAll(out, s.dir, "/tmp/ollama")
	out = ipv4.ReplaceAllString(out, "192.0.2.53:53")
	return []byte(out)
}

// TestRecordGolden records testdata/ from the real server. It only runs with -update:
//
//	go test ./nodeagent/backend/ollamatest -run TestRecordGolden -update
func TestRecordGolden(t *testing.T) {
	if !*update {
		t.Skip("records golden files only with -update")
	}
	s := Start(t, Options{})
	for _, ex := range exchanges(t) {
		if ex.before != nil {
			ex.before(t, s.URL)
		}
		status, body := do(t, ex.method, s.URL+ex.path, ex.body)
		if status != ex.status {
			t.Fatalf("%s %s: status %d, want %d: %s", ex.method, ex.path, status, ex.status, body)
		}
		if ex.method == http.MethodHead {
			body = []byte{}
		}
		if err := os.WriteFile(filepath.Join("testdata", ex.golden), sanitise(s, body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mf, err := os.ReadFile(filepath.Join(s.ModelsDir, "manifests", "registry.ollama.ai", "library", "tiny", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "manifest.json"), sanitise(s, mf), 0o644); err != nil {
		t.Fatal(err)
	}
}
