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
	"net/url"
	"strings"
	"sync"
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
		// Each connection holds both buffers for as long as it lives, and a stream holds its
		// connection: with hundreds of connections 64 KiB each was most of the agent's memory,
		// with thousands of slow streams 24 KiB still was. A write or read larger than its
		// buffer bypasses it anyway, so 4 KiB (Go's default) costs no throughput on big bodies.
		WriteBufferSize: 4 << 10,
		ReadBufferSize:  4 << 10,
	}
}

// inferenceEndpoints are the endpoints ServeInference answers.
var inferenceEndpoints = []string{agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathEmbeddings, agentapi.PathResponses}

// proxy forwards OpenAI-format requests to one backend.
//
// It is written by hand rather than with httputil.ReverseProxy, which on every request clones
// the request and its headers, copies every response header value one by one and allocates a
// 32 KiB copy buffer: on a machine where the agent shares its cores with the backend, that was a
// good part of the agent's CPU per request. What it does is what the ReverseProxy did here:
//   - the request goes out with the client's headers minus hop-by-hop ones, the caller's
//     credentials (Authorization, Cookie: they are for this agent, never for the backend) and
//     forwarding headers, plus the backend's own API key;
//   - the response comes back with its status and headers minus hop-by-hop ones;
//   - an SSE stream, or a body of unknown length (Ollama's NDJSON streams), is flushed after
//     every read, so events pass one by one; a body of known length is written as it comes and
//     flushed once, by the server, at the end;
//   - a broken SSE stream ends with one OpenAI-shaped error event (streamGuard); any other body
//     that breaks off aborts the response (http.ErrAbortHandler), so the client sees an error
//     rather than a truncated body.
type proxy struct {
	kind      string
	base      *url.URL
	transport http.RoundTripper
	// auth is the Authorization header for the backend; nil without an API key.
	auth   []string
	log    *slog.Logger
	errLog *log.Logger
	// urls holds the backend URL of each of inferenceEndpoints, built once.
	urls map[string]*url.URL
	// responses caches whether the backend serves /v1/responses (see servesResponses).
	responses responsesProbe
}

func newProxy(kind string, base *url.URL, transport http.RoundTripper, apiKey string, logger *slog.Logger) *proxy {
	p := &proxy{
		kind: kind, base: base, transport: transport, log: logger,
		errLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		urls:   make(map[string]*url.URL, len(inferenceEndpoints)),
	}
	if apiKey != "" {
		p.auth = []string{"Bearer " + apiKey}
	}
	for _, ep := range inferenceEndpoints {
		p.urls[ep] = endpointURL(base, ep)
	}
	return p
}

// copyBufferSize is the buffer bodies of known length are copied through. (Streams take a
// streamBufferSize one: a stream holds its buffer for its whole life, waiting in Read between
// tokens, so with thousands of slow streams it is per-stream memory; 32 KiB each was once most
// of the agent's cost of a stream.) A larger body only takes a few more reads.
const copyBufferSize = 8 << 10

// copyBuffers are the buffers responses are copied through.
var copyBuffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// streamBufferSize is the buffer a stream (SSE, or a body of unknown length) is copied through:
// smaller still, since every read is passed on and flushed as it comes, so a burst only takes
// more reads, and ten thousand open streams hold one each (8 KiB was a quarter of the agent's
// heap per stream).
const streamBufferSize = 2 << 10

// streamBuffers are the buffers streams are copied through.
var streamBuffers = sync.Pool{New: func() any { return new([streamBufferSize]byte) }}

// dropRequestHeaders are the client's request headers the backend does not get: hop-by-hop
// headers (RFC 9110 7.6.1), the caller's credentials, and forwarding headers (the backend is
// this agent's, on its loopback; who called the agent is none of its business).
var dropRequestHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Authorization": true, "Cookie": true,
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// dropResponseHeaders are the hop-by-hop response headers, which belong to the backend
// connection.
var dropResponseHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// Shared header values; nothing writes to them.
var (
	hdrJSON  = []string{"application/json"}
	hdrEmpty = []string{""}
)

// serve forwards body to the backend's endpoint and streams the answer to w.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	target := p.urls[endpoint]
	if target == nil {
		writeOpenAIError(w, http.StatusNotFound, "invalid_request_error", "unknown_endpoint",
			fmt.Sprintf("unknown inference endpoint %q", endpoint))
		return
	}
	resp, err := p.transport.RoundTrip(p.outRequest(r, target, body))
	if err != nil {
		if r.Context().Err() != nil {
			// The client went away; nobody is left to read an answer.
			return
		}
		p.log.Warn("backend request failed", "backend", p.kind, "endpoint", endpoint, "error", err)
		writeOpenAIError(w, http.StatusBadGateway, "server_error", "backend_unavailable",
			fmt.Sprintf("the %s backend did not answer: %s", p.kind, rootCause(err)))
		return
	}
	defer resp.Body.Close()

	h := w.Header()
	for k, vv := range resp.Header {
		if !dropResponseHeaders[k] {
			// The response is this request's own: its value slices can be shared, not copied.
			h[k] = vv
		}
	}
	for _, k := range resp.Header["Connection"] {
		// Headers the backend named as hop-by-hop in Connection go too.
		for f := range strings.SplitSeq(k, ",") {
			delete(h, http.CanonicalHeaderKey(strings.TrimSpace(f)))
		}
	}
	var src io.Reader = resp.Body
	sse := isEventStream(resp.Header)
	if sse {
		src = &streamGuard{ctx: r.Context(), body: resp.Body, kind: p.kind, log: p.log}
	}
	w.WriteHeader(resp.StatusCode)
	// Streams pass each read on at once; a body of known length needs no flush of its own.
	flush := sse || resp.ContentLength < 0
	fl, _ := w.(http.Flusher)

	var buf []byte
	if flush {
		b := streamBuffers.Get().(*[streamBufferSize]byte)
		defer streamBuffers.Put(b)
		buf = b[:]
	} else {
		b := copyBuffers.Get().(*[copyBufferSize]byte)
		defer copyBuffers.Put(b)
		buf = b[:]
	}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				p.abort(r, fmt.Errorf("write to client: %w", werr))
				return
			}
			if flush && fl != nil {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			if r.Context().Err() == nil {
				p.log.Warn("backend response broke off", "backend", p.kind, "endpoint", endpoint, "error", rerr)
			}
			p.abort(r, rerr)
			return
		}
	}
}

// abort ends a response that cannot be completed. Behind a real server the connection is cut
// (http.ErrAbortHandler), so the client cannot take a truncated body for a whole one; called
// without one (a test's recorder) it only logs, as ReverseProxy did.
func (p *proxy) abort(r *http.Request, err error) {
	if r.Context().Value(http.ServerContextKey) == nil {
		p.errLog.Printf("%s backend: response cut short: %v", p.kind, err)
		return
	}
	panic(http.ErrAbortHandler)
}

// outRequest builds the backend request: body as is, the client's headers as dropRequestHeaders
// leaves them, the backend's API key, and the client's context, so a client that goes away
// cancels it.
func (p *proxy) outRequest(r *http.Request, target *url.URL, body []byte) *http.Request {
	h := make(http.Header, len(r.Header)+1)
	for k, vv := range r.Header {
		if !dropRequestHeaders[k] {
			// Shared, not copied: neither side writes to the slices.
			h[k] = vv
		}
	}
	if p.auth != nil {
		h["Authorization"] = p.auth
	}
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = hdrJSON
	}
	if _, ok := h["User-Agent"]; !ok {
		// An empty value keeps the transport from adding Go's own.
		h["User-Agent"] = hdrEmpty
	}
	out := &http.Request{
		Method: http.MethodPost, URL: target, Host: target.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		// Lets the transport resend the body on a pooled connection the backend had closed.
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
	return out.WithContext(r.Context())
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
