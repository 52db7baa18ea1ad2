package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// The proxy sends a scheduled request to an agent and streams the answer back.
//
// Decisions:
//   - Nothing reaches the client until the agent has sent the first bytes of its body (for SSE:
//     the first complete event). Until then any failure (connection refused or reset, a 5xx or
//     429 answer, no headers within FirstByteTimeout, no first byte within it) is invisible: the
//     node is excluded, the scheduler picks again, and the next candidate is tried, up to
//     MaxAttempts nodes. A 5xx or a transport failure counts against the node's circuit breaker;
//     a 429 (the agent's own queue is full) does not, the node is busy, not broken.
//   - 4xx answers (bad request, unknown model) are the client's problem: they are not retried,
//     and their body, whatever the backend's shape, becomes the gateway's own error value
//     (backendError) with the backend's status and message, which the front renders in its API's
//     shape.
//   - When every attempt failed, the client gets the last agent's 5xx/429 answer if there was
//     one (it says the most; as an error value, like a 4xx), else 503 upstream_error listing
//     each attempt.
//   - SSE is relayed event by event: each read is cut at the last complete event and flushed at
//     once; a partial event waits for its end. So when the agent fails mid-stream, the client
//     gets no torn event, only one well-formed error event (OpenAI's error object with code
//     upstream_error; on /v1/responses the Responses API's "error" event, numbered after the
//     events already sent), and the stream ends. Metrics count such a request as 502.
//   - A non-streamed body that breaks off after it started cannot be fixed: the connection is
//     cut (http.ErrAbortHandler), so the client sees an error instead of truncated JSON.
//   - Every read from the agent is bounded (FirstByteTimeout before the first byte,
//     StreamIdleTimeout after), so a hung agent ends the request instead of hanging it. A client
//     that goes away cancels the agent request.

// sink is where a response goes: the client's ResponseWriter, or memory for batch work.
type sink interface {
	http.ResponseWriter
	http.Flusher
}

// streamFailer is a sink that ends a stream broken after its first byte in its own wire format
// (Ollama's NDJSON error line) rather than with an SSE error event.
type streamFailer interface{ failStream(message string) }

// front adapts a call to another API's wire format (Ollama's on /api/*): per attempt it chooses
// the agent route and body for node n (now is when the attempt starts), or refuses the request.
type front interface {
	upstream(n *scheduler.Node, now time.Time) (path string, body []byte, err *APIError)
}

// resettable is a sink that can take back what was written: memory can, a client connection
// cannot. On a resettable sink even a mid-body failure fails over.
type resettable interface{ reset() }

// result is how a request ended for the handler.
type result struct {
	// err is an error the gateway answers with; nothing was written to the sink.
	err *APIError
	// clientGone is true when the client (or the batch context) went away.
	clientGone bool
	// abort is true when a non-SSE response broke off after it started.
	abort bool
	// fromAgent is true when err is an agent's (its backend's) own error answer, not the
	// gateway's: for batch lines it is an answer, not a reason to try later.
	fromAgent bool
}

// outcome is how one attempt on one node ended.
type outcome uint8

const (
	outcomeDone outcome = iota
	outcomeRetry
	outcomeClientGone
	outcomeAbort
	// outcomeError: the agent answered a 4xx, now in call.agentErr.
	outcomeError
)

// capturedResponse is an agent's retryable answer, kept in case no other node does better.
type capturedResponse struct {
	status      int
	contentType string
	body        []byte
	node        string
}

// maxCapturedBody bounds how much of a failed answer is kept.
const maxCapturedBody = 64 << 10

// run schedules, admits and proxies the request until one node answers or attempts run out.
func (k *call) run(w sink) result {
	s := k.s
	for {
		if k.ctx.Err() != nil {
			return result{clientGone: true}
		}
		o, id, err := k.admitAndAttempt(w)
		if err != nil {
			if k.ctx.Err() != nil {
				return result{clientGone: true}
			}
			ae := admissionError(err)
			if k.attempts > 0 {
				return k.exhausted(w)
			}
			return result{err: ae}
		}
		switch o {
		case outcomeDone:
			return result{}
		case outcomeClientGone:
			return result{clientGone: true}
		case outcomeAbort:
			return result{abort: true}
		case outcomeError:
			return result{err: k.agentErr, fromAgent: true}
		}
		k.req.Exclude = append(k.req.Exclude, id)
		if k.attempts >= s.cfg.MaxAttempts {
			return k.exhausted(w)
		}
	}
}

// admitAndAttempt waits in admission for a slot and runs one attempt on the granted node. The
// slot is given back when the attempt ends, however it ends (deferred: a panic or an early
// return cannot leak it).
func (k *call) admitAndAttempt(w sink) (outcome, string, error) {
	var admitStart time.Time
	if k.span != nil {
		admitStart = k.s.core.clock.Now()
	}
	g, err := k.s.core.adm.Admit(k.ctx, &k.tk)
	if k.span != nil {
		k.traceAdmission(admitStart, g, err)
	}
	if err != nil {
		return 0, "", err
	}
	defer g.Done()
	n := g.Node()
	// The node's engine will hold this prompt: the index learns it from every request sent.
	defer k.s.core.prefix.End(k.s.core.prefix.Start(n, k.model, k.info.chain.Links()))
	loads := n.CanLoad && !residentOn(n, k.model)
	if loads {
		// The node loads the model for this request: the model's next requests wait for that
		// load (scheduler.NodeModel.Loading) instead of starting others.
		k.s.registry.StartLoad(n.ID, k.model)
	}
	k.predicted = 0
	for _, m := range k.req.Prefix {
		if m.Node == n.ID {
			k.predicted = m.Tokens
		}
	}
	k.attempts++
	k.node = n.ID
	var asp trace.Span
	failures := len(k.failures)
	if k.span != nil {
		asp = k.startAttempt(n)
	}
	o := k.attempt(n, w)
	if loads && o == outcomeRetry {
		// The load failed with the attempt: nothing should wait for it.
		k.s.registry.EndLoad(n.ID, k.model)
	}
	if asp != nil {
		k.endAttempt(asp, o, failures)
	}
	return o, n.ID, nil
}

// admissionError is the client's error for a refusal by admission.
func admissionError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var de *admission.Error
	if errors.As(err, &de) {
		return &APIError{Status: de.Status, Type: de.Type, Code: de.Code, Message: de.Message, RetryAfter: de.RetryAfter}
	}
	return unavailable("%v", err)
}

// exhausted answers a request whose every attempt failed.
func (k *call) exhausted(w sink) result {
	h := w.Header()
	h[agentapi.HeaderAttempts] = []string{strconv.Itoa(k.attempts)}
	if l := k.last; l != nil {
		h[agentapi.HeaderNode] = []string{l.node}
		k.status, k.node = l.status, l.node
		return result{err: backendError(l.status, l.contentType, l.body), fromAgent: true}
	}
	return result{err: &APIError{
		Status: http.StatusServiceUnavailable, Type: errUnavailable, Code: "upstream_error", RetryAfter: 1,
		Message: fmt.Sprintf("All %d attempts failed for model `%s`: %s.", k.attempts, k.model, strings.Join(k.failures, "; ")),
	}}
}

// fail records a failed attempt on node.
func (k *call) fail(node, format string, args ...any) {
	k.failures = append(k.failures, "node "+node+": "+fmt.Sprintf(format, args...))
}

// attempt proxies the request to node n and streams the answer into w.
func (k *call) attempt(n *scheduler.Node, w sink) outcome {
	s := k.s
	path, body := k.path, k.body
	if k.front != nil {
		// Another API's front (Ollama's /api/*) decides per node what to send: the native request
		// to a node whose backend speaks it, a translation to any other.
		var ae *APIError
		if path, body, ae = k.front.upstream(n, s.core.clock.Now()); ae != nil {
			w.Header()["Content-Type"] = hdrJSON
			w.WriteHeader(ae.Status)
			_, _ = w.Write(errorJSON(ae))
			k.status = ae.Status
			return outcomeDone
		}
	}
	u, err := s.core.urls.get(n.Address, path)
	if err != nil {
		s.registry.ReportFailure(n.ID)
		k.fail(n.ID, "%v", err)
		return outcomeRetry
	}
	parent := k.ctx
	if k.actx != nil {
		parent = k.actx
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var timedOut atomic.Bool
	idle := time.AfterFunc(s.cfg.FirstByteTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	defer idle.Stop()

	resp, err := s.core.transport.RoundTrip(k.upstreamRequest(ctx, u, body))
	if err != nil {
		if k.ctx.Err() != nil {
			return outcomeClientGone
		}
		s.registry.ReportFailure(n.ID)
		if timedOut.Load() {
			k.fail(n.ID, "no response within %s", s.cfg.FirstByteTimeout)
		} else {
			k.fail(n.ID, "%v", err)
		}
		return outcomeRetry
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxCapturedBody))
		if k.ctx.Err() != nil {
			return outcomeClientGone
		}
		if resp.StatusCode >= 500 {
			s.registry.ReportFailure(n.ID)
		}
		k.last = &capturedResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body, node: n.ID}
		k.fail(n.ID, "HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body[:min(len(body), 200)]))
		return outcomeRetry
	}
	s.registry.ReportSuccess(n.ID)
	if resp.StatusCode >= 400 {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxCapturedBody))
		if err != nil && k.ctx.Err() != nil {
			return outcomeClientGone
		}
		w.Header()[agentapi.HeaderNode] = []string{n.ID}
		w.Header()[agentapi.HeaderAttempts] = []string{attemptsText(k.attempts)}
		k.agentErr = backendError(resp.StatusCode, resp.Header.Get("Content-Type"), body)
		return outcomeError
	}

	ct := resp.Header.Get("Content-Type")
	sse := strings.HasPrefix(ct, "text/event-stream")
	// Ollama's native streams (NDJSON, passed through by the Ollama front) are metered line by line.
	ndjson := !sse && strings.HasPrefix(ct, "application/x-ndjson")
	committed := false
	timeout := s.cfg.FirstByteTimeout
	off := 0 // bytes of a partial SSE event held at the start of k.buf
	for {
		idle.Reset(timeout)
		nr, rerr := resp.Body.Read(k.buf[off:])
		total := off + nr
		out := k.buf[:total]
		if sse && rerr != io.EOF {
			if e := eventEnd(out); e > 0 || total < len(k.buf) {
				out = out[:e]
			} // else an event larger than the buffer: pass it on as it is
		}
		if len(out) > 0 || (rerr == io.EOF && !committed) {
			if !committed {
				k.commit(w, resp, n.ID, sse)
				committed = true
				k.ttft = s.core.clock.Now().Sub(k.start)
				timeout = s.cfg.StreamIdleTimeout
				if sse || ndjson {
					k.mt.itl = s.metrics.itl.WithLabelValues(k.metricsLabel(), n.ID)
				}
			}
			if _, werr := w.Write(out); werr != nil {
				return outcomeClientGone
			}
			k.mt.body(out)
			if sse {
				if k.path == agentapi.PathResponses {
					k.events += bytes.Count(out, sseEventEnd)
				}
				// Metered before the flush: the client cannot have the events before they are timed.
				k.mt.events(out, sseEventEnd, s.core.clock.Now())
				w.Flush()
			} else if ndjson {
				k.mt.events(out, ndjsonLineEnd, s.core.clock.Now())
			}
		}
		off = copy(k.buf[:], k.buf[len(out):total])
		if rerr == nil {
			continue
		}
		if rerr == io.EOF {
			return outcomeDone
		}
		if k.ctx.Err() != nil {
			return outcomeClientGone
		}
		s.registry.ReportFailure(n.ID)
		cause := rerr.Error()
		if timedOut.Load() {
			cause = fmt.Sprintf("no data for %s", timeout)
		}
		k.fail(n.ID, "%s", cause)
		if !committed {
			return outcomeRetry
		}
		if r, ok := w.(resettable); ok {
			r.reset()
			k.status, k.ttft = 0, 0
			k.mt.reset()
			return outcomeRetry
		}
		k.status = http.StatusBadGateway
		if f, ok := w.(streamFailer); ok {
			f.failStream(fmt.Sprintf("upstream node %s failed mid-stream: %s", n.ID, cause))
			return outcomeDone
		}
		if !sse {
			return outcomeAbort
		}
		msg := fmt.Sprintf("upstream node %s failed mid-stream: %s", n.ID, cause)
		if k.path == agentapi.PathResponses {
			writeResponsesError(w, msg, k.events)
		} else {
			writeSSEError(w, msg)
		}
		return outcomeDone
	}
}

// writeResponsesError ends a broken Responses stream as the Responses API does: one "error"
// event, numbered after the seq events the client already has.
func writeResponsesError(w sink, message string, seq int) {
	b, _ := json.Marshal(struct {
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
		Seq     int     `json:"sequence_number"`
	}{"error", "upstream_error", message, nil, seq})
	_, _ = w.Write([]byte("event: error\ndata: "))
	_, _ = w.Write(b)
	_, _ = w.Write([]byte("\n\n"))
	w.Flush()
}

// eventEnd returns the index just past the last complete SSE event in b (0: none). Events end
// with a blank line.
func eventEnd(b []byte) int {
	e := 0
	if i := bytes.LastIndex(b, []byte("\n\n")); i >= 0 {
		e = i + 2
	}
	if i := bytes.LastIndex(b, []byte("\r\n\r\n")); i >= 0 && i+4 > e {
		e = i + 4
	}
	return e
}

// writeSSEError writes one SSE event carrying an OpenAI error object and flushes it.
func writeSSEError(w sink, message string) {
	code := "upstream_error"
	b, _ := json.Marshal(api.ErrorBody{Error: api.ErrorDetail{Message: message, Type: errServer, Code: &code}})
	_, _ = w.Write([]byte("data: "))
	_, _ = w.Write(b)
	_, _ = w.Write([]byte("\n\n"))
	w.Flush()
}

// hopByHop lists the response headers that belong to one connection and are not relayed.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	agentapi.HeaderRequestID: true, agentapi.HeaderNode: true, agentapi.HeaderAttempts: true,
}

// commit writes the agent's status and headers to w, with the gateway's own.
func (k *call) commit(w sink, resp *http.Response, node string, sse bool) {
	h := w.Header()
	for key, v := range resp.Header {
		if !hopByHop[key] {
			h[key] = v
		}
	}
	h[agentapi.HeaderNode] = []string{node}
	h[agentapi.HeaderAttempts] = []string{attemptsText(k.attempts)}
	if sse {
		// Tells a buffering reverse proxy in front of the gateway (nginx) to pass events on.
		h["X-Accel-Buffering"] = hdrNo
	}
	w.WriteHeader(resp.StatusCode)
	k.status = resp.StatusCode
}

var hdrNo = []string{"no"}

// attemptsText is strconv.Itoa without an allocation for small counts.
func attemptsText(n int) string {
	if n >= 1 && n <= 9 {
		return "123456789"[n-1 : n]
	}
	return strconv.Itoa(n)
}

// Header values shared by every agent request; the transport only reads them.
var (
	hdrJSON        = []string{"application/json"}
	hdrInteractive = []string{agentapi.ClassInteractive}
	hdrBatch       = []string{agentapi.ClassBatch}
)

// upstreamRequest builds the agent request: the client's body as is, the cluster token (never the
// client's key), the request ID and the class.
func (k *call) upstreamRequest(ctx context.Context, u *url.URL, body []byte) *http.Request {
	h := make(http.Header, 4)
	h["Authorization"] = k.s.core.agentAuth
	h["Content-Type"] = hdrJSON
	h[agentapi.HeaderRequestID] = []string{k.reqID}
	if k.class == agentapi.ClassBatch {
		h[agentapi.HeaderClass] = hdrBatch
	} else {
		h[agentapi.HeaderClass] = hdrInteractive
	}
	if k.actx != nil {
		agentapi.InjectTraceContext(k.actx, h)
	}
	req := &http.Request{
		Method: http.MethodPost, URL: u, Host: u.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		// Lets the transport resend the body on a pooled connection the agent had closed.
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
	return req.WithContext(ctx)
}

// urlCache keeps the agents' parsed inference URLs, so a request does not parse one.
type urlCache struct {
	mu sync.RWMutex
	m  map[urlKey]*url.URL
}

type urlKey struct{ address, path string }

// get returns the URL of path on the agent at address.
func (c *urlCache) get(address, path string) (*url.URL, error) {
	key := urlKey{address, path}
	c.mu.RLock()
	u := c.m[key]
	c.mu.RUnlock()
	if u != nil {
		return u, nil
	}
	u, err := url.Parse(strings.TrimSuffix(address, "/") + path)
	if err != nil {
		return nil, fmt.Errorf("bad agent address %q: %w", address, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bad agent address %q: want http(s)://host:port", address)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4096 {
		// Addresses change rarely; a bound keeps a churning cluster from growing the map forever.
		c.m = map[urlKey]*url.URL{}
	}
	c.m[key] = u
	c.mu.Unlock()
	return u, nil
}
