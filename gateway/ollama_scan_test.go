package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestScanOllamaBody reads routing fields from native Ollama bodies.
func TestScanOllamaBody(t *testing.T) {
	for _, tt := range []struct {
		body      string
		model     string
		stream    bool
		maxTokens int
		err       string
	}{
		{body: `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`, model: "llama3", stream: true},
		{body: `{"model":"llama3","stream":false,"options":{"num_predict":64,"temperature":0}}`, model: "llama3", maxTokens: 64},
		{body: `{"model":"llama3","stream":null,"options":{"num_predict":-1}}`, model: "llama3", stream: true},
		{body: `{"model":"a\u002fb","prompt":"x","options":null}`, model: "a/b", stream: true},
		{body: ``, err: "missing request body"},
		{body: `  `, err: "missing request body"},
		{body: `{"model":`, err: "unexpected end of JSON input"},
		{body: `[1]`, err: "json: cannot unmarshal array into Go value of type api.Request"},
		{body: `{"messages":[]}`, err: "model is required"},
		{body: `{"model":""}`, err: "model is required"},
		{body: `{"model":7}`, err: "json: cannot unmarshal number into Go struct field .model of type string"},
		{body: `{"model":"m","stream":"yes"}`, err: "json: cannot unmarshal string into Go struct field .stream of type bool"},
		{body: `{"model":"m","options":[1]}`, err: "json: cannot unmarshal array into Go struct field .options of type map[string]interface {}"},
	} {
		var info bodyInfo
		ae := scanOllamaBody([]byte(tt.body), &info)
		if tt.err != "" {
			if ae == nil || ae.Message != tt.err || ae.Status != 400 {
				t.Errorf("%s: error %+v, want 400 %q", tt.body, ae, tt.err)
			}
			continue
		}
		if ae != nil || string(info.model) != tt.model || info.stream != tt.stream || info.maxTokens != tt.maxTokens {
			t.Errorf("%s: %+v %q %v %d", tt.body, ae, info.model, info.stream, info.maxTokens)
		}
	}
}

// FuzzScanOllamaBody checks the scanner against encoding/json: whatever it accepts, Go decodes to
// the same model and stream, and it never panics.
func FuzzScanOllamaBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"llama3","messages":[{"role":"user","content":"hi"}],"stream":false}`,
		`{"model":"m","options":{"num_predict":12},"prompt":"p"}`,
		`{"model":"\u00e9t\u00e9","input":["a","b"]}`,
		`{"model":"m","model":"n","stream":true,"stream":false}`,
		`[]`, `{}`, `{"model":null}`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var info bodyInfo
		if ae := scanOllamaBody(b, &info); ae != nil {
			return
		}
		var v struct {
			Model  string `json:"model"`
			Stream *bool  `json:"stream"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("scanner accepted %q, json: %v", b, err)
		}
		if v.Model != string(info.model) {
			t.Fatalf("%q: model %q, json says %q", b, info.model, v.Model)
		}
		if want := v.Stream == nil || *v.Stream; want != info.stream {
			t.Fatalf("%q: stream %v, json says %v", b, info.stream, want)
		}
	})
}

// TestScanOllamaBodyTooDeep: Ollama's routes say too-deep nesting in their own words.
func TestScanOllamaBodyTooDeep(t *testing.T) {
	var info bodyInfo
	body := `{"model":"m","x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`
	if err := scanOllamaBody([]byte(body), &info); err == nil || err.Status != 400 || !strings.Contains(err.Message, "nested too deep") {
		t.Fatalf("scanOllamaBody = %+v, want a 400 saying the nesting is too deep", err)
	}
}
