package gateway

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ollama/ollama/api"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// The Ollama-compatible front: /api/chat, /api/generate, /api/embed, /api/embeddings, /api/tags,
// /api/ps, /api/show and /api/version, so that Ollama clients (ollama-js, the Go client, Open
// WebUI, Continue, ...) pointed at the gateway work unchanged.
//
// Decisions:
//   - Inference takes the same path as /v1/*: the same body scan (Ollama's fields), model and
//     preset resolution, scheduler, admission queue, failover and metrics. The native request
//     goes to the agent's /api/* route unchanged on every node: an agent whose backend is Ollama
//     passes it through, any other translates it (nodeagent/ollamacompat) and answers in
//     Ollama's format, with the client's name for the model (agentapi.HeaderClientModel). The
//     gateway only relays lines.
//   - A streamed answer is committed to the client at its first line; before that a failure fails
//     over. A non-streamed answer is held until complete, so a failure anywhere in it fails over.
//     A stream that breaks after its first line ends with Ollama's error line {"error":"..."}.
//   - Errors are Ollama's shape, {"error":"message"}, with the status the gateway would give on
//     /v1 (an unknown model is 404 "model 'x' not found", as Ollama says it); the message of an
//     agent's or backend's error body is kept, whatever its shape.
//   - /api/tags lists every model a non-stale node has, merged by name, with the details of an
//     Ollama node where one has it, then the presets (details.parent_model is the base model).
//     Backends that do not say when a model changed get the gateway's start time.
//   - /api/ps lists each resident copy: one entry per node and model, with the node in
//     "herd_node" (and "herd_simulated" on simulated nodes), fields Ollama clients ignore.
//   - /api/show is answered by an Ollama node that has the model (the real modelfile, template
//     and model_info); for other backends it is built from what the node reports.
//   - /api/version reports the version of Ollama's API this front implements (the
//     github.com/ollama/ollama module it is built with), beside herd's own in "herd_version":
//     clients gate features on that number.
//   - GET / answers "Ollama is running" (text/plain), as Ollama does, unless the client asks for
//     HTML (a browser): that gets the dashboard, which stays at /dashboard too. HEAD / is 200.

// ctxOllama marks a request whose errors are written in Ollama's shape.
const ctxOllama = "herd.ollama"

// markOllama makes abortWithError answer in Ollama's shape for the rest of the chain.
func markOllama(c *gin.Context) { c.Set(ctxOllama, true) }

// registerOllamaRoutes adds the Ollama routes to e.
func (s *Server) registerOllamaRoutes(e *gin.Engine) {
	e.HEAD("/api/version", markOllama, s.handleOllamaVersion)
	e.GET("/api/version", markOllama, s.handleOllamaVersion)
	// Every /api route needs a key with scope inference or batch (the listing ones); the
	// inference ones check for inference themselves.
	g := e.Group("/api", markOllama, s.requireScope(scopeInference|scopeBatch))
	g.POST("/chat", s.handleOllamaInference(agentapi.PathOllamaChat))
	g.POST("/generate", s.handleOllamaInference(agentapi.PathOllamaGenerate))
	g.POST("/embed", s.handleOllamaInference(agentapi.PathOllamaEmbed))
	g.POST("/embeddings", s.handleOllamaInference(agentapi.PathOllamaEmbeddings))
	l := g.Group("", s.accessLog())
	l.GET("/tags", s.handleOllamaTags)
	l.HEAD("/tags", s.handleOllamaTags)
	l.GET("/ps", s.handleOllamaPs)
	l.POST("/show", s.handleOllamaShow)
}

// writeOllamaError writes err in Ollama's shape and stops the chain.
func writeOllamaError(c *gin.Context, ae *APIError, model string) {
	if ae.RetryAfter > 0 {
		c.Header("Retry-After", fmt.Sprint(ae.RetryAfter))
	}
	c.Abort()
	c.Data(ae.Status, "application/json; charset=utf-8", appendOllamaError(nil, ollamaMessage(ae, model)))
}

// ollamaMessage is the message an Ollama client gets for ae: Ollama's own wording where Ollama
// has one, else the gateway's message.
func ollamaMessage(ae *APIError, model string) string {
	if ae.Code == "model_not_found" && model != "" {
		return fmt.Sprintf("model '%s' not found", model)
	}
	return ae.Message
}

// ollamaRoute reports whether path is one of the Ollama front's inference routes.
func ollamaRoute(path string) bool { return strings.HasPrefix(path, "/api/") }

// handleOllamaInference serves one of the native inference routes; path is its agent route. The
// agent answers in Ollama's format whatever its backend (it translates for those that are not
// Ollama), so the gateway relays the lines as they come. A streamed answer is committed at its
// first line; a non-streamed one (and an embeddings answer) is held until complete, so that a
// failure anywhere in it fails over.
func (s *Server) handleOllamaInference(path string) gin.HandlerFunc {
	streams := path == agentapi.PathOllamaChat || path == agentapi.PathOllamaGenerate
	return func(c *gin.Context) {
		t := tenantOf(c)
		if !t.has(scopeInference) {
			abortWithError(c, errScope(scopeInference))
			return
		}
		k := s.interactiveCall(c, t, path)
		defer putCall(k)

		var held memSink
		res, ok := k.load(c.Request, c.Writer.Header())
		if ok {
			if streams && k.info.stream {
				res = k.run(c.Writer)
			} else {
				k.held = &held
				res = k.run(&held)
			}
		}
		if k.held != nil && !res.clientGone {
			held.writeTo(c.Writer, res.err == nil)
		}
		if res.err != nil {
			asked := k.asked
			if asked == "" {
				asked = string(k.info.model)
			}
			writeOllamaError(c, res.err, asked)
			k.status = res.err.Status
		}
		k.settleRate(res)
		k.finish(res)
		if res.abort {
			panic(http.ErrAbortHandler)
		}
	}
}

// appendOllamaError appends Ollama's error line, {"error":"message"} and a newline, to dst.
func appendOllamaError(dst []byte, msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	dst = append(dst, b...)
	return append(dst, '\n')
}

// modelName is the name a node of backend kind reports a model under, as the gateway lists it,
// the same on /v1/models and /api/tags (registry.ModelName: normalised on Ollama-style nodes,
// exact on OpenAI-compatible ones).
func modelName(backend, raw string) string { return registry.ModelName(backend, raw) }

// resolveName finds the listed name a client's name stands for: itself, or its Ollama spelling.
func resolveName(byName map[string]clusterModel, asked string) (string, bool) {
	if _, ok := byName[asked]; ok {
		return asked, true
	}
	n := models.NormalizeName(asked)
	_, ok := byName[n]
	return n, ok
}

// clusterModel is one model merged over the nodes that have it.
type clusterModel struct {
	m agentapi.Model
	// ollama is true when m came from an Ollama node (whose details are the real ones).
	ollama bool
}

// clusterModels returns every model a non-stale node has, by name, sorted.
func (s *Server) clusterModels() ([]string, map[string]clusterModel) {
	byName := map[string]clusterModel{}
	var names []string
	for _, v := range s.registry.Nodes() {
		if v.Stale {
			continue
		}
		ollama := v.Heartbeat.Backend == agentapi.BackendOllama
		for _, m := range v.Heartbeat.Models {
			if !m.OnDisk && !m.Resident {
				continue
			}
			name := modelName(v.Heartbeat.Backend, m.Name)
			cur, ok := byName[name]
			if !ok {
				names = append(names, name)
			}
			if !ok || (ollama && !cur.ollama) {
				byName[name] = clusterModel{m: m, ollama: ollama}
			}
		}
	}
	slices.Sort(names)
	return names, byName
}

// details is the model's Ollama details.
func details(m agentapi.Model) api.ModelDetails {
	d := api.ModelDetails{Format: m.Format, Family: m.Family, Families: m.Families, ParameterSize: m.ParameterSize, QuantizationLevel: m.Quantization}
	if d.Families == nil && m.Family != "" {
		d.Families = []string{m.Family}
	}
	return d
}

func (s *Server) modifiedAt(m agentapi.Model) time.Time {
	if !m.ModifiedAt.IsZero() {
		return m.ModifiedAt
	}
	return s.core.started
}

// handleOllamaTags is GET /api/tags: every model in the cluster, then the presets.
func (s *Server) handleOllamaTags(c *gin.Context) {
	names, byName := s.clusterModels()
	out := api.ListResponse{Models: make([]api.ListModelResponse, 0, len(names))}
	for _, name := range names {
		m := byName[name].m
		out.Models = append(out.Models, api.ListModelResponse{
			Name: name, Model: name, ModifiedAt: s.modifiedAt(m), Size: int64(m.SizeBytes), Digest: m.Digest, Details: details(m),
		})
	}
	for _, p := range s.presets.List() {
		bn, ok := resolveName(byName, p.Model)
		base := byName[bn]
		lm := api.ListModelResponse{Name: p.Name, Model: p.Name, ModifiedAt: p.UpdatedAt}
		if lm.ModifiedAt.IsZero() {
			lm.ModifiedAt = p.CreatedAt
		}
		if lm.ModifiedAt.IsZero() {
			lm.ModifiedAt = s.core.started
		}
		if ok {
			lm.Size, lm.Details = int64(base.m.SizeBytes), details(base.m)
		}
		lm.Details.ParentModel = p.Model
		out.Models = append(out.Models, lm)
	}
	c.JSON(http.StatusOK, out)
}

// psModel is one resident copy of a model in /api/ps, with the node that holds it.
type psModel struct {
	api.ProcessModelResponse
	// Node is the herd node the copy is resident on; Simulated marks a simulated node's figures.
	Node      string `json:"herd_node"`
	Simulated bool   `json:"herd_simulated,omitempty"`
}

// handleOllamaPs is GET /api/ps: the models resident in memory on every non-stale node.
func (s *Server) handleOllamaPs(c *gin.Context) {
	out := struct {
		Models []psModel `json:"models"`
	}{Models: []psModel{}}
	// A zero expiry is a copy no keep-alive unloads (a simulated node's preload, an
	// OpenAI-compatible server). Ollama reports such a model as expiring now + the longest
	// duration (keep_alive -1), which its clients show as "Forever"; the zero time would read as
	// long past ("Stopping..." in `ollama ps`).
	forever := s.core.clock.Now().Add(time.Duration(math.MaxInt64))
	for _, v := range s.registry.Nodes() {
		if v.Stale {
			continue
		}
		for _, m := range v.Heartbeat.Models {
			if !m.Resident {
				continue
			}
			name := modelName(v.Heartbeat.Backend, m.Name)
			expires := m.ExpiresAt
			if expires.IsZero() {
				expires = forever
			}
			out.Models = append(out.Models, psModel{
				ProcessModelResponse: api.ProcessModelResponse{
					Name: name, Model: name, Size: int64(max(m.SizeBytes, m.VRAMBytes)), Digest: m.Digest, Details: details(m),
					ExpiresAt: expires, SizeVRAM: int64(m.VRAMBytes), ContextLength: m.ContextLength,
				},
				Node: v.Heartbeat.NodeID, Simulated: v.Heartbeat.Simulated,
			})
		}
	}
	slices.SortFunc(out.Models, func(a, b psModel) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Node, b.Node))
	})
	c.JSON(http.StatusOK, out)
}

// maxShowBody bounds a /api/show request and an agent's answer to it.
const maxShowBody = 8 << 20

// handleOllamaShow is POST /api/show.
func (s *Server) handleOllamaShow(c *gin.Context) {
	raw, err := io.ReadAll(io.LimitReader(c.Request.Body, maxShowBody))
	if err != nil || len(bytes.TrimSpace(raw)) == 0 {
		writeOllamaError(c, badRequest("missing_body", "", "missing request body"), "")
		return
	}
	// Ollama's ShowRequest, with the "name" it still accepts for older clients.
	var req struct {
		Model   string `json:"model"`
		Name    string `json:"name"`
		Verbose bool   `json:"verbose"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		writeOllamaError(c, badRequest("invalid_json", "", "%v", err), "")
		return
	}
	asked := req.Model
	if asked == "" {
		asked = req.Name
	}
	if asked == "" {
		writeOllamaError(c, badRequest("missing_required_parameter", "model", "model is required"), "")
		return
	}
	var preset *models.Preset
	base := asked
	_, byName := s.clusterModels()
	if _, ok := resolveName(byName, asked); !ok {
		if p, ok := s.presets.Lookup(asked); ok {
			preset, base = p, p.Model
		}
	}
	name, ok := resolveName(byName, base)
	if !ok {
		writeOllamaError(c, notFound("model_not_found", "model", "model not found"), asked)
		return
	}
	node, found := s.nodeWith(name)
	if !found {
		writeOllamaError(c, notFound("model_not_found", "model", "model not found"), asked)
		return
	}
	// Every agent answers /api/show: Ollama's own answer on an Ollama node, one the agent builds
	// (a generated Modelfile, the chat template where its backend tells it) on any other.
	status, body, err := s.agentShow(c, node, base, name, req.Verbose)
	switch {
	case err != nil:
		writeOllamaError(c, &APIError{Status: http.StatusBadGateway, Type: errServer, Message: err.Error()}, asked)
		return
	case status != http.StatusOK:
		writeOllamaError(c, backendError(status, "application/json", body), asked)
		return
	case preset == nil:
		c.Data(http.StatusOK, "application/json; charset=utf-8", body)
		return
	}
	var show api.ShowResponse
	if err := json.Unmarshal(body, &show); err != nil {
		writeOllamaError(c, &APIError{Status: http.StatusBadGateway, Type: errServer, Message: "the node's show answer is not JSON: " + err.Error()}, asked)
		return
	}
	applyPresetToShow(&show, preset)
	c.JSON(http.StatusOK, show)
}

// applyPresetToShow describes a preset: its base model's show, with the preset's system prompt
// and default parameters, the base model as parent, and a Modelfile that builds the preset from
// it as Ollama would (FROM, SYSTEM, PARAMETER).
func applyPresetToShow(show *api.ShowResponse, p *models.Preset) {
	show.Details.ParentModel = p.Model
	if p.System != "" {
		show.System = p.System
	}
	var params []string
	add := func(k string, v any) { params = append(params, fmt.Sprintf("%-30s %v", k, v)) }
	if p.Temperature != nil {
		add("temperature", *p.Temperature)
	}
	if p.TopP != nil {
		add("top_p", *p.TopP)
	}
	if p.MaxTokens != nil {
		add("num_predict", *p.MaxTokens)
	}
	if p.Seed != nil {
		add("seed", *p.Seed)
	}
	for _, st := range p.Stop {
		add("stop", fmt.Sprintf("%q", st))
	}
	if len(params) > 0 {
		show.Parameters = strings.Join(params, "\n")
	}
	var mf strings.Builder
	fmt.Fprintf(&mf, "# Modelfile generated by herd for preset %s\nFROM %s\n", p.Name, p.Model)
	if show.Template != "" {
		fmt.Fprintf(&mf, "TEMPLATE \"\"\"%s\"\"\"\n", show.Template)
	}
	if p.System != "" {
		fmt.Fprintf(&mf, "SYSTEM \"\"\"%s\"\"\"\n", p.System)
	}
	for _, l := range params {
		fmt.Fprintf(&mf, "PARAMETER %s\n", strings.Join(strings.Fields(l), " "))
	}
	show.Modelfile = mf.String()
}

// nodeWith returns a non-stale node that has model, an Ollama node if one has it (its answer is
// Ollama's own).
func (s *Server) nodeWith(model string) (registry.NodeView, bool) {
	var found registry.NodeView
	ok := false
	for _, v := range s.registry.Nodes() {
		if v.Stale {
			continue
		}
		for _, m := range v.Heartbeat.Models {
			if modelName(v.Heartbeat.Backend, m.Name) == model && (m.OnDisk || m.Resident) {
				if v.Heartbeat.Backend == agentapi.BackendOllama {
					return v, true
				}
				if !ok {
					found, ok = v, true
				}
			}
		}
	}
	return found, ok
}

// agentShow asks node's agent for Ollama's /api/show of the model the client calls asked (the
// node lists it as name).
func (s *Server) agentShow(c *gin.Context, node registry.NodeView, asked, name string, verbose bool) (int, []byte, error) {
	u, err := s.core.urls.get(node.Heartbeat.Address, agentapi.PathOllamaShow)
	if err != nil {
		return 0, nil, err
	}
	body, _ := json.Marshal(api.ShowRequest{Model: asked, Verbose: verbose})
	hr, err := http.NewRequestWithContext(c.Request.Context(), http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	hr.Header["Authorization"] = s.core.agentAuth
	hr.Header["Content-Type"] = hdrJSON
	hr.Header[agentapi.HeaderModel] = []string{name}
	resp, err := s.core.transport.RoundTrip(hr)
	if err != nil {
		return 0, nil, fmt.Errorf("node %s: %w", node.Heartbeat.NodeID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxShowBody))
	if err != nil {
		return 0, nil, fmt.Errorf("node %s: %w", node.Heartbeat.NodeID, err)
	}
	return resp.StatusCode, b, nil
}

// handleOllamaVersion is GET /api/version.
func (s *Server) handleOllamaVersion(c *gin.Context) {
	c.JSON(http.StatusOK, struct {
		Version     string `json:"version"`
		HerdVersion string `json:"herd_version,omitempty"`
	}{ollamaAPIVersion(), s.cfg.Version})
}

// ollamaAPIVersion is the version of the github.com/ollama/ollama module the binary is built
// with: the Ollama API this front implements.
func ollamaAPIVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/ollama/ollama" {
				return strings.TrimPrefix(d.Version, "v")
			}
		}
	}
	return ollamaModuleVersion
}

// ollamaModuleVersion is go.mod's version of github.com/ollama/ollama, for binaries built without
// module information (tests); a test keeps the two equal.
const ollamaModuleVersion = "0.17.4"

// msgOllamaRunning is what Ollama answers at /.
const msgOllamaRunning = "Ollama is running"

// handleOllamaRoot answers GET and HEAD / as Ollama does (browsers get the dashboard instead).
func handleOllamaRoot(c *gin.Context) { c.String(http.StatusOK, msgOllamaRunning) }
