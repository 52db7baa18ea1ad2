package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// These tests run the backend against real Ollama (scripts/build-ollama.sh) with the generated
// tiny model. Without the binary they skip, except under CI or HERD_REQUIRE_OLLAMA. Each is
// bounded by a context; the model's num_predict is 64 and requests ask for fewer tokens.

const realTimeout = 3 * time.Minute

func realOllama(t *testing.T, opts ollamatest.Options) (*Ollama, *ollamatest.Server, context.Context) {
	t.Helper()
	s := ollamatest.Start(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), realTimeout)
	t.Cleanup(cancel)
	return newOllama(t, s.URL, s.ModelsDir), s, ctx
}

type chatResponse struct {
	Object  string `json:"object"`
	Choices []struct {
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func serve(t *testing.T, ctx context.Context, b *Ollama, endpoint, body string) *flushRecorder {
	t.Helper()
	rec := newFlushRecorder()
	r := agentRequest(t, endpoint, body).WithContext(ctx)
	b.ServeInference(rec, r, endpoint, []byte(body))
	return rec
}

func TestRealOllamaModelsLoadUnload(t *testing.T) {
	o, _, ctx := realOllama(t, ollamatest.Options{})
	ms, err := o.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := findModel(ms, "tiny:latest")
	if !ok || !m.OnDisk || m.Resident || m.Family != "llama" || m.Embedding {
		t.Fatalf("models %+v", ms)
	}

	start := time.Now()
	if err := o.Load(ctx, "tiny", "5m"); err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %s (real Ollama, CPU, tiny model)", time.Since(start).Round(time.Millisecond))
	ms, err = o.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := findModel(ms, "tiny:latest"); !m.Resident || m.ExpiresAt.IsZero() {
		t.Fatalf("after load %+v", m)
	}

	start = time.Now()
	if err := o.Unload(ctx, "tiny:latest"); err != nil {
		t.Fatal(err)
	}
	t.Logf("unload until gone from ps: %s", time.Since(start).Round(time.Millisecond))
	ms, err = o.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := findModel(ms, "tiny:latest"); m.Resident || !m.OnDisk {
		t.Fatalf("after unload %+v", m)
	}

	if err := o.Load(ctx, "nosuch", ""); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("load nosuch: %v", err)
	}
}

func TestRealOllamaChat(t *testing.T) {
	o, _, ctx := realOllama(t, ollamatest.Options{})
	if err := o.Load(ctx, "tiny", "5m"); err != nil {
		t.Fatal(err)
	}

	t.Run("non-stream", func(t *testing.T) {
		rec := serve(t, ctx, o, agentapi.PathChatCompletions, `{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":16}`)
		if rec.status != http.StatusOK {
			t.Fatalf("%d %s", rec.status, rec.body())
		}
		var cr chatResponse
		if err := json.Unmarshal([]byte(rec.body()), &cr); err != nil {
			t.Fatal(err)
		}
		if cr.Object != "chat.completion" || len(cr.Choices) != 1 || cr.Choices[0].Message.Role != "assistant" || cr.Usage == nil {
			t.Fatalf("response %s", rec.body())
		}
		fr := *cr.Choices[0].FinishReason
		if u := cr.Usage; u.CompletionTokens < 1 || u.CompletionTokens > 16 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("usage %+v", *u)
		}
		// A "length" ending used the whole budget; a "stop" may come at any count up to it, the
		// limit included (Ollama counts the end-of-reply token it sampled).
		if fr != "stop" && fr != "length" || fr == "length" && cr.Usage.CompletionTokens != 16 {
			t.Errorf("finish_reason %q with %d tokens", fr, cr.Usage.CompletionTokens)
		}
	})

	t.Run("stream", func(t *testing.T) {
		var tokens, events int
		start := time.Now()
		for i := 0; i < 5; i++ { // several, so both a stop and a length ending are likely seen
			rec := serve(t, ctx, o, agentapi.PathChatCompletions, `{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}],"max_tokens":48}`)
			if rec.status != http.StatusOK || rec.header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%d %v %s", rec.status, rec.header, rec.body())
			}
			data := sseData(t, rec.body())
			if len(data) < 3 || data[len(data)-1] != "[DONE]" {
				t.Fatalf("events %q", data)
			}
			// Events that arrive together may go out in one flush; none may stay unflushed.
			if got := strings.Join(rec.flushed(), ""); got != rec.body() {
				t.Errorf("unflushed tail after the stream ended")
			}
			var content strings.Builder
			var finish string
			var usage *chatResponse
			for _, d := range data[:len(data)-1] {
				var c chatResponse
				if err := json.Unmarshal([]byte(d), &c); err != nil {
					t.Fatalf("event %q: %v", d, err)
				}
				if c.Object != "chat.completion.chunk" {
					t.Fatalf("event %s", d)
				}
				if c.Usage != nil {
					usage = &c
					continue
				}
				content.WriteString(c.Choices[0].Delta.Content)
				if c.Choices[0].FinishReason != nil {
					finish = *c.Choices[0].FinishReason
				}
			}
			if usage == nil || finish == "" {
				t.Fatalf("no usage or finish_reason in %q", data)
			}
			n := usage.Usage.CompletionTokens
			if n < 1 || n > 48 || finish == "length" && n != 48 || finish != "length" && finish != "stop" {
				t.Errorf("finish %q after %d tokens", finish, n)
			}
			tokens += n
			events += len(data)
		}
		el := time.Since(start)
		t.Logf("stream: %d completion tokens in %d events over 5 requests in %s: %.0f tokens/s end to end through the proxy (real Ollama, 1 CPU thread)",
			tokens, events, el.Round(time.Millisecond), float64(tokens)/el.Seconds())
	})

	t.Run("completions", func(t *testing.T) {
		rec := serve(t, ctx, o, agentapi.PathCompletions, `{"model":"tiny","prompt":"hello","max_tokens":8}`)
		if rec.status != http.StatusOK || !strings.Contains(rec.body(), `"object":"text_completion"`) {
			t.Fatalf("%d %s", rec.status, rec.body())
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		rec := serve(t, ctx, o, agentapi.PathEmbeddings, `{"model":"tiny","input":["hello","world"]}`)
		if rec.status != http.StatusOK {
			t.Fatalf("%d %s", rec.status, rec.body())
		}
		var er struct {
			Data []struct {
				Embedding []float64 `json:"embedding"`
				Index     int       `json:"index"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(rec.body()), &er); err != nil {
			t.Fatal(err)
		}
		if len(er.Data) != 2 || len(er.Data[0].Embedding) != ollamatest.TinyEmbeddingDims || len(er.Data[1].Embedding) != ollamatest.TinyEmbeddingDims {
			t.Fatalf("embeddings %s", rec.body())
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		rec := serve(t, ctx, o, agentapi.PathChatCompletions, `{"model":"nosuch","messages":[{"role":"user","content":"hi"}]}`)
		if rec.status != http.StatusNotFound {
			t.Fatalf("%d %s", rec.status, rec.body())
		}
		if msg, _, _ := openAIErr(t, []byte(rec.body())); !strings.Contains(msg, "nosuch") {
			t.Errorf("message %q", msg)
		}
	})
}

func TestRealOllamaPullFails(t *testing.T) {
	o, _, ctx := realOllama(t, ollamatest.Options{})
	var lines []agentapi.Progress
	err := o.Pull(ctx, "nosuch-model", func(p agentapi.Progress) { lines = append(lines, p) })
	if err == nil {
		t.Fatal("pull without a registry succeeded")
	}
	if len(lines) == 0 || lines[0].Status != "pulling manifest" {
		t.Errorf("progress %+v", lines)
	}
	t.Logf("pull error (expected, no registry): %v", err)
}

// TestRealOllamaCopy copies the tiny model between two real Ollama servers the way two agents
// would, with no registry: export from A, blobs read from A's models directory, import into B;
// then B serves it.
func TestRealOllamaCopy(t *testing.T) {
	a, _, ctx := realOllama(t, ollamatest.Options{Seed: 11})
	b, bs, _ := realOllama(t, ollamatest.Options{NoModel: true})

	ms, err := b.Models(ctx)
	if err != nil || len(ms) != 0 {
		t.Fatalf("B starts with %+v (%v)", ms, err)
	}
	m, err := a.Export(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Template, ".Messages") || m.Parameters["num_predict"] != float64(64) || len(m.Blobs) != 1 {
		t.Fatalf("manifest %+v", m)
	}

	var fetched int64
	start := time.Now()
	err = b.Import(ctx, m, func(ctx context.Context, digest string) (io.ReadCloser, error) {
		rc, size, err := a.OpenBlob(ctx, digest)
		fetched += size
		return rc, err
	}, func(p agentapi.Progress) { t.Logf("import progress: %+v", p) })
	if err != nil {
		t.Fatalf("import: %v\n%s", err, bs.Log())
	}
	t.Logf("copy: %d bytes of blobs, import took %s", fetched, time.Since(start).Round(time.Millisecond))

	ms, err = b.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := findModel(ms, "tiny:latest"); !ok || !got.OnDisk {
		t.Fatalf("B lists %+v", ms)
	}
	back, err := b.Export(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	if back.Files["model.gguf"] != m.Files["model.gguf"] || back.Template != m.Template {
		t.Errorf("B's copy differs: %+v vs %+v", back, m)
	}

	rec := serve(t, ctx, b, agentapi.PathChatCompletions, `{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":8}`)
	if rec.status != http.StatusOK || !strings.Contains(rec.body(), `"chat.completion"`) {
		t.Fatalf("chat on B: %d %s", rec.status, rec.body())
	}

	// A tampered blob B lacks is refused, by our hash and by Ollama's, before anything is created.
	var other bytes.Buffer
	if err := ollamatest.WriteTinyModel(&other, 12); err != nil {
		t.Fatal(err)
	}
	digest := blobSHA(other.Bytes())
	tampered := bytes.Clone(other.Bytes())
	tampered[len(tampered)-1] ^= 0xff
	bad := m
	bad.Model = "tampered"
	bad.Files = map[string]string{"model.gguf": digest}
	bad.Blobs = []agentapi.Blob{{Digest: digest, Size: int64(other.Len())}}
	err = b.Import(ctx, bad, func(context.Context, string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tampered)), nil
	}, nil)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("tampered import: %v", err)
	}
	ms, _ = b.Models(ctx)
	if _, ok := findModel(ms, "tampered:latest"); ok {
		t.Error("tampered model was created")
	}

	if err := b.Delete(ctx, "tiny"); err != nil {
		t.Fatal(err)
	}
	ms, _ = b.Models(ctx)
	if _, ok := findModel(ms, "tiny:latest"); ok {
		t.Errorf("deleted model still listed")
	}
}
