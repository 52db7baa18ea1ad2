package sim

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/openaierr"
)

const (
	// batchExponent shapes how aggregate decode throughput grows with concurrent requests on one
	// GPU: n requests together make single × n^0.6 tokens/s (continuous batching re-reads the
	// weights once per step for all of them, but attention and sampling grow with n). Source:
	// llama.cpp's llama-batched-bench, n^0.5–0.8 for 2–32 sequences (see the package doc).
	batchExponent = 0.6
	// maxBatchGain caps that gain: beyond it the GPU is compute bound.
	maxBatchGain = 8.0
	// ewmaAlpha weights the newest measurement in the per-model speed averages.
	ewmaAlpha = 0.3
	// minTick is the shortest wait the decode loop asks the clock for: at very high speeds it
	// emits several tokens per wake-up rather than arming a timer per token.
	minTick = time.Millisecond
)

func batchGain(n int) float64 {
	if n <= 1 {
		return 1
	}
	return math.Min(math.Pow(float64(n), batchExponent), maxBatchGain)
}

// ServeInference implements nodeagent.Backend for the chat completions, completions and embeddings
// routes, in the OpenAI wire format.
func (n *Node) ServeInference(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	w.Header().Set(agentapi.HeaderSimulated, "true")
	req, apiErr := parseRequest(endpoint, body)
	if apiErr != nil {
		apiErr.Write(w)
		return
	}
	n.mu.Lock()
	m, ok := n.modelLocked(req.model)
	n.seq++
	seq := n.seq
	created := n.clock.Now().Unix()
	var spec models.ModelSpec
	if ok {
		spec = m.spec
	}
	n.mu.Unlock()
	if !ok {
		openaierr.NotFound("model_not_found", "model", "The model `%s` does not exist on simulated node %s.", req.model, n.id).Write(w)
		return
	}
	if e := n.checkFit(req, spec); e != nil {
		e.Write(w)
		return
	}

	ctx := r.Context()
	release, err := n.acquire(ctx)
	if err != nil {
		return // the client is gone
	}
	defer release()
	n.begin(m)
	defer n.end(m)
	if err := n.ensureLoaded(ctx, m); err != nil {
		if ctx.Err() == nil {
			runError(err).Write(w)
		}
		return
	}
	if req.wantsEmbedding {
		n.serveEmbeddings(ctx, w, req, m)
		return
	}
	n.serveGeneration(ctx, w, req, m, seq, created)
}

// checkFit refuses a request the model cannot take: the wrong kind of model, a prompt longer than
// the context window, more embedding dimensions than the model has.
func (n *Node) checkFit(req *request, spec models.ModelSpec) *openaierr.Error {
	if req.wantsEmbedding && !spec.Embedding {
		return invalid("model", "", "The model `%s` is not an embedding model and does not support %s.", spec.Name, agentapi.PathEmbeddings)
	}
	if !req.wantsEmbedding && spec.Embedding {
		return invalid("model", "", "The model `%s` is an embedding model and does not support %s. Did you mean to use %s?", spec.Name, req.endpoint, agentapi.PathEmbeddings)
	}
	if req.wantsEmbedding {
		if req.dimensions > spec.EmbeddingDim {
			return invalid("dimensions", "invalid_value", "Invalid 'dimensions': the model `%s` makes %d-dimensional embeddings, %d requested.", spec.Name, spec.EmbeddingDim, req.dimensions)
		}
		return nil
	}
	if ctxLen := n.contextFor(spec); req.promptTokens >= ctxLen {
		return invalid("messages", "context_length_exceeded", "This model's maximum context length is %d tokens. However, your prompt is about %d tokens. Please reduce the length of the prompt.", ctxLen, req.promptTokens)
	}
	return nil
}

func (n *Node) contextFor(spec models.ModelSpec) int {
	if spec.ContextLength > 0 {
		return min(n.ctxLen, spec.ContextLength)
	}
	return n.ctxLen
}

// runError maps a failure to run a request to its OpenAI-shaped error.
func runError(err error) *openaierr.Error {
	switch {
	case errors.Is(err, ErrModelNotFound):
		return &openaierr.Error{Status: http.StatusNotFound, Type: openaierr.TypeInvalidRequest, Param: "model", Code: "model_not_found", Message: err.Error()}
	case errors.Is(err, ErrModelTooLarge):
		return &openaierr.Error{Status: http.StatusServiceUnavailable, Type: openaierr.TypeUnavailable, Code: "model_does_not_fit", Message: err.Error()}
	case errors.Is(err, ErrInsufficientVRAM):
		return &openaierr.Error{Status: http.StatusServiceUnavailable, Type: openaierr.TypeUnavailable, Code: "insufficient_vram", Message: err.Error(), RetryAfter: 1}
	case errors.Is(err, errGPULost):
		return &openaierr.Error{Status: http.StatusServiceUnavailable, Type: openaierr.TypeUnavailable, Code: "gpu_lost", Message: "The simulated GPU serving this model failed: " + err.Error(), RetryAfter: 1}
	}
	return &openaierr.Error{Status: http.StatusInternalServerError, Type: openaierr.TypeServer, Code: "internal_error", Message: "simulated backend error: " + err.Error()}
}

func (n *Node) begin(m *modelState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m.inFlight++
	m.lastUsed = n.clock.Now()
}

func (n *Node) end(m *modelState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m.inFlight--
	now := n.clock.Now()
	m.lastUsed = now
	if m.state == stateResident {
		n.touchExpiryLocked(m, now)
		if m.inFlight == 0 && m.unloadWhenIdle {
			n.unloadLocked(m)
		}
	}
}

// run is one request's use of the GPUs, from prefill to its last token.
type run struct {
	n       *Node
	m       *modelState
	gen     uint64
	lost    chan struct{}
	gpus    []int
	keys    []uint64
	prompt  int
	cached  int
	prefill time.Duration
}

// startRun registers a request as busy on its model's GPUs and looks its prompt up in the prefix
// cache. The caller must call finish.
func (n *Node) startRun(m *modelState, prompt string, promptTokens int) (*run, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m.state != stateResident || len(m.placement) == 0 {
		return nil, errGPULost
	}
	r := &run{n: n, m: m, gen: m.gen, lost: m.lost, prompt: promptTokens}
	for _, s := range m.placement {
		r.gpus = append(r.gpus, s.gpu)
		n.heatLocked(n.gpus[s.gpu])
		n.gpus[s.gpu].active++
	}
	if prompt != "" {
		r.keys = prefixKeys(m.gen, prompt)
		r.cached = min(n.prefix.match(r.keys)*prefixBlockTokens, max(promptTokens-1, 0))
	}
	return r, nil
}

func (r *run) finish() {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	for _, g := range r.gpus {
		r.n.heatLocked(r.n.gpus[g])
		r.n.gpus[g].active--
	}
}

// baseRateLocked is the single-request speed of m on its placement (tokens/s, SpeedFactor
// included) by the per-GPU figure f. A model split across GPUs runs its layers one GPU after the
// other, so the time per token adds up: the harmonic mix of the GPUs' speeds by share. 0 when
// the model has no placement (it was lost).
func (n *Node) baseRateLocked(m *modelState, f func(models.GPUProfile, models.ModelSpec) float64) float64 {
	var total uint64
	for _, s := range m.placement {
		total += s.bytes
	}
	var perToken float64
	for _, s := range m.placement {
		g := n.gpus[s.gpu]
		r := f(g.profile, m.spec) * g.speedScale() * n.speed
		if r <= 0 {
			return 0
		}
		perToken += float64(s.bytes) / float64(total) / r
	}
	if perToken == 0 {
		return 0
	}
	return 1 / perToken
}

// doPrefill waits out the uncached part of the prompt at the placement's prefill speed, then
// records the prompt's blocks in the prefix cache.
func (r *run) doPrefill(ctx context.Context) error {
	r.n.mu.Lock()
	rate := r.n.baseRateLocked(r.m, models.PrefillTokensPerSecond)
	r.n.mu.Unlock()
	if rate <= 0 {
		return errGPULost
	}
	uncached := r.prompt - r.cached
	d := seconds(float64(uncached) / rate)
	start := r.n.clock.Now()
	if err := r.n.sleep(ctx, r.lost, d); err != nil {
		return err
	}
	r.prefill = r.n.clock.Now().Sub(start)
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if r.m.gen == r.gen {
		r.n.prefix.add(r.keys)
		if uncached > 0 && r.prefill > 0 {
			r.m.prefillEWMA = ewma(r.m.prefillEWMA, float64(uncached)/r.prefill.Seconds())
		}
	}
	return nil
}

func ewma(old, v float64) float64 {
	if old == 0 {
		return v
	}
	return ewmaAlpha*v + (1-ewmaAlpha)*old
}

// decodeRate is this request's current share of its GPUs' decode throughput, and the number of
// requests sharing them (itself included).
func (r *run) decodeRate() (float64, int) {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	base := r.n.baseRateLocked(r.m, models.DecodeTokensPerSecond)
	busy := 1
	for _, g := range r.gpus {
		busy = max(busy, r.n.gpus[g].active)
	}
	return base * batchGain(busy) / float64(busy), busy
}

// decode produces total tokens, calling emit(k) each time k more are ready. The rate is looked up
// again before every wait, so a request speeds up and slows down as others come and go.
func (r *run) decode(ctx context.Context, total int, emit func(k int) error) (int, error) {
	start := r.n.clock.Now()
	last := start
	credit := 0.0
	produced := 0
	busyTime := 0.0 // ∫ busy dt over the decode: the mean concurrency the measurement ran at
	for produced < total {
		rate, busy := r.decodeRate()
		if rate <= 0 {
			return produced, errGPULost
		}
		if credit < 1 {
			if err := r.n.sleep(ctx, r.lost, max(seconds((1-credit)/rate), minTick)); err != nil {
				return produced, err
			}
		}
		now := r.n.clock.Now()
		credit += now.Sub(last).Seconds() * rate
		busyTime += now.Sub(last).Seconds() * float64(busy)
		last = now
		k := min(int(credit+1e-6), total-produced)
		if k <= 0 {
			continue
		}
		credit = max(credit-float64(k), 0)
		if emit != nil {
			if err := emit(k); err != nil {
				return produced, err
			}
		}
		produced += k
	}
	if elapsed := r.n.clock.Now().Sub(start); produced > 1 && elapsed > 0 {
		r.n.mu.Lock()
		r.m.decodeEWMA = ewma(r.m.decodeEWMA, float64(produced)/elapsed.Seconds())
		r.m.concurrencyEWMA = ewma(r.m.concurrencyEWMA, max(busyTime/elapsed.Seconds(), 1))
		r.n.mu.Unlock()
	}
	return produced, nil
}

func (n *Node) serveGeneration(ctx context.Context, w http.ResponseWriter, req *request, m *modelState, seq uint64, created int64) {
	spec := m.spec
	textSeed := hashStrings("herd-sim-text", u64(uint64(n.seed)), u64(uint64(req.seed)), spec.Name, req.prompt)
	rep, apiErr := n.compose(req, n.contextFor(spec)-req.promptTokens, textSeed, seq)
	if apiErr != nil {
		apiErr.Write(w)
		return
	}
	toks, finish, out := rep.tokens, rep.finish, len(rep.tokens)

	r, err := n.startRun(m, req.prompt, req.promptTokens)
	if err != nil {
		runError(err).Write(w)
		return
	}
	defer r.finish()
	if err := r.doPrefill(ctx); err != nil {
		if ctx.Err() == nil {
			runError(err).Write(w)
		}
		return
	}

	chat := req.endpoint == agentapi.PathChatCompletions
	id := n.responseID("cmpl-", seq)
	if chat {
		id = n.responseID("chatcmpl-", seq)
	}
	fp := n.fingerprint(spec.Name)
	use := func(produced int) usage {
		return usage{PromptTokens: req.promptTokens, CompletionTokens: produced, TotalTokens: req.promptTokens + produced,
			PromptTokensDetails: &promptTokensDetails{CachedTokens: r.cached}}
	}

	if !req.stream {
		if _, err := r.decode(ctx, out, nil); err != nil {
			if ctx.Err() == nil {
				runError(err).Write(w)
			}
			return
		}
		text := strings.Join(toks, "")
		var v any
		if chat {
			msg := assistantMessage{Role: "assistant", Content: &text}
			if rep.call != nil {
				msg = assistantMessage{Role: "assistant", ToolCalls: []toolCallOut{*rep.call}}
			}
			v = chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: spec.Name, SystemFingerprint: fp,
				Choices: []chatChoice{{Message: msg, FinishReason: finish}},
				Usage:   use(out)}
		} else {
			v = textCompletion{ID: id, Object: "text_completion", Created: created, Model: spec.Name, SystemFingerprint: fp,
				Choices: []textChoice{{Text: text, FinishReason: &finish}}, Usage: use(out)}
		}
		b, err := json.Marshal(v)
		if err != nil {
			runError(err).Write(w)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(append(b, '\n'))
		return
	}

	s := newSSE(w)
	var nullUsage json.RawMessage
	if req.usage {
		nullUsage = json.RawMessage("null")
	}
	chatEvent := func(delta any, fin *string) error {
		return s.event(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: spec.Name, SystemFingerprint: fp,
			Choices: []chunkChoice{{Delta: delta, FinishReason: fin}}, Usage: nullUsage})
	}
	textEvent := func(text string, fin *string) error {
		return s.event(textChunk{ID: id, Object: "text_completion", Created: created, Model: spec.Name, SystemFingerprint: fp,
			Choices: []textChoice{{Text: text, FinishReason: fin}}, Usage: nullUsage})
	}
	next := 0
	emit := func(k int) error {
		for ; k > 0; k-- {
			var err error
			switch {
			case rep.call != nil && next == 0:
				c := rep.call
				err = chatEvent(firstToolDelta{Role: "assistant", ToolCalls: []toolCallDelta{{ID: c.ID, Type: c.Type, Function: functionDelta{Name: c.Function.Name}}}}, nil)
				if err == nil {
					err = chatEvent(toolArgsDelta{ToolCalls: []toolCallDelta{{Function: functionDelta{Arguments: toks[next]}}}}, nil)
				}
			case rep.call != nil:
				err = chatEvent(toolArgsDelta{ToolCalls: []toolCallDelta{{Function: functionDelta{Arguments: toks[next]}}}}, nil)
			case chat && next == 0:
				if err = chatEvent(firstChunkDelta{Role: "assistant"}, nil); err == nil {
					err = chatEvent(chunkDelta{Content: &toks[next]}, nil)
				}
			case chat:
				err = chatEvent(chunkDelta{Content: &toks[next]}, nil)
			default:
				err = textEvent(toks[next], nil)
			}
			if err != nil {
				return err
			}
			next++
		}
		return nil
	}
	if _, err := r.decode(ctx, out, emit); err != nil {
		if ctx.Err() != nil {
			return
		}
		ae := runError(err)
		if !s.started {
			ae.Write(w)
			return
		}
		// Mid-stream: an error event the OpenAI SDKs raise, and no [DONE].
		b, _ := json.Marshal(ae.Body())
		s.data(b)
		return
	}
	if chat && next == 0 {
		// Nothing was said (a stop sequence at the very start): the role still opens the answer.
		if err = chatEvent(firstChunkDelta{Role: "assistant"}, nil); err != nil {
			return
		}
	}
	if chat {
		err = chatEvent(chunkDelta{}, &finish)
	} else {
		err = textEvent("", &finish)
	}
	if err != nil {
		return
	}
	if req.usage {
		u, _ := json.Marshal(use(out))
		if chat {
			err = s.event(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: spec.Name, SystemFingerprint: fp,
				Choices: []chunkChoice{}, Usage: u})
		} else {
			err = s.event(textChunk{ID: id, Object: "text_completion", Created: created, Model: spec.Name, SystemFingerprint: fp,
				Choices: []textChoice{}, Usage: u})
		}
		if err != nil {
			return
		}
	}
	s.done()
}

func (n *Node) serveEmbeddings(ctx context.Context, w http.ResponseWriter, req *request, m *modelState) {
	spec := m.spec
	total := 0
	for _, c := range req.inputTokens {
		total += min(c, spec.ContextLength) // Ollama truncates inputs to the context by default
	}
	r, err := n.startRun(m, "", total)
	if err != nil {
		runError(err).Write(w)
		return
	}
	defer r.finish()
	if err := r.doPrefill(ctx); err != nil {
		if ctx.Err() == nil {
			runError(err).Write(w)
		}
		return
	}
	dim := spec.EmbeddingDim
	if req.dimensions > 0 {
		dim = req.dimensions
	}
	resp := embeddingList{Object: "list", Model: spec.Name, Usage: embeddingUsage{PromptTokens: total, TotalTokens: total}}
	for i, text := range req.inputs {
		v := embedding(spec.Name, text, spec.EmbeddingDim)
		if dim < len(v) {
			v = truncateUnit(v, dim)
		}
		var e any = v
		if req.base64 {
			b := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(x))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		resp.Data = append(resp.Data, embeddingData{Object: "embedding", Index: i, Embedding: e})
	}
	b, err := json.Marshal(resp)
	if err != nil {
		runError(err).Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}
