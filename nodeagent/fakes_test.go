package nodeagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/herd-llm/herd/internal/fakeclock"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
}

// fakeBackend is an in-memory Backend. Its ServeInference runs serve, which tests set to write
// whatever response they need (SSE with Flusher, JSON, errors).
type fakeBackend struct {
	kind  string
	sim   bool
	slots int

	mu        sync.Mutex
	models    []agentapi.Model
	modelsErr error
	serve     func(w http.ResponseWriter, r *http.Request, endpoint string, body []byte)
	served    int
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) Kind() string {
	if f.kind == "" {
		return agentapi.BackendOllama
	}
	return f.kind
}

func (f *fakeBackend) Simulated() bool { return f.sim }

func (f *fakeBackend) ServeInference(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	f.mu.Lock()
	f.served++
	serve := f.serve
	f.mu.Unlock()
	if serve == nil {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
		return
	}
	serve(w, r, endpoint, body)
}

func (f *fakeBackend) Models(context.Context) ([]agentapi.Model, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.modelsErr != nil {
		return nil, f.modelsErr
	}
	return append([]agentapi.Model(nil), f.models...), nil
}

// locked runs fn holding the fake's lock: tests read and change a fake's fields this way while
// the agent's handlers use it.
func (f *fakeBackend) locked(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeBackend) setServe(fn func(w http.ResponseWriter, r *http.Request, endpoint string, body []byte)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serve = fn
}

func (f *fakeBackend) servedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served
}

// slotsBackend also says how many slots it has.
type slotsBackend struct{ *fakeBackend }

func (s slotsBackend) Slots() int { return s.slots }

// statusErr is a backend error that carries its HTTP status.
type statusErr struct {
	status int
	msg    string
}

func (e *statusErr) Error() string   { return e.msg }
func (e *statusErr) HTTPStatus() int { return e.status }

// managerBackend is a fakeBackend that can pull, load, unload and delete.
type managerBackend struct {
	*fakeBackend
	calls   []string
	pullErr error
	loadErr error
}

var _ ModelManager = (*managerBackend)(nil)

func (m *managerBackend) record(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, s)
}

func (m *managerBackend) Pull(ctx context.Context, model string, progress func(agentapi.Progress)) error {
	m.record("pull " + model)
	for i := int64(1); i <= 3; i++ {
		progress(agentapi.Progress{Status: "pulling", Digest: "sha256:aa", Total: 3, Completed: i})
	}
	m.mu.Lock()
	pullErr := m.pullErr
	m.mu.Unlock()
	if pullErr != nil {
		return pullErr
	}
	// A backend's own final line must not be doubled by the agent's.
	progress(agentapi.Progress{Status: "success"})
	m.mu.Lock()
	m.models = append(m.models, agentapi.Model{Name: model, OnDisk: true})
	m.mu.Unlock()
	return nil
}

func (m *managerBackend) Load(_ context.Context, model, keepAlive string) error {
	m.record("load " + model + " " + keepAlive)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loadErr != nil {
		return m.loadErr
	}
	for i := range m.models {
		if m.models[i].Name == model {
			m.models[i].Resident = true
		}
	}
	return nil
}

func (m *managerBackend) Unload(_ context.Context, model string) error {
	m.record("unload " + model)
	return nil
}

func (m *managerBackend) Delete(_ context.Context, model string) error {
	m.record("delete " + model)
	return nil
}

// blobStore is a fakeBackend that exports models from and imports models into memory blobs.
type blobStore struct {
	*fakeBackend
	manifests map[string]agentapi.ModelManifest
	blobs     map[string][]byte
	// corrupt, when set, is served instead of the real bytes of that digest.
	corrupt map[string][]byte
}

var (
	_ ModelExporter = (*blobStore)(nil)
	_ ModelImporter = (*blobStore)(nil)
)

func newBlobStore() *blobStore {
	return &blobStore{
		fakeBackend: &fakeBackend{},
		manifests:   map[string]agentapi.ModelManifest{},
		blobs:       map[string][]byte{},
		corrupt:     map[string][]byte{},
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// addModel stores a model made of the given files.
func (s *blobStore) addModel(name string, files map[string][]byte) agentapi.ModelManifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := agentapi.ModelManifest{Model: name, Files: map[string]string{}, Template: "{{ .Prompt }}"}
	for fname, content := range files {
		d := digestOf(content)
		s.blobs[d] = content
		m.Files[fname] = d
		m.Blobs = append(m.Blobs, agentapi.Blob{Digest: d, Size: int64(len(content))})
	}
	s.manifests[name] = m
	return m
}

func (s *blobStore) Export(_ context.Context, model string) (agentapi.ModelManifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.manifests[model]
	if !ok {
		return agentapi.ModelManifest{}, &statusErr{status: http.StatusNotFound, msg: "model " + model + " not found"}
	}
	return m, nil
}

func (s *blobStore) OpenBlob(_ context.Context, digest string) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[digest]
	if !ok {
		return nil, 0, &statusErr{status: http.StatusNotFound, msg: "blob " + digest + " not found"}
	}
	if c, ok := s.corrupt[digest]; ok {
		b = c
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (s *blobStore) Import(ctx context.Context, m agentapi.ModelManifest, fetch func(ctx context.Context, digest string) (io.ReadCloser, error), progress func(agentapi.Progress)) error {
	for _, b := range m.Blobs {
		s.mu.Lock()
		_, have := s.blobs[b.Digest]
		s.mu.Unlock()
		if have {
			continue
		}
		rc, err := fetch(ctx, b.Digest)
		if err != nil {
			return fmt.Errorf("fetch %s: %w", b.Digest, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", b.Digest, err)
		}
		if got := digestOf(data); got != b.Digest || int64(len(data)) != b.Size {
			return fmt.Errorf("blob %s: digest mismatch (got %s, %d bytes)", b.Digest, got, len(data))
		}
		progress(agentapi.Progress{Status: "copying", Digest: b.Digest, Total: b.Size, Completed: b.Size})
		s.mu.Lock()
		s.blobs[b.Digest] = data
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manifests[m.Model] = m
	s.models = append(s.models, agentapi.Model{Name: m.Model, OnDisk: true})
	return nil
}

// faultBackend is a simulated backend that accepts faults.
type faultBackend struct {
	*fakeBackend
	faults []string
}

var _ FaultInjector = (*faultBackend)(nil)

func (f *faultBackend) InjectFault(gpu int, kind string) error {
	if kind != "ecc" && kind != "xid" {
		return errors.New("unknown fault kind " + kind)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fmt.Sprintf("%d:%s", gpu, kind))
	return nil
}

// fakeSource is a TelemetrySource returning fixed GPUs, an error, or none with a reason.
type fakeSource struct {
	mu     sync.Mutex
	gpus   []agentapi.GPU
	err    error
	reason string
}

var (
	_ TelemetrySource   = (*fakeSource)(nil)
	_ TelemetryReasoner = (*fakeSource)(nil)
)

func (s *fakeSource) GPUs(context.Context) ([]agentapi.GPU, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]agentapi.GPU(nil), s.gpus...), s.err
}

func (s *fakeSource) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}
