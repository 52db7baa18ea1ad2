package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-llm/herd/gateway/admission"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// The OpenAI routes: model listing and the inference routes, which read what routing needs from
// the body, resolve the model (base model or preset), and hand the request to the proxy.
//
// Decisions:
//   - A model is a base model when some node (stale or not) reports it under that exact name, or,
//     on an Ollama-style node (Ollama, sim), under its models.NormalizeName spelling, as the
//     registry stores those; a model known only to stale nodes is
//     answered with 503 and the reasons, not 404, since it exists and may come back. Otherwise a
//     preset of that name is applied to the body (the one time the body is decoded and
//     re-encoded); otherwise 404 model_not_found.
//   - The body is forwarded with the model name the client wrote: agents normalise names the way
//     their backend needs, and a vLLM model ID must keep its case.
//   - /v1/models lists the models that non-stale nodes have on disk or loaded, then the presets.
//     Backends do not say when a model was created, so "created" is when this gateway started.
//   - X-Request-Id: a client's own ID is kept when it is short and plain; otherwise the gateway
//     makes one. It is sent to the agent and back to the client.

// modelObject is OpenAI's model object.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

// Owners reported in /v1/models.
const (
	ownerHerd   = "herd"
	ownerPreset = "herd-preset"
)

// models returns the models clients can ask for: base models on non-stale nodes, by name, then
// presets, by name.
func (s *Server) models() []modelObject {
	created := s.core.started.Unix()
	snap := s.registry.Snapshot()
	var names []string
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if n.Stale {
			continue
		}
		for _, m := range n.Models {
			if (m.Resident || m.OnDisk) && !slices.Contains(names, m.Name) {
				names = append(names, m.Name)
			}
		}
	}
	slices.Sort(names)
	out := make([]modelObject, 0, len(names))
	for _, name := range names {
		out = append(out, modelObject{ID: name, Object: "model", Created: created, OwnedBy: ownerHerd})
	}
	for _, p := range s.presets.List() {
		c := created
		if !p.CreatedAt.IsZero() {
			c = p.CreatedAt.Unix()
		}
		out = append(out, modelObject{ID: p.Name, Object: "model", Created: c, OwnedBy: ownerPreset})
	}
	return out
}

// handleOpenAIListModels is GET /v1/models.
func (s *Server) handleOpenAIListModels(c *gin.Context) {
	c.JSON(http.StatusOK, modelList{Object: "list", Data: s.models()})
}

// handleOpenAIGetModel is GET /v1/models/{id}.
func (s *Server) handleOpenAIGetModel(c *gin.Context) {
	id := strings.TrimPrefix(c.Param("id"), "/")
	list := s.models()
	for _, m := range list {
		if m.ID == id {
			c.JSON(http.StatusOK, m)
			return
		}
	}
	// The Ollama-style alias ("llama3" for "llama3:latest"), for models on Ollama-style nodes only.
	if name, _, ok := findModel(s.registry.Snapshot(), []byte(models.NormalizeName(id)), true); ok {
		for _, m := range list {
			if m.OwnedBy == ownerHerd && m.ID == name {
				c.JSON(http.StatusOK, m)
				return
			}
		}
	}
	abortWithError(c, errModelNotFound(id))
}

// unknownModel is the answer for a model no node reports and no preset names. Right after the
// gateway starts (a restart, say) the registry is empty: while no node has registered yet, within
// the staleness window (three heartbeat intervals), the answer is a retryable 503, so that clients
// and resumed batches do not take "does not exist" for the truth.
func (s *Server) unknownModel(model string, snap *scheduler.Snapshot) *APIError {
	if up := s.core.clock.Now().Sub(s.core.started); len(snap.Nodes) == 0 && up < 3*s.cfg.HeartbeatInterval {
		return unavailable("No node has reported model `%s` yet: the gateway started %s ago and nodes are still registering. Please retry.", model, up.Round(time.Millisecond))
	}
	return errModelNotFound(model)
}

func errModelNotFound(model string) *APIError {
	return notFound("model_not_found", "model", "The model `%s` does not exist or you do not have access to it.", model)
}

// defaultTenant labels the tokens of requests made without a tenant's API key.
const defaultTenant = "default"

// metricsLabel is the model label of the request's metrics: the preset when one was applied.
func (k *call) metricsLabel() string {
	if k.preset != "" {
		return k.preset
	}
	return k.model
}

// call is one inference request on its way through the gateway. Calls are pooled: the scheduler
// request, its decision and the small copy buffer are reused, which keeps the hot path low on
// allocations. Its state is grouped by concern, each group reset as a whole when the call goes
// back to the pool.
type call struct {
	s *Server
	inbound
	routing
	progress
	traceState
	// cont continues the stream on another node when its node fails midway (continue.go).
	cont continuation
	// names backs the agent request's model headers.
	names [2]string
	// mt meters the relayed answer for the token counters, the stream latency histograms, the
	// rate limits' settlement and the request span.
	mt meter

	// small is the relay's copy buffer while the answer comes a little at a time: what an open
	// stream holds while it waits for its next token (proxy.go's relay takes a pooled large
	// buffer only while reads fill this one).
	small [relaySmall]byte
	// big is the pooled large copy buffer while the relay holds one (nil otherwise).
	big *[relayBig]byte
}

// inbound is what the client asked and who asked it.
type inbound struct {
	ctx   context.Context
	path  string
	class string
	start time.Time
	reqID string

	body []byte
	info bodyInfo
	// asked is the model name the client used (a preset's, an Ollama spelling), which the agent
	// writes into its answer; model is the base model as the scheduler knows it (the backend's
	// name); preset the preset applied, if any.
	asked  string
	model  string
	preset string
	// held, when set, is where the answer goes until it is complete (a batch line, a non-streamed
	// /api answer): a failure midway is taken back and fails over.
	held *memSink
	// inner is true for a batch line run as a stream internally (batch_stream.go), so that it
	// can be continued.
	inner bool

	// tenant is the caller; reserved the tokens its rate limit was charged up front (charged),
	// settled against what mt reads from the response's usage.
	tenant   *tenant
	reserved int
	charged  bool
}

// routing is the scheduler's input and decision for the call.
type routing struct {
	// seq numbers the request in this gateway: its scheduler Seq and the source of its ID and seed.
	seq  uint64
	req  scheduler.Request
	dec  scheduler.Decision
	excl [4]string
	tk   admission.Ticket
	// prefix holds req.Prefix: what each node's engine holds of the prompt (its storage is kept
	// across uses of the call); predicted is the granted node's part of it.
	prefix    []scheduler.PrefixMatch
	predicted int
}

// reset clears the routing state but keeps the decision's slices, the prefix matches' storage and
// the ticket's links to req and dec.
func (r *routing) reset() {
	r.excl = [4]string{}
	r.req = scheduler.Request{}
	r.prefix, r.predicted = r.prefix[:0], 0
	r.tk.LastSnap = nil
}

// progress is how the attempts went.
type progress struct {
	attempts int
	node     string
	status   int
	ttft     time.Duration
	// failures describes the failed attempts, for the log and the final error.
	failures []string
	// last is the last retryable answer an agent gave (5xx, 429), relayed if no node does better.
	last *capturedResponse
	// agentErr is an agent's 4xx answer as an error value.
	agentErr *APIError
	// events counts the SSE events a Responses stream passed to the client, so that an error
	// event after a failure carries the next sequence_number.
	events int
	// respEnded is true once a Responses stream's last event (response.completed, ...) was
	// relayed, for a stream that may be continued.
	respEnded bool
	// committed is true once the client (or memory) has the answer's status and headers, frame
	// how the answer is cut into events.
	committed bool
	frame     framing
}

// traceState is the call's tracing (tracing.go): the request's span (nil when tracing is off),
// the current attempt's context and the time spent queued.
type traceState struct {
	span      trace.Span
	actx      context.Context
	queueWait time.Duration
	answered  bool
}

// getCall takes a call from the server's pool. The pool is per server so that a ticket only ever
// meets one admission.
func (s *Server) getCall(ctx context.Context, path, class string) *call {
	k, _ := s.core.calls.Get().(*call)
	if k == nil {
		k = new(call)
		k.tk.Req, k.tk.Dec = &k.req, &k.dec
	}
	k.s = s
	k.inbound = inbound{ctx: ctx, path: path, class: class, start: s.core.clock.Now()}
	k.seq = s.core.seq.Add(1)
	return k
}

func putCall(k *call) {
	s := k.s
	k.s = nil
	info := k.inbound.info
	info.reset(false) // keeps the chain's buffer
	k.inbound = inbound{info: info}
	k.routing.reset()
	k.progress = progress{failures: k.failures[:0]}
	k.traceState = traceState{}
	k.cont.reset()
	k.mt.reset()
	s.core.calls.Put(k)
}

// requestID returns the client's X-Request-Id when it is usable, else a new one.
func (s *Server) requestID(client string, seq uint64) string {
	if len(client) > 0 && len(client) <= 128 && plainID(client) {
		return client
	}
	var b [24]byte
	n := copy(b[:], "req_")
	id := strconv.AppendUint(b[:n], mix64(s.core.seed^seq), 16)
	return string(id)
}

func plainID(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// mix64 is SplitMix64's finaliser: consecutive sequence numbers give unrelated IDs and seeds.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// prepare scans the body, charges the tenant's rate limits, resolves the model and fills the
// scheduler request.
func (k *call) prepare(h http.Header) *APIError {
	scan, apply := scanBody, (*models.Preset).Apply
	if ollamaRoute(k.path) {
		scan, apply = scanOllamaBody, (*models.Preset).ApplyOllama
	}
	if err := k.scan(scan); err != nil {
		return err
	}
	asked := k.info.model // in the client's body, which a preset replaces but never changes
	if err := k.admitRate(h); err != nil {
		return err
	}
	snap := k.s.registry.Snapshot()
	name, vram, ok := findModel(snap, k.info.model, false)
	if !ok {
		name, vram, ok = findModel(snap, []byte(models.NormalizeName(string(k.info.model))), true)
	}
	if !ok {
		asked := string(k.info.model)
		p, isPreset := k.s.presets.Lookup(asked)
		if !isPreset {
			return k.s.unknownModel(asked, snap)
		}
		body, err := apply(p, k.path, k.body)
		if err != nil {
			return badRequest("invalid_preset_request", "", "Could not apply preset `%s`: %v", p.Name, err)
		}
		k.body, k.preset, k.asked = body, p.Name, p.Name
		if err := k.scan(scan); err != nil {
			return err
		}
		if name, vram, ok = findModel(snap, []byte(p.Model), false); !ok {
			name, vram, ok = findModel(snap, []byte(models.NormalizeName(p.Model)), true)
		}
		if !ok {
			return unavailable("Preset `%s` runs on model `%s`, which no node has.", p.Name, p.Model)
		}
	}
	k.model = name
	if k.asked == "" {
		k.asked = name // the client's spelling, unless it is another (then it costs a string)
		if string(asked) != name {
			k.asked = string(asked)
		}
	}
	seq := k.seq
	k.req = scheduler.Request{
		Model:          name,
		Class:          k.class,
		PromptTokens:   k.s.core.tpb.tokens(name, k.info.promptBytes),
		MaxTokens:      k.info.maxTokens,
		PrefixHash:     k.info.prefixHash,
		ModelVRAMBytes: vram,
		Seq:            seq,
		Seed:           mix64(k.s.core.seed + seq),
		Exclude:        k.excl[:0],
	}
	k.prefix = k.s.core.prefix.Match(snap, name, k.info.chain.Links(), k.prefix[:0])
	k.s.core.tpb.scale(name, k.prefix)
	k.req.Prefix = k.prefix
	if k.s.core.chwbl {
		k.req.RoutingKey = chwblKey(k.body, k.info.firstUser)
	}
	if k.s.core.herd {
		k.req.Demand = k.s.core.demand.observe(name, k.s.core.clock.Now())
	}
	return nil
}

// scan reads what routing needs from the body with scan, and makes the Responses API's own
// checks on its route.
func (k *call) scan(scan func([]byte, *bodyInfo) *APIError) *APIError {
	if err := scan(k.body, &k.info); err != nil {
		return err
	}
	if k.path == agentapi.PathResponses {
		return checkResponses(k.body, &k.info)
	}
	return nil
}

// findModel finds the model called name on some node of snap and returns the snapshot's own
// string for it (so the hot path does not allocate one) and the most VRAM a node reports for it.
// With ollamaOnly, only Ollama-style nodes count: the normalised spelling (":latest" added,
// lower case) is an alias of Ollama's, never of an OpenAI-compatible server's ids.
func findModel(snap *scheduler.Snapshot, name []byte, ollamaOnly bool) (string, uint64, bool) {
	var found string
	var vram uint64
	if snap.ByModel != nil {
		// The index is keyed by string; the conversion does not allocate in a map lookup.
		for _, ref := range snap.ByModel[string(name)] {
			n := &snap.Nodes[ref.Node]
			if ollamaOnly && n.Backend == agentapi.BackendOpenAI {
				continue
			}
			m := &n.Models[ref.Model]
			found, vram = m.Name, max(vram, m.VRAMBytes)
		}
		return found, vram, found != ""
	}
	for i := range snap.Nodes {
		if ollamaOnly && snap.Nodes[i].Backend == agentapi.BackendOpenAI {
			continue
		}
		for j := range snap.Nodes[i].Models {
			m := &snap.Nodes[i].Models[j]
			if m.Name == string(name) {
				found, vram = m.Name, max(vram, m.VRAMBytes)
			}
		}
	}
	return found, vram, found != ""
}

// interactiveCall takes a call for tenant t's interactive request on the agent route path: its
// request ID, echoed in the answer's header, and with tracing on its server span. The caller
// puts it back.
func (s *Server) interactiveCall(c *gin.Context, t *tenant, path string) *call {
	k := s.getCall(c.Request.Context(), path, agentapi.ClassInteractive)
	k.tenant = t
	k.reqID = s.requestID(c.GetHeader(agentapi.HeaderRequestID), k.seq)
	c.Writer.Header()[agentapi.HeaderRequestID] = []string{k.reqID}
	if s.core.tracer != nil {
		k.startServerSpan(c.Request)
	}
	return k
}

// load reads the request's body into k and prepares the call (k.prepare); when it cannot run,
// ok is false and res says why.
func (k *call) load(r *http.Request, h http.Header) (res result, ok bool) {
	body, err := k.s.readBody(r)
	if err != nil {
		return result{err: err, clientGone: clientGone(k.ctx)}, false
	}
	k.body = body
	if err := k.prepare(h); err != nil {
		return result{err: err}, false
	}
	k.continuable(r.Header)
	return result{}, true
}

// handleInference serves one of the OpenAI inference routes; path is the agent's route for it.
func (s *Server) handleInference(path string) gin.HandlerFunc {
	return func(c *gin.Context) {
		t := s.authenticate(c)
		if t == nil {
			return
		}
		if !t.has(scopeInference) {
			abortWithError(c, errScope(scopeInference))
			return
		}
		k := s.interactiveCall(c, t, path)
		defer putCall(k)

		res, ok := k.load(c.Request, c.Writer.Header())
		if ok {
			res = k.run(c.Writer)
		}
		if res.err != nil {
			abortWithError(c, res.err)
			k.status = res.err.Status
		}
		k.settleRate(res)
		k.finish(res)
		if res.abort {
			// A non-streamed body broke off after it started: only a cut connection tells the
			// client it is incomplete.
			panic(http.ErrAbortHandler)
		}
	}
}

// finish records the request in the metrics and the log.
func (k *call) finish(res result) {
	s := k.s
	latency := s.core.clock.Now().Sub(k.start)
	status := k.status
	if res.clientGone {
		status = statusClientClosed
	}
	label := k.metricsLabel()
	s.metrics.observeRequest(label, k.node, statusText(status), latency)
	if status/100 == 2 {
		prompt, completion := k.mt.tokens(k.info.stream)
		s.core.tpb.observe(k.model, prompt, k.info.promptBytes)
		tenant := defaultTenant
		if k.tenant != nil && k.tenant.name != "" {
			tenant = k.tenant.name
		}
		s.metrics.observeTokens(label, k.node, tenant, prompt, completion)
		s.metrics.observePredicted(label, k.node, k.predicted)
		s.history.AddTokens(completion)
		if k.info.stream {
			s.metrics.observeStream(label, k.node, k.ttft, k.mt.tpot(completion))
		}
	}
	if k.span != nil {
		k.endSpan(res, status, latency)
	}

	level := slog.LevelDebug
	if status >= 500 || len(k.failures) > 0 {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(k.ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", k.reqID), slog.String("path", k.path), slog.String("class", k.class),
		slog.String("model", k.model), slog.Bool("stream", k.info.stream), slog.Int("status", status),
		slog.String("node", k.node), slog.Int("attempts", k.attempts),
		slog.Duration("latency", latency), slog.Duration("ttft", k.ttft),
	}
	if k.preset != "" {
		attrs = append(attrs, slog.String("preset", k.preset))
	}
	if k.tenant != nil && k.tenant.name != "" {
		attrs = append(attrs, slog.String("tenant", k.tenant.name))
	}
	if res.err != nil {
		attrs = append(attrs, slog.String("error", res.err.Message))
	}
	if len(k.failures) > 0 {
		attrs = append(attrs, slog.Any("failed_attempts", k.failures))
	}
	if k.cont.count > 0 {
		attrs = append(attrs, slog.Int("continued", k.cont.count))
	}
	if k.req.Model != "" {
		attrs = append(attrs, slog.Uint64("seq", k.req.Seq), slog.String("decision", k.decisionText()))
	}
	s.log.LogAttrs(k.ctx, level, "inference request", attrs...)
}

// decisionText describes the last scheduling decision: candidates in order with scores (and the
// prompt tokens each one's cache holds), then refused nodes with reasons.
func (k *call) decisionText() string {
	snap := k.tk.LastSnap
	if snap == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "policy=%s", k.dec.Policy)
	for _, c := range k.dec.Candidates {
		if c.Node < len(snap.Nodes) {
			fmt.Fprintf(&b, " %s:%.3f", snap.Nodes[c.Node].ID, c.Score)
			if c.PrefixTokens > 0 {
				fmt.Fprintf(&b, "(prefix %d)", c.PrefixTokens)
			}
		}
	}
	for _, r := range k.dec.Rejections {
		if r.Node < len(snap.Nodes) {
			fmt.Fprintf(&b, " %s:refused(%s)", snap.Nodes[r.Node].ID, r.Reason)
		}
	}
	return b.String()
}

// statusText is strconv.Itoa without an allocation for the statuses the gateway sends.
func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 404:
		return "404"
	case 413:
		return "413"
	case 429:
		return "429"
	case 499:
		return "499"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}
