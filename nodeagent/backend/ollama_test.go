package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

func newOllama(t *testing.T, url, modelsDir string) *Ollama {
	t.Helper()
	o, err := NewOllama(OllamaConfig{URL: url, ModelsDir: modelsDir, Logger: quietLogger(), UnloadWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func fakeOllama(t *testing.T) (*Ollama, *ollamatest.Fake) {
	t.Helper()
	f := ollamatest.NewFake(t)
	return newOllama(t, f.URL, f.ModelsDir), f
}

func findModel(ms []agentapi.Model, name string) (agentapi.Model, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return agentapi.Model{}, false
}

func TestNewOllamaDefaults(t *testing.T) {
	t.Setenv("OLLAMA_MODELS", "/srv/ollama-models")
	o, err := NewOllama(OllamaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if o.base.String() != DefaultOllamaURL || o.ModelsDir() != "/srv/ollama-models" {
		t.Errorf("base %s models %s", o.base, o.ModelsDir())
	}
	if o.Kind() != agentapi.BackendOllama || o.Simulated() {
		t.Errorf("Kind %q Simulated %v", o.Kind(), o.Simulated())
	}
	t.Setenv("OLLAMA_MODELS", "")
	t.Setenv("HOME", "/home/someone")
	o, err = NewOllama(OllamaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("/home/someone", ".ollama", "models"); o.ModelsDir() != want {
		t.Errorf("models dir %s, want %s", o.ModelsDir(), want)
	}
	if _, err := NewOllama(OllamaConfig{URL: "localhost:11434"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad URL accepted: %v", err)
	}
}

func TestOllamaModelsLoadUnload(t *testing.T) {
	o, f := fakeOllama(t)
	ctx := context.Background()

	ms, err := o.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := findModel(ms, "tiny:latest")
	if !ok || len(ms) != 1 {
		t.Fatalf("models %+v", ms)
	}
	if !m.OnDisk || m.Resident || m.Family != "llama" || m.ParameterSize != "133K" || m.SizeBytes == 0 || m.Digest == "" || m.Embedding {
		t.Errorf("tiny %+v", m)
	}

	if err := o.Load(ctx, "tiny", "10m"); err != nil {
		t.Fatal(err)
	}
	gens := f.RequestsTo("POST", "/api/generate")
	if len(gens) != 1 || !strings.Contains(string(gens[0].Body), `"keep_alive":"10m0s"`) || !strings.Contains(string(gens[0].Body), `"model":"tiny:latest"`) {
		t.Errorf("load request %s", gens[0].Body)
	}
	ms, _ = o.Models(ctx)
	if m, _ := findModel(ms, "tiny:latest"); !m.Resident || m.ExpiresAt.IsZero() {
		t.Errorf("after load %+v", m)
	}

	if err := o.Unload(ctx, "tiny:latest"); err != nil {
		t.Fatal(err)
	}
	ms, _ = o.Models(ctx)
	if m, _ := findModel(ms, "tiny:latest"); m.Resident {
		t.Errorf("after unload %+v", m)
	}
	// Show is asked once per digest, not once per listing.
	if n := len(f.RequestsTo("POST", "/api/show")); n != 2 { // one by Models, one by Load
		t.Errorf("%d show requests", n)
	}
}

func TestOllamaEmbeddingModel(t *testing.T) {
	o, f := fakeOllama(t)
	f.AddModel(t, "embedder", 3, "embedding")
	ctx := context.Background()
	ms, err := o.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := findModel(ms, "embedder:latest"); !m.Embedding {
		t.Errorf("embedder %+v", m)
	}
	if m, _ := findModel(ms, "tiny:latest"); m.Embedding {
		t.Errorf("tiny marked embedding-only")
	}
	if err := o.Load(ctx, "embedder", ""); err != nil {
		t.Fatal(err)
	}
	if len(f.RequestsTo("POST", "/api/embed")) != 1 || len(f.RequestsTo("POST", "/api/generate")) != 0 {
		t.Error("an embedding model must be loaded through /api/embed")
	}
	if got := f.Running(); len(got) != 1 || got[0] != "embedder:latest" {
		t.Errorf("running %v", got)
	}
}

func TestOllamaLoadErrors(t *testing.T) {
	o, _ := fakeOllama(t)
	ctx := context.Background()
	tests := []struct {
		model, keepAlive string
		is               error
	}{
		{"nosuch", "", ErrModelNotFound},
		{"tiny", "soon", ErrInvalid},
		{"tiny", "0", ErrInvalid},
		{"tiny", "0s", ErrInvalid},
	}
	for _, tt := range tests {
		if err := o.Load(ctx, tt.model, tt.keepAlive); !errors.Is(err, tt.is) {
			t.Errorf("Load(%q, %q) = %v, want %v", tt.model, tt.keepAlive, err, tt.is)
		}
	}
	if err := o.Unload(ctx, "nosuch"); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("Unload(nosuch) = %v", err)
	}
	if got := HTTPStatus(o.Load(ctx, "nosuch", "")); got != http.StatusNotFound {
		t.Errorf("status %d", got)
	}
}

func TestParseKeepAlive(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		nil_ bool
		err  bool
	}{
		{"", 0, true, false},
		{"5m", 5 * time.Minute, false, false},
		{"300", 300 * time.Second, false, false},
		{"1.5", 1500 * time.Millisecond, false, false},
		{"-1", -1, false, false},
		{"-5m", -1, false, false},
		{"0", 0, false, false},
		{"NaN", 0, false, true},
		{"Inf", 0, false, true},
		{"1e300", 0, false, true},
		{"forever", 0, false, true},
	}
	for _, tt := range tests {
		d, err := parseKeepAlive(tt.in)
		switch {
		case tt.err:
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: err %v", tt.in, err)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case tt.nil_:
			if d != nil {
				t.Errorf("%q: %v, want nil", tt.in, d)
			}
		case d == nil || d.Duration != tt.want:
			t.Errorf("%q: %v, want %v", tt.in, d, tt.want)
		}
	}
}

func FuzzParseKeepAlive(f *testing.F) {
	for _, s := range []string{"", "5m", "-1", "300", "1.5", "NaN", "1e300", "-0", "9223372036s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseKeepAlive(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: error without ErrInvalid: %v", s, err)
			}
			return
		}
		if d != nil && d.Duration < -1 {
			t.Fatalf("%q: %v: negative values must mean for ever (-1)", s, d.Duration)
		}
		if d != nil {
			// Ollama must read back what we send.
			b, _ := json.Marshal(d)
			var back struct{ D json.RawMessage }
			if err := json.Unmarshal([]byte(`{"D":`+string(b)+`}`), &back); err != nil {
				t.Fatalf("%q: marshals to invalid JSON %s", s, b)
			}
		}
	})
}

// TestOllamaUnloadWaitsUntilGone puts a proxy in front of the fake that keeps reporting the model
// in /api/ps for a few polls after the unload, as real Ollama does while a runner winds down.
func TestOllamaUnloadWaitsUntilGone(t *testing.T) {
	f := ollamatest.NewFake(t)
	target, _ := url.Parse(f.URL)
	var lingering atomic.Int32
	lingering.Store(3)
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/ps" && lingering.Add(-1) >= 0 {
			io.WriteString(w, `{"models":[{"name":"tiny:latest","model":"tiny:latest","size":1,"digest":"d","details":{},"expires_at":"2030-01-01T00:00:00Z","size_vram":0}]}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	o := newOllama(t, front.URL, f.ModelsDir)
	if err := o.Unload(context.Background(), "tiny"); err != nil {
		t.Fatal(err)
	}
	if lingering.Load() >= 0 {
		t.Errorf("Unload returned while ps still listed the model (%d polls left)", lingering.Load())
	}

	// A model that never leaves is an error once UnloadWait has passed, not a hang.
	lingering.Store(1 << 30)
	o.unloadWait = 200 * time.Millisecond
	err := o.Unload(context.Background(), "tiny")
	if err == nil || !strings.Contains(err.Error(), "still resident") {
		t.Errorf("err %v", err)
	}
}

func TestOllamaPull(t *testing.T) {
	o, f := fakeOllama(t)
	f.AddRemote("llama3.2:1b", 9)
	var lines []agentapi.Progress
	if err := o.Pull(context.Background(), "llama3.2:1b", func(p agentapi.Progress) { lines = append(lines, p) }); err != nil {
		t.Fatal(err)
	}
	if len(lines) < 4 || lines[0].Status != "pulling manifest" || lines[len(lines)-1].Status != "success" {
		t.Fatalf("progress %+v", lines)
	}
	var sawBytes bool
	for _, p := range lines {
		sawBytes = sawBytes || (p.Digest != "" && p.Total > 0 && p.Completed == p.Total)
	}
	if !sawBytes {
		t.Errorf("no byte progress: %+v", lines)
	}
	ms, _ := o.Models(context.Background())
	if _, ok := findModel(ms, "llama3.2:1b"); !ok {
		t.Errorf("pulled model not listed: %+v", ms)
	}
}

func TestOllamaPullFailure(t *testing.T) {
	o, _ := fakeOllama(t)
	var lines []agentapi.Progress
	err := o.Pull(context.Background(), "nosuch", func(p agentapi.Progress) { lines = append(lines, p) })
	if err == nil || !strings.Contains(err.Error(), "pull model manifest") {
		t.Fatalf("err %v", err)
	}
	if len(lines) != 1 || lines[0].Status != "pulling manifest" {
		t.Errorf("progress %+v", lines)
	}
}

func TestOllamaDelete(t *testing.T) {
	o, f := fakeOllama(t)
	ctx := context.Background()
	if err := o.Load(ctx, "tiny", ""); err != nil {
		t.Fatal(err)
	}
	if err := o.Delete(ctx, "tiny"); err != nil {
		t.Fatal(err)
	}
	if f.HasModel("tiny") || len(f.Running()) != 0 {
		t.Errorf("still there: model %v running %v", f.HasModel("tiny"), f.Running())
	}
	ms, err := o.Models(ctx)
	if err != nil || len(ms) != 0 {
		t.Errorf("models %+v err %v", ms, err)
	}
	if err := o.Delete(ctx, "tiny"); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestOllamaUnavailable(t *testing.T) {
	o := newOllama(t, closedURL(t), t.TempDir())
	ctx := context.Background()
	checks := map[string]error{
		"models": func() error { _, err := o.Models(ctx); return err }(),
		"load":   o.Load(ctx, "tiny", ""),
		"unload": o.Unload(ctx, "tiny"),
		"pull":   o.Pull(ctx, "tiny", nil),
		"delete": o.Delete(ctx, "tiny"),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrUnavailable) || HTTPStatus(err) != http.StatusBadGateway {
			t.Errorf("%s: %v", name, err)
		}
	}
	rec := newFlushRecorder()
	body := `{"model":"tiny","messages":[]}`
	o.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	if rec.status != http.StatusBadGateway {
		t.Errorf("status %d", rec.status)
	}
	if _, _, code := openAIErr(t, []byte(rec.body())); code == nil || *code != "backend_unavailable" {
		t.Errorf("body %s", rec.body())
	}
}

func TestOllamaServeInference(t *testing.T) {
	o, f := fakeOllama(t)
	tests := []struct {
		name, endpoint, body string
		status               int
		stream               bool
		contains             string
	}{
		{"chat", agentapi.PathChatCompletions, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`, 200, false, `"object":"chat.completion"`},
		{"chat stream", agentapi.PathChatCompletions, `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 200, true, `"object":"chat.completion.chunk"`},
		{"completion", agentapi.PathCompletions, `{"model":"tiny","prompt":"hi"}`, 200, false, `"object":"text_completion"`},
		{"embeddings", agentapi.PathEmbeddings, `{"model":"tiny","input":"hi"}`, 200, false, `"object":"embedding"`},
		{"unknown model", agentapi.PathChatCompletions, `{"model":"nosuch","messages":[{"role":"user","content":"hi"}]}`, 404, false, `model 'nosuch' not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newFlushRecorder()
			o.ServeInference(rec, agentRequest(t, tt.endpoint, tt.body), tt.endpoint, []byte(tt.body))
			if rec.status != tt.status || !strings.Contains(rec.body(), tt.contains) {
				t.Fatalf("%d %s", rec.status, rec.body())
			}
			if tt.status != 200 {
				openAIErr(t, []byte(rec.body()))
			}
			if tt.stream {
				data := sseData(t, rec.body())
				if len(data) < 3 || data[len(data)-1] != "[DONE]" {
					t.Errorf("events %q", data)
				}
				if rec.header.Get("Content-Type") != "text/event-stream" {
					t.Errorf("Content-Type %q", rec.header.Get("Content-Type"))
				}
			}
			reqs := f.RequestsTo("POST", tt.endpoint)
			last := reqs[len(reqs)-1]
			if string(last.Body) != tt.body {
				t.Errorf("body changed on the way: %s", last.Body)
			}
			if last.Header.Get("Authorization") != "" {
				t.Errorf("agent token reached Ollama")
			}
		})
	}
}

func TestOllamaStreamBreak(t *testing.T) {
	o, f := fakeOllama(t)
	f.BreakStreamsAfter(2)
	body := `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	rec := newFlushRecorder()
	o.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	data := sseData(t, rec.body())
	if len(data) != 3 {
		t.Fatalf("events %q", data)
	}
	if _, _, code := openAIErr(t, []byte(data[2])); code == nil || *code != "backend_stream_error" {
		t.Errorf("last event %s", data[2])
	}
}

func blobSHA(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestOllamaExportAndOpenBlob(t *testing.T) {
	o, _ := fakeOllama(t)
	ctx := context.Background()
	m, err := o.Export(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := ollamatest.WriteTinyModel(&want, 0); err != nil {
		t.Fatal(err)
	}
	if m.Model != "tiny:latest" || m.Files["model.gguf"] != blobSHA(want.Bytes()) || len(m.Files) != 1 {
		t.Errorf("manifest %+v", m)
	}
	if len(m.Blobs) != 1 || m.Blobs[0].Size != int64(want.Len()) {
		t.Errorf("blobs %+v", m.Blobs)
	}
	if !strings.Contains(m.Template, ".Messages") || m.Parameters["num_ctx"] != float64(2048) {
		t.Errorf("template %q params %v", m.Template, m.Parameters)
	}

	rc, size, err := o.OpenBlob(ctx, m.Files["model.gguf"])
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if size != int64(want.Len()) || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("blob: %d bytes, size %d", len(got), size)
	}

	for digest, is := range map[string]error{
		"sha256:" + strings.Repeat("0", 64):       ErrBlobNotFound,
		"sha256:../../etc/passwd":                 ErrInvalid,
		"sha256:" + strings.Repeat("A", 64):       ErrInvalid,
		"md5:" + strings.Repeat("0", 32):          ErrInvalid,
		"sha256-" + strings.Repeat("0", 64):       ErrInvalid,
		"sha256:" + strings.Repeat("0", 64) + "/": ErrInvalid,
	} {
		if _, _, err := o.OpenBlob(ctx, digest); !errors.Is(err, is) {
			t.Errorf("OpenBlob(%q) = %v, want %v", digest, err, is)
		}
	}
}

func TestOllamaExportErrors(t *testing.T) {
	o, f := fakeOllama(t)
	ctx := context.Background()
	if _, err := o.Export(ctx, "nosuch"); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("nosuch: %v", err)
	}
	if _, err := o.Export(ctx, "../../etc"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
	writeManifest := func(name, content string) {
		p := filepath.Join(f.ModelsDir, "manifests", "registry.ollama.ai", "library", name, "latest")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		name, manifest string
		is             error
	}{
		{"garbage", `{`, ErrInvalid},
		{"traversal", `{"layers":[{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:../../x","size":1}]}`, ErrInvalid},
		{"adapter", `{"layers":[{"mediaType":"application/vnd.ollama.image.adapter","digest":"` + d + `","size":1}]}`, ErrUnsupported},
		{"no weights", `{"layers":[]}`, ErrUnsupported},
		{"missing template blob", `{"layers":[{"mediaType":"application/vnd.ollama.image.template","digest":"` + d + `","size":1}]}`, ErrBlobNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := strings.ReplaceAll(tt.name, " ", "-")
			writeManifest(name, tt.manifest)
			if _, err := o.Export(ctx, name); !errors.Is(err, tt.is) {
				t.Errorf("err %v, want %v", err, tt.is)
			}
		})
	}
}

// fetchFrom serves blobs from a source backend, as the agent's copy route would over HTTP.
func fetchFrom(src *Ollama, calls *[]string) func(context.Context, string) (io.ReadCloser, error) {
	return func(ctx context.Context, digest string) (io.ReadCloser, error) {
		*calls = append(*calls, digest)
		rc, _, err := src.OpenBlob(ctx, digest)
		return rc, err
	}
}

func TestOllamaImport(t *testing.T) {
	src, _ := fakeOllama(t)
	dst, df := fakeOllama(t)
	ctx := context.Background()
	if err := dst.Delete(ctx, "tiny"); err != nil { // an empty target
		t.Fatal(err)
	}
	m, err := src.Export(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	m.Model = "copied"
	m.System = "be brief"
	m.License = []string{"MIT"}
	var calls []string
	var lines []agentapi.Progress
	if err := dst.Import(ctx, m, fetchFrom(src, &calls), func(p agentapi.Progress) { lines = append(lines, p) }); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != m.Files["model.gguf"] {
		t.Errorf("fetched %v", calls)
	}
	if !df.HasModel("copied") || !df.HasBlob(m.Files["model.gguf"]) {
		t.Fatal("model not created")
	}
	if lines[len(lines)-1].Status != "success" {
		t.Errorf("progress %+v", lines)
	}
	creates := df.RequestsTo("POST", "/api/create")
	var cr map[string]any
	_ = json.Unmarshal(creates[len(creates)-1].Body, &cr)
	if cr["model"] != "copied:latest" || cr["system"] != "be brief" || cr["template"] != m.Template {
		t.Errorf("create request %s", creates[len(creates)-1].Body)
	}
	// What the target now exports is what the source exported.
	back, err := dst.Export(ctx, "copied")
	if err != nil {
		t.Fatal(err)
	}
	if back.Files["model.gguf"] != m.Files["model.gguf"] || back.Template != m.Template || back.System != "be brief" || len(back.License) != 1 {
		t.Errorf("round trip %+v", back)
	}

	// A second import finds the blob and fetches nothing.
	calls = nil
	m.Model = "copied-again"
	if err := dst.Import(ctx, m, fetchFrom(src, &calls), nil); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Errorf("fetched %v although the blob was there", calls)
	}
}

func TestOllamaImportRejectsBadBlobs(t *testing.T) {
	src, _ := fakeOllama(t)
	ctx := context.Background()
	m, err := src.Export(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	good, _, _ := src.OpenBlob(ctx, m.Files["model.gguf"])
	data, _ := io.ReadAll(good)
	good.Close()

	tampered := bytes.Clone(data)
	tampered[len(tampered)/2] ^= 1
	tests := []struct {
		name  string
		bytes []byte
		err   error
		is    error
	}{
		{"tampered", tampered, nil, ErrDigestMismatch},
		{"truncated", data[:len(data)-10], nil, ErrDigestMismatch},
		{"too long", append(bytes.Clone(data), 'x'), nil, ErrDigestMismatch},
		{"fetch fails", nil, errors.New("peer gone"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, df := fakeOllama(t)
			if err := dst.Delete(ctx, "tiny"); err != nil {
				t.Fatal(err)
			}
			m := m
			m.Model = "victim"
			err := dst.Import(ctx, m, func(context.Context, string) (io.ReadCloser, error) {
				if tt.err != nil {
					return nil, tt.err
				}
				return io.NopCloser(bytes.NewReader(tt.bytes)), nil
			}, nil)
			if err == nil {
				t.Fatal("import succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err %v, want %v", err, tt.is)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("err %v does not wrap the fetch error", err)
			}
			if n := len(df.RequestsTo("POST", "/api/create")); n != 0 || df.HasModel("victim") {
				t.Errorf("a model was created (%d create calls)", n)
			}
		})
	}
}

func TestValidateImport(t *testing.T) {
	d := "sha256:" + strings.Repeat("b", 64)
	ok := agentapi.ModelManifest{Model: "m", Files: map[string]string{"model.gguf": d}, Blobs: []agentapi.Blob{{Digest: d, Size: 10}}}
	mutate := func(f func(*agentapi.ModelManifest)) agentapi.ModelManifest {
		m := ok
		m.Files = map[string]string{"model.gguf": d}
		m.Blobs = []agentapi.Blob{{Digest: d, Size: 10}}
		f(&m)
		return m
	}
	tests := []struct {
		name string
		m    agentapi.ModelManifest
		ok   bool
	}{
		{"ok", ok, true},
		{"bad name", mutate(func(m *agentapi.ModelManifest) { m.Model = "../x" }), false},
		{"no files", mutate(func(m *agentapi.ModelManifest) { m.Files = nil }), false},
		{"path in file name", mutate(func(m *agentapi.ModelManifest) { m.Files = map[string]string{"../model.gguf": d} }), false},
		{"dir in file name", mutate(func(m *agentapi.ModelManifest) { m.Files = map[string]string{"a/model.gguf": d} }), false},
		{"not gguf", mutate(func(m *agentapi.ModelManifest) { m.Files = map[string]string{"model.bin": d} }), false},
		{"file digest not a blob", mutate(func(m *agentapi.ModelManifest) { m.Blobs = nil }), false},
		{"bad digest", mutate(func(m *agentapi.ModelManifest) { m.Blobs[0].Digest = "sha256:zz" }), false},
		{"negative size", mutate(func(m *agentapi.ModelManifest) { m.Blobs[0].Size = -1 }), false},
		{"two sizes", mutate(func(m *agentapi.ModelManifest) { m.Blobs = append(m.Blobs, agentapi.Blob{Digest: d, Size: 11}) }), false},
	}
	for _, tt := range tests {
		_, err := validateImport(tt.m)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: err %v", tt.name, err)
		}
	}
}

func TestProgressStep(t *testing.T) {
	if progressStep(10) != 1<<20 || progressStep(10<<30) != (10<<30)/100 {
		t.Errorf("steps %d %d", progressStep(10), progressStep(10<<30))
	}
	// A 10 MiB blob reports at most about ten times, plus start and end.
	var n int
	hr := &hashingReader{r: bytes.NewReader(make([]byte, 10<<20)), h: sha256.New(), step: progressStep(10 << 20), report: func(int64) { n++ }}
	io.Copy(io.Discard, hr)
	if n == 0 || n > 10 {
		t.Errorf("%d reports", n)
	}
}
