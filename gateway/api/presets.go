package api

import "github.com/herd-llm/herd/models"

// PresetList is GET /admin/v1/presets.
type PresetList struct {
	Object string          `json:"object"`
	Data   []models.Preset `json:"data"`
}
