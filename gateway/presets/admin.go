package presets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/apierr"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/models"
)

// maxPresetBody bounds a preset's JSON (a long system prompt and a JSON schema fit easily).
const maxPresetBody = 1 << 20

// Handlers serve /admin/v1/presets over a Book.
type Handlers struct {
	book *Book
	now  func() time.Time
}

// NewHandlers returns the admin handlers of book; now stamps stored presets (nil: time.Now).
func NewHandlers(book *Book, now func() time.Time) *Handlers {
	if now == nil {
		now = time.Now
	}
	return &Handlers{book: book, now: now}
}

// Register mounts /presets on admin (the /admin/v1 group): GET (list), GET/PUT/DELETE /:name. PUT
// creates or replaces a stored preset (see Book.Put for its version); DELETE removes a stored one
// (a preset of the presets file can only be overridden, not deleted).
func (h *Handlers) Register(admin *gin.RouterGroup) {
	g := admin.Group("/presets")
	g.GET("", h.handleListPresets)
	g.GET("/:name", h.handleGetPreset)
	g.PUT("/:name", h.handlePutPreset)
	g.DELETE("/:name", h.handleDeletePreset)
}

func (h *Handlers) handleListPresets(c *gin.Context) {
	c.JSON(http.StatusOK, api.PresetList{Object: "list", Data: h.book.List()})
}

func (h *Handlers) handleGetPreset(c *gin.Context) {
	p, ok := h.book.Lookup(c.Param("name"))
	if !ok {
		apierr.Abort(c, apierr.NotFound("preset_not_found", "name", "preset %q does not exist", c.Param("name")))
		return
	}
	c.JSON(http.StatusOK, p)
}

func (h *Handlers) handlePutPreset(c *gin.Context) {
	var p models.Preset
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxPresetBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		apierr.Abort(c, &apierr.Error{Status: http.StatusRequestEntityTooLarge, Type: apierr.TypeInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("preset body is larger than %d bytes", maxPresetBody)})
		return
	case err != nil:
		apierr.Abort(c, apierr.BadRequest("incomplete_request_body", "", "preset body could not be read: %v", err))
		return
	}
	// A body saved by an editor that writes a UTF-8 byte order mark parses like one without.
	if err := json.Unmarshal(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), &p); err != nil {
		apierr.Abort(c, apierr.BadRequest("invalid_json", "", "preset body is not valid JSON: %v", err))
		return
	}
	if p.Name == "" {
		p.Name = c.Param("name")
	}
	if p.Name != c.Param("name") {
		apierr.Abort(c, apierr.BadRequest("invalid_value", "name", "preset name %q in the body does not match %q in the path", p.Name, c.Param("name")))
		return
	}
	if err := p.Validate(); err != nil {
		apierr.Abort(c, apierr.BadRequest("invalid_value", "", "%v", err))
		return
	}
	stored, err := h.book.Put(c.Request.Context(), p, h.now())
	var conflict *VersionConflictError
	if errors.As(err, &conflict) {
		apierr.Abort(c, &apierr.Error{Status: http.StatusConflict, Type: apierr.TypeInvalidRequest, Code: "preset_version_conflict",
			Param: "version", Message: conflict.Error()})
		return
	}
	if err != nil {
		apierr.Abort(c, err)
		return
	}
	c.JSON(http.StatusOK, stored)
}

func (h *Handlers) handleDeletePreset(c *gin.Context) {
	name := c.Param("name")
	if !h.book.IsStored(name) {
		if _, ok := h.book.Lookup(name); ok {
			apierr.Abort(c, apierr.BadRequest("preset_from_file", "name", "preset %q comes from the presets file; remove it there", name))
			return
		}
		apierr.Abort(c, apierr.NotFound("preset_not_found", "name", "preset %q does not exist", name))
		return
	}
	if err := h.book.Remove(c.Request.Context(), name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			apierr.Abort(c, apierr.NotFound("preset_not_found", "name", "preset %q does not exist", name))
			return
		}
		apierr.Abort(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": name, "object": "preset", "deleted": true})
}
