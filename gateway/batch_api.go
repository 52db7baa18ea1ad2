package gateway

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/herd-llm/herd/gateway/api"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/gateway/store"
)

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
	var ue *batch.UploadError
	switch {
	case clientGone(c.Request.Context()):
		// Nobody hears the answer; the log and the metrics say what happened.
		s.log.Info("client went away during a bulk request", "method", c.Request.Method, "path", c.FullPath(), "err", err)
		c.AbortWithStatus(statusClientClosed)
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
	case errors.As(err, &ue):
		abortWithError(c, errBrokenBody(ue.Err))
	case storageError(err) != nil:
		s.log.Error("bulk request failed: disk full", "method", c.Request.Method, "path", c.FullPath(), "err", err)
		abortWithError(c, storageError(err))
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn("bulk request failed: store unavailable", "method", c.Request.Method, "path", c.FullPath(), "err", err)
		abortWithError(c, err)
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
			if errors.As(err, &mbe) || clientGone(c.Request.Context()) {
				s.bulkError(c, err)
				return
			}
			if errors.Is(err, io.ErrUnexpectedEOF) || isTimeout(err) {
				abortWithError(c, errBrokenBody(err))
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
				s.bulkError(c, &batch.UploadError{Err: err})
				return
			}
			purpose = strings.TrimSpace(string(b))
		default:
			// Fields OpenAI may add (expires_after, ...) are not errors; their content is skipped.
			if _, err := io.Copy(io.Discard, part); err != nil {
				s.bulkError(c, &batch.UploadError{Err: err})
				return
			}
		}
	}
	if staged == nil {
		abortWithError(c, badRequest("missing_required_parameter", "file", "file is required"))
		return
	}
	staged.Owner = tenantOf(c).name
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

// ownFile returns the file if the caller may see it; another tenant's file is answered exactly
// as an unknown one (404), so IDs tell nothing about other tenants' work.
func (s *Server) ownFile(c *gin.Context, id string) (store.File, bool) {
	f, err := s.batches.GetFile(c.Request.Context(), id)
	if err == nil && !tenantOf(c).sees(f.Owner) {
		err = &batch.Error{Kind: batch.KindNotFound, Code: "not_found", Param: "file_id", Message: "no such file: " + id}
	}
	if err != nil {
		s.bulkError(c, err)
		return store.File{}, false
	}
	return f, true
}

// ownBatch is ownFile for batches.
func (s *Server) ownBatch(c *gin.Context, id string) (store.Batch, bool) {
	b, err := s.batches.GetBatch(c.Request.Context(), id)
	if err == nil && !tenantOf(c).sees(b.Owner) {
		err = &batch.Error{Kind: batch.KindNotFound, Code: "not_found", Param: "batch_id", Message: "no such batch: " + id}
	}
	if err != nil {
		s.bulkError(c, err)
		return store.Batch{}, false
	}
	return b, true
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
	files, more, err := s.batches.ListFiles(c.Request.Context(), store.ListOptions{After: c.Query("after"), Limit: limit, Purpose: c.Query("purpose"), Owner: tenantOf(c).owner()})
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
	f, ok := s.ownFile(c, c.Param("id"))
	if !ok {
		return
	}
	c.JSON(http.StatusOK, batch.NewFileObject(f))
}

func (s *Server) handleFileContent(c *gin.Context) {
	if _, ok := s.ownFile(c, c.Param("id")); !ok {
		return
	}
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
	if _, ok := s.ownFile(c, id); !ok {
		return
	}
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
	if err := decodeJSONBody(c, maxCreateBatchBody, &body); err != nil {
		abortWithError(c, err)
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
	t := tenantOf(c)
	if body.InputFileID != "" {
		// Another tenant's file is not found, here as everywhere.
		if f, err := s.batches.GetFile(c.Request.Context(), body.InputFileID); err == nil && !t.sees(f.Owner) {
			s.bulkError(c, &batch.Error{Kind: batch.KindNotFound, Code: "not_found", Param: "input_file_id", Message: "no such file: " + body.InputFileID})
			return
		}
	}
	b, err := s.batches.CreateBatch(c.Request.Context(), batch.CreateBatchParams{
		InputFileID: body.InputFileID, Endpoint: body.Endpoint, CompletionWindow: body.CompletionWindow, Metadata: md, Owner: t.name,
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
	bs, more, err := s.batches.ListBatches(c.Request.Context(), store.ListOptions{After: c.Query("after"), Limit: limit, Owner: tenantOf(c).owner()})
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
	b, ok := s.ownBatch(c, c.Param("id"))
	if !ok {
		return
	}
	c.JSON(http.StatusOK, batch.NewBatchObject(b))
}

func (s *Server) handleCancelBatch(c *gin.Context) {
	if _, ok := s.ownBatch(c, c.Param("id")); !ok {
		return
	}
	b, err := s.batches.CancelBatch(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.bulkError(c, err)
		return
	}
	c.JSON(http.StatusOK, batch.NewBatchObject(b))
}

func (s *Server) handleBatchManifest(c *gin.Context) {
	if _, ok := s.ownBatch(c, c.Param("id")); !ok {
		return
	}
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
