package presets

// maxPresetBody bounds a preset's JSON (a long system prompt and a JSON schema fit easily).
const maxPresetBody = 1 << 20

// registerPresetRoutes mounts /admin/v1/presets: GET (list), GET/PUT/DELETE /:name. PUT creates
// or replaces a stored preset and bumps its version; DELETE removes a stored one (a preset of the
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

