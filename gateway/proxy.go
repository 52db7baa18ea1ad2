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

// sink is where a response goes: the client's ResponseWriter, or memory (heldAnswer) for batch
// lines and non-streamed /api answers.
type sink interface {
	http.ResponseWriter
	http.Flusher
}

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
	// outcomeContinue: the stream broke after its client got part of it, and goes on on another
	// node (call.cont.body is the continuing request).
	outcomeContinue
	// outcomeFinished: the stream broke after its answer was complete; the gateway ended it.
	outcomeFinished
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
// Once a stream is with its client, whatever ends it ends it in the stream (endStream).
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
			if k.committed && k.held != nil {
				k.restart() // a batch line's answer that no node could continue: start over later
			}
			if k.committed {
				return k.endStream(w, "upstream node "+k.node+" failed mid-stream, and no node could continue it: "+ae.Message)
			}
			if k.attempts > 0 {
				return k.exhausted(w)
			}
			return result{err: ae}
		}
		switch o {
		case outcomeDone, outcomeFinished:
			return result{}
		case outcomeClientGone:
			return result{clientGone: true}
		case outcomeAbort:
			return result{abort: true}
		case outcomeError:
			if k.committed && k.held != nil {
				// A batch line's node refused to continue it: the line starts over elsewhere.
				k.fail(id, "could not continue: %s", k.agentErr.Message)
				k.restart()
				break
			}
			if k.committed {
				return k.endStream(w, "upstream node "+id+" could not continue the stream: "+k.agentErr.Message)
			}
			return result{err: k.agentErr, fromAgent: true}
		}
		k.req.Exclude = append(k.req.Exclude, id)
		if k.attempts >= s.cfg.MaxAttempts {
			if k.committed && k.held != nil {
				k.restart()
			}
			if k.committed {
				return k.endStream(w, fmt.Sprintf("the stream could not be continued: all %d attempts failed: %s", k.attempts, strings.Join(k.failures, "; ")))
			}
			return k.exhausted(w)
		}
	}
}

// endStream ends a stream its client already has part of with one well-formed error event in the
// client's wire format (an SSE error event; the Responses API's "error" event; Ollama's last
// line {"error":"..."}); a body that is not a stream is cut (abort).
func (k *call) endStream(w sink, msg string) result {
	k.status = http.StatusBadGateway
	k.s.metrics.continuations.WithLabelValues(k.metricsLabel(), k.node, "failed").Inc()
	switch {
	case k.frame == frameNDJSON:
		writeNDJSONError(w, msg)
	case k.frame != frameSSE:
		return result{abort: true}
	case k.path == agentapi.PathResponses:
		writeResponsesError(w, msg, k.events)
	default:
		writeSSEError(w, msg)
	}
	return result{}
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

// watchdog bounds every wait on an agent: it cancels the attempt when a read takes too long.
// Before the first byte the bound is FirstByteTimeout; after it StreamIdleTimeout, or, when the
// node's heartbeat is late (late), the shorter StallTimeout: a node that went silent and stopped
// beating (stopped, hung, cut off) is given up on soon, a busy one that still beats is waited for.
type watchdog struct {
	t      *time.Timer
	cancel context.CancelFunc
	// last is when the current wait started (UnixNano, set by reset).
	last atomic.Int64
	// timeout and stall are the bounds of the current phase; late says the node is late.
	timeout, stall atomic.Int64
	fired, stalled atomic.Bool
	// s and node say whose heartbeat to look at (Server.lateNode).
	s    *Server
	node string
}

// arm starts the watchdog on cancel with timeout, for an attempt on node of s.
func (d *watchdog) arm(timeout time.Duration, cancel context.CancelFunc, s *Server, node string) {
	d.cancel, d.s, d.node = cancel, s, node
	d.timeout.Store(int64(timeout))
	d.last.Store(time.Now().UnixNano())
	d.t = time.AfterFunc(timeout, d.check)
}

// streaming moves to the stream's bounds once the first byte came.
func (d *watchdog) streaming(idle time.Duration) { d.timeout.Store(int64(idle)) }

// withStall sets the stall bound (0: none).
func (d *watchdog) withStall(stall time.Duration) { d.stall.Store(int64(stall)) }

// reset starts a new wait.
func (d *watchdog) reset() {
	d.last.Store(time.Now().UnixNano())
	d.t.Reset(d.next())
}

// next is how long until the next check.
func (d *watchdog) next() time.Duration {
	t, st := time.Duration(d.timeout.Load()), time.Duration(d.stall.Load())
	if st > 0 && st < t {
		return st
	}
	return t
}

// check runs when a wait is long: past the timeout, or past the stall bound with the node late,
// it cancels the attempt; otherwise it looks again later.
func (d *watchdog) check() {
	silent := time.Duration(time.Now().UnixNano() - d.last.Load())
	t, st := time.Duration(d.timeout.Load()), time.Duration(d.stall.Load())
	switch {
	case silent >= t:
	case st > 0 && silent >= st && d.s.lateNode(d.node):
		d.stalled.Store(true)
	default:
		d.t.Reset(max(min(t-silent, d.next()), time.Millisecond))
		return
	}
	d.fired.Store(true)
	d.cancel()
}

func (d *watchdog) stop() { d.t.Stop() }

// cause describes why a read ended with err.
func (d *watchdog) cause(err error) string {
	switch {
	case d.stalled.Load():
		return fmt.Sprintf("no data for %s and its heartbeat is late (stalled)", time.Duration(d.stall.Load()))
	case d.fired.Load():
		return fmt.Sprintf("no data for %s", time.Duration(d.timeout.Load()))
	}
	return err.Error()
}

// lateNode reports whether node id's heartbeat is late: older than one and a half intervals (the
// agent's own, else the gateway's), as the admin API calls a node late, or the node stale or gone.
func (s *Server) lateNode(id string) bool {
	v, ok := s.registry.Node(id)
	if !ok || v.Stale {
		return true
	}
	interval := s.cfg.HeartbeatInterval
	if v.Heartbeat.IntervalMS > 0 {
		interval = time.Duration(v.Heartbeat.IntervalMS) * time.Millisecond
	}
	return s.core.clock.Now().Sub(v.LastHeartbeat) > interval*3/2
}

// attempt proxies the request to node n and streams the answer into w: send, then relay.
func (k *call) attempt(n *scheduler.Node, w sink) outcome {
	parent := k.ctx
	if k.actx != nil {
		parent = k.actx
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var wd watchdog
	wd.arm(k.s.cfg.FirstByteTimeout, cancel, k.s, n.ID)
	if k.cont.keep {
		wd.withStall(k.s.cfg.StallTimeout)
	}
	defer wd.stop()

	resp, o := k.send(ctx, n, &wd)
	if o == outcomeError {
		agentHeaders{node: n.ID}.write(w.Header(), k.attempts)
	}
	if resp == nil {
		return o
	}
	defer resp.Body.Close()
	return k.relay(n, resp, w, &wd)
}

// send sends the request to node n's agent. It returns the agent's 2xx answer, or nil and how the
// attempt ended: a transport failure, 5xx or 429 is retried elsewhere (the 5xx and the transport
// failure also count against the node's circuit breaker), a 4xx is the client's answer.
func (k *call) send(ctx context.Context, n *scheduler.Node, wd *watchdog) (*http.Response, outcome) {
	s := k.s
	u, err := s.core.urls.get(n.Address, k.path)
	if err != nil {
		s.registry.ReportFailure(n.ID)
		k.fail(n.ID, "%v", err)
		return nil, outcomeRetry
	}
	body := k.body
	if k.cont.body != nil {
		body = k.cont.body
	}
	resp, err := s.core.transport.RoundTrip(k.upstreamRequest(ctx, u, body))
	if err != nil {
		if k.ctx.Err() != nil {
			return nil, outcomeClientGone
		}
		s.registry.ReportFailure(n.ID)
		if wd.fired.Load() && !wd.stalled.Load() {
			k.fail(n.ID, "no response within %s", s.cfg.FirstByteTimeout)
		} else {
			k.fail(n.ID, "%s", wd.cause(err))
		}
		return nil, outcomeRetry
	}
	if resp.StatusCode < 400 {
		s.registry.ReportSuccess(n.ID)
		return resp, outcomeDone
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxCapturedBody))
	if k.ctx.Err() != nil {
		return nil, outcomeClientGone
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		if resp.StatusCode >= 500 {
			s.registry.ReportFailure(n.ID)
		}
		k.last = &capturedResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body, node: n.ID}
		k.fail(n.ID, "HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body[:min(len(body), 200)]))
		return nil, outcomeRetry
	}
	s.registry.ReportSuccess(n.ID)
	_ = rerr // a 4xx cut short still says what it could
	k.agentErr = backendError(resp.StatusCode, resp.Header.Get("Content-Type"), body)
	return nil, outcomeError
}

// framing is how a relayed body is cut into events: SSE events end with a blank line, NDJSON
// lines (Ollama's streams) with a newline; other bodies are not cut.
type framing uint8

const (
	framePlain framing = iota
	frameSSE
	frameNDJSON
)

func framingOf(contentType string) framing {
	switch {
	case strings.HasPrefix(contentType, "text/event-stream"):
		return frameSSE
	case strings.HasPrefix(contentType, "application/x-ndjson"):
		return frameNDJSON
	}
	return framePlain
}

// end returns the index just past the last complete event in b (0: none).
func (f framing) end(b []byte) int {
	switch f {
	case frameSSE:
		return eventEnd(b)
	case frameNDJSON:
		return bytes.LastIndexByte(b, '\n') + 1
	}
	return len(b)
}

// sep is what ends one event.
func (f framing) sep() []byte {
	if f == frameNDJSON {
		return ndjsonLineEnd
	}
	return sseEventEnd
}

// The relay's copy buffers. A call holds a small one: a streamed token's event (a few hundred
// bytes) fits it, and a stream waiting for its next token holds nothing more. A read that fills
// it means more is waiting (a non-streamed answer, a burst of events): the relay then takes a
// large buffer from the server's pool for the reads that follow and gives it back as soon as a
// read leaves it less than full, so large buffers are held by answers arriving fast, not by
// streams waiting. (When every call held a 32 KiB buffer, that was 74% of the gateway's heap with
// ten thousand streams open.)
const (
	relaySmall = 2 << 10
	relayBig   = 32 << 10
)

// relay copies the agent's answer into w, whole events at a time, flushing each read. Every read
// is bounded by the watchdog (FirstByteTimeout before the first byte, StreamIdleTimeout after).
func (k *call) relay(n *scheduler.Node, resp *http.Response, w sink, wd *watchdog) outcome {
	defer k.dropBig()
	s := k.s
	fr := framingOf(resp.Header.Get("Content-Type"))
	wrote := false // this attempt wrote to w
	off := 0       // bytes of a partial event held at the start of the buffer
	for {
		buf := k.small[:]
		if k.big != nil {
			buf = k.big[:]
		}
		wd.reset()
		nr, rerr := resp.Body.Read(buf[off:])
		total := off + nr
		out := buf[:total]
		full := total == len(buf)
		if fr != framePlain && rerr != io.EOF {
			if e := fr.end(out); e > 0 || !full || k.big == nil {
				out = out[:e]
			} // else an event larger than the large buffer: pass it on as it is
		}
		if len(out) > 0 || (rerr == io.EOF && !wrote) {
			if !wrote {
				wrote = true
				wd.streaming(s.cfg.StreamIdleTimeout)
			}
			if !k.committed {
				k.commit(w, resp, n.ID, fr)
				k.ttft = s.core.clock.Now().Sub(k.start)
				if fr != framePlain && !k.inner {
					// A batch line streamed internally is no stream of a client's: no ITL.
					k.mt.itl = s.metrics.itl.WithLabelValues(k.metricsLabel(), n.ID)
				}
			}
			// A backend's error event is a failure like a cut connection when the stream can be
			// continued: the events before it go out, it does not.
			failed, errMsg := -1, ""
			switch {
			case !k.cont.keep || fr == framePlain:
			case k.path == agentapi.PathResponses:
				failed, errMsg = responsesErrorEvent(out)
			default:
				failed, errMsg = errorEvent(out, fr)
			}
			if failed >= 0 {
				out = out[:failed]
			}
			if _, werr := w.Write(out); werr != nil {
				return outcomeClientGone
			}
			k.sent(out, fr)
			if fr != framePlain {
				w.Flush()
			}
			if failed >= 0 {
				return k.broken(n, w, fr, true, errMsg)
			}
		}
		off = k.keep(buf[len(out):total], full && rerr == nil)
		switch {
		case rerr == nil:
			continue
		case rerr == io.EOF && k.cont.keep && !k.answerEnded(fr):
			// The agent ended the stream cleanly but the answer did not end: its backend died
			// under it. That is a break like any other.
			return k.broken(n, w, fr, true, "the stream ended before the answer did")
		case rerr == io.EOF:
			return outcomeDone
		case k.ctx.Err() != nil:
			return outcomeClientGone
		}
		return k.broken(n, w, fr, wrote, wd.cause(rerr))
	}
}

// keep moves rest, the start of an event not complete yet, to the start of the buffer the next
// read goes into, and returns its length: the large buffer after a read that filled its buffer
// (more is waiting), the small one after a read that did not, when rest fits it (the answer waits
// for its next event).
func (k *call) keep(rest []byte, more bool) int {
	switch {
	case more && k.big == nil:
		k.big = k.s.bigBuf()
		return copy(k.big[:], rest)
	case !more && k.big != nil && len(rest) <= len(k.small):
		n := copy(k.small[:], rest)
		k.dropBig()
		return n
	case k.big != nil:
		return copy(k.big[:], rest)
	}
	return copy(k.small[:], rest)
}

// bigBuf takes a large relay buffer from the pool.
func (s *Server) bigBuf() *[relayBig]byte {
	if b, ok := s.core.bigBufs.Get().(*[relayBig]byte); ok {
		return b
	}
	return new([relayBig]byte)
}

// dropBig gives the call's large relay buffer, if it holds one, back to the pool.
func (k *call) dropBig() {
	if k.big != nil {
		k.s.core.bigBufs.Put(k.big)
		k.big = nil
	}
}

// answerEnded reports whether the stream relayed so far in framing fr ended its answer.
func (k *call) answerEnded(fr framing) bool {
	if k.path == agentapi.PathResponses {
		return k.respEnded || endsResponses(k.mt.window())
	}
	return streamEnded(fr, k.mt.window())
}

// streamEnded reports whether tail, the end of a stream in framing fr, is the end of an answer:
// SSE's [DONE], or Ollama's last line with "done": true.
func streamEnded(fr framing, tail []byte) bool {
	tail = bytes.TrimSpace(tail)
	switch fr {
	case frameSSE:
		return bytes.HasSuffix(tail, []byte("[DONE]"))
	case frameNDJSON:
		last := tail[bytes.LastIndexByte(tail, '\n')+1:]
		return bytes.Contains(last, []byte(`"done":true`))
	}
	return true
}

// sent meters events relayed to the client (before the flush: the client cannot have them
// before they are timed) and counts a Responses stream's events for its sequence numbers.
func (k *call) sent(out []byte, fr framing) {
	k.mt.body(out)
	if fr == framePlain {
		return
	}
	k.cont.note(out)
	if fr == frameSSE && k.path == agentapi.PathResponses {
		k.events += bytes.Count(out, sseEventEnd)
		k.respEnded = k.respEnded || (k.cont.keep && endsResponses(out))
	}
	k.mt.events(out, fr.sep(), k.s.core.clock.Now())
}

// broken handles an answer that broke off on node n. Before this attempt wrote anything, or into
// memory, it fails over. A stream already with its client is continued on another node where it
// can be (continue.go), and otherwise ends with one well-formed error event saying why; any other
// body is cut (outcomeAbort).
func (k *call) broken(n *scheduler.Node, w sink, fr framing, wrote bool, cause string) outcome {
	k.s.registry.ReportFailure(n.ID)
	k.fail(n.ID, "%s", cause)
	if !wrote {
		return outcomeRetry
	}
	if k.held != nil && !k.inner {
		k.restart()
		return outcomeRetry
	}
	o, why := k.tryContinue(n.ID, fr, w)
	if why == "" {
		return o
	}
	if k.held != nil {
		// A batch line's stream that cannot be continued starts over, as it did before lines
		// were continued: no client has any of it.
		k.restart()
		return outcomeRetry
	}
	msg := fmt.Sprintf("upstream node %s failed mid-stream: %s", n.ID, cause)
	if fr != framePlain {
		msg += "; it could not be continued: " + why
	}
	if r := k.endStream(w, msg); r.abort {
		return outcomeAbort
	}
	return outcomeDone
}

// restart forgets an answer held in memory that broke off, so that the next attempt starts it
// afresh: what was held, the meter, and what a continuation would have read.
func (k *call) restart() {
	k.held.reset()
	k.committed, k.status, k.ttft = false, 0, 0
	k.events, k.respEnded = 0, false
	k.mt.reset()
	k.cont.kept, k.cont.body = k.cont.kept[:0], nil
}

// writeNDJSONError ends a broken NDJSON stream as Ollama does: one last line {"error":"..."}.
func writeNDJSONError(w sink, message string) {
	_, _ = w.Write(appendOllamaError(nil, message))
	w.Flush()
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
func (k *call) commit(w sink, resp *http.Response, node string, fr framing) {
	k.committed, k.frame = true, fr
	h := w.Header()
	for key, v := range resp.Header {
		if !hopByHop[key] {
			h[key] = v
		}
	}
	agentHeaders{node: node}.write(h, k.attempts)
	if fr == frameSSE {
		// Tells a buffering reverse proxy in front of the gateway (nginx) to pass events on.
		h["X-Accel-Buffering"] = hdrNo
	}
	w.WriteHeader(resp.StatusCode)
	k.status = resp.StatusCode
}

// agentHeaders are the gateway's own answer headers: which node answered.
type agentHeaders struct{ node string }

// write sets them on h.
func (a agentHeaders) write(h http.Header, attempts int) {
	h[agentapi.HeaderNode] = []string{a.node}
	h[agentapi.HeaderAttempts] = []string{attemptsText(attempts)}
}

var (
	hdrNo  = []string{"no"}
	hdrOne = []string{"1"}
)

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
	h := make(http.Header, 8)
	h["Authorization"] = k.s.core.agentAuth
	h["Content-Type"] = hdrJSON
	h[agentapi.HeaderRequestID] = []string{k.reqID}
	// Backed by the pooled call: the request is done with them before the call is reused.
	k.names = [2]string{k.model, k.asked}
	h[agentapi.HeaderModel] = k.names[0:1:1]
	h[agentapi.HeaderClientModel] = k.names[1:2:2]
	if k.cont.body != nil {
		h[agentapi.HeaderContinue] = hdrOne
	}
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
