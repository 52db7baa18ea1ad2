package nodeagent

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModelFromBody(t *testing.T) {
	for _, tc := range []struct {
		body, want string
	}{
		{`{"model":"llama3"}`, "llama3"},
		{` { "model" : "qwen2:0.5b" , "stream":true}`, "qwen2:0.5b"},
		{`{"messages":[{"role":"user","content":"say \"model\":\"fake\""}],"model":"real"}`, "real"},
		{`{"tools":[{"function":{"parameters":{"model":"nested"}}}],"model":"top"}`, "top"},
		{`{"metadata":{"model":"nested"}}`, ""},
		{`{"model":"caf\u00e9"}`, "café"},
		{`{"model":"a\"b"}`, `a"b`},
		{`{"model":42}`, ""},
		{`{"model":null}`, ""},
		{`{"stream":true,"n":1,"x":[1,2,{"a":"}"}],"model":"after"}`, "after"},
		{`{"mod\u0065l":"escaped-key"}`, ""},
		{`["model","x"]`, ""},
		{`{"model":"unterminated`, ""},
		{`{"model"`, ""},
		{``, ""},
		{`{`, ""},
		{`{"a":}`, ""},
	} {
		if got := modelFromBody([]byte(tc.body)); got != tc.want {
			t.Errorf("modelFromBody(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// topLevelKeys lists the keys of a JSON object in order (decoded), or nil if b is not one.
func topLevelKeys(b []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return keys
}

func FuzzModelFromBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`,
		`{"messages":[{"content":"{\"model\":\"x\"}"}],"model":"m"}`,
		`{"model":"a","model":"b"}`,
		`{"x":{"model":"n"},"model":7}`,
		`{"model":"\ud800"}`,
		`  {"model" :"x"}  `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := modelFromBody(b)
		// Beside "never panics", the scanner must agree with encoding/json on any valid object
		// whose keys are plain (no escapes) and not repeated.
		if !json.Valid(b) || bytes.IndexByte(b, '\\') >= 0 {
			return
		}
		keys := topLevelKeys(b)
		if keys == nil {
			return
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				return
			}
			seen[k] = true
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("valid object did not decode: %v", err)
		}
		var want string
		if raw, ok := m["model"]; ok {
			_ = json.Unmarshal(raw, &want) // a non-string model is ""
		}
		if got != want {
			t.Fatalf("modelFromBody(%q) = %q, encoding/json says %q", b, got, want)
		}
	})
}

func TestLastIntField(t *testing.T) {
	for _, tc := range []struct {
		in string
		n  int64
		ok bool
	}{
		{`"usage":{"prompt_tokens":9,"completion_tokens":50}`, 50, true},
		{`"completion_tokens" :  7}`, 7, true},
		{`"completion_tokens":1,"x":{"completion_tokens":2}`, 2, true},
		{`"completion_tokens":null`, 0, false},
		{`"completion_tokens"`, 0, false},
		{`"content":"\"completion_tokens\":99"`, 0, false},
		{`completion_tokens:5`, 0, false},
		{`"completion_tokens":99999999999999999999999`, 999999999999999999, true},
	} {
		n, ok := lastIntField([]byte(tc.in), "completion_tokens")
		if n != tc.n || ok != tc.ok {
			t.Errorf("lastIntField(%s) = %d %v, want %d %v", tc.in, n, ok, tc.n, tc.ok)
		}
	}
}

func FuzzLastIntField(f *testing.F) {
	f.Add([]byte(`{"usage":{"completion_tokens":12}}`))
	f.Add([]byte(`"completion_tokens": 3`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := lastIntField(b, "completion_tokens")
		if n < 0 || (!ok && n != 0) {
			t.Fatalf("lastIntField(%q) = %d %v", b, n, ok)
		}
	})
}

func TestHasGeneratedText(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    bool
	}{
		{`{"choices":[{"delta":{"content":"Hi"}}]}`, true},
		{`{"choices":[{"delta":{"role":"assistant","content":""}}]}`, false},
		{`{"choices":[{"delta":{"content":null}}]}`, false},
		{`{"choices":[{"delta":{"content": "x"}}]}`, true},
		{`{"choices":[{"delta":{"reasoning_content":"hmm"}}]}`, true},
		{`{"choices":[{"delta":{"reasoning":"hmm","content":""}}]}`, true},
		{`{"choices":[{"text":"legacy"}]}`, true},
		{`{"choices":[],"usage":{"completion_tokens":3}}`, false},
		{`{"choices":[{"delta":{},"finish_reason":"stop"}]}`, false},
		{`{"type":"response.output_text.delta","item_id":"msg_1","delta":"Hi"}`, true},
		{`{"type":"response.output_text.delta","item_id":"msg_1","delta":""}`, false},
	} {
		if got := hasGeneratedText([]byte(tc.payload)); got != tc.want {
			t.Errorf("hasGeneratedText(%s) = %v, want %v", tc.payload, got, tc.want)
		}
	}
}

// meterAll feeds stream to a meter in writes cut at the given points.
func meterAll(stream []byte, cuts []int) *meterWriter {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "text/event-stream")
	m := newMeterWriter(rec, newFakeClock())
	prev := 0
	for _, c := range cuts {
		if c <= prev || c >= len(stream) {
			continue
		}
		m.Write(stream[prev:c])
		prev = c
	}
	m.Write(stream[prev:])
	return m
}

// TestMeterGolden meters recorded streams from testdata: the token count must not depend on
// how the backend cut its writes.
func TestMeterGolden(t *testing.T) {
	for _, tc := range []struct {
		file   string
		tokens int64
	}{
		{"ollama_stream_usage.sse", 5},    // from usage (include_usage)
		{"vllm_stream_nousage.sse", 4},    // counted chunks: the role chunk and the finish chunk carry no text
		{"responses_stream_usage.sse", 6}, // a Responses stream: usage's output_tokens
	} {
		b, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []int{0, 1, 7, 64} {
			var cuts []int
			for i := step; step > 0 && i < len(b); i += step {
				cuts = append(cuts, i)
			}
			n, ok := meterAll(b, cuts).tokens()
			if !ok || n != tc.tokens {
				t.Errorf("%s cut every %d bytes: %d tokens (%v), want %d", tc.file, step, n, ok, tc.tokens)
			}
		}
	}
}

func FuzzMeterSplit(f *testing.F) {
	f.Add([]byte(strings.Repeat(sseChunk("a"), 3)+"data: [DONE]\n\n"), uint16(5), uint16(40))
	f.Add([]byte("data: {\"content\":\"x\"}\r\ndata: {\"text\":\"y\"}\n"), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, stream []byte, c1, c2 uint16) {
		whole := meterAll(stream, nil)
		split := meterAll(stream, []int{int(c1), int(c1) + int(c2)})
		if whole.textChunk != split.textChunk || whole.bytes != split.bytes {
			t.Fatalf("chunks %d vs %d, bytes %d vs %d for cuts %d,%d", whole.textChunk, split.textChunk, whole.bytes, split.bytes, c1, c2)
		}
		wn, wok := whole.tokens()
		sn, sok := split.tokens()
		if wn != sn || wok != sok {
			t.Fatalf("tokens %d %v vs %d %v", wn, wok, sn, sok)
		}
	})
}
