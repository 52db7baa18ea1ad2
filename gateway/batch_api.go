package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/api"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/models"
)

// presetRefreshInterval bounds how long a preset stored through another gateway (Redis) takes to
// be seen here.
const presetRefreshInterval = 5 * time.Second

// presetBook holds the presets the gateway resolves model names against: those of
// Config.PresetsFile, read at start, and those stored through the admin API, which override a
// file preset of the same name. Lookups read an immutable map swapped under a lock, so the
// request path never waits on the store.
type presetBook struct {
	st   store.Presets
	file map[string]models.Preset

	mu     sync.RWMutex
	merged map[string]models.Preset
	stored map[string]bool
}

func newPresetBook(file []models.Preset, st store.Presets) *presetBook {
	b := &presetBook{st: st, file: make(map[string]models.Preset, len(file))}
	for _, p := range file {
		b.file[p.Name] = p
	}
	b.merged = b.file
	return b
}

// Lookup returns the preset called name. A nil book has none.
func (b *presetBook) Lookup(name string) (*models.Preset, bool) {
	if b == nil {
		return nil, false
	}
	b.mu.RLock()
	p, ok := b.merged[name]
	b.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return &p, true
}

// List returns every preset, by name. A nil book has none.
func (b *presetBook) List() []models.Preset {
	if b == nil {
		return nil
	}
	b.mu.RLock()
	out := make([]models.Preset, 0, len(b.merged))
	for _, p := range b.merged {
		out = append(out, p)
	}
	b.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// isStored reports whether name is a stored preset (as opposed to one of the file's only).
func (b *presetBook) isStored(name string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.stored[name]
}

// reload rebuilds the merged view from the file's presets and the store's.
func (b *presetBook) reload(ctx context.Context) error {
	stored, err := b.st.ListPresets(ctx)
	if err != nil {
		return fmt.Errorf("presets: %w", err)
	}
	merged := make(map[string]models.Preset, len(b.file)+len(stored))
	for name, p := range b.file {
		merged[name] = p
	}
	names := make(map[string]bool, len(stored))
	for _, p := range stored {
		merged[p.Name] = p
		names[p.Name] = true
	}
	b.mu.Lock()
	b.merged, b.stored = merged, names
	b.mu.Unlock()
	return nil
}

// put stores p and returns the preset as it now is. Versions (decisions):
//   - p's content equal to the current preset's (the stored one, else the file's) changes
//     nothing: the current preset is returned as it is, its version not bumped, so applying the
//     same file twice is a no-op.
//   - Without a version, p becomes the current version + 1 (1 for a new preset).
//   - An explicit version is kept as given (the YAML's `version:` is the operator's): it may not be
//     lower than the current version, nor equal to it with other content (409 preset_version_conflict).
func (b *presetBook) put(ctx context.Context, p models.Preset, now time.Time) (models.Preset, error) {
	cur, found := models.Preset{}, false
	prev, err := b.st.GetPreset(ctx, p.Name)
	switch {
	case err == nil:
		cur, found = prev, true
	case errors.Is(err, store.ErrNotFound):
		if fp, ok := b.file[p.Name]; ok {
			cur, found = fp, true
			cur.Version = max(cur.Version, 1)
		}
	default:
		return models.Preset{}, fmt.Errorf("presets: %w", err)
	}
	if found && p.SameContent(cur) && (p.Version == 0 || p.Version == cur.Version) {
		return cur, nil
	}
	switch {
	case p.Version == 0 && found:
		p.Version = cur.Version + 1
	case p.Version == 0:
		p.Version = 1
	case found && p.Version <= cur.Version:
		return models.Preset{}, &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: "preset_version_conflict",
			Param: "version", Message: fmt.Sprintf("preset %q is at version %d: a changed preset needs a higher version (or none, to have it numbered)", p.Name, cur.Version)}
	}
	p.CreatedAt = now.UTC()
	if err == nil {
		p.CreatedAt = prev.CreatedAt
	}
	p.UpdatedAt = now.UTC()
	if err := b.st.PutPreset(ctx, p); err != nil {
		return models.Preset{}, fmt.Errorf("presets: %w", err)
	}
	return p, b.reload(ctx)
}

// remove deletes a stored preset; a file preset of the same name shows through again.
func (b *presetBook) remove(ctx context.Context, name string) error {
	if err := b.st.DeletePreset(ctx, name); err != nil {
		return fmt.Errorf("presets: %w", err)
	}
	return b.reload(ctx)
}

// openBulkStore opens the store Config asks for.
func (s *Server) openBulkStore(ctx context.Context) (store.Store, error) {
	if s.cfg.RedisURL != "" {
		r, err := store.OpenRedis(ctx, s.cfg.RedisURL)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return r, nil
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return store.OpenBolt(filepath.Join(s.cfg.DataDir, "herd.db"))
}

// gatewayID is Config.GatewayID, else the host name and the listen port: unique per gateway of a
// cluster and stable across restarts (it names the gateway's claims on the batch queue).
func (s *Server) gatewayID() string {
	if s.cfg.GatewayID != "" {
		return s.cfg.GatewayID
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "gateway"
	}
	_, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil || port == "" || port == "0" {
		// No stable port: a name of its own per process, so that two gateways never share one.
		return fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return host + ":" + port
}

// initBulk opens the store, loads the presets and builds the batch service. It must run before
// the routes are served; closeBulk undoes it.
func (s *Server) initBulk(ctx context.Context) error {
	var filePresets []models.Preset
	if s.cfg.PresetsFile != "" {
		data, err := os.ReadFile(s.cfg.PresetsFile)
		if err != nil {
			return fmt.Errorf("presets file: %w", err)
		}
		if filePresets, err = models.ParsePresets(data); err != nil {
			return fmt.Errorf("presets file %s: %w", s.cfg.PresetsFile, err)
		}
		for i := range filePresets {
			filePresets[i].Version = max(filePresets[i].Version, 1)
		}
	}
	st, err := s.openBulkStore(ctx)
	if err != nil {
		return fmt.Errorf("gateway: store: %w", err)
	}
	book := newPresetBook(filePresets, st)
	if err := book.reload(ctx); err != nil {
		_ = st.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	svc, err := batch.New(batch.Options{
		Store:      st,
		Dir:        s.cfg.DataDir,
		Dispatcher: s.dispatcher(),
		Config:     s.cfg.Batch,
		Logger:     s.log.With("component", "batch"),
		Observer:   batchObserver{s.metrics},
		Consumer:   s.gatewayID(),
		Tracer:     s.core.tracer,
	})
	if err != nil {
		_ = st.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	s.bulkStore, s.presets, s.batches = st, book, svc
	return nil
}

// runBulk runs the batch runner (which first resumes batches a crash left unfinished) and keeps
// the presets fresh, until ctx is done.
func (s *Server) runBulk(ctx context.Context) {
	if s.batches == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(presetRefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.presets.reload(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("presets refresh failed", "err", err)
				}
			}
		}
	}()
	if err := s.batches.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("batch runner stopped", "err", err)
	}
	wg.Wait()
}

// closeBulk closes the store. Call it after runBulk returned.
func (s *Server) closeBulk() error {
	if s.bulkStore == nil {
		return nil
	}
	err := s.bulkStore.Close()
	s.bulkStore = nil
	return err
}

// maxPresetBody bounds a preset's JSON (a long system prompt and a JSON schema fit easily).
const maxPresetBody = 1 << 20

// registerPresetRoutes mounts /admin/v1/presets: GET (list), GET/PUT/DELETE /:name. PUT creates
// or replaces a stored preset (see presetBook.put for its version); DELETE removes a stored one (a preset of the
// presets file can only be overridden, not deleted).
func (s *Server) registerPresetRoutes(admin *gin.RouterGroup) {
	g := admin.Group("/presets")
	g.GET("", s.handleListPresets)
	g.GET("/:name", s.handleGetPreset)
	g.PUT("/:name", s.handlePutPreset)
	g.DELETE("/:name", s.handleDeletePreset)
}

func (s *Server) handleListPresets(c *gin.Context) {
	c.JSON(http.StatusOK, api.PresetList{Object: "list", Data: s.presets.List()})
}

func (s *Server) handleGetPreset(c *gin.Context) {
	p, ok := s.presets.Lookup(c.Param("name"))
	if !ok {
		abortWithError(c, notFound("preset_not_found", "name", "preset %q does not exist", c.Param("name")))
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *Server) handlePutPreset(c *gin.Context) {
	var p models.Preset
	if err := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxPresetBody)).Decode(&p); err != nil {
		abortWithError(c, badRequest("invalid_json", "", "preset body is not valid JSON: %v", err))
		return
	}
	if p.Name == "" {
		p.Name = c.Param("name")
	}
	if p.Name != c.Param("name") {
		abortWithError(c, badRequest("invalid_value", "name", "preset name %q in the body does not match %q in the path", p.Name, c.Param("name")))
		return
	}
	if err := p.Validate(); err != nil {
		abortWithError(c, badRequest("invalid_value", "", "%v", err))
		return
	}
	stored, err := s.presets.put(c.Request.Context(), p, time.Now())
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, stored)
}

func (s *Server) handleDeletePreset(c *gin.Context) {
	name := c.Param("name")
	if !s.presets.isStored(name) {
		if _, ok := s.presets.Lookup(name); ok {
			abortWithError(c, badRequest("preset_from_file", "name", "preset %q comes from the presets file; remove it there", name))
			return
		}
		abortWithError(c, notFound("preset_not_found", "name", "preset %q does not exist", name))
		return
	}
	if err := s.presets.remove(c.Request.Context(), name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			abortWithError(c, notFound("preset_not_found", "name", "preset %q does not exist", name))
			return
		}
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": name, "object": "preset", "deleted": true})
}

// registerBatchRoutes mounts the OpenAI Files and Batches routes on /v1, and herd's manifest.
func (s *Server) registerBatchRoutes(v1 *gin.RouterGroup) {
	v1.POST("/files", s.handleUploadFile)
	v1.GET("/files", s.handleListFiles)
	v1.GET("/files/:id", s.handleGetFile)
	v1.GET("/files/:id/content", s.handleFileContent)
	v1.DELETE("/files/:id", s.handleDeleteFile)
	v1.POST("/batches", s.handleCreateBatch)
	v1.GET("/batches", s.handleListBatches)
	v1.GET("/batches/:id", s.handleGetBatch)
	v1.POST("/batches/:id/cancel", s.handleCancelBatch)
	v1.GET("/batches/:id/manifest", s.handleBatchManifest)
}

// multipartOverhead is what a multipart form may add around an upload of the largest file.
const multipartOverhead = 1 << 20

// bulkError turns the batch service's client errors into API errors; anything else is logged and
// becomes a 500 that does not leak internals.
func (s *Server) bulkError(c *gin.Context, err error) {
	var be *batch.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &be):
		status := map[batch.ErrorKind]int{
			batch.KindInvalid: http.StatusBadRequest, batch.KindNotFound: http.StatusNotFound,
			batch.KindConflict: http.StatusConflict, batch.KindTooLarge: http.StatusRequestEntityTooLarge,
		}[be.Kind]
		if status == 0 {
			status = http.StatusBadRequest
		}
		abortWithError(c, &APIError{Status: status, Type: errInvalidRequest, Code: be.Code, Param: be.Param, Message: be.Message})
	case errors.As(err, &mbe):
		abortWithError(c, &APIError{Status: http.StatusRequestEntityTooLarge, Type: errInvalidRequest, Code: "file_too_large", Param: "file",
			Message: fmt.Sprintf("request body is larger than the %d bytes allowed", mbe.Limit)})
	default:
		s.log.Error("bulk request failed", "method", c.Request.Method, "path", c.FullPath(), "err", err)
		abortWithError(c, err)
	}
}

func (s *Server) handleUploadFile(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.batches.Config().MaxFileBytes+multipartOverhead)
	mr, err := c.Request.MultipartReader()
	if err != nil {
		abortWithError(c, badRequest("invalid_request", "", "expected a multipart/form-data body with fields file and purpose: %v", err))
		return
	}
	var (
		staged   *batch.StagedFile
		filename string
		purpose  string
	)
	defer func() {
		if staged != nil {
			staged.Discard()
		}
	}()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.bulkError(c, err)
				return
			}
			abortWithError(c, badRequest("invalid_request", "", "malformed multipart body: %v", err))
			return
		}
		switch part.FormName() {
		case "file":
			if staged != nil {
				abortWithError(c, badRequest("invalid_request", "file", "only one file per upload"))
				return
			}
			filename = part.FileName()
			if staged, err = s.batches.StageFile(part); err != nil {
				s.bulkError(c, err)
				return
			}
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(part, 256))
			if err != nil {
				s.bulkError(c, err)
				return
			}
			purpose = strings.TrimSpace(string(b))
		default:
			// Fields OpenAI may add (expires_after, ...) are not errors; their content is skipped.
			if _, err := io.Copy(io.Discard, part); err != nil {
				s.bulkError(c, err)
				return
			}
		}
	}
	if staged == nil {
		abortWithError(c, badRequest("missing_required_parameter", "file", "file is required"))
		return
	}
	f, err := staged.Commit(c.Request.Context(), filename, purpose)
	staged = nil // committed or discarded by Commit
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, batch.NewFileObject(f))
}

// listLimit reads ?limit= within [1, maxLimit], def when absent.
func listLimit(c *gin.Context, def, maxLimit int) (int, error) {
	v := c.Query("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, badRequest("invalid_value", "limit", "limit must be an integer between 1 and %d", maxLimit)
	}
	return n, nil
}

func (s *Server) handleListFiles(c *gin.Context) {
	limit, err := listLimit(c, 10000, 10000)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if order := c.Query("order"); order != "" && order != "desc" {
		abortWithError(c, badRequest("invalid_value", "order", "only order=desc (newest first) is supported"))
		return
	}
	files, more, err := s.batches.ListFiles(c.Request.Context(), store.ListOptions{After: c.Query("after"), Limit: limit, Purpose: c.Query("purpose")})
	if err != nil {
		s.bulkError(c, err)
		return
	}
	objs := make([]api.FileObject, len(files))
	for i, f := range files {
		objs[i] = batch.NewFileObject(f)
	}
	c.JSON(http.StatusOK, api.NewListPage(objs, func(f api.FileObject) string { return f.ID }, more))
}

func (s *Server) handleGetFile(c *gin.Context) {
	f, err := s.batches.GetFile(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, batch.NewFileObject(f))
}

func (s *Server) handleFileContent(c *gin.Context) {
	meta, f, err := s.batches.OpenFile(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.bulkError(c, err)
		return
	}
	defer f.Close()
	c.Header("Content-Type", "application/octet-stream")
	c.Header("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": meta.Filename}))
	http.ServeContent(c.Writer, c.Request, meta.Filename, time.Unix(meta.CreatedAt, 0), f)
}

func (s *Server) handleDeleteFile(c *gin.Context) {
	id := c.Param("id")
	if err := s.batches.DeleteFile(c.Request.Context(), id); err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": id, "object": "file", "deleted": true})
}

// createBatchBody is POST /v1/batches' body; metadata values are checked to be strings here.
type createBatchBody struct {
	InputFileID      string         `json:"input_file_id"`
	Endpoint         string         `json:"endpoint"`
	CompletionWindow string         `json:"completion_window"`
	Metadata         map[string]any `json:"metadata"`
}

// maxCreateBatchBody bounds POST /v1/batches' JSON body.
const maxCreateBatchBody = 1 << 20

func (s *Server) handleCreateBatch(c *gin.Context) {
	var body createBatchBody
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxCreateBatchBody))
	if err := dec.Decode(&body); err != nil {
		abortWithError(c, badRequest("invalid_json", "", "request body is not valid JSON: %v", err))
		return
	}
	var md map[string]string
	if body.Metadata != nil {
		md = make(map[string]string, len(body.Metadata))
		for k, v := range body.Metadata {
			str, ok := v.(string)
			if !ok {
				abortWithError(c, badRequest("invalid_type", "metadata", "metadata value of %q must be a string", k))
				return
			}
			md[k] = str
		}
	}
	b, err := s.batches.CreateBatch(c.Request.Context(), batch.CreateBatchParams{
		InputFileID: body.InputFileID, Endpoint: body.Endpoint, CompletionWindow: body.CompletionWindow, Metadata: md,
	})
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, batch.NewBatchObject(b))
}

func (s *Server) handleListBatches(c *gin.Context) {
	limit, err := listLimit(c, 20, 100)
	if err != nil {
		abortWithError(c, err)
		return
	}
	bs, more, err := s.batches.ListBatches(c.Request.Context(), store.ListOptions{After: c.Query("after"), Limit: limit})
	if err != nil {
		s.bulkError(c, err)
		return
	}
	objs := make([]api.BatchObject, len(bs))
	for i, b := range bs {
		objs[i] = batch.NewBatchObject(b)
	}
	c.JSON(http.StatusOK, api.NewListPage(objs, func(b api.BatchObject) string { return b.ID }, more))
}

func (s *Server) handleGetBatch(c *gin.Context) {
	b, err := s.batches.GetBatch(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, batch.NewBatchObject(b))
}

func (s *Server) handleCancelBatch(c *gin.Context) {
	b, err := s.batches.CancelBatch(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, batch.NewBatchObject(b))
}

func (s *Server) handleBatchManifest(c *gin.Context) {
	m, err := s.batches.Manifest(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, m)
}

// batchObserver counts the batch runner's lines and batches in the metrics.
type batchObserver struct{ m *metrics }

var _ batch.Observer = batchObserver{}

// LineRecorded implements batch.Observer.
func (o batchObserver) LineRecorded(failed bool) {
	if o.m != nil {
		o.m.observeLine(failed)
	}
}

// BatchFinished implements batch.Observer.
func (o batchObserver) BatchFinished(status string) {
	if o.m != nil {
		o.m.observeBatch(status)
	}
}
