package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// NewTransport returns the HTTP transport for the inference hot path: keep-alive connections,
// plenty of idle ones per backend host (one agent fronts one backend, with many requests at
// once), no environment proxy (backends are on loopback or the LAN), no transparent gzip (bytes
// pass through as the backend wrote them, and decompression would buffer a stream), and no
// response-header timeout (a long prompt can take a while before the first byte; the request's
// context bounds it).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
}

// inferenceEndpoints are the endpoints ServeInference answers.
var inferenceEndpoints = map[string]bool{
	agentapi.PathChatCompletions: true,
	agentapi.PathCompletions:     true,
	agentapi.PathEmbeddings:      true,
}

// proxy forwards OpenAI-format requests to one backend.
type proxy struct {
	kind      string
	base      *url.URL
	transport http.RoundTripper
	apiKey    string
	log       *slog.Logger
	errLog    *log.Logger // ReverseProxy's own logging, routed to log
}

func newProxy(kind string, base *url.URL, transport http.RoundTripper, apiKey string, logger *slog.Logger) *proxy {
	return &proxy{
		kind: kind, base: base, transport: transport, apiKey: apiKey, log: logger,
		errLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// serve forwards body to the backend's endpoint and streams the answer to w. A ReverseProxy per
// request is a handful of words; what is costly (connections) lives in the shared transport.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	if !inferenceEndpoints[endpoint] {
		writeOpenAIError(w, http.StatusNotFound, "invalid_request_error", "unknown_endpoint",
			fmt.Sprintf("unknown inference endpoint %q", endpoint))
		return
	}
	target := endpointURL(p.base, endpoint)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := *target
			pr.Out.URL = &u
			pr.Out.Host = ""
			pr.Out.Body = io.NopCloser(bytes.NewReader(body))
			pr.Out.ContentLength = int64(len(body))
			pr.Out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			// The caller's credentials are for this agent, never for the backend.
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
			if p.apiKey != "" {
				pr.Out.Header.Set("Authorization", "Bearer "+p.apiKey)
			}
			if pr.Out.Header.Get("Content-Type") == "" {
				pr.Out.Header.Set("Content-Type", "application/json")
			}
		},
		Transport:     p.transport,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if isEventStream(resp.Header) {
				resp.Body = &streamGuard{ctx: r.Context(), body: resp.Body, kind: p.kind, log: p.log}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away; nobody is left to read an answer.
				return
			}
			p.log.Warn("backend request failed", "backend", p.kind, "endpoint", endpoint, "error", err)
			writeOpenAIError(w, http.StatusBadGateway, "server_error", "backend_unavailable",
				fmt.Sprintf("the %s backend did not answer: %s", p.kind, rootCause(err)))
		},
		ErrorLog: p.errLog,
	}
	rp.ServeHTTP(w, r)
}

// endpointURL is base with path appended: base's own path is a prefix ("http://h/vllm" +
// "/v1/models"), and the result always has an absolute path, as a request line needs.
func endpointURL(base *url.URL, path string) *url.URL {
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + strings.TrimPrefix(path, "/")
	u.RawPath = ""
	return &u
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(strings.ToLower(h.Get("Content-Type")), "text/event-stream")
}

// rootCause is the innermost error's text ("connect: connection refused"), which says what went
// wrong without the backend's internal address.
func rootCause(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// writeOpenAIError writes {"error":{"message","type","param","code"}} with status.
func writeOpenAIError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(openAIError(typ, code, msg))
}

func openAIError(typ, code, msg string) agentapi.ErrorBody {
	var c *string
	if code != "" {
		c = &code
	}
	return agentapi.ErrorBody{Error: agentapi.ErrorDetail{Message: msg, Type: typ, Code: c}}
}

// streamGuard wraps an SSE body from the backend. If the backend's stream breaks (connection
// reset, backend crash) while the client still listens, it ends the stream with one
// OpenAI-shaped error event, which the OpenAI SDKs raise as an APIError, instead of a cut that
// looks like a finished stream.
type streamGuard struct {
	ctx     context.Context
	body    io.ReadCloser
	kind    string
	log     *slog.Logger
	pending []byte
	err     error // the error to return once pending is drained
	failed  bool
}

func (g *streamGuard) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.body.Read(p)
	if err == nil || errors.Is(err, io.EOF) {
		return n, err
	}
	if g.ctx.Err() != nil || g.failed {
		return n, err
	}
	g.failed = true
	g.log.Warn("backend stream broke", "backend", g.kind, "error", err)
	ev, _ := json.Marshal(openAIError("server_error", "backend_stream_error",
		fmt.Sprintf("the %s backend stream broke: %s", g.kind, rootCause(err))))
	// A blank line first ends any event the backend left half-written.
	g.pending = append(append([]byte("\n\ndata: "), ev...), "\n\n"...)
	g.err = io.EOF
	return n, nil
}

func (g *streamGuard) Close() error { return g.body.Close() }
