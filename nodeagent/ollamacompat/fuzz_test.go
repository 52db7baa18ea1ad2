package ollamacompat

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzResponse feeds arbitrary bytes as an upstream SSE body, cut at an arbitrary point: the
// translation never panics and every line it writes is one JSON object, the last one the final
// chunk or an error.
func FuzzResponse(f *testing.F) {
	files, _ := filepath.Glob("testdata/stream/*.sse")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b, uint8(7), true)
		f.Add(b, uint8(1), false)
	}
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"name\":\"x\",\"arguments\":\"[1\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n"), uint8(5), true)
	f.Fuzz(func(t *testing.T, body []byte, cut uint8, stream bool) {
		start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
		r := NewResponse(Chat, "m", stream, false, start, start)
		var out []byte
		step := int(cut%64) + 1
		for p := body; len(p) > 0; {
			n := min(step, len(p))
			out = r.Feed(out, p[:n], start)
			p = p[n:]
		}
		out, status := r.End(out, start)
		if !stream {
			if !json.Valid(out) || (status != 200 && status != 500 && status != 502) {
				t.Fatalf("status %d body %q", status, out)
			}
			return
		}
		lines := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
		for _, l := range lines {
			var v map[string]any
			if err := json.Unmarshal(l, &v); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
		}
		var last map[string]any
		_ = json.Unmarshal(lines[len(lines)-1], &last)
		if last["done"] != true && last["error"] == nil {
			t.Fatalf("last line %q is neither final nor an error", lines[len(lines)-1])
		}
	})
}

// FuzzTranslate feeds arbitrary request bodies: Translate never panics, and what it accepts is
// a JSON OpenAI request.
func FuzzTranslate(f *testing.F) {
	files, _ := filepath.Glob("testdata/translate/*.json")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b, uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, ep uint8) {
		up, err := Translate(Endpoint(ep%4), body)
		if err != nil {
			return
		}
		if !json.Valid(up.Body) || up.Path == "" {
			t.Fatalf("translation %q of %q", up.Body, body)
		}
	})
}
