package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestScanBody(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		model string
		want  bodyInfo // model and prefixHash are not compared here
		// err is the error's param and code; empty: no error.
		errParam, errCode string
		wantErr           bool
	}{
		{name: "chat", body: `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`, model: "llama3.1:8b",
			want: bodyInfo{promptBytes: len(`[{"role":"user","content":"hi"}]`)}},
		{name: "stream and caps", body: ` {"stream":true,"max_tokens":17,"model":"m","stream_options":{"include_usage":true}} `, model: "m",
			want: bodyInfo{stream: true, maxTokens: 17, includeUsage: true}},
		{name: "max_completion_tokens wins", body: `{"model":"m","max_tokens":5,"max_completion_tokens":9}`, model: "m", want: bodyInfo{maxTokens: 9}},
		{name: "nulls", body: `{"model":"m","stream":null,"max_tokens":null,"stream_options":null}`, model: "m"},
		{name: "last duplicate wins", body: `{"model":"a","stream":"x","model":"b","stream":false}`, model: "b"},
		{name: "escaped model", body: `{"model":"qwen\u0032:7b"}`, model: "qwen2:7b"},
		{name: "escaped key", body: `{"mod\u0065l":"m","str\u0065am":true}`, model: "m", want: bodyInfo{stream: true}},
		{name: "nested model ignored", body: `{"metadata":{"model":"x"},"model":"m"}`, model: "m"},
		{name: "quotes in strings", body: `{"messages":[{"role":"user","content":"a \"model\": \\"}],"model":"m"}`, model: "m",
			want: bodyInfo{promptBytes: len(`[{"role":"user","content":"a \"model\": \\"}]`)}},
		{name: "prompt", body: `{"model":"m","prompt":"once upon"}`, model: "m", want: bodyInfo{promptBytes: len(`"once upon"`)}},
		{name: "embeddings input", body: `{"model":"e","input":["a","b"]}`, model: "e", want: bodyInfo{promptBytes: len(`["a","b"]`)}},
		{name: "include_usage false", body: `{"model":"m","stream_options":{"include_usage":false}}`, model: "m"},

		{name: "not json", body: `{"model":`, wantErr: true},
		{name: "empty", body: ``, wantErr: true},
		{name: "trailing garbage", body: `{"model":"m"} x`, wantErr: true},
		{name: "array body", body: `[1]`, wantErr: true, errCode: "invalid_type"},
		{name: "nested too deep", body: `{"model":"m","messages":` + strings.Repeat("[", 20001) + strings.Repeat("]", 20001) + `}`, wantErr: true, errCode: "invalid_json"},
		{name: "deep but allowed", body: `{"model":"m","x":` + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + `}`, model: "m"},
		{name: "missing model", body: `{"messages":[]}`, wantErr: true, errParam: "model", errCode: "missing_required_parameter"},
		{name: "null model", body: `{"model":null}`, wantErr: true, errParam: "model", errCode: "missing_required_parameter"},
		{name: "empty model", body: `{"model":""}`, wantErr: true, errParam: "model", errCode: "missing_required_parameter"},
		{name: "model number", body: `{"model":3}`, wantErr: true, errParam: "model", errCode: "invalid_type"},
		{name: "stream string", body: `{"model":"m","stream":"true"}`, wantErr: true, errParam: "stream", errCode: "invalid_type"},
		{name: "max_tokens string", body: `{"model":"m","max_tokens":"5"}`, wantErr: true, errParam: "max_tokens", errCode: "invalid_type"},
		{name: "max_tokens decimal", body: `{"model":"m","max_tokens":5.5}`, wantErr: true, errParam: "max_tokens", errCode: "invalid_type"},
		{name: "max_tokens negative", body: `{"model":"m","max_completion_tokens":-1}`, wantErr: true, errParam: "max_completion_tokens", errCode: "integer_below_min_value"},
		{name: "stream_options array", body: `{"model":"m","stream_options":[]}`, wantErr: true, errParam: "stream_options", errCode: "invalid_type"},
		{name: "include_usage string", body: `{"model":"m","stream_options":{"include_usage":"yes"}}`, wantErr: true, errParam: "stream_options.include_usage", errCode: "invalid_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var info bodyInfo
			err := scanBody([]byte(tt.body), &info)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("scanBody: no error, want one")
				}
				if err.Status != 400 || err.Type != errInvalidRequest || err.Param != tt.errParam || err.Code != tt.errCode {
					t.Fatalf("scanBody error = %+v, want 400 %s param %q code %q", err, errInvalidRequest, tt.errParam, tt.errCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("scanBody: %v", err)
			}
			if string(info.model) != tt.model {
				t.Errorf("model = %q, want %q", info.model, tt.model)
			}
			got := info
			got.model, got.prefixHash = nil, 0
			want := tt.want
			if got.stream != want.stream || got.maxTokens != want.maxTokens || got.includeUsage != want.includeUsage || got.promptBytes != want.promptBytes {
				t.Errorf("info = %+v, want %+v", got, want)
			}
		})
	}
}

// TestScanBodyTooDeep: JSON nested deeper than encoding/json allows is refused with a message
// that says so, not with the hint that the HTTP library is misused.
func TestScanBodyTooDeep(t *testing.T) {
	for _, body := range []string{
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
		`{"model":"m","messages":[{"content":"[[[ {{{ \"[["}],"x":` + strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001) + "}",
	} {
		var info bodyInfo
		err := scanBody([]byte(body), &info)
		if err == nil || err.Status != 400 || !strings.Contains(err.Message, "nested too deep") || strings.Contains(err.Message, "HTTP library") {
			t.Fatalf("scanBody(%.40q…) = %+v, want a 400 saying the nesting is too deep", body, err)
		}
	}
	// Brackets inside strings are text, and a broken body is still "not valid JSON".
	var info bodyInfo
	if err := scanBody([]byte(`{"model":"`+strings.Repeat("[", 20000)+`"`), &info); err == nil || err.Message != msgBadJSON {
		t.Fatalf("unterminated body with brackets in a string: %+v, want the not-valid-JSON message", err)
	}
}

func TestScanBodyPrefixHash(t *testing.T) {
	hash := func(body string) uint64 {
		t.Helper()
		var info bodyInfo
		if err := scanBody([]byte(body), &info); err != nil {
			t.Fatalf("scanBody(%s): %v", body, err)
		}
		return info.prefixHash
	}
	sys := `{"role":"system","content":"You are terse."}`
	u1 := `{"role":"user","content":"What is KV cache?"}`
	a1 := `{"role":"assistant","content":"Cached attention keys."}`
	u2 := `{"role":"user","content":"And prefix reuse?"}`
	turn1 := hash(`{"model":"m","messages":[` + sys + `,` + u1 + `]}`)
	turn2 := hash(`{"model":"m","stream":true,"messages":[` + sys + `,` + u1 + `,` + a1 + `,` + u2 + `]}`)
	if turn1 == 0 || turn1 != turn2 {
		t.Errorf("turns of one conversation hash %x and %x, want equal and non-zero", turn1, turn2)
	}
	noSys1 := hash(`{"model":"m","messages":[` + u1 + `]}`)
	noSys2 := hash(`{"model":"m","messages":[` + u1 + `,` + a1 + `,` + u2 + `]}`)
	if noSys1 != noSys2 {
		t.Errorf("turns without a system prompt hash %x and %x, want equal", noSys1, noSys2)
	}
	other := hash(`{"model":"m","messages":[` + sys + `,` + u2 + `]}`)
	if other == turn1 {
		t.Errorf("different conversations hash alike (%x)", other)
	}
	if h := hash(`{"model":"m","messages":[]}`); h != 0 {
		t.Errorf("empty messages hash %x, want 0", h)
	}
	if h := hash(`{"model":"m","input":"x"}`); h != 0 {
		t.Errorf("embeddings hash %x, want 0", h)
	}
	long := strings.Repeat("p", 2*prefixPromptBytes)
	if hash(`{"model":"m","prompt":"`+long+`"}`) != hash(`{"model":"m","prompt":"`+long+`tail"}`) {
		t.Errorf("prompts that share their first %d bytes hash differently", prefixPromptBytes)
	}
}

// FuzzScanBody checks that the scanner never panics and that, on valid JSON, it reads model and
// stream as encoding/json does.
func FuzzScanBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"llama3.1:8b","messages":[{"role":"system","content":"x"},{"role":"user","content":"hi"}],"stream":true}`,
		`{"model":"m","prompt":"p","max_tokens":3,"stream_options":{"include_usage":true}}`,
		`{"model":"e","input":["a"]}`,
		`{"mod\u0065l":"a\"b","stream":false,"model":"c"}`,
		`{"model":"\ud83d\ude00"}`,
		"{\"model\":\"\xff\"}",
		`{"model":null}`, `[]`, `"x"`, `{`, `{"model":"m",}`, ``, `{"a":{"b":[1,2,{"c":"]}"}]}}`,
		`{"model":"m","max_tokens":1e3}`, `{"model":"m","max_tokens":-0}`, `{"model":"m","max_tokens":99999999999999999999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var info bodyInfo
		err := scanBody(body, &info)
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			if err == nil {
				t.Fatalf("scanBody accepted %q, which encoding/json refuses as an object", body)
			}
			return
		}
		model, modelOK := m["model"].(string)
		stream, streamIsBool := m["stream"].(bool)
		_, hasStream := m["stream"]
		simple := modelOK && model != "" && (streamIsBool || !hasStream || m["stream"] == nil)
		for _, k := range []string{"max_tokens", "max_completion_tokens", "stream_options"} {
			if _, ok := m[k]; ok {
				simple = false
			}
		}
		if simple && err != nil {
			t.Fatalf("scanBody(%q) = %v, want success (model %q)", body, err, model)
		}
		if err != nil {
			return
		}
		if string(info.model) != model {
			t.Fatalf("scanBody(%q) model = %q, encoding/json says %q", body, info.model, model)
		}
		if info.stream != stream {
			t.Fatalf("scanBody(%q) stream = %v, encoding/json says %v", body, info.stream, stream)
		}
	})
}

// benchChatBody is a typical chat request: a system prompt, two turns and sampling parameters.
var benchChatBody = []byte(`{"model":"llama3.1:8b","stream":true,"stream_options":{"include_usage":true},"max_tokens":512,"temperature":0.7,` +
	`"messages":[{"role":"system","content":"You are a helpful assistant that answers in short, precise sentences."},` +
	`{"role":"user","content":"Explain what a KV cache is in a transformer and why it makes decoding faster."},` +
	`{"role":"assistant","content":"` + strings.Repeat("The KV cache stores keys and values of past tokens. ", 20) + `"},` +
	`{"role":"user","content":"And how does prefix caching across requests work?"}]}`)

func BenchmarkScanBody(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChatBody)))
	var info bodyInfo
	for b.Loop() {
		if err := scanBody(benchChatBody, &info); err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(info.model, []byte("llama3.1:8b")) {
		b.Fatalf("model = %q", info.model)
	}
}

// FuzzNestedTooDeep: JSON that encoding/json accepts is never called too deep.
func FuzzNestedTooDeep(f *testing.F) {
	f.Add([]byte(`{"a":[[{"b":"[[["}]]]}`))
	f.Add([]byte(strings.Repeat("[", 10001)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if json.Valid(b) && nestedTooDeep(b) {
			t.Fatalf("valid JSON %q called too deep", b)
		}
	})
}
