package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// DefaultOllamaURL is where Ollama listens unless told otherwise.
const DefaultOllamaURL = "http://127.0.0.1:11434"

// Bounds on Unload's wait for a model to leave Ollama's process list.
const (
	defaultUnloadWait = 30 * time.Second
	unloadPoll        = 50 * time.Millisecond
)

// OllamaConfig configures the Ollama backend.
type OllamaConfig struct {
	// URL is Ollama's base URL; empty means DefaultOllamaURL.
	URL string
	// ModelsDir is Ollama's models directory (blobs/ and manifests/), read to export models.
	// Empty means $OLLAMA_MODELS, else ~/.ollama/models. A system install keeps it elsewhere
	// (/usr/share/ollama/.ollama/models on Linux): set it to match the server.
	ModelsDir string
	// HTTPClient talks to Ollama, for inference and for the API. Nil means a client on the
	// agent's own HTTP/1.1 transport (h1.go) over NewTransport(). Its Timeout should be zero:
	// pulls and streams are bounded by contexts.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// UnloadWait bounds how long Unload waits for the model to leave memory; 0 means 30s.
	UnloadWait time.Duration
	// MaxLoadedModels is the server's OLLAMA_MAX_LOADED_MODELS, which its API does not tell:
	// reported in heartbeats so the gateway knows that a load there evicts; 0 means unknown.
	MaxLoadedModels int
}

// Ollama is a local Ollama server.
type Ollama struct {
	api        *api.Client
	base       *url.URL
	modelsDir  string
	http       *http.Client
	proxy      *proxy
	log        *slog.Logger
	unloadWait time.Duration
	maxLoaded  int

	mu   sync.Mutex
	info map[string]modelInfo // by manifest digest: what Show said about that exact model
}

// modelInfo is what Models needs from /api/show.
type modelInfo struct {
	capabilities []string
}

func (i modelInfo) embeddingOnly() bool {
	return slices.Contains(i.capabilities, "embedding") && !slices.Contains(i.capabilities, "completion")
}

var (
	_ nodeagent.Backend         = (*Ollama)(nil)
	_ nodeagent.ModelManager    = (*Ollama)(nil)
	_ nodeagent.ModelExporter   = (*Ollama)(nil)
	_ nodeagent.ModelImporter   = (*Ollama)(nil)
	_ nodeagent.NativeOllama    = (*Ollama)(nil)
	_ nodeagent.ResponsesServer = (*Ollama)(nil)
)

// nativeEndpoints are Ollama's own routes that ServeOllama passes through.
var nativeEndpoints = []string{agentapi.PathOllamaChat, agentapi.PathOllamaGenerate, agentapi.PathOllamaEmbed,
	agentapi.PathOllamaEmbeddings, agentapi.PathOllamaShow}

// NewOllama returns the backend for the Ollama server cfg describes. It does not contact Ollama.
func NewOllama(cfg OllamaConfig) (*Ollama, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultOllamaURL
	}
	base, err := parseBaseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.ModelsDir == "" {
		cfg.ModelsDir, err = defaultModelsDir()
		if err != nil {
			return nil, err
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: newH1Transport(NewTransport())}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UnloadWait <= 0 {
		cfg.UnloadWait = defaultUnloadWait
	}
	transport := cfg.HTTPClient.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	p := newProxy(agentapi.BackendOllama, base, transport, "", cfg.Logger)
	for _, ep := range nativeEndpoints {
		p.urls[ep] = endpointURL(base, ep)
	}
	return &Ollama{
		api:        api.NewClient(base, cfg.HTTPClient),
		base:       base,
		modelsDir:  cfg.ModelsDir,
		http:       cfg.HTTPClient,
		proxy:      p,
		log:        cfg.Logger,
		unloadWait: cfg.UnloadWait,
		maxLoaded:  max(cfg.MaxLoadedModels, 0),
		info:       map[string]modelInfo{},
	}, nil
}

// MaxLoadedModels is the most models the server keeps loaded, as configured
// (OllamaConfig.MaxLoadedModels); 0: unknown.
func (o *Ollama) MaxLoadedModels() int { return o.maxLoaded }

func defaultModelsDir() (string, error) {
	if d := os.Getenv("OLLAMA_MODELS"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("ollama models dir: %w", err)
	}
	return filepath.Join(home, ".ollama", "models"), nil
}

// Kind is agentapi.BackendOllama.
func (o *Ollama) Kind() string { return agentapi.BackendOllama }

// Simulated is false: this is a real server.
func (o *Ollama) Simulated() bool { return false }

// Engine is "ollama": Ollama's runner keeps one prompt per parallel slot, which the gateway's
// prefix index models.
func (o *Ollama) Engine() string { return "ollama" }

// ServesResponses reports whether this Ollama serves /v1/responses itself (0.13.3 and later).
func (o *Ollama) ServesResponses(ctx context.Context) bool { return o.proxy.servesResponses(ctx) }

// ModelsDir is the models directory the backend exports from.
func (o *Ollama) ModelsDir() string { return o.modelsDir }

// Version asks Ollama for its version (GET /api/version); herd doctor reports it.
func (o *Ollama) Version(ctx context.Context) (string, error) {
	v, err := o.api.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("ollama version: %w", err)
	}
	return v, nil
}

// ServeInference proxies the request to Ollama's own OpenAI-compatible route, so what the client
// gets is what Ollama writes, with one defect of its Responses stream mended (see mendingWriter).
func (o *Ollama) ServeInference(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	if endpoint == agentapi.PathResponses {
		m := &mendingWriter{ResponseWriter: w}
		defer m.finish()
		w = m
	}
	o.proxy.serve(w, r, endpoint, body)
}

// ServeOllama passes a native Ollama request (/api/chat, /api/generate, /api/embed,
// /api/embeddings, /api/show) to Ollama unchanged and streams its NDJSON answer back line by line.
func (o *Ollama) ServeOllama(w http.ResponseWriter, r *http.Request, path string, body []byte) {
	o.proxy.serve(w, r, path, body)
}

// Models lists the models on disk (/api/tags) and marks those in memory (/api/ps). Capabilities
// come from /api/show, asked once per model digest.
func (o *Ollama) Models(ctx context.Context) ([]agentapi.Model, error) {
	list, err := o.api.List(ctx)
	if err != nil {
		return nil, classify("ollama list", err)
	}
	running, err := o.api.ListRunning(ctx)
	if err != nil {
		return nil, classify("ollama ps", err)
	}

	byName := map[string]*agentapi.Model{}
	seen := map[string]bool{}
	for _, lm := range list.Models {
		name := NormalizeModelName(lm.Name)
		m := &agentapi.Model{
			Name:          name,
			OnDisk:        true,
			SizeBytes:     nonNegative(lm.Size),
			Digest:        lm.Digest,
			Family:        lm.Details.Family,
			ParameterSize: lm.Details.ParameterSize,
			Quantization:  lm.Details.QuantizationLevel,
			Format:        lm.Details.Format,
			Families:      lm.Details.Families,
			ModifiedAt:    lm.ModifiedAt,
		}
		if info, ok := o.modelInfo(ctx, name, lm.Digest); ok {
			m.Embedding = info.embeddingOnly()
		}
		seen[lm.Digest] = true
		byName[name] = m
	}
	for _, pm := range running.Models {
		name := NormalizeModelName(pm.Name)
		m, ok := byName[name]
		if !ok {
			// Resident but gone from disk (deleted while loaded): still serving, cannot reload.
			m = &agentapi.Model{
				Name:          name,
				SizeBytes:     nonNegative(pm.Size),
				Digest:        pm.Digest,
				Family:        pm.Details.Family,
				ParameterSize: pm.Details.ParameterSize,
				Quantization:  pm.Details.QuantizationLevel,
			}
			byName[name] = m
		}
		m.Resident = true
		m.ContextLength = pm.ContextLength
		m.VRAMBytes = nonNegative(pm.SizeVRAM)
		m.ExpiresAt = pm.ExpiresAt
	}
	o.forgetInfoExcept(seen)

	out := make([]agentapi.Model, 0, len(byName))
	for _, m := range byName {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func nonNegative(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// modelInfo returns Show's facts for the model with that manifest digest, asking Ollama the first
// time. A failure is logged and not cached: listing goes on without the facts.
func (o *Ollama) modelInfo(ctx context.Context, name, digest string) (modelInfo, bool) {
	o.mu.Lock()
	info, ok := o.info[digest]
	o.mu.Unlock()
	if ok && digest != "" {
		return info, true
	}
	show, err := o.api.Show(ctx, &api.ShowRequest{Model: name})
	if err != nil {
		o.log.Warn("ollama show failed", "model", name, "error", err)
		return modelInfo{}, false
	}
	info = modelInfo{}
	for _, c := range show.Capabilities {
		info.capabilities = append(info.capabilities, string(c))
	}
	if digest != "" {
		o.mu.Lock()
		o.info[digest] = info
		o.mu.Unlock()
	}
	return info, true
}

func (o *Ollama) forgetInfoExcept(keep map[string]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for d := range o.info {
		if !keep[d] {
			delete(o.info, d)
		}
	}
}

// Pull pulls model from its registry, reporting Ollama's progress lines.
func (o *Ollama) Pull(ctx context.Context, model string, progress func(agentapi.Progress)) error {
	name := NormalizeModelName(model)
	err := o.api.Pull(ctx, &api.PullRequest{Model: name}, func(p api.ProgressResponse) error {
		if progress != nil {
			progress(agentapi.Progress{Status: p.Status, Digest: p.Digest, Total: p.Total, Completed: p.Completed})
		}
		return nil
	})
	return classify(fmt.Sprintf("ollama pull %q", name), err)
}

// Load loads model into memory and keeps it there for keepAlive: a Go duration ("10m"), a number
// of seconds, or a negative value ("-1") for ever; empty leaves Ollama's default. It returns when
// the model is loaded.
func (o *Ollama) Load(ctx context.Context, model string, keepAlive string) error {
	name := NormalizeModelName(model)
	op := fmt.Sprintf("ollama load %q", name)
	ka, err := parseKeepAlive(keepAlive)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if ka != nil && ka.Duration == 0 {
		return fmt.Errorf("%s: %w: keep_alive 0 would unload the model at once", op, ErrInvalid)
	}
	show, err := o.api.Show(ctx, &api.ShowRequest{Model: name})
	if err != nil {
		return classify(op, err)
	}
	var caps []string
	for _, c := range show.Capabilities {
		caps = append(caps, string(c))
	}
	if (modelInfo{capabilities: caps}).embeddingOnly() {
		// /api/generate refuses embedding models; an empty /api/embed loads them.
		_, err = o.api.Embed(ctx, &api.EmbedRequest{Model: name, Input: "", KeepAlive: ka})
		return classify(op, err)
	}
	err = o.api.Generate(ctx, &api.GenerateRequest{Model: name, KeepAlive: ka}, func(api.GenerateResponse) error { return nil })
	return classify(op, err)
}

// parseKeepAlive reads a keep-alive as the agent API takes it. Nil means "backend default".
func parseKeepAlive(s string) (*api.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) {
			return nil, fmt.Errorf("keep_alive %q: %w", s, ErrInvalid)
		}
		if secs < 0 {
			return &api.Duration{Duration: -1}, nil
		}
		if secs > float64(math.MaxInt64)/float64(time.Second) {
			return nil, fmt.Errorf("keep_alive %q: %w: too long", s, ErrInvalid)
		}
		return &api.Duration{Duration: time.Duration(secs * float64(time.Second))}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, fmt.Errorf("keep_alive %q: %w: %w", s, ErrInvalid, err)
	}
	if d < 0 {
		d = -1
	}
	return &api.Duration{Duration: d}, nil
}

// Unload evicts model from memory and waits until Ollama no longer lists it as running. Unloading
// a model that is not loaded is not an error; unloading one Ollama does not know is.
func (o *Ollama) Unload(ctx context.Context, model string) error {
	name := NormalizeModelName(model)
	op := fmt.Sprintf("ollama unload %q", name)
	err := o.api.Generate(ctx, &api.GenerateRequest{Model: name, KeepAlive: &api.Duration{Duration: 0}},
		func(api.GenerateResponse) error { return nil })
	if err != nil {
		return classify(op, err)
	}
	// Ollama only schedules the unload; it happens when the runner's requests finish.
	deadline := time.NewTimer(o.unloadWait)
	defer deadline.Stop()
	tick := time.NewTicker(unloadPoll)
	defer tick.Stop()
	for {
		running, err := o.api.ListRunning(ctx)
		if err != nil {
			return classify(op, err)
		}
		resident := false
		for _, pm := range running.Models {
			if NormalizeModelName(pm.Name) == name {
				resident = true
				break
			}
		}
		if !resident {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%s: still resident after %s (requests in flight?)", op, o.unloadWait)
		case <-tick.C:
		}
	}
}

// Delete unloads model and removes it from disk.
func (o *Ollama) Delete(ctx context.Context, model string) error {
	name := NormalizeModelName(model)
	op := fmt.Sprintf("ollama delete %q", name)
	if err := o.Unload(ctx, name); err != nil && !errors.Is(err, ErrModelNotFound) {
		return err
	}
	return classify(op, o.api.Delete(ctx, &api.DeleteRequest{Model: name}))
}
