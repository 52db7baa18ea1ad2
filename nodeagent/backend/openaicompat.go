package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// maxListBytes bounds a model list read from a backend.
const maxListBytes = 8 << 20

// Option configures a backend.
type Option func(*options)

type options struct {
	transport http.RoundTripper
	log       *slog.Logger
}

// WithTransport replaces the backend's HTTP transport (default: h1.go's, over NewTransport()).
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithLogger sets the backend's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

func buildOptions(opts []Option) options {
	o := options{}
	for _, f := range opts {
		f(&o)
	}
	if o.transport == nil {
		o.transport = newH1Transport(NewTransport())
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	return o
}

// OpenAICompat is any server with the OpenAI API (vLLM, llama.cpp server, another gateway). It
// serves inference and lists models; it cannot pull or load them, which such servers decide at
// their own start.
type OpenAICompat struct {
	base   *url.URL
	apiKey string
	proxy  *proxy
	client *http.Client
}

var _ nodeagent.Backend = (*OpenAICompat)(nil)

// NewOpenAICompat returns a backend for the OpenAI-compatible server at baseURL. The URL is the
// server's root ("http://127.0.0.1:8000"); a trailing "/v1", as OpenAI SDKs take it, is accepted
// too. apiKey, when not empty, is sent as a bearer token.
func NewOpenAICompat(baseURL, apiKey string, opts ...Option) (*OpenAICompat, error) {
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	return &OpenAICompat{
		base:   u,
		apiKey: apiKey,
		proxy:  newProxy(agentapi.BackendOpenAI, u, o.transport, apiKey, o.log),
		client: &http.Client{Transport: o.transport},
	}, nil
}

func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("backend url %q: %w: %w", raw, ErrInvalid, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("backend url %q: %w: want http(s)://host[:port]", raw, ErrInvalid)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/v1")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// Kind is agentapi.BackendOpenAI.
func (b *OpenAICompat) Kind() string { return agentapi.BackendOpenAI }

// Simulated is false: this is a real server.
func (b *OpenAICompat) Simulated() bool { return false }

// ServesResponses reports whether the server serves /v1/responses itself (vLLM does).
func (b *OpenAICompat) ServesResponses(ctx context.Context) bool { return b.proxy.servesResponses(ctx) }

var _ nodeagent.ResponsesServer = (*OpenAICompat)(nil)

// ServeInference proxies the request to the server's endpoint and streams the answer back.
func (b *OpenAICompat) ServeInference(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	b.proxy.serve(w, r, endpoint, body)
}

// Models lists GET /v1/models. Such a server serves what it lists, so every model is resident and
// on disk.
func (b *OpenAICompat) Models(ctx context.Context) ([]agentapi.Model, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpointURL(b.base, "/v1/models").String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if b.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+b.apiKey)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, classify("list models", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes))
	if err != nil {
		return nil, fmt.Errorf("list models: %w: %w", ErrUnavailable, err)
	}
	if resp.StatusCode >= http.StatusInternalServerError {
		return nil, fmt.Errorf("list models: %w: backend answered %d: %s", ErrUnavailable, resp.StatusCode, errorMessage(data))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list models: backend answered %d: %s", resp.StatusCode, errorMessage(data))
	}
	ids, err := parseModelList(data)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	out := make([]agentapi.Model, 0, len(ids))
	for _, id := range ids {
		out = append(out, agentapi.Model{Name: id, Resident: true, OnDisk: true})
	}
	return out, nil
}

// parseModelList reads an OpenAI model list ({"object":"list","data":[{"id":...}]}), sorted and
// without duplicates or empty ids.
func parseModelList(data []byte) ([]string, error) {
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("decode model list: %w", err)
	}
	seen := map[string]bool{}
	var ids []string
	for _, m := range list.Data {
		if m.ID == "" || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		ids = append(ids, m.ID)
	}
	sort.Strings(ids)
	return ids, nil
}

// errorMessage is the message of an OpenAI-shaped (or Ollama-shaped) error body, or the body.
func errorMessage(data []byte) string {
	var oa struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &oa) == nil && len(oa.Error) > 0 {
		var detail struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(oa.Error, &detail) == nil && detail.Message != "" {
			return detail.Message
		}
		var s string
		if json.Unmarshal(oa.Error, &s) == nil && s != "" {
			return s
		}
	}
	const max = 512
	s := strings.TrimSpace(string(data))
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

var _ nodeagent.ChatTemplater = (*OpenAICompat)(nil)

// ChatTemplate asks a llama.cpp server for its chat template (GET /props, "chat_template"): one
// model per server, so the model does not matter. vLLM and other servers have no such route: the
// template is then not known.
func (b *OpenAICompat) ChatTemplate(ctx context.Context, _ string) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpointURL(b.base, "/props").String(), nil)
	if err != nil {
		return "", false
	}
	if b.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+b.apiKey)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", false
	}
	var props struct {
		ChatTemplate string `json:"chat_template"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, maxListBytes)).Decode(&props) != nil || props.ChatTemplate == "" {
		return "", false
	}
	return props.ChatTemplate, true
}
