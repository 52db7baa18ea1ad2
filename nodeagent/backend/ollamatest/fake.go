package ollamatest

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// recorded holds real Ollama's answers (see TestRecordGolden), which the fake serves or models
// its answers on.
//
//go:embed testdata/*.json testdata/*.ndjson testdata/*.sse
var recorded embed.FS

// Recorded returns the golden file name from testdata/ (what real Ollama answered).
func Recorded(name string) []byte {
	b, err := recorded.ReadFile("testdata/" + name)
	if err != nil {
		panic(fmt.Sprintf("ollamatest: no recorded file %q: %v", name, err))
	}
	return b
}

// Ollama's layer media types, as it writes them in manifests.
const (
	mediaManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	mediaConfig    = "application/vnd.docker.container.image.v1+json"
	mediaModel     = "application/vnd.ollama.image.model"
	mediaProjector = "application/vnd.ollama.image.projector"
	mediaTemplate  = "application/vnd.ollama.image.template"
	mediaSystem    = "application/vnd.ollama.image.system"
	mediaParams    = "application/vnd.ollama.image.params"
	mediaLicense   = "application/vnd.ollama.image.license"
)

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// Fake is an in-process stand-in for Ollama for unit tests. It keeps models the way Ollama does,
// as blobs and manifests in a models directory (so export code can read it), and answers
// /api/version, /api/tags, /api/ps, /api/show, /api/pull (NDJSON progress), /api/generate (load and
// unload only), /api/embed (load only), /api/delete, /api/blobs (HEAD and POST), /api/create and
// the OpenAI routes /v1/chat/completions (JSON, or SSE flushed event by event), /v1/completions and
// /v1/embeddings with bodies recorded from real Ollama. It does no inference: generated text is
// the recording's. Anything else is a 404, as in Ollama.
type Fake struct {
	*httptest.Server
	// ModelsDir is the fake's OLLAMA_MODELS.
	ModelsDir string

	mu          sync.Mutex
	caps        map[string][]string
	running     map[string]time.Time
	registry    map[string]int64
	requests    []Request
	breakStream int
}

// defaultCaps are the tiny model's capabilities as real Ollama reports them.
var defaultCaps = []string{"completion", "tools"}

// NewFake starts a fake Ollama holding one model, "tiny:latest" (WriteTinyModel seed 0, with
// TinyModelfile's template and parameters), none of it loaded. It stops with the test.
func NewFake(t testing.TB) *Fake {
	t.Helper()
	f := &Fake{
		ModelsDir: t.TempDir(),
		caps:      map[string][]string{},
		running:   map[string]time.Time{},
		registry:  map[string]int64{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/version", f.version)
	mux.HandleFunc("GET /api/tags", f.tags)
	mux.HandleFunc("GET /api/ps", f.ps)
	mux.HandleFunc("POST /api/show", f.show)
	mux.HandleFunc("POST /api/pull", f.pull)
	mux.HandleFunc("POST /api/generate", f.generate)
	mux.HandleFunc("POST /api/embed", f.embed)
	mux.HandleFunc("DELETE /api/delete", f.delete)
	mux.HandleFunc("HEAD /api/blobs/{digest}", f.headBlob)
	mux.HandleFunc("POST /api/blobs/{digest}", f.postBlob)
	mux.HandleFunc("POST /api/create", f.create)
	mux.HandleFunc("POST /v1/chat/completions", f.openAI("chat.json", "chat-stream.sse", "chat-notfound.json"))
	mux.HandleFunc("POST /v1/completions", f.openAI("completion.json", "", "chat-notfound.json"))
	mux.HandleFunc("POST /v1/embeddings", f.openAI("embeddings.json", "", "embeddings-notfound.json"))
	f.Server = httptest.NewServer(f.record(mux))
	t.Cleanup(f.Close)
	f.AddModel(t, "tiny", 0)
	return f
}

// AddModel creates a tiny model (WriteTinyModel(seed)) under name, with TinyModelfile's
// settings. caps, when given, replace its capabilities (e.g. "embedding" for an embedding-only
// model).
func (f *Fake) AddModel(t testing.TB, name string, seed int64, caps ...string) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTinyModel(&buf, seed); err != nil {
		t.Fatal(err)
	}
	digest, err := f.putBlob(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	req := api.CreateRequest{
		Model:      name,
		Files:      map[string]string{"model.gguf": digest},
		Template:   tinyTemplate(),
		Parameters: map[string]any{"num_predict": 64, "num_ctx": 2048, "num_thread": 1},
	}
	if _, err := f.createModel(req, func(api.ProgressResponse) {}); err != nil {
		t.Fatal(err)
	}
	if len(caps) > 0 {
		f.mu.Lock()
		f.caps[canonical(name)] = caps
		f.mu.Unlock()
	}
}

// tinyTemplate is the TEMPLATE of TinyModelfile.
func tinyTemplate() string {
	s := TinyModelfile[strings.Index(TinyModelfile, `"""`)+3:]
	return s[:strings.Index(s, `"""`)]
}

// AddRemote makes name pullable: /api/pull then creates it as AddModel(name, seed) would.
func (f *Fake) AddRemote(name string, seed int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registry[canonical(name)] = seed
}

// BreakStreamsAfter makes streaming chat answers drop the connection after n events (0: never).
func (f *Fake) BreakStreamsAfter(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.breakStream = n
}

// Running lists the canonical names of the loaded models, sorted.
func (f *Fake) Running() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.running {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Requests returns the requests received so far, in order.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// RequestsTo returns the requests received for path, in order.
func (f *Fake) RequestsTo(method, path string) []Request {
	var out []Request
	for _, r := range f.Requests() {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// HasModel reports whether a manifest for name exists.
func (f *Fake) HasModel(name string) bool {
	_, err := os.Stat(f.manifestFile(name))
	return err == nil
}

// HasBlob reports whether the blob with digest is stored.
func (f *Fake) HasBlob(digest string) bool {
	p, err := f.blobFile(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

func (f *Fake) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/api/blobs/") {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		f.mu.Lock()
		f.requests = append(f.requests, Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		f.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func canonical(name string) string {
	n := model.ParseName(name)
	if !n.IsValid() {
		return name
	}
	return n.DisplayShortest()
}

func (f *Fake) manifestFile(name string) string {
	n := model.ParseName(name)
	if !n.IsValid() {
		return filepath.Join(f.ModelsDir, "manifests", "invalid")
	}
	return filepath.Join(f.ModelsDir, "manifests", n.Filepath())
}

var blobDigestRE = regexp.MustCompile(`^sha256[:-][0-9a-fA-F]{64}$`)

func (f *Fake) blobFile(digest string) (string, error) {
	if !blobDigestRE.MatchString(digest) {
		return "", errors.New("invalid digest format")
	}
	return filepath.Join(f.ModelsDir, "blobs", strings.ReplaceAll(digest, ":", "-")), nil
}

func (f *Fake) putBlob(data []byte) (string, error) {
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	p, _ := f.blobFile(digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return digest, os.WriteFile(p, data, 0o644)
}

type fakeLayer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type fakeManifest struct {
	SchemaVersion int         `json:"schemaVersion"`
	MediaType     string      `json:"mediaType"`
	Config        fakeLayer   `json:"config"`
	Layers        []fakeLayer `json:"layers"`
}

// fakeEntry is one model as the fake lists it.
type fakeEntry struct {
	name     string
	manifest fakeManifest
	digest   string
	modified time.Time
}

func (e fakeEntry) size() int64 {
	n := e.manifest.Config.Size
	for _, l := range e.manifest.Layers {
		n += l.Size
	}
	return n
}

func (f *Fake) readManifest(name string) (fakeEntry, error) {
	p := f.manifestFile(name)
	data, err := os.ReadFile(p)
	if err != nil {
		return fakeEntry{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return fakeEntry{}, err
	}
	var m fakeManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fakeEntry{}, err
	}
	sum := sha256.Sum256(data)
	return fakeEntry{name: canonical(name), manifest: m, digest: hex.EncodeToString(sum[:]), modified: fi.ModTime()}, nil
}

func (f *Fake) entries() ([]fakeEntry, error) {
	root := filepath.Join(f.ModelsDir, "manifests")
	var out []fakeEntry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 4 {
			return nil
		}
		e, err := f.readManifest(parts[0] + "/" + parts[1] + "/" + parts[2] + ":" + parts[3])
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, err
}

// details are the tiny model's, as real Ollama lists them.
func details() api.ModelDetails {
	var tags api.ListResponse
	if err := json.Unmarshal(Recorded("tags.json"), &tags); err != nil || len(tags.Models) == 0 {
		panic(fmt.Sprintf("ollamatest: bad recorded tags.json: %v", err))
	}
	return tags.Models[0].Details
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func ollamaError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func notFound(w http.ResponseWriter, name string) {
	ollamaError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
}

func (f *Fake) version(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(Recorded("version.json"))
}

func (f *Fake) tags(w http.ResponseWriter, _ *http.Request) {
	es, err := f.entries()
	if err != nil {
		ollamaError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp := api.ListResponse{Models: []api.ListModelResponse{}}
	for _, e := range es {
		resp.Models = append(resp.Models, api.ListModelResponse{
			Name: e.name, Model: e.name, ModifiedAt: e.modified, Size: e.size(), Digest: e.digest, Details: details(),
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

func (f *Fake) ps(w http.ResponseWriter, _ *http.Request) {
	resp := api.ProcessResponse{Models: []api.ProcessModelResponse{}}
	for _, name := range f.Running() {
		e, err := f.readManifest(name)
		if err != nil {
			continue
		}
		f.mu.Lock()
		exp := f.running[name]
		f.mu.Unlock()
		resp.Models = append(resp.Models, api.ProcessModelResponse{
			Name: name, Model: name, Size: e.size() * 2, Digest: e.digest, Details: details(),
			ExpiresAt: exp, SizeVRAM: 0, ContextLength: 2048,
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			ollamaError(w, http.StatusBadRequest, "missing request body")
		} else {
			ollamaError(w, http.StatusBadRequest, err.Error())
		}
		return false
	}
	return true
}

func (f *Fake) capsOf(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.caps[canonical(name)]; ok {
		return c
	}
	return defaultCaps
}

func (f *Fake) layerText(m fakeManifest, media string) []string {
	var out []string
	for _, l := range m.Layers {
		if l.MediaType != media {
			continue
		}
		p, err := f.blobFile(l.Digest)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(p)
		if err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

func (f *Fake) show(w http.ResponseWriter, r *http.Request) {
	var req api.ShowRequest
	if !decode(w, r, &req) {
		return
	}
	e, err := f.readManifest(req.Model)
	if err != nil {
		notFound(w, req.Model)
		return
	}
	var resp api.ShowResponse
	if err := json.Unmarshal(Recorded("show.json"), &resp); err != nil {
		ollamaError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp.Template = strings.Join(f.layerText(e.manifest, mediaTemplate), "")
	resp.System = strings.Join(f.layerText(e.manifest, mediaSystem), "")
	resp.License = strings.Join(f.layerText(e.manifest, mediaLicense), "\n")
	resp.Parameters = ""
	for _, p := range f.layerText(e.manifest, mediaParams) {
		var params map[string]any
		_ = json.Unmarshal([]byte(p), &params)
		keys := make([]string, 0, len(params))
		for k := range params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var lines []string
		for _, k := range keys {
			lines = append(lines, fmt.Sprintf("%-30s %v", k, params[k]))
		}
		resp.Parameters = strings.Join(lines, "\n")
	}
	resp.Capabilities = nil
	for _, c := range f.capsOf(req.Model) {
		resp.Capabilities = append(resp.Capabilities, model.Capability(c))
	}
	resp.ModifiedAt = e.modified
	writeJSON(w, http.StatusOK, resp)
}

// ndjson starts a streamed answer and returns a function that writes and flushes one line.
func ndjson(w http.ResponseWriter) func(v any) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	return func(v any) {
		b, _ := json.Marshal(v)
		_, _ = w.Write(append(b, '\n'))
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (f *Fake) pull(w http.ResponseWriter, r *http.Request) {
	var req api.PullRequest
	if !decode(w, r, &req) {
		return
	}
	name := req.Model
	n := model.ParseName(name)
	if !n.IsValid() {
		ollamaError(w, http.StatusBadRequest, "invalid model name")
		return
	}
	send := ndjson(w)
	send(api.ProgressResponse{Status: "pulling manifest"})
	f.mu.Lock()
	seed, ok := f.registry[canonical(name)]
	f.mu.Unlock()
	if !ok {
		// Real Ollama's answer when no registry can be reached, with this model's path.
		var lines []map[string]string
		for _, l := range bytes.Split(bytes.TrimSpace(Recorded("pull-error.ndjson")), []byte("\n")) {
			var m map[string]string
			_ = json.Unmarshal(l, &m)
			lines = append(lines, m)
		}
		msg := strings.Replace(lines[len(lines)-1]["error"], "library/nosuch/manifests/latest",
			n.Namespace+"/"+n.Model+"/manifests/"+n.Tag, 1)
		send(map[string]string{"error": msg})
		return
	}
	var buf bytes.Buffer
	_ = WriteTinyModel(&buf, seed)
	sum := sha256.Sum256(buf.Bytes())
	digest := "sha256:" + hex.EncodeToString(sum[:])
	total := int64(buf.Len())
	status := "pulling " + digest[7:19]
	send(api.ProgressResponse{Status: status, Digest: digest, Total: total})
	send(api.ProgressResponse{Status: status, Digest: digest, Total: total, Completed: total / 2})
	send(api.ProgressResponse{Status: status, Digest: digest, Total: total, Completed: total})
	if _, err := f.putBlob(buf.Bytes()); err != nil {
		send(map[string]string{"error": err.Error()})
		return
	}
	send(api.ProgressResponse{Status: "verifying sha256 digest"})
	creq := api.CreateRequest{
		Model: name, Files: map[string]string{"model.gguf": digest}, Template: tinyTemplate(),
		Parameters: map[string]any{"num_predict": 64, "num_ctx": 2048, "num_thread": 1},
	}
	if _, err := f.createModel(creq, func(api.ProgressResponse) {}); err != nil {
		send(map[string]string{"error": err.Error()})
		return
	}
	send(api.ProgressResponse{Status: "writing manifest"})
	send(api.ProgressResponse{Status: "success"})
}

func (f *Fake) generate(w http.ResponseWriter, r *http.Request) {
	var req api.GenerateRequest
	if !decode(w, r, &req) {
		return
	}
	if !f.HasModel(req.Model) {
		notFound(w, req.Model)
		return
	}
	name := canonical(req.Model)
	if req.Prompt == "" && req.KeepAlive != nil && req.KeepAlive.Duration == 0 {
		f.mu.Lock()
		delete(f.running, name)
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, api.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "unload"})
		return
	}
	if !slices.Contains(f.capsOf(name), "completion") {
		ollamaError(w, http.StatusBadRequest, fmt.Sprintf("%q does not support generate", req.Model))
		return
	}
	if req.Prompt != "" {
		ollamaError(w, http.StatusNotImplemented, "ollamatest fake: /api/generate with a prompt is not faked; use ollamatest.Start")
		return
	}
	f.load(name, req.KeepAlive)
	writeJSON(w, http.StatusOK, api.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "load"})
}

func (f *Fake) load(name string, keepAlive *api.Duration) {
	ka := 5 * time.Minute
	if keepAlive != nil {
		ka = keepAlive.Duration
	}
	exp := time.Now().Add(ka)
	if ka < 0 {
		exp = time.Date(2318, 1, 1, 0, 0, 0, 0, time.UTC) // what "for ever" looks like in Ollama's ps
	}
	f.mu.Lock()
	f.running[name] = exp
	f.mu.Unlock()
}

func (f *Fake) embed(w http.ResponseWriter, r *http.Request) {
	var req api.EmbedRequest
	if !decode(w, r, &req) {
		return
	}
	if !f.HasModel(req.Model) {
		notFound(w, req.Model)
		return
	}
	if s, ok := req.Input.(string); !ok || s != "" {
		ollamaError(w, http.StatusNotImplemented, "ollamatest fake: /api/embed with input is not faked; use ollamatest.Start")
		return
	}
	f.load(canonical(req.Model), req.KeepAlive)
	writeJSON(w, http.StatusOK, api.EmbedResponse{Model: req.Model, Embeddings: [][]float32{}})
}

func (f *Fake) delete(w http.ResponseWriter, r *http.Request) {
	var req api.DeleteRequest
	if !decode(w, r, &req) {
		return
	}
	if !f.HasModel(req.Model) {
		notFound(w, req.Model)
		return
	}
	if err := os.Remove(f.manifestFile(req.Model)); err != nil {
		ollamaError(w, http.StatusInternalServerError, err.Error())
		return
	}
	f.mu.Lock()
	delete(f.running, canonical(req.Model))
	f.mu.Unlock()
	f.pruneBlobs()
	w.WriteHeader(http.StatusOK)
}

// pruneBlobs removes blobs no manifest uses, as Ollama does after a delete.
func (f *Fake) pruneBlobs() {
	es, err := f.entries()
	if err != nil {
		return
	}
	used := map[string]bool{}
	for _, e := range es {
		used[strings.ReplaceAll(e.manifest.Config.Digest, ":", "-")] = true
		for _, l := range e.manifest.Layers {
			used[strings.ReplaceAll(l.Digest, ":", "-")] = true
		}
	}
	dir := filepath.Join(f.ModelsDir, "blobs")
	ents, _ := os.ReadDir(dir)
	for _, d := range ents {
		if !used[d.Name()] {
			_ = os.Remove(filepath.Join(dir, d.Name()))
		}
	}
}

func (f *Fake) headBlob(w http.ResponseWriter, r *http.Request) {
	p, err := f.blobFile(r.PathValue("digest"))
	if err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := os.Stat(p); err != nil {
		ollamaError(w, http.StatusNotFound, fmt.Sprintf("blob %q not found", r.PathValue("digest")))
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (f *Fake) postBlob(w http.ResponseWriter, r *http.Request) {
	want := r.PathValue("digest")
	p, err := f.blobFile(want)
	if err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := os.Stat(p); err == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		ollamaError(w, http.StatusInternalServerError, err.Error())
		return
	}
	sum := sha256.Sum256(data)
	got := "sha256:" + hex.EncodeToString(sum[:])
	// Like Ollama, the bytes are stored under their own digest whatever the request said.
	if _, err := f.putBlob(data); err != nil {
		ollamaError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if got != want {
		ollamaError(w, http.StatusBadRequest, fmt.Sprintf("digest mismatch, expected %q, got %q", want, got))
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (f *Fake) create(w http.ResponseWriter, r *http.Request) {
	var req api.CreateRequest
	if !decode(w, r, &req) {
		return
	}
	for file := range req.Files {
		if !fs.ValidPath(file) {
			ollamaError(w, http.StatusBadRequest, "file path must be relative")
			return
		}
	}
	if !model.ParseName(req.Model).IsValid() {
		ollamaError(w, http.StatusBadRequest, "invalid model name")
		return
	}
	if len(req.Files) == 0 {
		ollamaError(w, http.StatusBadRequest, "neither 'from' or 'files' was specified")
		return
	}
	send := ndjson(w)
	if _, err := f.createModel(req, func(p api.ProgressResponse) { send(p) }); err != nil {
		send(map[string]string{"error": err.Error()})
		return
	}
	send(api.ProgressResponse{Status: "success"})
}

// createModel writes the blobs and manifest for req the way Ollama's create does, reporting the
// same progress lines (without the final "success").
func (f *Fake) createModel(req api.CreateRequest, progress func(api.ProgressResponse)) (fakeManifest, error) {
	progress(api.ProgressResponse{Status: "parsing GGUF"})
	var layers []fakeLayer
	files := make([]string, 0, len(req.Files))
	for file := range req.Files {
		files = append(files, file)
	}
	sort.Strings(files)
	for _, file := range files {
		digest := req.Files[file]
		p, err := f.blobFile(digest)
		if err != nil {
			return fakeManifest{}, err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fakeManifest{}, err
		}
		if !bytes.HasPrefix(data, []byte("GGUF")) {
			return fakeManifest{}, errors.New("supplied file was not in GGUF format")
		}
		media := mediaModel
		if strings.Contains(file, "projector") {
			media = mediaProjector
		}
		progress(api.ProgressResponse{Status: "using existing layer " + digest})
		layers = append(layers, fakeLayer{MediaType: media, Digest: digest, Size: int64(len(data))})
	}
	addText := func(media string, data []byte) error {
		digest := "sha256:" + hex.EncodeToString(sha256Sum(data))
		status := "creating new layer "
		if f.HasBlob(digest) {
			status = "using existing layer "
		}
		if _, err := f.putBlob(data); err != nil {
			return err
		}
		progress(api.ProgressResponse{Status: status + digest})
		layers = append(layers, fakeLayer{MediaType: media, Digest: digest, Size: int64(len(data))})
		return nil
	}
	if req.Template != "" {
		if err := addText(mediaTemplate, []byte(req.Template)); err != nil {
			return fakeManifest{}, err
		}
	}
	if req.System != "" {
		if err := addText(mediaSystem, []byte(req.System)); err != nil {
			return fakeManifest{}, err
		}
	}
	for _, l := range licenses(req.License) {
		if err := addText(mediaLicense, []byte(l)); err != nil {
			return fakeManifest{}, err
		}
	}
	if len(req.Parameters) > 0 {
		var buf bytes.Buffer
		_ = json.NewEncoder(&buf).Encode(req.Parameters)
		if err := addText(mediaParams, buf.Bytes()); err != nil {
			return fakeManifest{}, err
		}
	}
	d := details()
	cfg := map[string]any{
		"model_format": d.Format, "model_family": d.Family, "model_families": d.Families,
		"model_type": d.ParameterSize, "file_type": d.QuantizationLevel,
		"architecture": "amd64", "os": "linux",
	}
	for k, v := range map[string]string{"renderer": req.Renderer, "parser": req.Parser, "requires": req.Requires} {
		if v != "" {
			cfg[k] = v
		}
	}
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, l.Digest)
	}
	cfg["rootfs"] = map[string]any{"type": "layers", "diff_ids": diffIDs}
	var cbuf bytes.Buffer
	_ = json.NewEncoder(&cbuf).Encode(cfg)
	cdigest, err := f.putBlob(cbuf.Bytes())
	if err != nil {
		return fakeManifest{}, err
	}
	m := fakeManifest{
		SchemaVersion: 2, MediaType: mediaManifest,
		Config: fakeLayer{MediaType: mediaConfig, Digest: cdigest, Size: int64(cbuf.Len())},
		Layers: layers,
	}
	progress(api.ProgressResponse{Status: "writing manifest"})
	data, _ := json.Marshal(m)
	p := f.manifestFile(req.Model)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fakeManifest{}, err
	}
	return m, os.WriteFile(p, data, 0o644)
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func licenses(v any) []string {
	switch l := v.(type) {
	case string:
		return []string{l}
	case []string:
		return l
	case []any:
		var out []string
		for _, x := range l {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// openAI answers an OpenAI route with the recorded body (model name swapped for the request's),
// streaming the recorded SSE events one by one where the request streams and stream is set.
func (f *Fake) openAI(body, stream, missing string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error","param":null,"code":null}}`+"\n", err.Error())
			return
		}
		if !f.HasModel(req.Model) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write(swapModel(Recorded(missing), "nosuch", req.Model))
			return
		}
		f.load(canonical(req.Model), nil)
		if !req.Stream || stream == "" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(swapModel(Recorded(body), "tiny", req.Model))
			return
		}
		f.mu.Lock()
		breakAfter := f.breakStream
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Connection", "keep-alive")
		flusher, _ := w.(http.Flusher)
		events := bytes.SplitAfter(Recorded(stream), []byte("\n\n"))
		for i, ev := range events {
			if len(bytes.TrimSpace(ev)) == 0 {
				continue
			}
			if breakAfter > 0 && i == breakAfter {
				// Drop the connection mid-stream, as a crashing backend would.
				panic(http.ErrAbortHandler)
			}
			_, _ = w.Write(swapModel(ev, "tiny", req.Model))
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// swapModel replaces the recorded model name in a body with the requested one.
func swapModel(b []byte, recordedName, name string) []byte {
	q, _ := json.Marshal(name)
	out := bytes.ReplaceAll(b, []byte(`"model":"`+recordedName+`"`), append([]byte(`"model":`), q...))
	// Error messages quote the name: 'nosuch' and \"nosuch\".
	inner := bytes.Trim(q, `"`)
	out = bytes.ReplaceAll(out, []byte(`'`+recordedName+`'`), append(append([]byte(`'`), inner...), '\''))
	out = bytes.ReplaceAll(out, []byte(`\"`+recordedName+`\"`), append(append([]byte(`\"`), inner...), '\\', '"'))
	return out
}
