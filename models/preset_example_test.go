package models

import (
	"os"
	"path/filepath"
	"testing"
)

// The example presets shipped in deploy/ must stay valid.
func TestExamplePresetsParse(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "presets.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	presets, err := ParsePresets(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(presets) != 2 {
		t.Fatalf("got %d presets", len(presets))
	}
	for _, p := range presets {
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
}
