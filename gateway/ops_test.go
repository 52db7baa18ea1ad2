package gateway

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/herd-llm/herd/internal/golden"
)

// checkGolden compares a JSON body, indented, with testdata/name (-update rewrites it).
func checkGolden(t *testing.T, name string, body []byte) {
	t.Helper()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, body, "", "  "); err != nil {
		t.Fatalf("%s: %v: %s", name, err, body)
	}
	pretty.WriteByte('\n')
	golden.Check(t, filepath.Join("testdata", name), pretty.Bytes())
}
