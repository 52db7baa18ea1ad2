package nodeagent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/ollamacompat"
	"github.com/herd-llm/herd/nodeagent/responses"
	"github.com/herd-llm/herd/pki"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// PathMetrics serves the agent process's Go runtime and process metrics (go_memstats_*,
// go_goroutines, process_resident_memory_bytes) in the Prometheus text format, behind the
// cluster token like every route but /healthz: what a stream costs the agent is measured there
// (herd loadtest --scenario streams).
const PathMetrics = "/metrics"

// runtimeMetrics returns the handler of PathMetrics, on a registry of its own (no globals).
func runtimeMetrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// maxControlBody bounds the JSON bodies of the model-management routes.
const maxControlBody = 1 << 20

// refreshTimeout bounds the model-list refresh after a model-management call.
const refreshTimeout = 3 * time.Second

// OpenAI error types used by the agent.
const (
	errInvalidRequest = "invalid_request_error"
	errAuthentication = "authentication_error"
	errNotFound       = "not_found_error"
	errServer         = "server_error"
)

var digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	for _, ep := range []string{agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathEmbeddings, agentapi.PathResponses} {
		mux.HandleFunc("POST "+ep, a.serveInference(ep))
	}
	for _, p := range []string{agentapi.PathOllamaChat, agentapi.PathOllamaGenerate, agentapi.PathOllamaEmbed, agentapi.PathOllamaEmbeddings} {
		mux.HandleFunc("POST "+p, a.serveNative(p, true))
	}
	mux.HandleFunc("POST "+agentapi.PathOllamaShow, a.serveNative(agentapi.PathOllamaShow, false))
	mux.HandleFunc("GET "+agentapi.PathInfo, a.serveInfo)
	mux.HandleFunc("POST "+agentapi.PathModelPull, a.servePull)
	mux.HandleFunc("POST "+agentapi.PathModelLoad, a.serveModelOp(opLoad))
	mux.HandleFunc("POST "+agentapi.PathModelUnload, a.serveModelOp(opUnload))
	mux.HandleFunc("POST "+agentapi.PathModelDelete, a.serveModelOp(opDelete))
	mux.HandleFunc("GET "+agentapi.PathModelExport, a.serveExport)
	mux.HandleFunc("GET "+agentapi.PathBlobPrefix+"{digest}", a.serveBlob)
	mux.HandleFunc("POST "+agentapi.PathModelCopy, a.serveCopy)
	mux.HandleFunc("POST "+agentapi.PathSimFault, a.serveFault)
	mux.Handle("GET "+PathMetrics, runtimeMetrics())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, errNotFound, "unknown_route", "", fmt.Sprintf("no route %s %s on this agent", r.Method, r.URL.Path))
	})
	authed := a.authenticate(mux)
	health, _ := json.Marshal(struct {
		Status string `json:"status"`
		Node   string `json:"node"`
	}{"ok", a.cfg.NodeID})
	// Liveness answers without the cluster token, so probes need no secret.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == agentapi.PathHealthz && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(health)
			return
		}
		authed.ServeHTTP(w, r)
	})
}

// authenticate admits requests carrying "Authorization: Bearer <cluster token>" and stamps every
// response with the node id.
func (a *Agent) authenticate(next http.Handler) http.Handler {
	want := []byte(a.cfg.ClusterToken)
	// Shared by every response: net/http only reads header values, and Set replaces a slice
	// rather than writing into it.
	node := []string{a.cfg.NodeID}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h[agentapi.HeaderNode] = node
		if id := r.Header[agentapi.HeaderRequestID]; len(id) > 0 && id[0] != "" {
			h[agentapi.HeaderRequestID] = id[:1:1]
		}
		if a.cfg.Certs != nil {
			if err := certAllows(r); err != nil {
				writeError(w, http.StatusUnauthorized, errAuthentication, agentapi.CodeClientCertRequired, "", err.Error())
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			writeError(w, http.StatusUnauthorized, errAuthentication, "invalid_cluster_token", "",
				"missing or wrong cluster token: send Authorization: Bearer <cluster token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// certAllows admits, on a joined agent, a gateway's client certificate of the cluster to every
// route, and another node's to the routes a model copy reads (export and blobs).
func certAllows(r *http.Request) error {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return errors.New("a client certificate of this cluster is required")
	}
	id, err := pki.IdentityOf(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return errors.New("the client certificate names no herd gateway or node")
	}
	switch {
	case id.Role == pki.RoleGateway:
		return nil
	case id.Role == pki.RoleNode && r.Method == http.MethodGet &&
		(r.URL.Path == agentapi.PathModelExport || strings.HasPrefix(r.URL.Path, agentapi.PathBlobPrefix)):
		return nil
	}
	return fmt.Errorf("%s may not call %s %s on a node", id, r.Method, r.URL.Path)
}

// writeError writes the OpenAI error shape.
func writeError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	body := agentapi.ErrorBody{Error: agentapi.ErrorDetail{Message: msg, Type: typ}}
	if code != "" {
		body.Error.Code = &code
	}
	if param != "" {
		body.Error.Param = &param
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// writeBackendError answers with the status a backend error asks for (HTTPStatuser, or an
// *agentapi.APIError from a peer), else 502: the agent is a proxy for the backend.
func writeBackendError(w http.ResponseWriter, err error) {
	status := http.StatusBadGateway
	var hs HTTPStatuser
	var ae *agentapi.APIError
	switch {
	case errors.As(err, &hs) && hs.HTTPStatus() >= 400:
		status = hs.HTTPStatus()
	case errors.As(err, &ae) && ae.Status >= 400:
		status = ae.Status
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	typ := errServer
	switch {
	case status == http.StatusNotFound:
		typ = errNotFound
	case status < 500:
		typ = errInvalidRequest
	}
	writeError(w, status, typ, "backend_error", "", err.Error())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func notImplemented(w http.ResponseWriter, kind, what string) {
	writeError(w, http.StatusNotImplemented, errInvalidRequest, "capability_not_supported", "",
		fmt.Sprintf("the %s backend on this node cannot %s", kind, what))
}

// readJSON decodes a bounded control body into v; it answers 400/413 itself and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, errInvalidRequest, "request_too_large", "",
				fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
			return false
		}
		writeError(w, http.StatusBadRequest, errInvalidRequest, "invalid_json", "", "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func (a *Agent) serveInference(endpoint string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r, a.cfg.MaxBodyBytes)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, errInvalidRequest, "request_too_large", "",
					fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
				return
			}
			writeError(w, http.StatusBadRequest, errInvalidRequest, "bad_body", "", "cannot read request body: "+err.Error())
			return
		}
		model := requestModel(r.Header, body)
		if model == "" {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "missing_model", "model",
				"you must provide a model parameter")
			return
		}
		// rreq is a continued Responses request, translated to chat completions by the
		// continuation (continueResponses).
		var rreq *responses.Request
		cont, body, err := a.continuation(r, body, func(req map[string]json.RawMessage, c *agentapi.Continuation) error {
			if endpoint == agentapi.PathResponses {
				var err error
				rreq, err = continueResponses(req, c)
				return err
			}
			return continueOpenAI(endpoint, req, c)
		})
		if err != nil {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "cannot_continue", "", err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		if a.backend.Simulated() {
			w.Header().Set(agentapi.HeaderSimulated, "true")
		}
		var tw *responses.Writer
		route := endpoint // per request: a translated Responses request goes to chat completions
		if rreq != nil {
			// A continued Responses stream is always translated: no backend's own Responses
			// API continues a partial answer. The writer follows the events the client has.
			tw = responses.NewWriter(w, rreq, responses.Options{ID: cont.ID, Now: a.clock.Now, Resume: resumeOf(cont)})
			w, route = tw, agentapi.PathChatCompletions
		} else if endpoint == agentapi.PathResponses {
			if rs, ok := a.backend.(ResponsesServer); !ok || !rs.ServesResponses(r.Context()) {
				// The backend gets a chat completions request; tw writes its answer to the client
				// in the Responses format. The meter sits between, so it reads chat usage as usual.
				chat, req, e := responses.ToChat(body)
				if e != nil {
					writeError(w, e.Status, errInvalidRequest, e.Code, e.Param, e.Message)
					return
				}
				tw = responses.NewWriter(w, req, responses.Options{ID: a.responseID(), Now: a.clock.Now})
				w, route, body = tw, agentapi.PathChatCompletions, chat
				r.Body = io.NopCloser(bytes.NewReader(body))
				r.ContentLength = int64(len(body))
			}
		}
		var aw *answerWriter
		if tw == nil {
			aw = answerFor(w, cont, clientModel(r.Header, model))
		}
		if aw != nil {
			w = aw
		}
		a.metered(w, r, endpoint, model, func(mw http.ResponseWriter, r *http.Request) {
			a.serveBackend(mw, r, route, body)
			if tw != nil {
				tw.Finish()
			}
			if aw != nil {
				aw.finish()
			}
		})
	}
}

// continuation takes the continuation out of a request marked with HeaderContinue and rewrites
// body with apply (the backend's way to continue); unmarked requests pass as they are.
func (a *Agent) continuation(r *http.Request, body []byte, apply func(map[string]json.RawMessage, *agentapi.Continuation) error) (*agentapi.Continuation, []byte, error) {
	if r.Header.Get(agentapi.HeaderContinue) == "" {
		return nil, body, nil
	}
	req, c, err := takeContinuation(body)
	if err == nil {
		err = apply(req, c)
	}
	if err == nil {
		body, err = json.Marshal(req)
	}
	if err != nil {
		a.log.Warn("cannot continue a broken stream", "request_id", r.Header.Get(agentapi.HeaderRequestID), "path", r.URL.Path, "err", err)
		return nil, nil, err
	}
	sum := sha256.Sum256([]byte(c.Content))
	a.log.Info("continuing a broken stream", "request_id", r.Header.Get(agentapi.HeaderRequestID), "path", r.URL.Path,
		"prefix_chars", utf8.RuneCountInString(c.Content), "prefix_sha256", hex.EncodeToString(sum[:]), "tokens_before", c.Tokens)
	return c, body, nil
}

// answerFor wraps w to write the client's framing into the answer: a continued stream's (cont),
// or only the client's model name (name, "" when it is the backend's); nil when nothing needs
// rewriting.
func answerFor(w http.ResponseWriter, cont *agentapi.Continuation, name string) *answerWriter {
	switch {
	case cont != nil:
		return &answerWriter{ResponseWriter: w, fix: continuedAnswer(cont, name)}
	case name != "":
		return &answerWriter{ResponseWriter: w, fix: renameModel(name)}
	}
	return nil
}

// requestModel is the backend's name of the request's model: the gateway's HeaderModel, else
// (a caller other than the gateway: a test, curl on the node) the body's "model".
func requestModel(h http.Header, body []byte) string {
	if v := h[agentapi.HeaderModel]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	return modelFromBody(body)
}

// metered runs serve, an inference for model on endpoint, with its answer metered (and, with
// tracing on, its spans): the agent's figures for the gateway come from here.
func (a *Agent) metered(w http.ResponseWriter, r *http.Request, endpoint, model string, serve func(http.ResponseWriter, *http.Request)) {
	start := a.clock.Now()
	var tr *inferenceTrace
	if a.tracer != nil {
		r, tr = a.startInference(r, endpoint, model, start)
	}
	mw := getMeterWriter(w, a.clock)
	conc := a.begin(model)
	defer func() {
		a.end(model, start, conc, mw)
		if tr != nil {
			tr.end(mw, start, a.clock.Now())
		}
		putMeterWriter(mw)
	}()
	serve(mw, r)
}

// responseID is a new Responses id: "resp_" and 24 random hex digits.
func (a *Agent) responseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "resp_" + hex.EncodeToString(b[:])
}

// serveNative serves one of Ollama's native routes. A backend that speaks Ollama's API gets the
// request unchanged; any other (an OpenAI-compatible server, the simulator) gets its OpenAI
// translation (package ollamacompat), and the agent writes the answer back in Ollama's format.
// Inference routes are counted, metered and traced like the OpenAI ones (the meter reads NDJSON
// too, and on a translated request the backend's OpenAI answer); errors are in Ollama's shape
// ({"error":"..."}), which is what the caller of these routes expects.
func (a *Agent) serveNative(path string, inference bool) http.HandlerFunc {
	ep := nativeEndpoints[path]
	return func(w http.ResponseWriter, r *http.Request) {
		nb, native := a.backend.(NativeOllama)
		body, err := readBody(w, r, a.cfg.MaxBodyBytes)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeOllamaError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
				return
			}
			writeOllamaError(w, http.StatusBadRequest, "cannot read request body: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !inference {
			if native {
				nb.ServeOllama(w, r, path, body)
			} else {
				a.serveShow(w, r, body)
			}
			return
		}
		model := requestModel(r.Header, body)
		if model == "" {
			writeOllamaError(w, http.StatusBadRequest, "model is required")
			return
		}
		if a.backend.Simulated() {
			w.Header().Set(agentapi.HeaderSimulated, "true")
		}
		if native {
			cont, body, err := a.continuation(r, body, func(req map[string]json.RawMessage, c *agentapi.Continuation) error {
				return continueOllama(path, req, c)
			})
			if err != nil {
				writeOllamaError(w, http.StatusBadRequest, err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			aw := answerFor(w, cont, clientModel(r.Header, model))
			if aw != nil {
				w = aw
			}
			a.metered(w, r, path, model, func(mw http.ResponseWriter, r *http.Request) {
				nb.ServeOllama(mw, r, path, body)
				if aw != nil {
					aw.finish()
				}
			})
			return
		}
		// The continuation, if any, is taken out before the translation and applied to it after.
		var cont *agentapi.Continuation
		if r.Header.Get(agentapi.HeaderContinue) != "" {
			req, c, err := takeContinuation(body)
			if err != nil {
				writeOllamaError(w, http.StatusBadRequest, err.Error())
				return
			}
			body, _ = json.Marshal(req)
			cont = c
		}
		up, err := ollamacompat.Translate(ep, body)
		if err != nil {
			status := http.StatusBadRequest
			if !ollamacompat.IsBadRequest(err) {
				status = http.StatusInternalServerError
			}
			writeOllamaError(w, status, err.Error())
			return
		}
		if cont != nil {
			r.Header.Set(agentapi.HeaderContinue, "1")
			c := *cont
			if _, up.Body, err = a.continuation(r, withContinuation(up.Body, &c), func(req map[string]json.RawMessage, c *agentapi.Continuation) error {
				return continueOpenAI(up.Path, req, c)
			}); err != nil {
				writeOllamaError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		name := r.Header.Get(agentapi.HeaderClientModel)
		if name == "" {
			name = modelFromBody(body) // Ollama echoes the name it was asked for
		}
		start := a.clock.Now()
		var out http.ResponseWriter = w
		aw := answerFor(w, cont, "")
		if aw != nil {
			out = aw
		}
		tw := ollamacompat.NewWriter(out, ep, up, name, nativeStream(body), start, a.clock.Now)
		r.Body = io.NopCloser(bytes.NewReader(up.Body))
		r.ContentLength = int64(len(up.Body))
		a.metered(tw, r, path, model, func(mw http.ResponseWriter, r *http.Request) {
			a.serveBackend(mw, r, up.Path, up.Body)
			tw.Finish()
			if aw != nil {
				aw.finish()
			}
		})
	}
}

// withContinuation puts c back into the JSON object body as its continuation member.
func withContinuation(body []byte, c *agentapi.Continuation) []byte {
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil {
		return body
	}
	req[agentapi.ContinueField], _ = json.Marshal(c)
	b, _ := json.Marshal(req)
	return b
}

// nativeEndpoints maps Ollama's native inference routes to their translations' endpoints.
var nativeEndpoints = map[string]ollamacompat.Endpoint{
	agentapi.PathOllamaChat: ollamacompat.Chat, agentapi.PathOllamaGenerate: ollamacompat.Generate,
	agentapi.PathOllamaEmbed: ollamacompat.Embed, agentapi.PathOllamaEmbeddings: ollamacompat.Embeddings,
}

// nativeStream reports whether a native request streams: Ollama streams unless "stream" is false.
func nativeStream(body []byte) bool {
	var v struct {
		Stream *bool `json:"stream"`
	}
	_ = json.Unmarshal(body, &v)
	return v.Stream == nil || *v.Stream
}

// writeOllamaError writes Ollama's error shape, {"error":"message"}.
func writeOllamaError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// readBody reads an inference body of at most limit bytes. A body of announced length is read
// into one buffer of that size; one of unknown length grows as it arrives, bounded by
// http.MaxBytesReader. Too large a body is an *http.MaxBytesError either way.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		// As MaxBytesReader would: the rest of the body is not read, so the connection is not
		// kept for another request.
		w.Header().Set("Connection", "close")
		return nil, &http.MaxBytesError{Limit: limit}
	}
	if r.ContentLength >= 0 {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

func (a *Agent) serveInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, a.Heartbeat(r.Context()))
}

// refreshModels re-reads the backend's model list so the next heartbeat shows a change at once.
func (a *Agent) refreshModels(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	a.sampleModels(ctx)
}

type modelOp int

const (
	opLoad modelOp = iota
	opUnload
	opDelete
)

func (a *Agent) serveModelOp(op modelOp) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mm, ok := a.backend.(ModelManager)
		if !ok {
			notImplemented(w, a.backend.Kind(), "load, unload or delete models")
			return
		}
		var req agentapi.ModelRequest
		if !readJSON(w, r, &req) {
			return
		}
		if req.Model == "" {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "missing_model", "model", "you must provide a model parameter")
			return
		}
		var err error
		switch op {
		case opLoad:
			err = mm.Load(r.Context(), req.Model, req.KeepAlive)
		case opUnload:
			err = mm.Unload(r.Context(), req.Model)
		case opDelete:
			err = mm.Delete(r.Context(), req.Model)
		}
		if err != nil {
			writeBackendError(w, err)
			return
		}
		a.refreshModels(r.Context())
		writeJSON(w, agentapi.Progress{Node: a.cfg.NodeID, Status: "success"})
	}
}

// progressStream writes NDJSON Progress lines, flushing each; backends may report progress from
// several goroutines.
type progressStream struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	rc   *http.ResponseController
	enc  *json.Encoder
	node string
}

func newProgressStream(w http.ResponseWriter, node string) *progressStream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	p := &progressStream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w), node: node}
	_ = p.rc.Flush()
	return p
}

func (p *progressStream) send(pr agentapi.Progress) {
	pr.Node = p.node
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.enc.Encode(pr)
	_ = p.rc.Flush()
}

func (p *progressStream) finish(err error) {
	if err != nil {
		p.send(agentapi.Progress{Status: "error", Error: err.Error()})
		return
	}
	p.send(agentapi.Progress{Status: "success"})
}

func (a *Agent) servePull(w http.ResponseWriter, r *http.Request) {
	mm, ok := a.backend.(ModelManager)
	if !ok {
		notImplemented(w, a.backend.Kind(), "pull models")
		return
	}
	var req agentapi.PullRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, errInvalidRequest, "missing_model", "model", "you must provide a model parameter")
		return
	}
	ps := newProgressStream(w, a.cfg.NodeID)
	err := mm.Pull(r.Context(), req.Model, func(p agentapi.Progress) {
		if p.Status == "success" || p.Error != "" {
			return // the final line is the agent's to write, after the backend returns
		}
		ps.send(p)
	})
	if err == nil {
		a.refreshModels(r.Context())
	}
	ps.finish(err)
}

func (a *Agent) serveExport(w http.ResponseWriter, r *http.Request) {
	ex, ok := a.backend.(ModelExporter)
	if !ok {
		notImplemented(w, a.backend.Kind(), "export models")
		return
	}
	model := r.URL.Query().Get("model")
	if model == "" {
		writeError(w, http.StatusBadRequest, errInvalidRequest, "missing_model", "model", "you must provide a model parameter")
		return
	}
	m, err := ex.Export(r.Context(), model)
	if err != nil {
		writeBackendError(w, err)
		return
	}
	writeJSON(w, m)
}

func (a *Agent) serveBlob(w http.ResponseWriter, r *http.Request) {
	ex, ok := a.backend.(ModelExporter)
	if !ok {
		notImplemented(w, a.backend.Kind(), "serve model blobs")
		return
	}
	digest := r.PathValue("digest")
	if !digestPattern.MatchString(digest) {
		writeError(w, http.StatusBadRequest, errInvalidRequest, "invalid_digest", "digest",
			fmt.Sprintf("digest %q is not sha256:<64 lowercase hex>", digest))
		return
	}
	rc, size, err := ex.OpenBlob(r.Context(), digest)
	if err != nil {
		writeBackendError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		// The status is gone; the short body is what the peer sees, and it verifies the digest.
		a.log.Warn("blob copy to peer interrupted", "digest", digest, "err", err)
	}
}

func (a *Agent) serveCopy(w http.ResponseWriter, r *http.Request) {
	im, ok := a.backend.(ModelImporter)
	if !ok {
		notImplemented(w, a.backend.Kind(), "import models from a peer")
		return
	}
	var req agentapi.CopyRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, errInvalidRequest, "missing_model", "model", "you must provide a model parameter")
		return
	}
	if err := checkHTTPURL(req.From); err != nil {
		writeError(w, http.StatusBadRequest, errInvalidRequest, "invalid_peer", "from", "from: "+err.Error())
		return
	}
	if from := strings.TrimRight(req.From, "/"); from == a.Advertise() {
		writeError(w, http.StatusBadRequest, errInvalidRequest, "invalid_peer", "from", "cannot copy a model from this node to itself")
		return
	}
	ps := newProgressStream(w, a.cfg.NodeID)
	ps.send(agentapi.Progress{Status: "fetching manifest from " + redactURL(req.From)})
	peer := agentapi.NewClient(req.From, a.cfg.ClusterToken, a.hc)
	m, err := peer.Export(r.Context(), req.Model)
	if err != nil {
		ps.finish(fmt.Errorf("export %s from peer: %w", req.Model, err))
		return
	}
	var total int64
	for _, b := range m.Blobs {
		total += b.Size
	}
	ps.send(agentapi.Progress{Status: fmt.Sprintf("importing %d blobs", len(m.Blobs)), Total: total})
	err = im.Import(r.Context(), m, peer.Blob, func(p agentapi.Progress) {
		if p.Status == "success" || p.Error != "" {
			return
		}
		ps.send(p)
	})
	if err == nil {
		a.refreshModels(r.Context())
	}
	ps.finish(err)
}

// redactURL drops user info from a URL before it goes into a progress line.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "peer"
	}
	return u.Redacted()
}

func (a *Agent) serveFault(w http.ResponseWriter, r *http.Request) {
	fi, ok := a.backend.(FaultInjector)
	if !ok {
		notImplemented(w, a.backend.Kind(), "inject faults (only simulated nodes can)")
		return
	}
	var req agentapi.SimFaultRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := fi.InjectFault(req.GPU, req.Kind); err != nil {
		var hs HTTPStatuser
		if errors.As(err, &hs) && hs.HTTPStatus() >= 400 {
			writeBackendError(w, err)
			return
		}
		writeError(w, http.StatusBadRequest, errInvalidRequest, "invalid_fault", "", err.Error())
		return
	}
	a.sampleGPUs(r.Context())
	writeJSON(w, agentapi.Progress{Node: a.cfg.NodeID, Status: "success"})
}

// serveBackend hands one inference request to the backend. The simulator sees it as an engine
// would, without herd's own headers, so that no routing result can come from the simulator
// knowing herd.
func (a *Agent) serveBackend(w http.ResponseWriter, r *http.Request, route string, body []byte) {
	if a.backend.Simulated() {
		r = withoutHerdHeaders(r)
	}
	a.backend.ServeInference(w, r, route, body)
}

// withoutHerdHeaders is r with every X-Herd-* header removed (a shallow copy; r is unchanged).
func withoutHerdHeaders(r *http.Request) *http.Request {
	h := make(http.Header, len(r.Header))
	for k, vv := range r.Header {
		if !strings.HasPrefix(k, "X-Herd-") {
			h[k] = vv
		}
	}
	out := r.Clone(r.Context())
	out.Header = h
	return out
}
