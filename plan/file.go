package plan

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"

	"github.com/herd-llm/herd/models"
)

// maxFileBytes bounds a plan or catalogue file.
const maxFileBytes = 1 << 20

// ParseSpec decodes a plan file (YAML, the keys of Spec's yaml tags) over into, which keeps
// the fields the file does not name. Unknown keys, a second document and files over 1 MiB are
// errors. The result is not validated: call Validate once flags have been applied too.
func ParseSpec(data []byte, into *Spec) error {
	if len(data) > maxFileBytes {
		return fmt.Errorf("%w: plan file over %d bytes", ErrBadSpec, maxFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file changes nothing
		}
		return fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: a plan file holds one YAML document", ErrBadSpec)
	}
	return nil
}

// ParseCatalogue decodes a catalogue file: a YAML list of node prices, or a mapping with one key
// "catalogue" holding that list.
func ParseCatalogue(data []byte) ([]models.NodePrice, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%w: catalogue file over %d bytes", ErrBadSpec, maxFileBytes)
	}
	var list []models.NodePrice
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&list)
	if err != nil && !errors.Is(err, io.EOF) {
		var doc struct {
			Catalogue []models.NodePrice `yaml:"catalogue"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err2 := dec.Decode(&doc); err2 != nil {
			return nil, fmt.Errorf("%w: catalogue: %w", ErrBadSpec, err)
		}
		list = doc.Catalogue
	}
	return list, nil
}
