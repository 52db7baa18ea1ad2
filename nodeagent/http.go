package nodeagent

import (
	"bytes"
	"context"
	"crypto/rand"
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

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/responses"
	"github.com/herd-llm/herd/pki"
)

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
		model := modelFromBody(body)
		if model == "" {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "missing_model", "model",
				"you must provide a model parameter")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if a.backend.Simulated() {
			w.Header().Set(agentapi.HeaderSimulated, "true")
		}
		var tw *responses.Writer
		route := endpoint // per request: a translated Responses request goes to chat completions
		if endpoint == agentapi.PathResponses {
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
		a.metered(w, r, endpoint, model, func(mw http.ResponseWriter, r *http.Request) {
			a.backend.ServeInference(mw, r, route, body)
			if tw != nil {
				tw.Finish()
			}
		})
	}
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

// serveNative passes a native Ollama request to a backend that speaks Ollama's API. Inference
// routes are counted, metered and traced like the OpenAI ones (the meter reads NDJSON too);
// errors are in Ollama's shape ({"error":"..."}), which is what the caller of these routes expects.
func (a *Agent) serveNative(path string, inference bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		nb, ok := a.backend.(NativeOllama)
		if !ok {
			writeOllamaError(w, http.StatusNotFound, fmt.Sprintf("the %s backend on this node does not serve Ollama's native API (%s)", a.backend.Kind(), path))
			return
		}
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
			nb.ServeOllama(w, r, path, body)
			return
		}
		model := modelFromBody(body)
		if model == "" {
			writeOllamaError(w, http.StatusBadRequest, "model is required")
			return
		}
		a.metered(w, r, path, model, func(mw http.ResponseWriter, r *http.Request) {
			nb.ServeOllama(mw, r, path, body)
		})
	}
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
