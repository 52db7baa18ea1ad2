package ollamacompat

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/internal/golden"
)

// TestTranslateGolden translates each testdata/translate/NAME.ENDPOINT.json Ollama request to
// the OpenAI request in NAME.golden.json.
func TestTranslateGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/translate/*.json")
	eps := map[string]Endpoint{"chat": Chat, "generate": Generate, "embed": Embed, "embeddings": Embeddings}
	n := 0
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, ".golden.json") {
			continue
		}
		parts := strings.Split(base, ".")
		ep, ok := eps[parts[1]]
		if !ok {
			t.Fatalf("%s: unknown endpoint %q", f, parts[1])
		}
		n++
		t.Run(parts[0], func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			up, err := Translate(ep, in)
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, up.Body, "", "  "); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, "testdata/translate/"+parts[0]+".golden.json", []byte(up.Path+"\n"+pretty.String()+"\n"))
		})
	}
	if n < 8 {
		t.Fatalf("only %d translation cases found", n)
	}
}

// TestTranslateErrors checks that requests Ollama refuses are refused with Ollama's wording.
func TestTranslateErrors(t *testing.T) {
	for _, tt := range []struct {
		ep   Endpoint
		body string
		want string
	}{
		{Chat, `{"model":"m","options":{"temperature":"hot"}}`, `option "temperature" must be of type float32`},
		{Chat, `{"model":"m","options":{"num_predict":"ten"}}`, `option "num_predict" must be of type integer`},
		{Chat, `{"model":"m","options":{"stop":"x"}}`, `option "stop" must be of type array`},
		{Chat, `{"model":"m","options":{"stop":[1]}}`, `option "stop" must be of an array of strings`},
		{Chat, `{"model":"m","format":"yaml"}`, `invalid format`},
		{Chat, `{"model":"m","messages":"hi"}`, `cannot unmarshal`},
		{Embed, `{"model":"m","input":[1,2]}`, `invalid input type`},
		{Generate, `{"model":"m","prompt":"p","raw":true,"images":["aGk="]}`, `images cannot be sent`},
	} {
		_, err := Translate(tt.ep, []byte(tt.body))
		if err == nil || !IsBadRequest(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want a bad request containing %q", tt.body, err, tt.want)
		}
	}
}

// TestResponseGolden translates each testdata/stream/*.sse OpenAI stream into Ollama's answer,
// streamed (NDJSON lines) and not (one object), fed in small pieces so that lines and events
// are cut anywhere, on a clock that moves 10ms per piece.
func TestResponseGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/stream/*.sse")
	if len(files) < 6 {
		t.Fatalf("only %d stream cases found", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sse")
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ep, completion := Chat, false
		if name == "completion" {
			ep, completion = Generate, true
		}
		for _, stream := range []bool{true, false} {
			mode := "stream"
			if !stream {
				mode = "single"
			}
			t.Run(name+"-"+mode, func(t *testing.T) {
				start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
				now := start.Add(5 * time.Millisecond)
				r := NewResponse(ep, "llama3.2:1b", stream, completion, start, now)
				var out []byte
				for p := in; len(p) > 0; {
					n := min(7, len(p))
					now = now.Add(10 * time.Millisecond)
					out = r.Feed(out, p[:n], now)
					p = p[n:]
				}
				out, status := r.End(out, now.Add(time.Millisecond))
				for _, line := range bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n")) {
					if !json.Valid(line) {
						t.Fatalf("line %q is not JSON", line)
					}
				}
				golden.Check(t, "testdata/stream/"+name+"."+mode+".golden", append([]byte(http200(status)), out...))
			})
		}
	}
}

func http200(status int) string { return "status " + itoa(status) + "\n" }

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestGenerateFromChatStream renders a chat stream as /api/generate's answer.
func TestGenerateFromChatStream(t *testing.T) {
	in, _ := os.ReadFile("testdata/stream/chat.sse")
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	r := NewResponse(Generate, "llama3.2:1b", true, false, start, start)
	out := r.Feed(nil, in, start.Add(time.Second))
	out, _ = r.End(out, start.Add(time.Second))
	golden.Check(t, "testdata/stream/chat.generate.golden", out)
}

// TestEmbedResponse translates OpenAI embeddings into /api/embed (unit vectors, in input order)
// and /api/embeddings.
func TestEmbedResponse(t *testing.T) {
	body := []byte(`{"object":"list","data":[{"index":1,"embedding":[0,2]},{"index":0,"embedding":[3,4]}],"usage":{"prompt_tokens":4,"total_tokens":4}}`)
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	got, err := EmbedResponse(Embed, "nomic-embed-text", body, start, start.Add(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"model":"nomic-embed-text","embeddings":[[0.6,0.8],[0,1]],"total_duration":20000000,"prompt_eval_count":4}`; string(got) != want {
		t.Errorf("embed: %s\nwant %s", got, want)
	}
	got, err = EmbedResponse(Embeddings, "nomic-embed-text", body, start, start)
	if err != nil || string(got) != `{"embedding":[3,4]}` {
		t.Errorf("embeddings: %s, %v", got, err)
	}
	if _, err := EmbedResponse(Embed, "m", []byte("nope"), start, start); err == nil {
		t.Error("a body that is not JSON was accepted")
	}
}

// TestErrorMessage reads the message of every error shape a backend answers with.
func TestErrorMessage(t *testing.T) {
	for body, want := range map[string]string{
		`{"error":{"message":"The model x does not exist","type":"invalid_request_error"}}`: "The model x does not exist",
		`{"error":"model 'x' not found"}`:                         "model 'x' not found",
		`{"object":"error","message":"no such model","code":404}`: "no such model",
		`{"detail":"Not Found"}`:                                  "Not Found",
		`{"detail":[{"msg":"field required"}]}`:                   `[{"msg":"field required"}]`,
		"upstream connect error\n":                                "upstream connect error",
		``:                                                        "the backend answered with an empty error",
	} {
		if got := ErrorMessage([]byte(body)); got != want {
			t.Errorf("ErrorMessage(%s) = %q, want %q", body, got, want)
		}
	}
}
