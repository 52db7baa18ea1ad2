package ollamatest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

func TestWriteTinyModelIsDeterministic(t *testing.T) {
	write := func(seed int64) []byte {
		var b bytes.Buffer
		if err := WriteTinyModel(&b, seed); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a, b, c := write(7), write(7), write(8)
	if !bytes.Equal(a, b) {
		t.Error("same seed gave different bytes")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds gave the same bytes")
	}
	if len(a) < 400_000 || len(a) > 700_000 {
		t.Errorf("size %d bytes, want about 0.5 MB", len(a))
	}
}

// TestWriteTinyModelDecodes reads the file back with Ollama's own GGUF decoder: the metadata
// llama.cpp needs is there, every tensor is where its offset says, and the parameter count is
// the documented ~130k.
func TestWriteTinyModelDecodes(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTinyModel(&b, 1); err != nil {
		t.Fatal(err)
	}
	f, err := ggml.Decode(bytes.NewReader(b.Bytes()), -1)
	if err != nil {
		t.Fatalf("ollama's decoder rejects the file: %v", err)
	}
	kv := f.KV()
	for key, want := range map[string]uint32{
		"block_count":                     tinyLayers,
		"embedding_length":                tinyEmbd,
		"attention.head_count":            tinyHeads,
		"feed_forward_length":             tinyFF,
		"context_length":                  tinyContext,
		"tokenizer.ggml.eos_token_id":     tokEOS,
		"tokenizer.ggml.bos_token_id":     tokBOS,
		"tokenizer.ggml.unknown_token_id": tokUnk,
		"attention.head_count_kv":         tinyHeads,
		"rope.dimension_count":            tinyEmbd / tinyHeads,
		"general.alignment":               ggufAlignment,
	} {
		if got := kv.Uint(key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	if got := kv.Architecture(); got != "llama" {
		t.Errorf("architecture %q", got)
	}
	tokens := kv.Strings("tokenizer.ggml.tokens")
	v := buildTinyVocab(biasEOS)
	if len(tokens) != len(v.tokens) {
		t.Fatalf("%d tokens, want %d", len(tokens), len(v.tokens))
	}
	for _, want := range []string{"<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "<0xFF>", "▁", "a", "~", "▁hello"} {
		found := false
		for _, tok := range tokens {
			found = found || tok == want
		}
		if !found {
			t.Errorf("vocabulary lacks %q", want)
		}
	}

	var params uint64
	end := uint64(0)
	for _, tn := range f.Tensors().Items() {
		n := uint64(1)
		for _, d := range tn.Shape {
			n *= d
		}
		params += n
		if tn.Offset%ggufAlignment != 0 {
			t.Errorf("tensor %s at offset %d, not aligned", tn.Name, tn.Offset)
		}
		end = max(end, tn.Offset+n*4)
	}
	if params < 120_000 || params > 140_000 {
		t.Errorf("%d parameters, want about 130k", params)
	}
	if got, want := uint64(b.Len()), f.Tensors().Offset+alignUp(end); got != want {
		t.Errorf("file is %d bytes, tensor data ends at %d", got, want)
	}
}

// TestVocabBiases checks the output-bias plan: only printable tokens (and EOS) can win.
func TestVocabBiases(t *testing.T) {
	v := buildTinyVocab(biasEOS)
	for i, tok := range v.tokens {
		printable := v.types[i] == tokenNormal
		switch {
		case i == tokEOS:
			if v.bias[i] <= biasHidden {
				t.Errorf("EOS is suppressed")
			}
		case printable && v.bias[i] != biasPrintable:
			t.Errorf("printable token %q has bias %v", tok, v.bias[i])
		case !printable && v.bias[i] != biasHidden:
			t.Errorf("token %q (type %d) has bias %v", tok, v.types[i], v.bias[i])
		}
	}
	// Every word is reachable by SentencePiece merges: each of its prefixes is a token.
	have := map[string]bool{}
	for _, tok := range v.tokens {
		have[tok] = true
	}
	for _, w := range tinyWords {
		r := []rune(w)
		for n := 1; n <= len(r); n++ {
			if !have[string(r[:n])] {
				t.Errorf("prefix %q of %q missing", string(r[:n]), w)
			}
		}
	}
}

func TestBinaryFromEnv(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "ollama")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env, cache string
		want             string
		ok               bool
	}{
		{"explicit executable", exe, "", exe, true},
		{"explicit not executable", plain, "", plain, false},
		{"explicit missing", filepath.Join(dir, "nope"), "", filepath.Join(dir, "nope"), false},
		{"cache layout", "", dir, filepath.Join(dir, "ollama-"+Version, "ollama"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HERD_OLLAMA_BIN", tt.env)
			t.Setenv("HERD_CACHE_DIR", tt.cache)
			t.Setenv("HERD_OLLAMA_VERSION", "")
			got, ok := Binary()
			if got != tt.want || ok != tt.ok {
				t.Errorf("Binary() = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestStartStopsItsProcesses starts real Ollama in a subtest and checks that when the subtest
// ends, the serve process and its runner are gone.
func TestStartStopsItsProcesses(t *testing.T) {
	var pid int
	t.Run("serve", func(t *testing.T) {
		s := Start(t, Options{})
		pid = s.PID
		status, body := do(t, http.MethodPost, s.URL+"/api/generate", `{"model":"tiny","keep_alive":"1m"}`)
		if status != http.StatusOK {
			t.Fatalf("load: %d %s", status, body)
		}
		status, body = do(t, http.MethodGet, s.URL+"/api/ps", "")
		if status != http.StatusOK || !strings.Contains(string(body), "tiny:latest") {
			t.Fatalf("ps after load: %d %s", status, body)
		}
	})
	if pid == 0 {
		t.Skip("serve did not run")
	}
	// Kill(-pgid, 0) probes the whole group: serve and its runner.
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after cleanup (kill 0: %v)", pid, err)
	}
}

// shape is the set of JSON key paths in a document ("choices[].delta.content"), which must agree
// between the fake and real Ollama even where values (ids, text, times) differ.
func shape(t *testing.T, data []byte) []string {
	t.Helper()
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, data)
	}
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				walk(prefix+"."+k, c)
			}
		case []any:
			for _, c := range x {
				walk(prefix+"[]", c)
			}
		default:
			set[prefix] = true
		}
	}
	walk("", v)
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// bodyShapes splits an NDJSON or SSE body into its documents' shapes.
func bodyShapes(t *testing.T, body []byte) [][]string {
	t.Helper()
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		line = bytes.TrimPrefix(line, []byte("data: "))
		if len(line) == 0 || string(line) == "[DONE]" {
			continue
		}
		out = append(out, shape(t, line))
	}
	return out
}

// TestFakeAnswersLikeRecording checks the fake against the recordings without real Ollama:
// same status and JSON shape for every recorded exchange.
func TestFakeAnswersLikeRecording(t *testing.T) {
	f := NewFake(t)
	compareShapes(t, f.URL, func(ex exchange) ([]byte, int, string) { return Recorded(ex.golden), ex.status, "" })
}

// TestFakeMatchesRealOllama sends every exchange to the fake and to real Ollama and compares
// status and shape, so the fake cannot drift from the real server it stands in for.
func TestFakeMatchesRealOllama(t *testing.T) {
	s := Start(t, Options{})
	f := NewFake(t)
	compareShapes(t, f.URL, func(ex exchange) ([]byte, int, string) {
		if ex.before != nil {
			ex.before(t, s.URL)
		}
		status, ct, body := doH(t, ex.method, s.URL+ex.path, ex.body)
		return body, status, ct
	})
}

// compareShapes checks the fake's answer to each exchange against reference's: status, JSON shape,
// and Content-Type where reference gives one.
func compareShapes(t *testing.T, fakeURL string, reference func(exchange) ([]byte, int, string)) {
	t.Helper()
	for _, ex := range exchanges(t) {
		t.Run(ex.golden, func(t *testing.T) {
			if ex.before != nil {
				ex.before(t, fakeURL)
			}
			status, ct, body := doH(t, ex.method, fakeURL+ex.path, ex.body)
			want, wantStatus, wantCT := reference(ex)
			if status != wantStatus {
				t.Fatalf("fake answered %d, reference %d: %s", status, wantStatus, body)
			}
			if wantCT != "" && ct != wantCT {
				t.Errorf("fake Content-Type %q, reference %q", ct, wantCT)
			}
			// Distinct shapes, not counts: a real stream's length depends on when EOS is drawn.
			got, exp := distinct(bodyShapes(t, body)), distinct(bodyShapes(t, want))
			if strings.Join(got, "\n") != strings.Join(exp, "\n") {
				t.Errorf("shapes differ:\n fake %q\n  ref %q\nfake body: %s\n ref body: %s", got, exp, body, want)
			}
		})
	}
}

func distinct(shapes [][]string) []string {
	set := map[string]bool{}
	for _, s := range shapes {
		set[strings.Join(s, " ")] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
